"""How many signal requests wait for the predictor: the predictor reports, the learner reads.

The composition root makes one :class:`SignalBacklog` per worker and hands it to both agents. The
learner gives way to the predictor while requests wait (:func:`agents.turns.give_way`): an
outcome can wait, a request's answer cannot.
"""

from __future__ import annotations

from typing import Any

from stream.batching import queued

__all__ = ["SignalBacklog"]


class SignalBacklog:
    """The signal requests queued for the predictor agent, as far as they need CPU.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> backlog = SignalBacklog()
    >>> backlog.pending()  # no predictor stream yet
    0
    >>> queue = SimpleNamespace(qsize=lambda: 3)
    >>> backlog.watch(SimpleNamespace(channel=SimpleNamespace(queue=queue)))
    >>> backlog.pending()
    3
    >>> backlog.delivering = True  # answers wait for the producer: no CPU needed meanwhile
    >>> backlog.pending()
    0
    """

    def __init__(self) -> None:
        self._stream: Any = None
        self.delivering = False
        """True while the predictor waits for its answers to be sent."""

    def watch(self, stream: Any) -> None:
        """Count the events queued in the predictor's Faust ``stream`` from now on."""
        self._stream = stream

    def pending(self) -> int:
        """Requests waiting for the predictor; 0 while it waits for the producer, whose requests
        need no CPU, so the learner may go on."""
        if self._stream is None or self.delivering:
            return 0
        return queued(self._stream)
