"""Runtime.send: Kafka's default key partitioning, remembered per key (fake producer)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.partitioner import murmur2

from stream.runtime import Runtime
from stream.settings import Settings


class _FakeKafkaProducer:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.asked = 0
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        self.asked += 1
        return set(range(self.partitions))

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, partition: int | None
    ) -> Any:
        self.sent.append((topic, key, value, partition))
        return None


class _FakeFaustProducer:
    def __init__(self, inner: _FakeKafkaProducer) -> None:
        self.inner = inner

    def _ensure_producer(self) -> _FakeKafkaProducer:
        return self.inner


class _FakeApp:
    def __init__(self, inner: _FakeKafkaProducer) -> None:
        self.producer = _FakeFaustProducer(inner)


def _runtime(inner: _FakeKafkaProducer) -> Runtime:
    return Runtime(
        Settings(_env_file=None),  # type: ignore[call-arg]
        topics={},
        app=_FakeApp(inner),
        topic_names={"predictions": "p"},
    )


def _kafka_partition(key: bytes, n: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % n


def test_keys_go_to_kafkas_default_partition_and_the_topic_is_asked_once() -> None:
    inner = _FakeKafkaProducer(partitions=4)
    rt = _runtime(inner)
    keys = [f"key-{i}".encode() for i in range(50)]

    async def run() -> None:
        for key in keys * 2:
            await rt.send("predictions", key, b"v")

    asyncio.run(run())
    assert [p for _, _, _, p in inner.sent] == [_kafka_partition(k, 4) for k in keys * 2]
    assert len({p for _, _, _, p in inner.sent}) == 4
    assert inner.asked == len(keys)  # once per key, then from memory


def test_explicit_partition_and_keyless_records_pass_through() -> None:
    inner = _FakeKafkaProducer(partitions=4)
    rt = _runtime(inner)

    async def run() -> None:
        await rt.send("predictions", b"k", b"v", 3)
        await rt.send("predictions", None, b"v")

    asyncio.run(run())
    assert [p for _, _, _, p in inner.sent] == [3, None]
    assert inner.asked == 0


def test_forgotten_partitions_follow_a_grown_topic() -> None:
    inner = _FakeKafkaProducer(partitions=4)
    rt = _runtime(inner)
    key = next(
        k
        for k in (f"k{i}".encode() for i in range(100))
        if _kafka_partition(k, 4) != _kafka_partition(k, 8)
    )

    async def send() -> int | None:
        await rt.send("predictions", key, b"v")
        return inner.sent[-1][3]

    assert asyncio.run(send()) == _kafka_partition(key, 4)
    inner.partitions = 8
    assert asyncio.run(send()) == _kafka_partition(key, 4)  # remembered
    rt.forget_partitions()
    assert asyncio.run(send()) == _kafka_partition(key, 8)


def test_long_keys_are_partitioned_but_not_remembered() -> None:
    inner = _FakeKafkaProducer(partitions=4)
    rt = _runtime(inner)
    key = b"x" * 1000

    async def run() -> None:
        for _ in range(3):
            await rt.send("predictions", key, b"v")

    asyncio.run(run())
    assert [p for _, _, _, p in inner.sent] == [_kafka_partition(key, 4)] * 3
    assert inner.asked == 3
