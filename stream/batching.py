"""Micro-batches of a Faust stream's queued events, and answers sent in few Kafka batches that do
not linger.

Shared by the predictor agent and the benchmark's floor agent (:mod:`bench._noop`), so that the
floor answers the way the worker does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import TopicPartition

__all__ = ["micro_batches", "queued", "send_batches"]


def queued(stream: Any) -> int:
    """Events already waiting in ``stream``'s queue (0 when the queue cannot be seen).

    >>> queued(object())
    0
    """
    queue = getattr(getattr(stream, "channel", None), "queue", None)
    try:
        return int(queue.qsize()) if queue is not None else 0
    except (AttributeError, TypeError, NotImplementedError):
        return 0


async def micro_batches(stream: Any, max_batch: int) -> AsyncIterator[list[Any]]:
    """Lists of ``stream``'s events: each next event, with those already queued behind it.

    A batch never waits for events to arrive: an event that arrives alone is a batch of one. Nor
    does it take events that arrive while it is being taken: Faust's stream yields to the event
    loop for every event it hands out and the fetch loop queues more meanwhile, so such a batch
    would keep growing under steady traffic while its first event waits (docs/benchmarks.md).
    """
    events = stream.events().__aiter__()
    while True:
        try:
            batch = [await events.__anext__()]
        except StopAsyncIteration:
            return
        size = 1 + min(queued(stream), max_batch - 1)
        while len(batch) < size and queued(stream) > 0:
            batch.append(await events.__anext__())
        yield batch


async def send_batches(
    producer: Any, topic: str, records: Iterable[tuple[int, bytes | None, bytes]]
) -> list[Any]:
    """Send ``(partition, key, value)`` records to ``topic``, in order per partition, in as few
    Kafka batches as the producer takes.

    ``producer`` is an aiokafka producer, which has one produce request in flight per broker.
    A partition's records join its batch still waiting in the producer's queue for that request
    to end, when there is one with room; else they form a new batch, queued open and without the
    producer's linger. It leaves as soon as the connection is free, and answers sent until then
    join it: a call does not wait for the broker, and under heavy load the answers gathered
    meanwhile leave together in the next request. A call waits only for room behind a full
    batch. The batches are in the producer's queue, so a flush of the producer covers them.
    Returns the delivery future of each batch used.
    """
    accumulator = producer._message_accumulator
    by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
    for partition, key, value in records:
        by_partition.setdefault(partition, []).append((key, value))
    futures: list[Any] = []
    for partition, items in by_partition.items():
        tp = TopicPartition(topic, partition)
        i = 0
        waiting = _waiting_batch(accumulator, tp)
        if waiting is not None:
            while i < len(items) and _append(waiting._builder, items[i]):
                i += 1
            if i:
                waiting._linger_time = 0.0  # it may be a send()'s, which would linger
                futures.append(asyncio.shield(waiting.future))
        while i < len(items):
            builder = producer.create_batch()
            _append(builder, items[i])  # an empty batch takes any record, however large
            i += 1
            while i < len(items) and _append(builder, items[i]):
                i += 1
            full = i < len(items)
            if full:
                builder.close()  # closed: it leaves without lingering, and takes nothing more
            futures.append(await producer.send_batch(builder, topic, partition=partition))
            if not full:
                _no_linger(accumulator, tp, builder)
    return futures


def _append(builder: Any, item: tuple[bytes | None, bytes]) -> bool:
    """Add a record to an aiokafka ``BatchBuilder``; False when it is full or closed."""
    return builder.append(key=item[0], value=item[1], timestamp=None) is not None


def _waiting_batch(accumulator: Any, tp: TopicPartition) -> Any:
    """The last batch of ``tp`` in an aiokafka producer's queue, not yet taken for a request
    (its sequence numbers are set when it is taken, so records join only before); or None."""
    queue = accumulator._batches.get(tp)
    return queue[-1] if queue else None


def _no_linger(accumulator: Any, tp: TopicPartition, builder: Any) -> None:
    """Let the batch just queued for ``builder`` leave as soon as the connection is free while it
    stays open (aiokafka holds an open batch for the producer's linger, a closed one not)."""
    batch = _waiting_batch(accumulator, tp)
    if batch is not None and batch._builder is builder:
        batch._linger_time = 0.0
    else:
        builder.close()
