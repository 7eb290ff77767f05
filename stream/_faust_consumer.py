"""Six changes to how Faust drives its Kafka consumer in a worker (figures in docs/benchmarks.md).

1. The fetch loop without a task per message. Faust's ``Consumer._drain_messages`` hands every
   fetched record to the conductor through ``Service.wait_first(callback(message),
   suspend_flow.wait())``, which creates four tasks and an ``asyncio.wait`` per record so that a
   rebalance can interrupt a delivery blocked on a full agent queue. The delivery almost never
   blocks: it decodes the record and puts it on a queue with room. The loop installed here runs
   the delivery directly and falls back to Faust's ``wait_first`` (with the same, partly run,
   delivery) only when it does block, or while the flow is suspended or the consumer stopping.
2. Fetches that wait a little for data while data flows. Faust asks for ``fetch_min_bytes=1``,
   so under load the broker answers a fetch as soon as one record is there and the consumer
   fetches again at once: many small fetches, each costing the broker and this process far more
   than its records. After a fetch that brought records, the next one lets the broker gather up
   to ``ALPHAPULSE_FETCH_MIN_BYTES`` for at most ``ALPHAPULSE_FETCH_MAX_WAIT_MS``; after an empty
   one, it goes back to Faust's long poll (1 byte, 1.5 s), so an idle worker stays idle. The
   default of 1 byte turns this off (Faust's fetches): a larger minimum saves CPU under steady
   traffic but consumes a backlog more slowly. The consumer of :mod:`stream.direct_fetch` uses
   the same sizes (:func:`use_fetch_sizes`).
3. No long poll while fetched records wait. aiokafka sends one fetch at a time per broker, and a
   partition whose fetched records are not consumed yet is left out of the next fetch. When every
   partition with traffic still had records waiting, the next fetch held only idle partitions
   (Faust's ``__assignor-__leader`` topic is always one), the broker held it for Faust's 1.5 s,
   and the busy partitions could not be fetched again until it came back, which showed as
   latencies of seconds. While any fetched records wait, fetches now wait at most
   ``ALPHAPULSE_FETCH_MAX_WAIT_MS``
   (tests/integration/test_fetch_waits.py).

4. Batches for the topics routed to a channel (:mod:`stream.fetched`): their records skip
   Faust's per-record path and reach the channel as one batch per partition and fetch
   (docs/batches.md). Other topics go through Faust one record at a time, as before. When
   :mod:`stream.direct_fetch` fetches the routed topics on the agents' loop, Faust's fetcher
   leaves their partitions out of its fetches and out of its stall checks.

5. A fetch cancelled by its fetcher's close ends quietly. aiokafka's ``Fetcher.close`` cancels
   each pending fetch and then awaits it, so a fetch caught in its back-off (the broker
   unreachable) raised ``CancelledError`` out of the consumer's stop (aiokafka#647): Faust's
   consumer thread then ended without telling the worker, whose stop waited 60 s for it.
6. A stopping worker's last offset commit waits at most :data:`FINAL_COMMIT_S`. Faust's waits
   for the commit in flight, which aiokafka retries for as long as no broker answers; the
   offsets not committed are those of signals answered since the last commit, which the
   partitions' next owner answers again (at least once, as after a crash).

The worker and the benchmark's no-op baseline both install these, so its ratios compare like
with like.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Coroutine, Generator, Iterator
from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from faust.transport.consumer import CONSUMER_FETCHING, Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from stream.fetched import Batch, BatchRoutes, batch_routes, to_records

__all__ = [
    "FINAL_COMMIT_S",
    "finish",
    "install",
    "limit_waits_while_buffered",
    "next_fetch_sizes",
    "uninstall",
]

log = logging.getLogger(__name__)

FINAL_COMMIT_S = 5.0
"""Longest a stopping worker's Faust consumer waits for its last offset commit (note 6)."""

_ORIGINAL_DRAIN = Consumer._drain_messages
_ORIGINAL_CREATE = AIOKafkaConsumerThread._create_worker_consumer
_ORIGINAL_PROC = Fetcher._proc_fetch_request
_ORIGINAL_ACTIONS = Fetcher._get_actions_per_node
_ORIGINAL_VERIFY = AIOKafkaConsumerThread.verify_event_path
_ORIGINAL_END = Consumer.commit_and_end_transactions
_MODES = "_alphapulse_fetch_modes"  # on a worker consumer's fetcher: (idle, busy) sizes
_BUFFERED_WAIT = "_alphapulse_buffered_wait_ms"  # on a worker consumer's fetcher
_ROUTES = "_alphapulse_batch_routes"  # on a worker consumer's fetcher: its app's BatchRoutes


def next_fetch_sizes(
    modes: tuple[tuple[int, int], tuple[int, int]], got_records: bool
) -> tuple[int, int]:
    """``(min_bytes, max_wait_ms)`` of the next fetch: busy sizes after records, else idle ones.

    >>> next_fetch_sizes(((1, 1500), (8192, 5)), got_records=True)
    (8192, 5)
    >>> next_fetch_sizes(((1, 1500), (8192, 5)), got_records=False)
    (1, 1500)
    """
    idle, busy = modes
    return busy if got_records else idle


async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
    try:
        got = await _ORIGINAL_PROC(self, assignment, node_id, request)
    except asyncio.CancelledError:
        if self._closed:  # by close(), which awaits this task next (note 5)
            return False
        raise
    modes = getattr(self, _MODES, None)
    if modes is not None:  # only the fetchers of worker consumers (see install)
        self._fetch_min_bytes, self._fetch_max_wait_ms = next_fetch_sizes(modes, bool(got))
    return got


def limit_waits_while_buffered(fetcher: Any, wait_ms: int) -> None:
    """Make ``fetcher`` (an aiokafka Fetcher) wait at most ``wait_ms`` at the broker while any
    fetched records wait to be consumed (see the module's note 3); needs :func:`install`."""
    setattr(fetcher, _BUFFERED_WAIT, wait_ms)


def use_fetch_sizes(fetcher: Any, fetch_min_bytes: int, fetch_max_wait_ms: int) -> None:
    """Give a started consumer's ``fetcher`` the worker's fetch sizes (the module's notes 2 and
    3); needs :func:`install`. A minimum of 1 byte keeps the consumer's own sizes."""
    limit_waits_while_buffered(fetcher, fetch_max_wait_ms)
    if fetch_min_bytes <= 1:
        return
    # aiokafka 0.14: the fetcher reads these two attributes for every fetch request.
    idle = (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms)
    setattr(fetcher, _MODES, (idle, (fetch_min_bytes, fetch_max_wait_ms)))


class _Without:
    """An aiokafka assignment without the partitions of some topics, for building a fetch."""

    def __init__(self, assignment: Any, topics: frozenset[str]) -> None:
        self._assignment = assignment
        self.tps = {tp for tp in assignment.tps if tp.topic not in topics}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._assignment, name)


def _get_actions_per_node(self: Any, assignment: Any) -> Any:
    routes = getattr(self, _ROUTES, None)
    if routes is not None and routes.direct:
        assignment = _Without(assignment, routes.topics)  # stream.direct_fetch fetches these
    limit = getattr(self, _BUFFERED_WAIT, None)
    if limit is None or not self._records:
        return _ORIGINAL_ACTIONS(self, assignment)
    # Partitions with records waiting are left out of the fetch built now; a long poll on the
    # others would keep them from being fetched again until it returns.
    wait = self._fetch_max_wait_ms
    self._fetch_max_wait_ms = min(wait, limit)
    try:
        return _ORIGINAL_ACTIONS(self, assignment)
    finally:
        self._fetch_max_wait_ms = wait


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Go on running ``coro``, which has already yielded ``pending`` to its (previous) runner."""
    while True:
        try:
            sent = yield pending
        except BaseException as exc:  # forwarded, as a task would (cancellation included)
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    """Await the rest of ``coro`` after its first step yielded ``pending``.

    >>> async def two_steps() -> int:
    ...     await asyncio.sleep(0)
    ...     return 7
    >>> c = two_steps()
    >>> first = c.send(None)  # the first step: it yields to the event loop
    >>> asyncio.run(finish(c, first))
    7
    """
    return await _resume(coro, pending)


def _split(
    records: dict[Any, list[Any]], routes: BatchRoutes
) -> tuple[dict[Any, list[Any]], dict[Any, list[Any]]]:
    """``records`` (by topic partition) as the part routed in batches and the rest.

    >>> from faust.types import TP
    >>> routes = BatchRoutes()
    >>> routes.route("s", object())
    >>> a, b = TP("s", 0), TP("o", 0)
    >>> batched, rest = _split({a: [1, 2], b: [3]}, routes)
    >>> list(batched.values()), list(rest.values())
    ([[1, 2]], [[3]])
    """
    if not routes.topics:
        return {}, records
    batched: dict[Any, list[Any]] = {}
    rest: dict[Any, list[Any]] = {}
    for tp, recs in routes.in_order(records):
        (batched if routes.channel_of(tp.topic) is not None else rest)[tp] = recs
    return batched, rest


async def _deliver(self: Any, delivery: Coroutine[Any, Any, Any]) -> None:  # pragma: no cover
    """Run ``delivery`` (a queue put), through Faust's ``wait_first`` only if it blocks, or
    while the flow is suspended or the consumer stopping (see the module's note 1)."""
    if self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set():
        await self.wait_first(delivery, self.suspend_flow.wait())
        return
    try:
        pending = delivery.send(None)
    except StopIteration:
        return  # delivered without blocking: the usual case
    await self.wait_first(finish(delivery, pending), self.suspend_flow.wait())


async def _deliver_batches(  # pragma: no cover - needs a broker
    self: Any, batched: dict[Any, list[Any]], active: Any, routes: BatchRoutes, generation: int
) -> None:
    """Hand each partition's fetched records to its topic's channel as one :class:`Batch`."""
    acks_enabled_for = self.app.topics.acks_enabled_for
    for tp, recs in batched.items():
        if not self.flow_active or self.app.consumer_generation_id != generation:
            return  # a rebalance began: these are fetched again from the committed offsets
        if active is not None and tp not in active and tp not in self._buffered_partitions:
            continue
        r_offset = self._read_offset[tp]
        if r_offset is not None:
            recs = [r for r in recs if r.offset >= r_offset]
        if not recs:
            continue
        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        first = recs[0].offset
        if r_offset is not None and first - r_offset > 1 and acks_enabled_for(tp.topic):
            await self._add_gap(tp, r_offset + 1, first)
        batch = Batch(tp.topic, tp.partition, to_records(tp.topic, tp.partition, recs), generation)
        await _deliver(self, routes.channel_of(tp.topic).put(batch))
        self._read_offset[tp] = recs[-1].offset


def _one_by_one(  # pragma: no cover - needs a broker
    self: Any, records: dict[Any, list[Any]], active: Any, generation: int
) -> Iterator[tuple[Any, Any]]:
    """``(tp, message)`` of ``records`` as Faust's ``Consumer.getmany`` yields them."""
    to_message = self._to_message
    for tp, record in self.scheduler.iterate(records):
        if not self.flow_active or self.app.consumer_generation_id != generation:
            return
        if active is None or tp in active or tp in self._buffered_partitions:
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, to_message(tp, record)


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - needs a broker
    # Faust's loop (faust/transport/consumer.py, faust-streaming 0.15.3, with its getmany
    # inlined), except for the delivery and the topics routed in batches.
    callback = self.callback
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    routes = batch_routes(self.app)
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            records, active = await self._wait_next_records(1.0)
            generation = self.app.consumer_generation_id
            await self.sleep(0)
            if records and not self.should_stop:
                if not self.flow_active:
                    self.log.dev("getmany called while flow not active. Seek back.")
                    try:
                        await self.perform_seek()
                    except Exception as ex:  # as Faust's getmany: logged, the loop goes on
                        self.log.warning(f"exception performing seek when flow not active {ex}")
                    continue
                batched, rest = _split(records, routes)
                if batched:
                    await _deliver_batches(self, batched, active, routes, generation)
                for tp, message in _one_by_one(self, rest, active, generation):
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        await _deliver(self, callback(message))
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, None, None)
            unset_flag(CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)


def _verify_event_path(self: Any, now: float, tp: Any) -> None:
    routes = batch_routes(self.consumer.app)
    if routes.direct and tp.topic in routes.topics:
        return None  # Faust's fetcher does not fetch these: its stall checks do not apply
    return _ORIGINAL_VERIFY(self, now, tp)


async def _commit_and_end_transactions(self: Any) -> None:
    # Not wait_for: Faust's commit, cancelled while it waits for the one in flight, starts
    # another, and wait_for would wait for that one too.
    task = asyncio.ensure_future(_ORIGINAL_END(self))
    done, _ = await asyncio.wait({task}, timeout=FINAL_COMMIT_S)
    if done:
        task.result()
        return
    task.cancel()
    log.warning(
        "the last offset commit did not finish within %g s (is the broker reachable?); the "
        "signals answered since the commit before it will be answered again by their "
        "partitions' next owner",
        FINAL_COMMIT_S,
    )


def install(fetch_min_bytes: int, fetch_max_wait_ms: int) -> None:
    """Use the direct-delivery fetch loop and these fetch sizes in every Faust worker consumer.

    Idempotent; the last call's fetch sizes apply to consumers created after it.
    """

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = _ORIGINAL_CREATE(self, transport)
        start = consumer.start

        async def start_and_mark() -> None:
            await start()
            fetcher = consumer._fetcher
            setattr(fetcher, _ROUTES, batch_routes(transport.app))
            use_fetch_sizes(fetcher, fetch_min_bytes, fetch_max_wait_ms)

        consumer.start = start_and_mark
        return consumer

    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
    Fetcher._proc_fetch_request = _proc_fetch_request
    Fetcher._get_actions_per_node = _get_actions_per_node
    AIOKafkaConsumerThread.verify_event_path = _verify_event_path  # type: ignore[method-assign]
    Consumer.commit_and_end_transactions = _commit_and_end_transactions  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore Faust's own fetch loop and fetch settings."""
    Consumer._drain_messages = _ORIGINAL_DRAIN  # type: ignore[method-assign]
    AIOKafkaConsumerThread._create_worker_consumer = _ORIGINAL_CREATE  # type: ignore[method-assign]
    Fetcher._proc_fetch_request = _ORIGINAL_PROC
    Fetcher._get_actions_per_node = _ORIGINAL_ACTIONS
    AIOKafkaConsumerThread.verify_event_path = _ORIGINAL_VERIFY  # type: ignore[method-assign]
    Consumer.commit_and_end_transactions = _ORIGINAL_END  # type: ignore[method-assign]
