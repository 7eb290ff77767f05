"""The partition reader against a real broker: bounded reads from each kind of start, and
following a topic."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer

from stream.reader import PartitionReader
from stream.settings import Settings
from stream.topics import ensure_topics

pytestmark = pytest.mark.integration

# An hour ago: records timestamped older than the topics' retention (7 days) are deleted by the
# broker's next retention check, which could fall between writing and reading them.
T0 = (int(time.time()) - 3600) * 1000


async def _fill(settings: Settings, topic: str) -> None:
    """Ten records on partition 1 (timestamps T0, T0 + 1000, ...) and one on partition 0."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, b"%d" % i, partition=1, timestamp_ms=T0 + 1000 * i)
        await producer.send_and_wait(topic, b"p0", partition=0, timestamp_ms=T0)
    finally:
        await producer.stop()


async def _run(settings: Settings) -> None:
    await ensure_topics(settings)
    topic = settings.topic("signals")
    await _fill(settings, topic)
    async with PartitionReader(settings) as reader:
        assert await reader.partitions(topic) == list(range(settings.topic_partitions))
        assert await reader.partitions(topic + ".missing") == []
        assert sorted(r.value for r in await reader.read(topic)) == sorted(
            [*(b"%d" % i for i in range(10)), b"p0"]
        )
        values = [r.value for r in await reader.read(topic, [1])]
        assert values == [b"%d" % i for i in range(10)]
        assert [r.value for r in await reader.read(topic, [1], last=2)] == [b"8", b"9"]
        assert [r.offset for r in await reader.read(topic, [1], offset=3, limit=1)] == [3]
        assert len(await reader.read(topic, [1], since=T0 + 6500)) == 3
        assert await reader.read(topic, [1], since=T0 + 60_000) == []
        # Both bounds: the later start wins.
        assert [r.value for r in await reader.read(topic, [1], since=T0 + 6500, last=2)] == [
            b"8",
            b"9",
        ]
        assert [r.value for r in await reader.read(topic, [1], since=T0 + 8500, last=5)] == [b"9"]
        with pytest.raises(ValueError, match="offset alone"):
            await reader.read(topic, [1], offset=0, last=1)

        got = [r.value async for r in reader.follow(topic, from_beginning=True, idle_timeout=1)]
        assert sorted(got) == sorted([*values, b"p0"])
        assert [r async for r in reader.follow(topic, idle_timeout=1)] == []
        missing = settings.topic("signals") + ".missing"
        assert [r async for r in reader.follow(missing, idle_timeout=1)] == []
        assert await reader.partitions(missing) == []  # waiting did not create it


def test_reads_are_bounded_and_start_where_asked(settings: Settings) -> None:
    asyncio.run(_run(settings))


def test_read_committed_is_accepted_and_a_bad_level_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="isolation_level"):
        PartitionReader(settings, isolation_level="dirty")  # type: ignore[arg-type]

    async def read() -> int:
        await ensure_topics(settings)
        await _fill(settings, settings.topic("outcomes"))
        async with PartitionReader(settings, isolation_level="read_committed") as reader:
            return len(await reader.read(settings.topic("outcomes"), [1]))

    assert asyncio.run(read()) == 10
