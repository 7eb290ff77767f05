"""The turns in which the learner works through a batch of outcomes, giving way to the predictor.

Answers come first: an outcome can wait, a request's answer cannot. The learner and the predictor
share one event loop, so the learner ends its turn when a request waits for the predictor, or
after :data:`TURN_S` at most, and lets the predictor take what waits (:func:`give_way`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["GIVE_WAY_MAX_S", "TURN_S", "Turns", "give_way"]


TURN_S = 0.00025
"""Longest the learner works through a batch before it lets the event loop run other tasks."""

GIVE_WAY_MAX_S = 0.05
"""Longest the learner waits, per outcome, for the predictor to take the requests queued for it."""


async def give_way(pending: Callable[[], int], limit_s: float = GIVE_WAY_MAX_S) -> None:
    """Let the event loop run other tasks while ``pending()`` is above 0, for at most ``limit_s``.

    ``pending`` is :meth:`agents.backlog.SignalBacklog.pending` in the worker. Faust hands each
    agent one event per turn of the event loop, so without this the predictor would take about
    one queued request per outcome the learner handled, and requests would wait behind outcomes.

    >>> left = [3]
    >>> def pending() -> int:
    ...     left[0] -= 1
    ...     return left[0]
    >>> asyncio.run(give_way(pending)); left[0]
    0
    """
    until = time.perf_counter() + limit_s
    while pending() > 0 and time.perf_counter() < until:
        await asyncio.sleep(0)


class Turns:
    """The turns in which the learner works through a batch: one ends after ``turn_s``, or as
    soon as ``pending()`` requests wait for the predictor; the learner then gives way
    (:func:`give_way`) before its next turn.

    >>> async def learn(pending: Callable[[], int]) -> list[str]:
    ...     order: list[str] = []
    ...     async def answer() -> None:
    ...         order.append("answer")
    ...     turns = Turns(pending, turn_s=60.0)
    ...     turns.start()
    ...     asyncio.ensure_future(answer())
    ...     for outcome in ("o1", "o2"):
    ...         order.append(outcome)
    ...         await turns.between()
    ...     return order
    >>> asyncio.run(learn(lambda: 1))  # a request waits: the first turn ends after one outcome
    ['o1', 'answer', 'o2']
    >>> asyncio.run(learn(lambda: 0))  # nothing waits: the batch in one turn
    ['o1', 'o2', 'answer']
    """

    def __init__(self, pending: Callable[[], int], turn_s: float = TURN_S) -> None:
        self._pending = pending
        self._turn_s = turn_s
        self._until = 0.0

    def start(self) -> None:
        """Begin a turn."""
        self._until = time.perf_counter() + self._turn_s

    async def between(self) -> None:
        """After each outcome: end the turn if it is over, let other tasks run, begin the next."""
        if self._pending() or time.perf_counter() > self._until:
            await asyncio.sleep(0)
            await give_way(self._pending)
            self.start()
