"""stream.batching: micro-batches of queued events, and one closed Kafka batch per partition.

The producer is a stand-in that records what it is given; the batches are aiokafka's own
BatchBuilder, so "full" means what it means in the client (pure logic, no broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from stream.batching import micro_batches, queued, send_batches


class _Producer:
    def __init__(self, batch_size: int = 16 * 1024) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, list[bytes], bool]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0, is_transactional=False)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> int:
        values = [bytes(r.value) for r in _records(batch)]
        self.sent.append((topic, partition, values, batch._closed))
        return len(self.sent)  # stands for the batch's delivery future


def _records(batch: BatchBuilder) -> list[Any]:
    from aiokafka.record.default_records import DefaultRecordBatch

    buf = batch._buffer if batch._buffer is not None else batch._builder.build()
    return list(DefaultRecordBatch(bytes(buf)))


def test_one_closed_batch_per_partition_in_order() -> None:
    producer = _Producer()
    records = [(i % 3, b"k", f"v{i}".encode()) for i in range(10)]
    asyncio.run(send_batches(producer, "t", records))
    assert sorted(p for _, p, _, _ in producer.sent) == [0, 1, 2]
    for topic, partition, values, closed in producer.sent:
        assert topic == "t" and closed
        assert values == [f"v{i}".encode() for i in range(10) if i % 3 == partition]


def test_a_full_batch_is_sent_before_the_next_records_and_nothing_is_lost() -> None:
    producer = _Producer(batch_size=300)
    values = [f"{i:03d}".encode() * 20 for i in range(12)]  # 60 bytes each: a few per batch
    futures = asyncio.run(send_batches(producer, "t", [(0, None, v) for v in values]))
    assert len(producer.sent) > 2
    assert futures == list(range(1, len(producer.sent) + 1))  # one per batch, in sending order
    assert [v for _, _, vs, _ in producer.sent for v in vs] == values
    assert all(closed for *_, closed in producer.sent)


def test_a_record_larger_than_a_batch_still_goes() -> None:
    producer = _Producer(batch_size=100)
    big = b"x" * 500
    asyncio.run(send_batches(producer, "t", [(1, b"k", b"a"), (1, b"k", big), (1, b"k", b"b")]))
    assert [v for _, _, vs, _ in producer.sent for v in vs] == [b"a", big, b"b"]


def test_no_records_send_nothing() -> None:
    producer = _Producer()
    asyncio.run(send_batches(producer, "t", []))
    assert producer.sent == []


class _Stream:
    """Events 0..n-1, of which ``arrived`` are queued; the rest arrive one per turn of the loop
    while the queue is empty, and ``during_take`` more while each event is taken."""

    def __init__(self, n: int, arrived: int, during_take: int = 0) -> None:
        self.items = list(range(n))
        self.taken = 0
        self.arrived = arrived
        self.during_take = during_take
        self.channel = self
        self.queue = self

    def qsize(self) -> int:
        return self.arrived - self.taken

    async def _events(self) -> AsyncIterator[int]:
        while self.taken < len(self.items):
            while self.qsize() == 0:
                await asyncio.sleep(0)
                self.arrived += 1
            self.taken += 1
            self.arrived = min(len(self.items), self.arrived + self.during_take)
            yield self.items[self.taken - 1]

    def events(self) -> AsyncIterator[int]:
        return self._events()


def test_queued_events_form_batches_up_to_the_limit() -> None:
    async def run() -> list[list[int]]:
        return [b async for b in micro_batches(_Stream(7, arrived=7), max_batch=3)]

    assert asyncio.run(run()) == [[0, 1, 2], [3, 4, 5], [6]]


def test_an_event_that_arrives_alone_is_a_batch_of_one() -> None:
    async def run() -> list[list[int]]:
        return [b async for b in micro_batches(_Stream(3, arrived=0), max_batch=10)]

    assert asyncio.run(run()) == [[0], [1], [2]]


def test_a_batch_takes_only_the_events_queued_when_it_began() -> None:
    # One event arrives while each is taken (Faust's fetch loop runs at every event handed out):
    # a batch must not grow with them, or its first event waits for all the others.
    async def run() -> list[list[int]]:
        return [b async for b in micro_batches(_Stream(9, 3, during_take=1), max_batch=100)]

    # 3 queued, and 1 more while the first was taken: a batch of 4; the next 3 arrive meanwhile.
    assert asyncio.run(run()) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]


def test_queued_counts_the_channel_queue_or_zero() -> None:
    assert queued(_Stream(5, arrived=4)) == 4
    assert queued(object()) == 0
