"""Rolling prequential metrics per component: what each model said before the outcome was known.

>>> w = ComponentMonitor(window=3)
>>> w.update({"online": 0.8, "blend": 0.7}, True)
>>> w.update({"online": 0.3, "blend": 0.4}, False)
>>> w.metrics()["online"].accuracy
1.0
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from models.errors import ConfigError
from models.metrics import RollingMetrics, rolling_metrics

__all__ = ["ComponentMonitor"]


class ComponentMonitor:
    """A window of ``(label, probability)`` pairs for each component name.

    Parameters
    ----------
    window
        How many recent outcomes each component's metrics cover.
    """

    def __init__(self, window: int = 500) -> None:
        if window < 1:
            raise ConfigError(f"window must be at least 1, got {window}")
        self.window = window
        self._pairs: dict[str, deque[tuple[bool, float]]] = {}

    def update(self, probabilities: Mapping[str, float], label: bool) -> None:
        """Record what each component predicted for an outcome whose label is now known."""
        for name, p in probabilities.items():
            pairs = self._pairs.get(name)
            if pairs is None:
                pairs = self._pairs[name] = deque(maxlen=self.window)
            pairs.append((bool(label), float(p)))

    def metrics(self) -> dict[str, RollingMetrics]:
        """Metrics by component name."""
        return {name: rolling_metrics(pairs) for name, pairs in self._pairs.items()}
