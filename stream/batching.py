"""Micro-batches of a Faust stream's queued events, and answers sent as one Kafka batch each.

Shared by the predictor agent and the benchmark's floor agent (:mod:`bench._noop`), so that the
floor answers the way the worker does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

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
    """Send ``(partition, key, value)`` records as one closed batch per partition, in order.

    ``producer`` is an aiokafka producer. A closed batch leaves as soon as the connection to its
    broker is free, without waiting out the producer's linger, and records sent meanwhile gather
    into the next call's batches: answers leave at once under light load and in large requests
    under heavy load. A call waits only while an earlier batch of the same partition has not left
    yet. The batches join the producer's queue, so a flush of the producer covers them. Returns
    the delivery future of each batch sent.
    """
    builders: dict[int, Any] = {}
    futures: list[Any] = []
    for partition, key, value in records:
        builder = builders.get(partition)
        if builder is None:
            builder = builders[partition] = producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:
            builder.close()  # full: send it, and start the next batch with this record
            futures.append(await producer.send_batch(builder, topic, partition=partition))
            builder = builders[partition] = producer.create_batch()
            builder.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
    for partition, builder in builders.items():
        builder.close()
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    return futures
