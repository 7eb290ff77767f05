"""The learner's state changelog without Kafka: commits of the touched keys restore the exact
state, work learned during a commit is taken by the next one, failed and fenced commits, and
every kind of unreadable state refused (issue 25, parts 1 to 3).

The transactional producer is replaced by a stand-in that appends the committed records to a
list, the topic partition (pure logic; tests/integration/test_checkpoints.py uses the broker).
"""

from __future__ import annotations

import asyncio
import pickle
import random
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from agents.state import OutputBuffer, PartitionState, PartitionStore, commit
from agents.state.checkpoints import (
    META_KEY,
    Refusal,
    encode_meta,
    record_key,
    restore_partition,
)
from models.keyed import KeyedOnline
from stream.runtime import Runtime
from stream.settings import Settings
from stream.transactions import Outgoing, TransactionFailed, TransactionFenced

TOPIC = "checkpoints"


class _Txn:
    """Stands in for PartitionTransactions: a commit appends its records to ``log`` (with
    offsets), after ``gate`` opens; ``fail`` raises instead."""

    def __init__(self) -> None:
        self.log: list[SimpleNamespace] = []
        self.outputs: list[Outgoing] = []
        self.offsets: list[int] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def commit(self, records: Iterable[Outgoing], next_offset: int) -> None:
        records = list(records)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        for r in records:
            if r.topic == TOPIC:
                self.log.append(SimpleNamespace(key=r.key, value=r.value, offset=len(self.log)))
            else:
                self.outputs.append(r)
        self.offsets.append(next_offset)

    async def stop(self) -> None:
        pass


def _setup() -> tuple[Runtime, PartitionStore, PartitionState, _Txn]:
    settings = Settings(_env_file=None, state_signing_key="test-key-of-16-bytes")
    rt = Runtime(settings, topics={}, topic_names={"deadletter": "dl", "retrain-queue": "rq"})
    store = PartitionStore(settings)
    store.checkpoint_topic = TOPIC
    txn = _Txn()
    st = PartitionState(0, 0, store.new_keyed(), txn=txn)  # type: ignore[arg-type]
    store.states[0] = st
    store.assigned.add(0)
    return rt, store, st, txn


def _learn(st: PartitionState, oid: str, key: str, rng: random.Random) -> None:
    x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}
    st.keyed.learn(oid, key, x, rng.random() < 0.5, rng.uniform(-2, 2))
    st.next_offset += 1
    st.dirty = True


def _compacted(log: list[SimpleNamespace]) -> list[SimpleNamespace]:
    """What compaction may leave: the newest record of each key, in offset order."""
    newest = {r.key: r for r in log}
    return sorted(newest.values(), key=lambda r: r.offset)


def test_commits_of_touched_keys_restore_the_exact_state() -> None:
    rt, store, st, txn = _setup()
    rng = random.Random(7)
    keys = [f"K{i}" for i in range(40)]
    for batch in range(30):
        for _ in range(rng.randint(1, 25)):
            _learn(st, f"o{rng.randint(0, 3000)}", rng.choice(keys[: 5 + batch]), rng)
        written = len(txn.log)
        assert asyncio.run(commit(rt, store, st))
        touched = {r.key for r in txn.log[written:]} - {META_KEY}
        assert len(touched) <= 25  # only the keys this batch touched, never all of them
    assert txn.offsets[-1] == st.next_offset
    for log in (txn.log, _compacted(txn.log)):
        back = restore_partition(0, log, store.new_keyed)
        assert back.refused is None
        assert back.next_offset == st.next_offset
        assert sorted(back.keyed.seen) == sorted(st.keyed.seen)
        probe = {"a": 0.3, "b": -0.2}
        for key in st.keyed.learners:
            assert back.keyed.predict(key, probe) == st.keyed.predict(key, probe)
    assert not asyncio.run(commit(rt, store, st))  # nothing new: no transaction


def test_what_is_learned_during_a_commit_is_taken_by_the_next_one() -> None:
    """The delta race of the old checkpoints: ids learned while a commit is in flight must be
    in the next commit, with the offset that covers them."""

    async def run() -> None:
        rt, store, st, txn = _setup()
        rng = random.Random(1)
        for i in range(10):
            _learn(st, f"a{i}", "BTC", rng)
        txn.gate = asyncio.Event()
        first = asyncio.ensure_future(commit(rt, store, st))
        await asyncio.sleep(0)  # the first commit has taken its records and waits
        for i in range(5):
            _learn(st, f"b{i}", "BTC", rng)
        txn.gate.set()
        assert await first
        assert txn.offsets == [10]
        assert await commit(rt, store, st)
        assert txn.offsets == [10, 15]
        back = restore_partition(0, _compacted(txn.log), store.new_keyed)
        assert back.refused is None and back.next_offset == 15
        assert sorted(back.keyed.seen) == sorted(
            [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(5)]
        )
        assert back.keyed.n_learned("BTC") == 15

    asyncio.run(run())


def test_an_aborted_commit_is_retried_with_its_keys_and_side_outputs() -> None:
    rt, store, st, txn = _setup()
    rng = random.Random(2)
    _learn(st, "o1", "BTC", rng)
    asyncio.run(OutputBuffer(st, rt.topic_names).send("deadletter", b"k", b"dead"))
    txn.fail = TransactionFailed("aborted")
    assert not asyncio.run(commit(rt, store, st))
    assert st.keyed.touched == {"BTC"} and [o.value for o in st.outputs] == [b"dead"]
    assert txn.log == [] and rt.counters["learner.commits_aborted"] == 1
    txn.fail = None
    assert asyncio.run(commit(rt, store, st))
    assert [o.value for o in txn.outputs] == [b"dead"] and txn.offsets == [1]
    assert {r.key for r in txn.log} == {b"BTC", META_KEY}


def test_a_fenced_commit_gives_the_partition_up() -> None:
    async def run() -> None:
        rt, store, st, txn = _setup()
        _learn(st, "o1", "BTC", random.Random(3))
        txn.fail = TransactionFenced("fenced")
        assert not await commit(rt, store, st)
        assert store.get(0) is None and 0 not in store.assigned and not st.learns
        assert rt.counters["learner.fenced"] == 1
        placeholder = await store.ensure(0)  # until assigned again: nothing is loaded
        assert not placeholder.owned and not placeholder.learns

    asyncio.run(run())


def _good_log() -> tuple[list[SimpleNamespace], PartitionStore]:
    rt, store, st, txn = _setup()
    rng = random.Random(4)
    for i in range(6):
        _learn(st, f"o{i}", f"K{i % 3}", rng)
    asyncio.run(commit(rt, store, st))
    return txn.log, store


class _Bomb:
    """Unpickling this calls ``_explode``: what a tampered record would try."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


EXPLODED: list[int] = []


def _explode() -> None:
    EXPLODED.append(1)


def _rec(key: bytes | None, value: bytes | None, offset: int) -> SimpleNamespace:
    return SimpleNamespace(key=key, value=value, offset=offset)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("garbage", "unreadable_record"),
        ("pickle", "unreadable_record"),
        ("tombstone", "tombstone"),
        ("meta_garbage", "unreadable_meta"),
        ("meta_tombstone", "tombstone"),
        ("no_meta", "missing_meta"),
        ("key_gone", "missing_keys"),
        ("no_key", "unreadable_record"),
    ],
)
def test_unreadable_state_is_refused_never_started_afresh(tamper: str, reason: str) -> None:
    log, store = _good_log()
    n = len(log)
    records = list(log)
    if tamper == "garbage":
        records.append(_rec(b"K1", b"\x00garbage", n))
    elif tamper == "pickle":
        # A plain client's record: a genuine record's first bytes, then a pickle that runs code.
        head = next(r.value for r in log if r.key == b"K0")[:8]
        records.append(_rec(b"K1", head + pickle.dumps(_Bomb()), n))
    elif tamper == "tombstone":
        records.append(_rec(b"K1", None, n))
    elif tamper == "meta_garbage":
        records.append(_rec(META_KEY, b"APSM\x00\x09junk", n))
    elif tamper == "meta_tombstone":
        records.append(_rec(META_KEY, None, n))
    elif tamper == "no_meta":
        records = [r for r in records if r.key != META_KEY]
    elif tamper == "key_gone":
        records = [r for r in records if r.key != b"K2"]
    elif tamper == "no_key":
        records.append(_rec(None, b"x", n))
    restored = restore_partition(0, records, store.new_keyed)
    got = restored.refused
    assert isinstance(got, Refusal), restored
    assert got.reason == reason and got.partition == 0
    if tamper in ("garbage", "pickle", "tombstone", "no_key"):
        assert got.offset == n
        # The partition is not learned, but its keys keep their last good state for answers.
        assert restored.next_offset == 6
        assert sorted(restored.keyed.learners) == ["K0", "K1", "K2"]
        assert sum(restored.keyed.n_learned(k) for k in ("K0", "K1", "K2")) == 6
    assert EXPLODED == []


def test_records_signed_with_another_key_are_refused() -> None:
    log, _ = _good_log()
    other = KeyedOnline(signing_key=b"another group's key")
    got = restore_partition(0, log, lambda: other).refused
    assert isinstance(got, Refusal) and got.reason == "unreadable_record"


def test_an_empty_partition_starts_afresh_and_meta_counts_keys() -> None:
    store = PartitionStore(Settings(_env_file=None))
    fresh = restore_partition(3, [], store.new_keyed)
    assert fresh.refused is None and fresh.next_offset == 0 and not fresh.keyed.learners
    only_meta = [_rec(META_KEY, encode_meta(12, 0, b""), 0)]
    got = restore_partition(3, only_meta, store.new_keyed)
    assert got.refused is None and got.next_offset == 12
    assert record_key("é") == "é".encode()


def test_a_refused_partition_keeps_each_keys_newest_readable_record() -> None:
    R = SimpleNamespace
    k = KeyedOnline()
    for i in range(3):
        k.learn(f"o{i}", "BTC", {"x": float(i)}, i % 2 == 0, None)
    _ = k.learn("e1", "ETH", {"x": 1.0}, True, None)
    good_btc, good_eth = k.encode_key("BTC"), k.encode_key("ETH")
    recs = [
        R(key=b"BTC", value=good_btc, offset=0),
        R(key=b"ETH", value=good_eth, offset=1),
        R(key=META_KEY, value=encode_meta(9, 2, b""), offset=2),
        R(key=b"BTC", value=b"\x80\x04tampered", offset=3),  # a plain client's record
        R(key=META_KEY, value=b"junk", offset=4),
    ]
    got = restore_partition(0, recs, KeyedOnline)
    assert got.refused is not None and got.refused.offset in (3, 4)
    assert got.keyed.n_learned("BTC") == 3 and got.keyed.n_learned("ETH") == 1
    assert got.keyed.encode_key("BTC") == good_btc
