"""stream.batching: micro-batches of queued events, and answers sent in as few Kafka batches as
the producer takes.

The producer is a stand-in around aiokafka's own queue (``MessageAccumulator``) with no sender:
what it queues waits there as it does while a produce request is in flight, until the test takes
a request's worth with ``drain_by_nodes``, as the sender would (pure logic, no broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import TopicPartition
from aiokafka.producer.message_accumulator import BatchBuilder, MessageAccumulator
from aiokafka.record.default_records import DefaultRecordBatch

from stream.batching import micro_batches, queued, send_batches


class _Cluster:
    def leader_for_partition(self, tp: TopicPartition) -> int:
        return 0


class _Producer:
    def __init__(self, batch_size: int = 16 * 1024, linger_ms: int = 10_000) -> None:
        # A linger far longer than any test: a batch that is taken at once did not wait it out.
        self._message_accumulator = MessageAccumulator(
            _Cluster(), batch_size, 0, 30, loop=asyncio.get_running_loop(), linger_ms=linger_ms
        )
        self.calls = 0

    def create_batch(self) -> BatchBuilder:
        return self._message_accumulator.create_builder()

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        self.calls += 1
        tp = TopicPartition(topic, partition)
        return await self._message_accumulator.add_batch(batch, tp, 30)

    def request(self) -> dict[int, list[bytes]]:
        """What one produce request would carry now: each partition's first queued batch that
        need not linger, as its values."""
        nodes, _ = self._message_accumulator.drain_by_nodes(ignore_nodes=set())
        return {tp.partition: _values(b) for tp, b in nodes.get(0, {}).items()}


def _values(batch: Any) -> list[bytes]:
    return [bytes(r.value) for r in DefaultRecordBatch(bytes(batch.get_data_buffer()))]


def _run(test: Any) -> Any:
    async def main() -> Any:
        return await test()

    return asyncio.run(main())


def test_one_batch_per_partition_in_order_that_leaves_without_lingering() -> None:
    async def test() -> tuple[dict[int, list[bytes]], list[Any]]:
        producer = _Producer()
        records = [(i % 3, b"k", f"v{i}".encode()) for i in range(10)]
        futures = await send_batches(producer, "t", records)
        return producer.request(), futures

    request, futures = _run(test)
    assert len(futures) == 3
    assert request == {p: [f"v{i}".encode() for i in range(10) if i % 3 == p] for p in range(3)}


def test_answers_sent_while_a_batch_waits_join_it_without_waiting() -> None:
    async def test() -> tuple[int, dict[int, list[bytes]], dict[int, list[bytes]]]:
        producer = _Producer()
        await send_batches(producer, "t", [(0, None, b"a")])
        # The batch has not been taken (a request is in flight): the next answers join it.
        futures = await asyncio.wait_for(
            send_batches(producer, "t", [(0, None, b"b"), (1, None, b"c"), (0, None, b"d")]), 1
        )
        assert len(futures) == 2
        calls = producer.calls
        first = producer.request()
        later = await send_batches(producer, "t", [(0, None, b"e")])  # after it was taken
        assert len(later) == 1
        return calls, first, producer.request()

    calls, first, second = _run(test)
    assert calls == 2  # a queued batch for partition 0, then one for partition 1
    assert first == {0: [b"a", b"b", b"d"], 1: [b"c"]}
    assert second == {0: [b"e"]}


def test_a_full_batch_is_closed_and_nothing_is_lost() -> None:
    async def test() -> list[bytes]:
        producer = _Producer(batch_size=300)
        values = [f"{i:03d}".encode() * 20 for i in range(12)]  # 60 bytes each: a few per batch
        sending = asyncio.ensure_future(send_batches(producer, "t", [(0, None, v) for v in values]))
        got: list[bytes] = []
        while not sending.done() or producer.request():  # take a request's worth at a time
            await asyncio.sleep(0)
            got += producer.request().get(0, [])
        assert producer.calls > 2
        assert len(await sending) == producer.calls  # one future per batch, in sending order
        assert got == values
        return got

    assert len(_run(test)) == 12


def test_a_record_larger_than_a_batch_still_goes() -> None:
    async def test() -> list[bytes]:
        producer = _Producer(batch_size=100)
        big = b"x" * 500
        sending = asyncio.ensure_future(
            send_batches(producer, "t", [(1, b"k", b"a"), (1, b"k", big), (1, b"k", b"b")])
        )
        got: list[bytes] = []
        while not sending.done() or producer.request():
            await asyncio.sleep(0)
            got += producer.request().get(1, [])
        return got

    assert _run(test) == [b"a", b"x" * 500, b"b"]


def test_no_records_send_nothing() -> None:
    async def test() -> tuple[list[Any], int]:
        producer = _Producer()
        return await send_batches(producer, "t", []), producer.calls

    assert _run(test) == ([], 0)


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
