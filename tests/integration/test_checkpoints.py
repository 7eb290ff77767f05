"""Learner checkpoints through a real broker: full ones, deltas, and the state read back."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.state import PartitionStore, checkpoint, checkpointer, settle
from stream.reader import PartitionReader
from stream.runtime import Runtime
from stream.settings import Settings
from stream.topics import ensure_topics

pytestmark = pytest.mark.integration


class _App:
    """What Runtime.send_now needs of a Faust app: its producer's Kafka client."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = self
        self._producer = producer

    def _ensure_producer(self) -> AIOKafkaProducer:
        return self._producer


class _Stream:
    def __init__(self) -> None:
        self.acked: list[int] = []

    async def ack(self, event: int) -> None:
        self.acked.append(event)


async def _records(settings: Settings, partition: int) -> list[Any]:
    async with PartitionReader(settings) as reader:
        return await reader.read(settings.internal_topic("checkpoints"), [partition])


async def _run(settings: Settings) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        rt = Runtime(
            settings,
            topics={},
            app=_App(producer),
            topic_names={"checkpoints": settings.internal_topic("checkpoints")},
        )
        store = PartitionStore(settings)
        st = await store.ensure(1)
        assert st.next_offset == 0 and not st.keyed.seen
        stream = _Stream()
        rng = random.Random(5)
        offset = 0
        for _ in range(80):
            for _ in range(rng.randint(5, 40)):
                oid = f"o{rng.randint(0, 4000)}"  # re-sent ids too, some already forgotten
                x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}
                st.keyed.learn(oid, "BTC", x, rng.random() < 0.5, 1.0)
                st.pending.append(offset)
                offset += 1
                st.next_offset = offset
            await checkpoint(rt, store, st, stream)
        st.keyed.learn("last", "BTC", {"a": 0.0, "b": 1.0}, True, 1.0)
        st.pending.append(offset)
        offset += 1
        st.next_offset = offset
        await checkpoint(rt, store, st, stream)  # one new id: a delta
        await settle(st)  # a delta's events are acked once it is delivered
        assert sorted(stream.acked) == list(range(offset)) == sorted(set(stream.acked))

        recs = await _records(settings, 1)
        keys = [r.key for r in recs]
        assert keys[0] == b"1" and keys[-1] == b"1.delta"
        assert keys.count(b"1.delta") > 20 and keys.count(b"1") > 3
        full_sizes = [len(r.value) for r in recs if r.key == b"1"]
        delta_sizes = [len(r.value) for r in recs if r.key == b"1.delta"]
        assert max(delta_sizes) < min(full_sizes[-2:])

        again = await PartitionStore(settings).ensure(1)
        assert again.next_offset == offset
        assert list(again.keyed.seen) == list(st.keyed.seen)
        probe = {"a": 0.1, "b": 0.7}
        assert again.keyed.predict("BTC", probe) == st.keyed.predict("BTC", probe)
    finally:
        await producer.stop()


@pytest.mark.parametrize("inline_ids", [20_000, 100], ids=["inline", "in-a-thread"])
def test_checkpoints_are_mostly_deltas_and_restore_exactly(
    settings: Settings, inline_ids: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a limit of 100 ids, nearly every checkpoint is encoded in a thread while learning
    # could go on.
    monkeypatch.setattr(checkpointer, "ENCODE_INLINE_IDS", inline_ids)
    settings = settings.model_copy(update={"max_seen_ids": 2000})
    asyncio.run(_run(settings))


async def _run_missing_base(settings: Settings) -> tuple[list[str], list[str], int]:
    """A full checkpoint, then a delta, then the full one deleted from the topic (as compaction
    would once a zombie worker wrote a newer full checkpoint); the partition is read back."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        topic = settings.internal_topic("checkpoints")
        rt = Runtime(settings, topics={}, app=_App(producer), topic_names={"checkpoints": topic})
        store = PartitionStore(settings)
        st = await store.ensure(2)
        stream = _Stream()
        for i in range(205):
            st.keyed.learn(f"o{i}", "BTC", {"a": i % 7 - 3.0}, i % 3 == 0, 1.0)
            st.pending.append(i)
        st.next_offset = 205
        await checkpoint(rt, store, st, stream)  # the first checkpoint of a partition is full
        for i in range(205, 210):
            st.keyed.learn(f"o{i}", "BTC", {"a": i % 7 - 3.0}, i % 3 == 0, 1.0)
            st.pending.append(i)
        st.next_offset = 210
        await checkpoint(rt, store, st, stream)  # 5 new ids of 210: a delta
        # checkpoint() returns once the delta is sent; its delivery comes after, so wait for it.
        keys: list[bytes | None] = []
        for _ in range(100):
            keys = [r.key for r in await _records(settings, 2)]
            if len(keys) >= 2:
                break
            await asyncio.sleep(0.1)
        assert keys == [b"2", b"2.delta"]

        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            # Kafka refuses to delete records of a topic that is only compacted.
            policy = {"cleanup.policy": "compact,delete"}
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, policy)])
            await admin.delete_records({TopicPartition(topic, 2): RecordsToDelete(1)})
        finally:
            await admin.close()
        assert [r.key for r in await _records(settings, 2)] == [b"2.delta"]

        again = await PartitionStore(settings).ensure(2)
        probe = {"a": 1.5}
        assert again.keyed.predict("BTC", probe) == st.keyed.predict("BTC", probe)
        return list(again.keyed.seen), list(st.keyed.seen), again.next_offset
    finally:
        await producer.stop()


def test_delta_whose_full_checkpoint_is_gone_restores_model_offset_and_its_own_ids(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="agents.state.partitions"):
        restored, live, next_offset = asyncio.run(_run_missing_base(settings))
    assert next_offset == 210
    assert restored == live[-5:] == [f"o{i}" for i in range(205, 210)]
    assert any("is gone" in r.getMessage() for r in caplog.records)
