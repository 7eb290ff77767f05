"""A per-key limit on repeated log lines, so that a flood of bad input cannot flood the log."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["LogThrottle"]


class LogThrottle:
    """Allow at most ``burst`` lines per key in each window of ``window_s`` seconds.

    :meth:`allow` says whether to log this line, and how many lines of the key were held back in
    its previous window (reported once, with the first line of the next window). Past
    ``max_keys`` keys, those whose window has ended with nothing held back are forgotten.

    Examples
    --------
    >>> now = [0.0]
    >>> t = LogThrottle(burst=2, window_s=10.0, clock=lambda: now[0])
    >>> [t.allow("schema") for _ in range(4)]
    [(True, 0), (True, 0), (False, 0), (False, 0)]
    >>> now[0] = 10.5
    >>> t.allow("schema"), t.allow("too_large")
    ((True, 2), (True, 0))
    >>> small = LogThrottle(burst=1, window_s=1.0, clock=lambda: now[0], max_keys=2)
    >>> _ = small.allow("a"), small.allow("b")
    >>> now[0] = 12.0
    >>> small.allow("c"), len(small._windows)
    ((True, 0), 1)
    """

    def __init__(
        self,
        burst: int = 10,
        window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if burst < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("burst and max_keys must be at least 1 and window_s above 0")
        self.burst = burst
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._windows: dict[str, list[float | int]] = {}  # key -> [start, logged, held back]

    def allow(self, key: str) -> tuple[bool, int]:
        """``(log this line?, lines of key held back in its previous window)``."""
        now = self._clock()
        w = self._windows.get(key)
        held = 0
        if w is None or now - w[0] >= self.window_s:
            held = 0 if w is None else int(w[2])
            if w is None and len(self._windows) >= self.max_keys:
                self._forget(now)
            w = self._windows[key] = [now, 0, 0]
        if w[1] < self.burst:
            w[1] += 1
            return True, held
        w[2] += 1
        return False, held

    def _forget(self, now: float) -> None:
        self._windows = {
            k: w for k, w in self._windows.items() if now - w[0] < self.window_s or w[2]
        }
