"""The join store rebuilt on assignment from the signals topic, through a real broker: the newest
signals of the join window, and no more of them than the store keeps."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.state import PartitionStore
from stream.settings import Settings
from stream.topics import ensure_topics

pytestmark = pytest.mark.integration


async def _signals(settings: Settings, partition: int, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(n):
            doc = {"signal_id": f"s{i}", "symbol": "ETH", "features": {"x": float(i)}}
            await producer.send(
                settings.topic("signals"), orjson.dumps(doc), key=b"ETH", partition=partition
            )
        await producer.flush()
    finally:
        await producer.stop()


async def _joinable(settings: Settings, partition: int) -> list[str]:
    store = PartitionStore(settings)
    store.preload({partition})
    try:
        return list((await store.ensure(partition)).join)
    finally:
        await store.close()


def test_the_rebuild_reads_only_the_newest_signals_the_store_keeps(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    asyncio.run(_signals(settings, 2, 40))
    capped = settings.model_copy(update={"join_max_entries": 10})
    assert asyncio.run(_joinable(capped, 2)) == [f"s{i}" for i in range(30, 40)]
    assert asyncio.run(_joinable(settings, 2)) == [f"s{i}" for i in range(40)]
