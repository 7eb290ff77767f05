"""The learner's state changelog through a real broker: commits of the touched keys in Kafka
transactions, the state read back committed, a zombie fenced, and refused state."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from agents.state import OutputBuffer, PartitionState, PartitionStore, Refusal, commit
from agents.state.checkpoints import META_KEY
from stream.reader import PartitionReader
from stream.runtime import Runtime
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import committed_offset

pytestmark = pytest.mark.integration


def _runtime(settings: Settings) -> Runtime:
    names = {r: settings.topic(r) for r in ("deadletter", "retrain-queue", "model-events")}
    return Runtime(settings, topics={}, topic_names=names)


async def _owned(store: PartitionStore, partition: int) -> PartitionState:
    store.preload({partition})
    return await store.ensure(partition)


def _learn(st: PartitionState, rng: random.Random, n: int, keys: list[str]) -> None:
    for _ in range(n):
        oid = f"o{rng.randint(0, 5000)}"  # re-sent ids too
        x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}
        st.keyed.learn(oid, rng.choice(keys), x, rng.random() < 0.5, 1.0)
        st.next_offset += 1
        st.dirty = True


async def _run_restore(settings: Settings) -> None:
    await ensure_topics(settings)
    rt = _runtime(settings)
    store = PartitionStore(settings)
    st = await _owned(store, 1)
    assert st.learns and st.next_offset == 0 and not st.keyed.learners
    rng = random.Random(5)
    keys = [f"K{i}" for i in range(30)]
    for _ in range(40):
        _learn(st, rng, rng.randint(1, 20), keys)
        await OutputBuffer(st, rt.topic_names).send("retrain-queue", b"K0", b"hard")
        assert await commit(rt, store, st)
    assert await committed_offset(settings, 1, st.next_offset) == st.next_offset

    async with PartitionReader(settings) as reader:
        recs = await reader.read(settings.internal_topic("checkpoints"), [1])
        hard = await reader.read(settings.topic("retrain-queue"))
    assert sum(r.key == META_KEY for r in recs) == 40
    assert len(recs) - 40 < 40 * 20  # only touched keys, never the whole state each time
    assert [r.value for r in hard] == [b"hard"] * 40  # each side output once

    other = PartitionStore(settings)  # the next owner: fences ``store``, reads the state back
    again = await _owned(other, 1)
    try:
        assert again.learns and again.next_offset == st.next_offset
        assert sorted(again.keyed.seen) == sorted(st.keyed.seen)
        probe = {"a": 0.1, "b": 0.7}
        for key in keys:
            assert again.keyed.predict(key, probe) == st.keyed.predict(key, probe)
        # The old owner, fenced, can commit nothing: its state is given up.
        _learn(st, rng, 5, keys)
        assert not await commit(rt, store, st)
        assert store.get(1) is None and rt.counters["learner.fenced"] == 1
        assert await committed_offset(settings, 1, again.next_offset) == again.next_offset
        async with PartitionReader(settings) as reader:
            after = await reader.read(settings.internal_topic("checkpoints"), [1])
        assert len(after) == len(recs)
    finally:
        await other.close()
        await store.close()


def test_state_commits_restore_exactly_and_a_fenced_owner_writes_nothing(
    settings: Settings,
) -> None:
    asyncio.run(_run_restore(settings))


async def _run_refusal(settings: Settings) -> list[Refusal]:
    await ensure_topics(settings)
    rt = _runtime(settings)
    store = PartitionStore(settings)
    st = await _owned(store, 2)
    _learn(st, random.Random(1), 10, ["BTC"])
    assert await commit(rt, store, st)
    await store.close()
    # A plain client writes a record of its own under the model key.
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.internal_topic("checkpoints"), b"APKS\x00\x01forged", key=b"BTC", partition=2
        )
    finally:
        await producer.stop()
    refused: list[Refusal] = []
    other = PartitionStore(settings, on_refused=refused.append)
    try:
        again = await _owned(other, 2)
        assert again.refused is not None and not again.learns
        # Not learned, not started afresh: the key answers from its last good state.
        assert again.keyed.n_learned("BTC") == 10
    finally:
        await other.close()
    return refused


def test_a_record_written_by_a_plain_client_refuses_the_partition(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    refused = asyncio.run(_run_refusal(settings))
    assert [(r.partition, r.reason) for r in refused] == [(2, "unreadable_record")]
    assert refused[0].offset is not None
    topic = settings.internal_topic("checkpoints")
    assert any(
        "refused" in r.getMessage() and f"{topic}[2]@{refused[0].offset}" in r.getMessage()
        for r in caplog.records
    )


async def _run_topic_config(settings: Settings) -> Any:
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        policy = {"cleanup.policy": "compact,delete", "retention.ms": "3600000"}
        topic = settings.internal_topic("checkpoints")
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, policy)])
    finally:
        await admin.close()
    store = PartitionStore(settings)
    try:
        st = await _owned(store, 0)
    finally:
        await store.close()
    return st.refused


def test_a_checkpoints_topic_that_deletes_records_refuses_the_state(settings: Settings) -> None:
    refused = asyncio.run(_run_topic_config(settings))
    assert refused is not None and refused.reason == "topic_config"
    assert "retention.ms is 3600000" in refused.detail
