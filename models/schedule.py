"""When each training cadence runs: wall-clock schedules, pure (no clock reads, no I/O).

A schedule is ``"off"``, daily ``"HH:MM"``, weekly ``"DAY HH:MM"`` (``mon`` .. ``sun``) or monthly
``"D HH:MM"`` (day of month 1 to 28, so that every month has it), all in UTC. Times are passed in
as integer epoch milliseconds. A cadence is *due* when one of its scheduled times (a *slot*) has
passed since its last run: a slot missed while no worker was up runs once when one starts, and a
slot never runs twice. A cadence that never ran anywhere is not due; its first run is the next slot
(so a new deployment does not train at once), and the caller records that baseline.

>>> s = parse_schedule("sun 03:00")
>>> sat = 1_704_499_200_000  # 2024-01-06 00:00 UTC, a Saturday
>>> due(s, last_run_ms=sat, now_ms=sat + 86_400_000)  # Sunday 00:00: the slot is still ahead
False
>>> due(s, last_run_ms=sat, now_ms=sat + 86_400_000 + 4 * 3_600_000)  # Sunday 04:00
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = ["DAYS", "FORMATS", "Schedule", "due", "last_slot", "parse_schedule"]

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday names of a weekly schedule, Monday first (as :meth:`datetime.weekday`)."""

FORMATS = (
    "'off', 'HH:MM' (daily), 'DAY HH:MM' (weekly, DAY mon..sun) or 'D HH:MM' (monthly, D 1-28)"
)
"""The accepted forms, for error messages."""

_DAY = timedelta(days=1)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule (UTC); build it with :func:`parse_schedule`.

    Parameters
    ----------
    every : {"off", "day", "week", "month"}
        How often it runs.
    hour, minute : int
        Time of day of each run.
    weekday : int
        Day of a weekly run, 0 (Monday) to 6 (Sunday).
    day : int
        Day of month of a monthly run, 1 to 28.

    Examples
    --------
    >>> Schedule("week", 3, 0, weekday=6) == parse_schedule("sun 03:00")
    True
    >>> Schedule("day", 25, 0)
    Traceback (most recent call last):
    ...
    ValueError: a schedule's time must be HH:MM in 00:00..23:59, got 25:00
    """

    every: Literal["off", "day", "week", "month"]
    hour: int = 0
    minute: int = 0
    weekday: int = 0
    day: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.hour <= 23 and 0 <= self.minute <= 59):
            raise ValueError(
                "a schedule's time must be HH:MM in 00:00..23:59, "
                f"got {self.hour:02d}:{self.minute:02d}"
            )
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"a schedule's weekday must be 0..6 (mon..sun), got {self.weekday}")
        if not 1 <= self.day <= 28:
            raise ValueError(f"a schedule's day of month must be 1..28, got {self.day}")

    @property
    def off(self) -> bool:
        """True when this cadence never runs by the clock."""
        return self.every == "off"


def _time(text: str) -> tuple[int, int]:
    hh, sep, mm = text.partition(":")
    if not sep or not (hh.isdigit() and mm.isdigit()) or len(mm) != 2 or len(hh) > 2:
        raise ValueError(f"expected HH:MM, got {text!r}")
    return int(hh), int(mm)


def parse_schedule(text: str) -> Schedule:
    """Parse ``"off"``, ``"HH:MM"``, ``"DAY HH:MM"`` or ``"D HH:MM"`` (case and spaces ignored).

    Raises
    ------
    ValueError
        When ``text`` is none of these forms; the message lists them.

    Examples
    --------
    >>> parse_schedule("02:00")
    Schedule(every='day', hour=2, minute=0, weekday=0, day=1)
    >>> parse_schedule(" 1  04:30 ").every, parse_schedule("OFF").off
    ('month', True)
    >>> parse_schedule("29 04:00")
    Traceback (most recent call last):
    ...
    ValueError: schedule '29 04:00' is not one of 'off', 'HH:MM' (daily), ...
    """
    words = text.lower().split()
    try:
        if words == ["off"]:
            return Schedule("off")
        if len(words) == 1:
            return Schedule("day", *_time(words[0]))
        if len(words) == 2 and words[0] in DAYS:
            return Schedule("week", *_time(words[1]), weekday=DAYS.index(words[0]))
        if len(words) == 2 and words[0].isdigit():
            return Schedule("month", *_time(words[1]), day=int(words[0]))
        raise ValueError("unknown form")
    except ValueError as exc:
        raise ValueError(f"schedule {text!r} is not one of {FORMATS}: {exc}") from None


def last_slot(schedule: Schedule, now_ms: int) -> int | None:
    """The most recent scheduled time at or before ``now_ms`` (epoch ms), None when off.

    Examples
    --------
    >>> def iso(ms): return datetime.fromtimestamp(ms / 1000, UTC).strftime("%a %Y-%m-%d %H:%M")
    >>> now = 1_704_499_200_000  # Sat 2024-01-06 00:00 UTC
    >>> iso(last_slot(parse_schedule("02:00"), now))
    'Fri 2024-01-05 02:00'
    >>> iso(last_slot(parse_schedule("sat 00:00"), now))  # a slot at exactly now counts
    'Sat 2024-01-06 00:00'
    >>> iso(last_slot(parse_schedule("7 04:00"), now))
    'Thu 2023-12-07 04:00'
    >>> last_slot(parse_schedule("off"), now) is None
    True
    """
    if schedule.off:
        return None
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    at = now.replace(hour=schedule.hour, minute=schedule.minute, second=0, microsecond=0)
    if schedule.every == "day":
        slot = at if at <= now else at - _DAY
    elif schedule.every == "week":
        slot = at - ((now.weekday() - schedule.weekday) % 7) * _DAY
        if slot > now:
            slot -= 7 * _DAY
    else:
        slot = at.replace(day=schedule.day)
        if slot > now:
            # Day 28 at most: the previous month always has the day.
            prev = slot.replace(day=1) - _DAY
            slot = slot.replace(year=prev.year, month=prev.month)
    return int(slot.timestamp()) * 1000


def due(schedule: Schedule, last_run_ms: int | None, now_ms: int) -> bool:
    """True when a slot of ``schedule`` has passed since ``last_run_ms`` (None: never ran).

    Examples
    --------
    >>> nightly = parse_schedule("02:00")
    >>> day = 86_400_000; two = 2 * 3_600_000; mon = 1_704_067_200_000  # 2024-01-01 00:00 UTC
    >>> due(nightly, None, mon + 3 * day)  # never ran: wait for the next slot
    False
    >>> due(nightly, mon, mon + two), due(nightly, mon + two, mon + two + 1)
    (True, False)
    >>> due(nightly, mon + two, mon + 5 * day)  # down for days: one run at start
    True
    """
    slot = last_slot(schedule, now_ms)
    if slot is None or last_run_ms is None:
        return False
    return slot > last_run_ms
