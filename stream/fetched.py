"""Records handed to an agent in per-partition batches straight from Faust's fetch.

Faust turns each fetched record into a Message, an Event, a conductor delivery, a stream step
with its sensors and an ack: 55 to 80 us per record (docs/batches.md). The worker's direct fetch
(:mod:`stream.direct_fetch`; with ``ALPHAPULSE_DIRECT_FETCH=false``, its Faust fetch loop in
:mod:`stream._faust_consumer`) instead hands the records of a topic routed here, as the fetch
brought them, to a Faust channel as one :class:`Batch` per partition; the agent that iterates
the channel stays a Faust agent and takes one value per batch. Faust still subscribes the topic,
assigns its partitions and seeks them on a rebalance; what the agent acks it acks for the whole
batch at once (:func:`ack_batch`), and offsets are committed by Faust's commit loop as before.

A channel's queue is cleared when Faust resumes the flow after a rebalance, as a topic's queue
is: batches fetched before it are fetched again from the committed offsets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from faust.types.tuples import ack_lock

__all__ = [
    "BATCH_QUEUE_MAX",
    "Batch",
    "BatchRoutes",
    "Record",
    "ack_batch",
    "batch_routes",
    "current_batches",
    "to_records",
]

_ATTR = "_alphapulse_batch_routes"  # on the Faust app: its BatchRoutes

BATCH_QUEUE_MAX = 64
"""Batches a channel holds before the fetch loop waits for its agent (the backpressure that a
topic's queue of ``stream_buffer_maxsize`` events gives Faust's own path)."""


@dataclass(slots=True)
class Record:
    """One fetched record, with the attributes of a Faust message that the agents read.

    Not frozen: one is made per record fetched, and a frozen dataclass takes about four times as
    long to make. Nothing assigns to a record once made."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float
    """Seconds since the epoch, as Faust's messages give it."""


@dataclass(slots=True)
class Batch:
    """The records of one partition from one fetch, in offset order."""

    topic: str
    partition: int
    records: Sequence[Record]
    generation: int
    """Faust's consumer generation when it was fetched; a later rebalance makes it stale."""

    @property
    def first_offset(self) -> int:
        """Offset of the first record."""
        return self.records[0].offset

    @property
    def last_offset(self) -> int:
        """Offset of the last record."""
        return self.records[-1].offset


def to_records(topic: str, partition: int, fetched: Sequence[Any]) -> list[Record]:
    """:class:`Record` s of aiokafka ``ConsumerRecord`` s (their timestamps in ms).

    >>> from types import SimpleNamespace as R
    >>> to_records("s", 2, [R(offset=7, key=b"k", value=b"v", timestamp=1500)])
    [Record(topic='s', partition=2, offset=7, key=b'k', value=b'v', timestamp=1.5)]
    """
    return [
        Record(topic, partition, r.offset, r.key, r.value, (r.timestamp or 0) / 1000.0)
        for r in fetched
    ]


Deliver = Callable[[Batch], Awaitable[None]]


class _OfTopic(Protocol):
    @property
    def topic(self) -> str: ...


TPKey = TypeVar("TPKey", bound=_OfTopic)
"""A topic partition, as aiokafka or Faust names it."""


class BatchRoutes:
    """Topics whose records go to a channel in batches, and the channel of each.

    Examples
    --------
    >>> routes = BatchRoutes()
    >>> routes.channel_of("signals") is None
    True
    >>> routes.route("signals", "a channel")
    >>> routes.channel_of("signals"), sorted(routes.topics)
    ('a channel', ['signals'])
    """

    def __init__(self) -> None:
        self._channels: dict[str, Any] = {}
        self._first: set[str] = set()
        self.direct = False
        """Fetched on the agents' loop (:mod:`stream.direct_fetch`), not by Faust's fetcher."""

    @property
    def topics(self) -> frozenset[str]:
        """The routed topic names."""
        return frozenset(self._channels)

    def route(self, topic: str, channel: Any, *, first: bool = False) -> None:
        """Send the batches of ``topic`` to the Faust ``channel``; with ``first``, before the
        other topics' batches of the same fetch."""
        self._channels[topic] = channel
        if first:
            self._first.add(topic)

    def in_order(self, fetched: Mapping[TPKey, list[Any]]) -> list[tuple[TPKey, list[Any]]]:
        """The partitions of one fetch and their records, those of ``first`` topics first and
        otherwise in fetch order. An agent woken first runs first, so a request fetched with
        outcomes is answered before they are learned.

        >>> from aiokafka import TopicPartition as TP
        >>> routes = BatchRoutes()
        >>> routes.route("signals", "a channel", first=True)
        >>> [tp.topic for tp, _ in routes.in_order({TP("outcomes", 0): [1], TP("signals", 0): [2]})]
        ['signals', 'outcomes']
        """
        return sorted(fetched.items(), key=lambda item: item[0].topic not in self._first)

    def channel_of(self, topic: str) -> Any:
        """The channel of ``topic``; None when its records go through Faust one by one."""
        return self._channels.get(topic)


def batch_routes(app: Any) -> BatchRoutes:
    """The :class:`BatchRoutes` of the Faust ``app`` (made on first use).

    The fetch loop finds them through its consumer's app; they live on the app so that two apps
    in one process (tests, the benchmark) keep theirs apart.
    """
    routes = getattr(app, _ATTR, None)
    if routes is None:
        routes = BatchRoutes()
        setattr(app, _ATTR, routes)
    return routes


def ack_batch(app: Any, batch: Batch) -> None:
    """Acknowledge every record of ``batch``, as acking each of its events one by one would.

    Faust's commit loop then commits the partition's offset past the batch (after flushing the
    producer, so answers sent for the batch are delivered first). Offsets below the committed
    one, from a batch fetched before a rebalance, are left out, as Faust's own ack does.
    """
    consumer = app.consumer
    tp = consumer._new_topicpartition(batch.topic, batch.partition)
    committed = consumer._committed_offset[tp]
    first = batch.first_offset if committed is None else max(batch.first_offset, committed)
    offsets = range(first, batch.last_offset + 1)
    if not offsets:
        return
    with ack_lock:  # as Faust's own ack: the bookkeeping is one step
        index = consumer._acked_index[tp]
        fresh = [o for o in offsets if o not in index] if index else list(offsets)
        index.update(fresh)
        consumer._acked[tp].extend(fresh)
        consumer._n_acked += len(fresh)


async def current_batches(app: Any, stream: Any) -> AsyncIterator[Batch]:
    """The batches of an agent's channel ``stream``, without those fetched before the latest
    rebalance: their records are fetched again from the committed offsets, as Faust skips the
    events of an older generation."""
    async for batch in stream:
        if batch.generation == app.consumer_generation_id:
            yield batch
