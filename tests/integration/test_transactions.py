"""aiokafka 0.14's transactional producer against the local broker (Kafka 4.1), through
stream.transactions: commit with offsets, abort, and fencing of an older producer."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.settings import Settings
from stream.topics import ensure_topics
from stream.transactions import (
    Outgoing,
    PartitionTransactions,
    TransactionFenced,
    transactional_id,
)
from tests.support import committed_offset

pytestmark = pytest.mark.integration


async def _read(settings: Settings, topic: str, isolation: str) -> list[Any]:
    """Every record of ``topic`` up to its end (last stable offset when read committed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        isolation_level=isolation,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begins[tp])
        out: list[Any] = []
        for _ in range(50):
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                out.extend(recs)
        return out
    finally:
        await consumer.stop()


def _rec(settings: Settings, value: bytes, partition: int = 1) -> Outgoing:
    return Outgoing(settings.topic("retrain-queue"), b"k", value, partition)


def test_commit_makes_records_and_offsets_visible_together(settings: Settings) -> None:
    async def run() -> None:
        await ensure_topics(settings)
        txn = PartitionTransactions(settings, 1)
        assert txn.transactional_id == transactional_id(settings.app_id, 1)
        await txn.start()
        try:
            await txn.commit([_rec(settings, b"a"), _rec(settings, b"b")], next_offset=17)
            assert await committed_offset(settings, 1, 17) == 17
            await txn.commit([_rec(settings, b"c")], next_offset=18)
            assert await committed_offset(settings, 1, 18) == 18
        finally:
            await txn.stop()
        topic = settings.topic("retrain-queue")
        got = [r.value for r in await _read(settings, topic, "read_committed")]
        assert got == [b"a", b"b", b"c"]

    asyncio.run(run())


def test_aborted_records_are_not_read_committed(settings: Settings) -> None:
    async def run() -> None:
        await ensure_topics(settings)
        txn = PartitionTransactions(settings, 1)
        await txn.start()
        try:
            producer: Any = txn._producer
            await producer.begin_transaction()
            await (await producer.send(settings.topic("retrain-queue"), b"gone", partition=1))
            await producer.abort_transaction()
            await txn.commit([_rec(settings, b"kept")], next_offset=5)
        finally:
            await txn.stop()
        topic = settings.topic("retrain-queue")
        committed = [r.value for r in await _read(settings, topic, "read_committed")]
        everything = [r.value for r in await _read(settings, topic, "read_uncommitted")]
        assert committed == [b"kept"]
        assert everything == [b"gone", b"kept"]
        assert await committed_offset(settings, 1, 5) == 5

    asyncio.run(run())


def test_a_new_producer_fences_the_old_one_and_aborts_its_open_transaction(
    settings: Settings,
) -> None:
    async def run() -> None:
        await ensure_topics(settings)
        old = PartitionTransactions(settings, 1)
        await old.start()
        await old.commit([_rec(settings, b"before")], next_offset=3)
        producer: Any = old._producer
        await producer.begin_transaction()  # a zombie's transaction, left open
        await (await producer.send(settings.topic("retrain-queue"), b"zombie-open", partition=1))

        new = PartitionTransactions(settings, 1)
        await new.start()  # fences ``old`` and aborts its open transaction
        try:
            await new.commit([_rec(settings, b"new-owner")], next_offset=4)
            with pytest.raises(TransactionFenced):
                await old.commit([_rec(settings, b"zombie-late")], next_offset=99)
            assert not old.started
            assert await committed_offset(settings, 1, 4) == 4
        finally:
            await new.stop()
            await old.stop()
        topic = settings.topic("retrain-queue")
        committed = [r.value for r in await _read(settings, topic, "read_committed")]
        assert committed == [b"before", b"new-owner"]

    asyncio.run(run())


def test_commits_do_not_race_their_own_offsets(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # The broker verifies each transactional produce with the transaction coordinator (KIP-890);
    # a produce that meets the coordinator while it adds the offsets is refused with
    # NOT_ENOUGH_REPLICAS, and aiokafka retries it after its backoff (100 ms) with a warning.
    async def run() -> float:
        await ensure_topics(settings)
        txn = PartitionTransactions(settings, 1)
        await txn.start()
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(20):
                await txn.commit([_rec(settings, b"%d" % i, p) for p in (0, 1, 2)], next_offset=i)
            return (loop.time() - start) / 20
        finally:
            await txn.stop()

    with caplog.at_level("WARNING", logger="aiokafka.producer.sender"):
        per_commit_s = asyncio.run(run())
    retried = [r.getMessage() for r in caplog.records if "NotEnoughReplicas" in r.getMessage()]
    assert retried == [], f"{len(retried)} produce retries; {per_commit_s * 1000:.1f} ms/commit"
    topic = settings.topic("retrain-queue")
    assert len(asyncio.run(_read(settings, topic, "read_committed"))) == 60


def test_a_fenced_producer_leaves_no_unretrieved_failure(settings: Settings) -> None:
    async def run() -> list[str]:
        await ensure_topics(settings)
        reported: list[str] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, ctx: reported.append(str(ctx.get("message"))))
        old = PartitionTransactions(settings, 1)
        await old.start()
        await old.commit([_rec(settings, b"before")], next_offset=3)
        new = PartitionTransactions(settings, 1)
        await new.start()
        try:
            with pytest.raises(TransactionFenced):
                await old.commit([_rec(settings, b"zombie")], next_offset=4)
        finally:
            await new.stop()
        del old
        for _ in range(3):  # the failed futures are collected, and reported if not retrieved
            gc.collect()
            await asyncio.sleep(0.05)
        return reported

    assert asyncio.run(run()) == []
