"""Retraining by the clock: schedules, and a restart that neither repeats nor skips a run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import ValidationError

from agents.retrainer import Retrainer
from models.roles import CADENCES
from models.schedule import due, last_slot, parse_schedule
from stream.runtime import Runtime
from stream.settings import Settings

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
MON = 1_704_067_200_000  # 2024-01-01 00:00 UTC, a Monday


class _Registry:
    """The last runs a registry remembers across worker restarts."""

    def __init__(self, **last: int) -> None:
        self.last: dict[str, int] = dict(last)

    def last_run(self, cadence: str) -> int | None:
        return self.last.get(cadence)

    def set_last_run(self, cadence: str, ms: int) -> None:
        self.last[cadence] = ms


def _worker(registry: _Registry, runs: list[tuple[str, int]], **settings: Any) -> Retrainer:
    """A fresh worker process: a new Retrainer whose jobs are only recorded."""
    off = {f"retrain_{c}_at": "off" for c in CADENCES}
    rt = Runtime(Settings(_env_file=None, **{**off, **settings}), topics={})  # type: ignore[call-arg]
    retrainer = Retrainer(rt, registry=lambda: registry)  # type: ignore[arg-type,return-value]
    clock = {"now": 0}

    async def run(cadence: str, reason: str) -> None:
        runs.append((cadence, clock["now"]))

    retrainer.run = run  # type: ignore[method-assign,assignment]
    retrainer.clock = clock  # type: ignore[attr-defined]
    return retrainer


def _live(retrainer: Retrainer, start: int, end: int, every: int = 30_000) -> None:
    """Tick the worker's timer from ``start`` (first tick one interval in) to ``end``."""

    async def ticks() -> None:
        now = start + every
        while now <= end:
            retrainer.clock["now"] = now  # type: ignore[attr-defined]
            await retrainer.tick(now)
            now += every

    asyncio.run(ticks())


def test_last_slot_of_each_form() -> None:
    assert last_slot(parse_schedule("02:00"), MON + HOUR) == MON - DAY + 2 * HOUR
    assert last_slot(parse_schedule("mon 00:00"), MON) == MON
    assert last_slot(parse_schedule("mon 00:01"), MON) == MON - 7 * DAY + MIN
    jan31 = MON + 30 * DAY
    assert last_slot(parse_schedule("28 00:00"), MON) == MON - 4 * DAY  # 2023-12-28
    assert last_slot(parse_schedule("28 00:00"), jan31) == MON + 27 * DAY
    assert last_slot(parse_schedule("off"), MON) is None


def test_due_never_without_a_baseline_and_once_per_slot() -> None:
    nightly = parse_schedule("02:00")
    assert not due(nightly, None, MON + 10 * DAY)
    assert due(nightly, MON, MON + 2 * HOUR)
    assert not due(nightly, MON + 2 * HOUR, MON + 2 * HOUR + DAY - 1)
    assert due(nightly, MON + 2 * HOUR, MON + 2 * HOUR + DAY)
    assert not due(parse_schedule("off"), MON, MON + 100 * DAY)


def test_a_new_deployment_waits_for_the_next_slot() -> None:
    registry, runs = _Registry(), []  # type: ignore[var-annotated]
    _live(_worker(registry, runs, retrain_nightly_incremental_at="02:00"), MON, MON + HOUR)
    assert runs == [] and registry.last["nightly_incremental"] == MON + 30_000
    _live(_worker(registry, runs, retrain_nightly_incremental_at="02:00"), MON + HOUR, MON + DAY)
    assert runs == [("nightly_incremental", MON + 2 * HOUR)]


@pytest.mark.parametrize("restart_every", [47 * MIN, 5 * HOUR, DAY + 13 * MIN, 3 * DAY])
def test_a_restart_neither_repeats_nor_skips_a_run(restart_every: int) -> None:
    """Workers restart every so often over four weeks: one run per weekly slot, soon after it."""
    registry = _Registry(weekly_quick=MON)
    runs: list[tuple[str, int]] = []
    tick = 5 * MIN  # coarser than a worker's timer, to keep four weeks of ticks quick
    t = MON
    while t < MON + 28 * DAY:
        end = min(t + restart_every, MON + 28 * DAY)
        _live(_worker(registry, runs, retrain_weekly_quick_at="sun 03:00"), t, end, tick)
        t = end
    slots = [MON + 6 * DAY + 3 * HOUR + k * 7 * DAY for k in range(4)]
    assert [c for c, _ in runs] == ["weekly_quick"] * 4
    for (_, ran), slot in zip(runs, slots, strict=True):
        # The first tick of a worker comes one interval after it starts.
        assert slot <= ran <= slot + 2 * tick


def test_a_slot_missed_while_down_runs_once_at_start() -> None:
    registry = _Registry(nightly_incremental=MON + 2 * HOUR)
    runs: list[tuple[str, int]] = []
    _live(_worker(registry, runs, retrain_nightly_incremental_at="02:00"), MON, MON + 3 * HOUR)
    assert runs == []
    # Down from 03:00 on day 0 to 12:00 on day 3: three slots missed, one run at start.
    start = MON + 3 * DAY + 12 * HOUR
    _live(_worker(registry, runs, retrain_nightly_incremental_at="02:00"), start, start + HOUR)
    assert runs == [("nightly_incremental", start + 30_000)]


class _CountingRegistry(_Registry):
    """A registry that counts the calls a worker makes to it."""

    def __init__(self, **last: int) -> None:
        super().__init__(**last)
        self.reads = 0
        self.opened = 0

    def last_run(self, cadence: str) -> int | None:
        self.reads += 1
        return super().last_run(cadence)


def test_a_day_of_ticks_asks_the_registry_only_when_a_slot_passes() -> None:
    """The registry is opened once, warmed at start, and read again only at a due slot."""
    registry = _CountingRegistry(nightly_incremental=MON + 2 * HOUR)
    runs: list[tuple[str, int]] = []
    worker = _worker(registry, runs, retrain_nightly_incremental_at="02:00")

    def opener() -> _CountingRegistry:
        registry.opened += 1
        return registry

    worker.registry = opener  # type: ignore[assignment]
    asyncio.run(worker.warm(MON + 3 * HOUR))
    assert (registry.opened, registry.reads) == (1, 1)
    _live(worker, MON + 3 * HOUR, MON + 3 * HOUR + DAY)  # 2,880 ticks
    assert runs == [("nightly_incremental", MON + DAY + 2 * HOUR)]
    assert (registry.opened, registry.reads) == (1, 2)  # the re-check at the due slot
    assert registry.last["nightly_incremental"] == MON + DAY + 2 * HOUR


def test_a_warm_and_a_tick_at_once_open_the_registry_once() -> None:
    registry = _CountingRegistry(nightly_incremental=MON + 2 * HOUR)
    worker = _worker(registry, [], retrain_nightly_incremental_at="02:00")

    def opener() -> _CountingRegistry:
        time.sleep(0.05)  # MLflow's open takes a while, in an executor thread
        registry.opened += 1
        return registry

    worker.registry = opener  # type: ignore[assignment]

    async def both() -> None:
        await asyncio.gather(worker.warm(MON + 3 * HOUR), worker.tick(MON + 3 * HOUR))

    asyncio.run(both())
    assert registry.opened == 1


def test_a_new_deployment_gets_its_baseline_at_start() -> None:
    registry, runs = _CountingRegistry(), []  # type: ignore[var-annotated]
    worker = _worker(registry, runs, retrain_nightly_incremental_at="02:00")
    asyncio.run(worker.warm(MON))
    assert registry.last == {"nightly_incremental": MON}
    _live(worker, MON, MON + DAY)
    assert runs == [("nightly_incremental", MON + 2 * HOUR)]
    assert registry.reads == 2  # at start, and the re-check at the slot


def test_a_slot_run_by_another_leader_is_not_repeated() -> None:
    """What this worker knows is older than the registry: it asks again before it runs."""
    registry = _CountingRegistry(nightly_incremental=MON + 2 * HOUR)
    runs: list[tuple[str, int]] = []
    worker = _worker(registry, runs, retrain_nightly_incremental_at="02:00")
    asyncio.run(worker.warm(MON + DAY + 3 * HOUR))
    registry.last["nightly_incremental"] = MON + DAY + 2 * HOUR  # another leader ran it
    _live(worker, MON + DAY + 3 * HOUR, MON + DAY + 4 * HOUR)
    assert runs == []


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("ALPHAPULSE_RETRAIN_NIGHTLY_INCREMENTAL_AT", "2am"),
        ("ALPHAPULSE_RETRAIN_WEEKLY_QUICK_AT", "sunday 03:00"),
        ("ALPHAPULSE_RETRAIN_MONTHLY_FULL_AT", "31 04:00"),
        ("ALPHAPULSE_RETRAIN_WEEKLY_QUICK_AT", "sun 24:00"),
    ],
)
def test_settings_reject_a_bad_schedule(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=f"{var} must be 'off', 'HH:MM'"):
        Settings()


def test_settings_defaults_and_normal_form(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(_env_file=None)
    assert (s.retrain_nightly_incremental_at, s.retrain_weekly_quick_at) == ("02:00", "sun 03:00")
    assert s.retrain_monthly_full_at == "1 04:00" and s.retrain_on_drift
    monkeypatch.setenv("ALPHAPULSE_RETRAIN_WEEKLY_QUICK_AT", " SUN  03:00 ")
    monkeypatch.setenv("ALPHAPULSE_RETRAIN_MONTHLY_FULL_AT", "OFF")
    s = Settings()
    assert (s.retrain_weekly_quick_at, s.retrain_monthly_full_at) == ("sun 03:00", "off")
