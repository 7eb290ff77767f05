"""The learner's join in event time (issue 25, part 4), without Kafka: the window counts from the
outcome's own time, an outcome whose signal has not arrived waits (bounded in count and in event
time), and the waiting outcomes travel in the partition's meta record."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.learner import _learn, resolve_waiting
from agents.state import PartitionState, PartitionStore, remember_signal
from agents.state.checkpointer import take_commit
from agents.state.checkpoints import META_KEY, Restored, decode_meta, restore_partition
from stream.codec import decode_outcome
from stream.runtime import Runtime
from stream.settings import Settings

HOUR = 3_600_000


class _Rt(Runtime):
    async def send(self, role: str, key: Any, value: bytes, partition: int | None = None) -> None:
        self.sent.append((role, orjson.loads(value)))


def _setup(**env: Any) -> tuple[_Rt, PartitionStore, PartitionState]:
    settings = Settings(_env_file=None, **env)
    rt = _Rt(settings, topics={}, topic_names={"deadletter": "deadletter"})
    rt.sent = []  # type: ignore[attr-defined]
    store = PartitionStore(settings)
    # A stand-in producer: the partition is owned and learned here (nothing commits in these tests).
    owned = SimpleNamespace()
    st = store.states[0] = PartitionState(0, 0, store.new_keyed(), txn=owned)  # type: ignore[arg-type]
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


def _dead(rt: _Rt, st: PartitionState) -> list[tuple[str, int]]:
    """The dead letters sent at once, and those buffered for the partition's next commit."""
    sent = [d for role, d in rt.sent if role == "deadletter"]
    kept = [orjson.loads(o.value) for o in st.outputs if o.topic == "deadletter"]
    return [(d["reason"], d["offset"]) for d in sent + kept]


def test_the_window_counts_from_the_outcome_s_own_time_not_the_clock() -> None:
    rt, _, st = _setup(join_window_s=3600)
    day = 1_700_000_000_000  # long ago: the clock would find every signal too old
    _signal(st, "s1", day)
    _signal(st, "s2", day)
    _feed(rt, st, "o1", "s1", day + HOUR - 1, 0)  # within the hour after its signal
    _feed(rt, st, "o2", "s2", day + HOUR + 1, 1)  # just beyond it
    _feed(rt, st, "o3", "s1", day - 5_000, 2)  # a signal newer than its outcome is joinable
    assert st.keyed.n_learned("K") == 2
    assert _dead(rt, st) == [("unjoinable", 1)]


def test_an_outcome_waits_for_its_signal_and_is_learned_when_it_arrives() -> None:
    rt, store, st = _setup(join_wait_s=5)
    _feed(rt, st, "o1", "late", 10_000, 0)
    assert list(st.waiting) == [0] and st.keyed.n_learned("K") == 0
    assert asyncio.run(resolve_waiting(rt, store, st)) == 0  # not yet
    _signal(st, "late", 9_000)
    assert asyncio.run(resolve_waiting(rt, store, st)) == 1
    assert st.waiting == {} and st.keyed.n_learned("K") == 1 and st.dirty
    assert _dead(rt, st) == []


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
    assert _dead(rt, st) == [("unjoinable", 0)]


def test_the_oldest_goes_when_too_many_wait_and_zero_means_no_waiting() -> None:
    rt, _, st = _setup(join_wait_max=2)
    for i in range(4):
        _feed(rt, st, f"o{i}", f"s{i}", 1_000 + i, i)
    assert list(st.waiting) == [2, 3]
    assert _dead(rt, st) == [("unjoinable", 0), ("unjoinable", 1)]
    rt, _, st = _setup(join_wait_max=0)
    _feed(rt, st, "o1", "s1", 1_000, 0)
    assert st.waiting == {} and _dead(rt, st) == [("unjoinable", 0)]


def test_an_outcome_already_learned_does_not_wait() -> None:
    rt, _, st = _setup()
    st.keyed.learn("o1", "K", {"x": 1.0}, True, None)
    _feed(rt, st, "o1", "unknown", 1_000, 5)
    assert st.waiting == {} and _dead(rt, st) == [("duplicate", 5)]


def test_the_record_time_stands_in_for_a_missing_ts() -> None:
    rt, store, st = _setup(join_wait_s=1)
    msg, out = _outcome("o1", "never", None, 0, record_ms=50_000)
    asyncio.run(_learn(rt, st, msg, out, None))
    assert st.outcome_clock == 50_000 and st.waiting[0].time == 50_000
    _signal(st, "other", 60_000)
    _feed(rt, st, "o2", "other", 60_000, 1)
    asyncio.run(resolve_waiting(rt, store, st))
    assert st.waiting == {} and _dead(rt, st) == [("unjoinable", 0)]


def test_waiting_outcomes_and_clocks_travel_in_the_meta_record() -> None:
    rt, store, st = _setup()
    st.keyed.learn("a", "K", {"x": 1.0}, True, None)
    _feed(rt, st, "o1", "s1", 1_000, 3)
    _feed(rt, st, "o2", "s2", 2_000, 4)
    st.next_offset = 5
    records, next_offset, keys = take_commit(st, "checkpoints")
    assert next_offset == 5 and keys == {"K"}
    meta = decode_meta(next(r.value for r in records if r.key == META_KEY))
    assert meta.next_offset == 5 and meta.keys == 1
    recs = [
        SimpleNamespace(key=r.key, value=r.value, offset=i)
        for i, r in enumerate(records)
        if r.topic == "checkpoints"
    ]
    back = restore_partition(0, recs, store.new_keyed)
    assert isinstance(back, Restored) and back.refused is None
    assert back.next_offset == 5 and list(back.keyed.seen) == ["a"]
    waits = back.waiting
    assert [(w.offset, w.outcome.outcome_id, w.time) for w in waits.waiting] == [
        (3, "o1", 1_000),
        (4, "o2", 2_000),
    ]
    assert (waits.outcome_clock, waits.signal_clock) == (2_000, None)
    assert waits.waiting == list(st.waiting.values())


def test_waiting_outcomes_are_bounded_in_bytes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    rt, _, st = _setup()
    size = len(_outcome("o0", "s0", 1_000, 0)[0].value) + 1  # the record and its key
    monkeypatch.setattr("agents.learner.WAITING_MAX_BYTES", 2 * size)
    for i in range(3):
        _feed(rt, st, f"o{i}", f"s{i}", 1_000 + i, i)
    assert list(st.waiting) == [1, 2] and st.waiting_bytes == 2 * size
    assert _dead(rt, st) == [("unjoinable", 0)]
