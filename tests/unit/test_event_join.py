"""The learner's join in event time (issue 25, part 4), without Kafka: the window counts from the
outcome's own time, an outcome whose signal has not arrived waits (bounded in count and in event
time), and the waiting outcomes travel in checkpoints."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.learner import _learn, resolve_waiting
from agents.state import PartitionState, PartitionStore, remember_signal
from agents.state.checkpoints import (
    checkpoint_base,
    decode_checkpoint,
    decode_checkpoint_state,
    encode_checkpoint,
    take_checkpoint,
)
from models.keyed import KeyedOnline
from stream.codec import decode_outcome
from stream.runtime import Runtime
from stream.settings import Settings

HOUR = 3_600_000


class _Rt(Runtime):
    async def send(self, role: str, key: Any, value: bytes, partition: int | None = None) -> None:
        self.sent.append((role, orjson.loads(value)))


def _setup(**env: Any) -> tuple[_Rt, PartitionStore, PartitionState]:
    settings = Settings(_env_file=None, **env)
    rt = _Rt(settings, topics={})
    rt.sent = []  # type: ignore[attr-defined]
    store = PartitionStore(settings)
    st = store.states[0] = PartitionState(0, 0, KeyedOnline())
    return rt, store, st


def _outcome(oid: str, sid: str, ts: int | None, offset: int, record_ms: int = 0) -> tuple:
    doc: dict[str, Any] = {"outcome_id": oid, "signal_id": sid, "symbol": "K", "label": 1}
    if ts is not None:
        doc["ts"] = ts
    raw = orjson.dumps(doc)
    msg = SimpleNamespace(
        topic="outcomes",
        partition=0,
        offset=offset,
        key=b"K",
        value=raw,
        timestamp=record_ms / 1000,
    )
    return msg, decode_outcome(raw)


def _feed(rt: _Rt, st: PartitionState, oid: str, sid: str, ts: int | None, offset: int) -> None:
    msg, out = _outcome(oid, sid, ts, offset)
    asyncio.run(_learn(rt, st, msg, out, None))


def _signal(st: PartitionState, sid: str, ts: int) -> None:
    remember_signal(st.join, sid, {"x": float(ts % 7), "y": 1.0}, ts, "K")


def _dead(rt: _Rt) -> list[tuple[str, int]]:
    return [(d["reason"], d["offset"]) for role, d in rt.sent if role == "deadletter"]


def test_the_window_counts_from_the_outcome_s_own_time_not_the_clock() -> None:
    rt, _, st = _setup(join_window_s=3600)
    day = 1_700_000_000_000  # long ago: the clock would find every signal too old
    _signal(st, "s1", day)
    _signal(st, "s2", day)
    _feed(rt, st, "o1", "s1", day + HOUR - 1, 0)  # within the hour after its signal
    _feed(rt, st, "o2", "s2", day + HOUR + 1, 1)  # just beyond it
    _feed(rt, st, "o3", "s1", day - 5_000, 2)  # a signal newer than its outcome is joinable
    assert st.keyed.n_learned("K") == 2
    assert _dead(rt) == [("unjoinable", 1)]


def test_an_outcome_waits_for_its_signal_and_is_learned_when_it_arrives() -> None:
    rt, store, st = _setup(join_wait_s=5)
    _feed(rt, st, "o1", "late", 10_000, 0)
    assert list(st.waiting) == [0] and st.keyed.n_learned("K") == 0
    assert asyncio.run(resolve_waiting(rt, store, st)) == 0  # not yet
    _signal(st, "late", 9_000)
    assert asyncio.run(resolve_waiting(rt, store, st)) == 1
    assert st.waiting == {} and st.keyed.n_learned("K") == 1 and st.dirty
    assert _dead(rt) == []


def test_a_waiting_outcome_expires_only_when_both_streams_pass_its_time_plus_the_wait() -> None:
    rt, store, st = _setup(join_wait_s=5)
    _feed(rt, st, "o1", "never", 10_000, 0)
    _signal(st, "other", 20_000)  # the signals are past 15,000, the outcomes are not
    asyncio.run(resolve_waiting(rt, store, st))
    assert list(st.waiting) == [0]
    msg, out = _outcome("o2", "x", 15_000, 1)
    st.join.pop("x", None)
    asyncio.run(_learn(rt, st, msg, out, None))  # waits too; the outcomes reach 15,000 only
    asyncio.run(resolve_waiting(rt, store, st))
    assert list(st.waiting) == [0, 1]
    _feed(rt, st, "o3", "y", 15_001, 2)  # now both streams are past 15,000
    asyncio.run(resolve_waiting(rt, store, st))
    assert list(st.waiting) == [1, 2]
    assert _dead(rt) == [("unjoinable", 0)]


def test_the_oldest_goes_when_too_many_wait_and_zero_means_no_waiting() -> None:
    rt, _, st = _setup(join_wait_max=2)
    for i in range(4):
        _feed(rt, st, f"o{i}", f"s{i}", 1_000 + i, i)
    assert list(st.waiting) == [2, 3]
    assert _dead(rt) == [("unjoinable", 0), ("unjoinable", 1)]
    rt, _, st = _setup(join_wait_max=0)
    _feed(rt, st, "o1", "s1", 1_000, 0)
    assert st.waiting == {} and _dead(rt) == [("unjoinable", 0)]


def test_an_outcome_already_learned_does_not_wait() -> None:
    rt, _, st = _setup()
    st.keyed.learn("o1", "K", {"x": 1.0}, True, None)
    _feed(rt, st, "o1", "unknown", 1_000, 5)
    assert st.waiting == {} and _dead(rt) == [("duplicate", 5)]


def test_the_record_time_stands_in_for_a_missing_ts() -> None:
    rt, store, st = _setup(join_wait_s=1)
    msg, out = _outcome("o1", "never", None, 0, record_ms=50_000)
    asyncio.run(_learn(rt, st, msg, out, None))
    assert st.outcome_clock == 50_000 and st.waiting[0].time == 50_000
    _signal(st, "other", 60_000)
    _feed(rt, st, "o2", "other", 60_000, 1)
    asyncio.run(resolve_waiting(rt, store, st))
    assert st.waiting == {} and _dead(rt) == [("unjoinable", 0)]


@pytest.mark.parametrize("delta", [False, True])
def test_waiting_outcomes_and_clocks_travel_in_checkpoints(delta: bool) -> None:
    rt, _, st = _setup()
    st.keyed.learn("a", "K", {"x": 1.0}, True, None)
    _feed(rt, st, "o1", "s1", 1_000, 3)
    _feed(rt, st, "o2", "s2", 2_000, 4)
    full = encode_checkpoint(5, st.keyed)
    taken = take_checkpoint(5, st.keyed, 77 if delta else None, 1, st.waiting_section())
    data = taken.encode()
    assert checkpoint_base(data) == (77 if delta else None)
    off, keyed, waits = decode_checkpoint_state(data, base=full if delta else None)
    assert off == 5 and list(keyed.seen) == ["a"]
    assert [(w.offset, w.outcome.outcome_id, w.time) for w in waits.waiting] == [
        (3, "o1", 1_000),
        (4, "o2", 2_000),
    ]
    assert (waits.outcome_clock, waits.signal_clock) == (2_000, None)
    assert waits.waiting == list(st.waiting.values())
    assert decode_checkpoint(data, base=full if delta else None)[0] == 5
    # A checkpoint with nothing waiting is written exactly as before.
    assert take_checkpoint(5, st.keyed).encode() == full


def test_waiting_outcomes_are_bounded_in_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    rt, _, st = _setup()
    size = len(_outcome("o0", "s0", 1_000, 0)[0].value) + 1  # the record and its key
    monkeypatch.setattr("agents.learner.WAITING_MAX_BYTES", 2 * size)
    for i in range(3):
        _feed(rt, st, f"o{i}", f"s{i}", 1_000 + i, i)
    assert list(st.waiting) == [1, 2] and st.waiting_bytes == 2 * size
    assert _dead(rt) == [("unjoinable", 0)]
