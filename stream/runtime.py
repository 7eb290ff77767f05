"""What the agents share inside one worker process: settings, topics, limits, models, counters.

An instance is built once by the composition root (:mod:`stream.app`) and handed to each agent;
there is no module-level state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.monitor import ComponentMonitor
from stream.codec import Limits
from stream.settings import Settings

__all__ = ["Runtime", "Serving"]


@dataclass(frozen=True)
class Serving:
    """The batch models' scorer (:class:`models.scoring.BatchScorer`) and their versions."""

    scorer: Any
    versions: dict[str, int]


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
    monitor: ComponentMonitor = field(default_factory=ComponentMonitor)
    """Rolling metrics of each component and of the blend, from joined outcomes."""
    partitions: Any = None
    """The learner state by partition (:class:`agents._partitions.PartitionStore`)."""
    observers: list[Callable[[str, float], None]] = field(default_factory=list)
    app: Any = None
    """The Faust app, whose producer :meth:`send` uses."""
    topic_names: dict[str, str] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        self.counters[name] += n

    async def send(
        self, role: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> Any:
        """Send to the topic of ``role`` through the app's producer; returns the delivery future.

        This skips Faust's per-message channel machinery, but uses the same producer, which the
        consumer flushes before every offset commit.
        """
        return await self.app.producer.send(
            self.topic_names[role], key, value, partition, None, None
        )

    def observe(self, name: str, value: float) -> None:
        """Report a measurement (e.g. ``predict_latency_s``) to every registered observer."""
        for observer in self.observers:
            observer(name, value)
