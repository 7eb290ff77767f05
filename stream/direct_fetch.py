"""The batch-routed topics fetched on the agents' event loop, by a consumer bound to Faust's
assignment.

Faust runs aiokafka's consumer on a thread of its own: every fetch crosses to it and back, and
while the agents' loop is busy (learning, scoring) that thread waits for the interpreter lock
to handle each reply. Measured at 1,000 signals/s plus 1,000 outcomes/s, this cost the worker
about 1.5 ms at the median and a seventh of its CPU (docs/batches.md). Here a plain aiokafka
consumer on the agents' loop fetches the routed topics (:mod:`stream.fetched`) instead:

- Faust still subscribes them, so the group assigns their partitions as before; its fetcher
  leaves them out of its fetches (:mod:`stream._faust_consumer`).
- The consumer takes no part in the group: it is assigned the routed partitions Faust was
  assigned and starts each at the group's committed offset, again after every rebalance, as
  Faust's seek does. It reads committed records only, as the worker's Faust consumer does.
- Batches go to the same channels, tagged with the consumer generation, and are acked into
  Faust's commit loop (:func:`stream.fetched.ack_batch`) or committed in the learner's
  transactions, as before. Records fetched while a rebalance is under way are dropped and
  fetched again from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from stream._faust_consumer import use_fetch_sizes
from stream.fetched import Batch, BatchRoutes, batch_routes, to_records

__all__ = ["DirectFetch", "direct_fetch_of", "owned_partitions"]

log = logging.getLogger(__name__)

_ATTR = "_alphapulse_direct_fetch"  # on the Faust app
_IDLE_S = 0.01  # while Faust's flow is stopped (a rebalance)
_POLL_MS = 200
_RETRY_S = 1.0


def owned_partitions(assigned: Any, topics: frozenset[str]) -> set[TopicPartition]:
    """The partitions of ``topics`` among Faust's ``assigned`` ones.

    >>> from faust.types import TP
    >>> sorted(owned_partitions({TP("s", 1), TP("o", 0), TP("x", 2)}, frozenset({"s", "o"})))
    [TopicPartition(topic='o', partition=0), TopicPartition(topic='s', partition=1)]
    """
    return {TopicPartition(tp.topic, tp.partition) for tp in assigned if tp.topic in topics}


class DirectFetch:
    """Fetches ``app``'s batch-routed topics with the consumer ``make_consumer`` returns."""

    def __init__(
        self,
        app: Any,
        make_consumer: Callable[[], AIOKafkaConsumer],
        fetch_max_wait_ms: int,
        fetch_min_bytes: int = 1,
    ) -> None:
        self.app = app
        self._fetch_sizes = (fetch_min_bytes, fetch_max_wait_ms)  # as the worker's Faust consumer
        self.routes: BatchRoutes = batch_routes(app)
        self.routes.direct = True  # before Faust's fetcher starts: it never fetches them
        self._make_consumer = make_consumer
        self.consumer: AIOKafkaConsumer | None = None
        self._generation: int | None = None
        self._read: dict[TopicPartition, int] = {}
        setattr(app, _ATTR, self)

    async def run(self) -> None:
        """Fetch and hand over batches until cancelled."""
        consumer = self.consumer = await self._started()
        use_fetch_sizes(consumer._fetcher, *self._fetch_sizes)
        try:
            while True:
                try:
                    await self._step(consumer)
                except KafkaError as exc:  # the broker away or moving: positions are kept
                    log.warning("direct fetch: %s; trying again in %g s", exc, _RETRY_S)
                    await asyncio.sleep(_RETRY_S)
        finally:
            self.consumer = None
            await consumer.stop()

    async def _started(self) -> AIOKafkaConsumer:
        while True:
            consumer = self._make_consumer()
            try:
                await consumer.start()
            except KafkaError as exc:  # the broker not reachable yet
                log.warning("direct fetch: %s; starting again in %g s", exc, _RETRY_S)
                await consumer.stop()
                await asyncio.sleep(_RETRY_S)
            else:
                return consumer

    async def _step(self, consumer: AIOKafkaConsumer) -> None:
        app, faust_consumer = self.app, self.app.consumer
        if not faust_consumer.flow_active:
            self._generation = None
            await asyncio.sleep(_IDLE_S)
            return
        if app.consumer_generation_id != self._generation:
            await self._follow_assignment(consumer)
            return
        generation: int = app.consumer_generation_id
        fetched = await consumer.getmany(timeout_ms=_POLL_MS)
        for tp, records in self.routes.in_order(fetched):
            if not faust_consumer.flow_active or app.consumer_generation_id != generation:
                self._generation = None  # fetched again from the committed offsets
                return
            await self._hand_over(tp, records, generation)

    async def _follow_assignment(self, consumer: AIOKafkaConsumer) -> None:
        generation = self.app.consumer_generation_id
        owned = owned_partitions(self.app.consumer.assignment(), self.routes.topics)
        consumer.assign(list(owned))
        read: dict[TopicPartition, int] = {}
        for tp in owned:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)  # as the worker's auto_offset_reset
            else:
                consumer.seek(tp, committed)
                read[tp] = committed  # as Faust's seek sets its read offset
        self._read = read
        self._generation = generation
        log.debug("direct fetch of %d partitions, generation %s", len(owned), generation)

    async def _hand_over(self, tp: TopicPartition, records: list[Any], generation: int) -> None:
        faust_consumer = self.app.consumer
        last = self._read.get(tp)
        first = records[0].offset
        if last is not None and first - last > 1:
            # Offsets with no record (transaction markers): acked as gaps, as Faust's loop does.
            ftp = faust_consumer._new_topicpartition(tp.topic, tp.partition)
            await faust_consumer._add_gap(ftp, last + 1, first)
        batch = Batch(
            tp.topic,
            tp.partition,
            to_records(tp.topic, tp.partition, records),
            generation,
        )
        await self.routes.channel_of(tp.topic).put(batch)
        self._read[tp] = records[-1].offset


def direct_fetch_of(app: Any) -> DirectFetch | None:
    """The :class:`DirectFetch` of the Faust ``app``, if it has one."""
    return getattr(app, _ATTR, None)
