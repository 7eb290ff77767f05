"""Outcomes waiting for their signal, and the event time of a partition.

An outcome without features whose signal has not arrived waits in its partition's state
(``PartitionState.waiting``) until the signal arrives, or until the wait bound passes: more than
``ALPHAPULSE_JOIN_WAIT_MAX`` outcomes waiting (the oldest goes), or the partition's event time
beyond the outcome's own time plus ``ALPHAPULSE_JOIN_WAIT_S``.

Event time is advanced by the partition's records, never by the clock, so a replay or a backlog
behaves as live traffic did. The partition reads two streams, its outcomes and its signals, at
speeds of their own (a replay may read a day of outcomes before the signals of its first hour):
its event time is the lower of the highest outcome time and the highest signal time seen, the
usual watermark of a join. An outcome stops waiting only when both streams have gone past its
time plus the wait, so its signal had every chance to arrive.

Waiting outcomes are also bounded in bytes (:data:`WAITING_MAX_BYTES`). They are part of the
checkpointed state (:func:`encode_waiting`), so the offsets of
the records that hold them may be committed: a restart restores them with the rest.

>>> from stream.records import TradeOutcome
>>> out = TradeOutcome("o1", "s1", "BTC", True, "BTC", ts=5_000)
>>> w = Waiting(offset=7, key=b"BTC", value=b"{}", timestamp_ms=4_000, outcome=out)
>>> w.time, watermark(6_000, None), watermark(6_000, 9_000)
(5000, None, 6000)
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from models._snapshot import SnapshotError
from stream.codec import ContractViolation, Limits, decode_outcome
from stream.records import TradeOutcome

__all__ = [
    "WAITING_MAX_BYTES",
    "HeldMessage",
    "Waiting",
    "WaitingState",
    "decode_waiting",
    "encode_waiting",
    "watermark",
]

_FORMAT = 1
WAITING_MAX_BYTES = 8 * 1024 * 1024
"""Most bytes of waiting records a partition keeps (the oldest go first beyond it, as beyond
``ALPHAPULSE_JOIN_WAIT_MAX``): checkpoints carry them and must stay under the checkpoints
topic's 32 MiB message limit, with the models beside them."""
_NO_LIMITS = Limits(max_bytes=2**31, max_features=2**31)
"""Re-reading a held outcome: it passed the configured limits when it arrived."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """An outcome record held until its signal arrives: where it was and what it said."""

    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    """The record's Kafka timestamp."""
    outcome: TradeOutcome

    @property
    def time(self) -> int:
        """The outcome's event time: its own ``ts``, else its record's timestamp."""
        return self.outcome.ts if self.outcome.ts is not None else self.timestamp_ms


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """A waiting outcome as the learner handles a Kafka message (topic, partition, offset, key,
    value, timestamp in seconds), for its dead letter or its hard example."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: float


@dataclass(frozen=True)
class WaitingState:
    """What a checkpoint keeps of the join's progress: the waiting outcomes and both clocks."""

    waiting: list[Waiting]
    outcome_clock: int | None
    signal_clock: int | None


def watermark(outcome_clock: int | None, signal_clock: int | None) -> int | None:
    """The partition's event time: the lower of its two streams' highest times (None until both
    have one)."""
    if outcome_clock is None or signal_clock is None:
        return None
    return min(outcome_clock, signal_clock)


def encode_waiting(
    waiting: Iterable[Waiting], outcome_clock: int | None, signal_clock: int | None
) -> bytes:
    """The section of a checkpoint that keeps the waiting outcomes and the clocks.

    >>> from stream.codec import encode
    >>> raw = encode({"outcome_id": "o", "signal_id": "s", "symbol": "X", "label": 1})
    >>> w = Waiting(3, None, raw, 1_000, decode_outcome(raw))
    >>> back = decode_waiting(encode_waiting([w], 1_000, None))
    >>> back.waiting == [w], back.outcome_clock, back.signal_clock
    (True, 1000, None)
    """
    rows = [
        [
            w.offset,
            w.timestamp_ms,
            None if w.key is None else base64.b64encode(w.key).decode(),
            base64.b64encode(w.value).decode(),
        ]
        for w in waiting
    ]
    return orjson.dumps(
        {
            "format": _FORMAT,
            "outcome_clock": outcome_clock,
            "signal_clock": signal_clock,
            "waiting": rows,
        }
    )


def decode_waiting(data: bytes) -> WaitingState:
    """Inverse of :func:`encode_waiting`; :class:`SnapshotError` when ``data`` is not one."""
    try:
        doc: Any = orjson.loads(data)
        if doc["format"] != _FORMAT:
            raise SnapshotError(f"waiting outcomes in format {doc['format']} are not supported")
        waiting = []
        for offset, ts, key, value in doc["waiting"]:
            raw = base64.b64decode(value)
            out = decode_outcome(raw, _NO_LIMITS)
            waiting.append(
                Waiting(int(offset), None if key is None else base64.b64decode(key), raw, ts, out)
            )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ContractViolation) as exc:
        raise SnapshotError(f"the waiting outcomes of a checkpoint cannot be read: {exc}") from exc
    return WaitingState(waiting, doc["outcome_clock"], doc["signal_clock"])
