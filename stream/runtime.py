"""What the agents share inside one worker process: settings, topics, limits, models, counters.

An instance is built once by the composition root (:mod:`alphapulse.app`) and handed to each agent;
there is no module-level state.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka.partitioner import DefaultPartitioner

from models.monitor import ComponentMonitor
from stream._throttle import LogThrottle
from stream.batching import send_batches
from stream.codec import Limits
from stream.settings import Settings

if TYPE_CHECKING:
    from models.served_ensemble import ServedEnsemble

__all__ = ["Runtime", "Serving"]

_PARTITION_CACHE_MAX = 100_000
_PARTITION_CACHE_KEY_MAX = 256


@dataclass(frozen=True)
class Serving:
    """The batch models' scorer (:class:`models.scoring.BatchScorer`), the fitted ensemble when
    one is loaded, and the versions of both by role (the ensemble's under ``ensemble``)."""

    scorer: Any
    versions: dict[str, int]
    ensemble: ServedEnsemble | None = None


@dataclass
class Runtime:
    """Shared per-process state of a worker.

    >>> from stream.settings import Settings
    >>> rt = Runtime(Settings(_env_file=None), topics={})
    >>> rt.count("deadletter.schema"); rt.counters["deadletter.schema"]
    1
    """

    settings: Settings
    topics: dict[str, Any]
    limits: Limits = field(default_factory=Limits)
    counters: Counter[str] = field(default_factory=Counter)
    serving: Serving = field(default_factory=lambda: Serving(None, {}))
    """The batch models in service; the reloader replaces it in one assignment."""
    champion_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by the reloader's polls and by a promotion with its announcement (agents.promotion)."""
    monitor: ComponentMonitor = field(default_factory=ComponentMonitor)
    """Rolling metrics of each component and of the blend, from joined outcomes."""
    observers: list[Callable[[str, Sequence[float]], None]] = field(default_factory=list)
    """Called with the measurements the agents report: a name and its values
    (:meth:`observe`, :meth:`observe_many`)."""
    app: Any = None
    """The Faust app, whose producer :meth:`send` uses."""
    topic_names: dict[str, str] = field(default_factory=dict)
    log_throttle: LogThrottle = field(default_factory=LogThrottle)
    """Limits repeated per-message log lines (dead letters) by reason."""
    _partition_cache: dict[tuple[str, bytes], int] = field(default_factory=dict, repr=False)
    _partitioner: Any = field(default_factory=DefaultPartitioner, repr=False)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        self.counters[name] += n

    async def send(
        self, role: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> Any:
        """Send to the topic of ``role`` through the app's producer; returns the delivery future.

        This calls the Kafka client under Faust's producer directly (no per-message signals or
        wrappers) and remembers each key's partition, which Kafka's default partitioner would
        otherwise hash again for every message. The producer is the one the consumer flushes
        before every offset commit.
        """
        topic = self.topic_names[role]
        producer = self.app.producer._ensure_producer()
        if partition is None and key is not None:
            partition = await self._partition_of(producer, topic, key)
        return await producer.send(topic, value, key=key, partition=partition)

    async def send_now(self, role: str, key: bytes, value: bytes, partition: int) -> Any:
        """Send one record without waiting out the producer's linger (:func:`send_batches`).

        For records whose delivery the caller awaits; returns the delivery future.
        """
        producer = self.app.producer._ensure_producer()
        (future,) = await send_batches(producer, self.topic_names[role], [(partition, key, value)])
        return future

    async def send_many(self, role: str, records: list[tuple[bytes, bytes]]) -> None:
        """Send keyed records to the topic of ``role``, in as few batches per partition as fit.

        See :func:`stream.batching.send_batches`: under light load they leave at once, without
        the producer's linger; under heavy load they leave in large requests.
        """
        topic = self.topic_names[role]
        producer = self.app.producer._ensure_producer()
        routed = [(await self._partition_of(producer, topic, k), k, v) for k, v in records]
        await send_batches(producer, topic, routed)

    async def _partition_of(self, producer: Any, topic: str, key: bytes) -> int:
        """Kafka's default partition for ``key`` (murmur2, as every Kafka client computes it),
        remembered per key."""
        cached = self._partition_cache.get((topic, key))
        if cached is not None:
            return cached
        parts = sorted(await producer.partitions_for(topic))
        partition = int(self._partitioner(key, parts, parts))
        if len(key) <= _PARTITION_CACHE_KEY_MAX:  # keys are producers' input: bound the memory
            if len(self._partition_cache) >= _PARTITION_CACHE_MAX:
                self._partition_cache.clear()
            self._partition_cache[(topic, key)] = partition
        return partition

    def forget_partitions(self) -> None:
        """Drop the cached key partitions (after a rebalance, when topics may have grown)."""
        self._partition_cache.clear()

    def observe(self, name: str, value: float) -> None:
        """Report a measurement (e.g. ``predict_latency_s``) to every registered observer."""
        self.observe_many(name, (value,))

    def observe_many(self, name: str, values: Sequence[float]) -> None:
        """Report measurements of one name at once (a batch's latencies)."""
        for observer in self.observers:
            observer(name, values)
