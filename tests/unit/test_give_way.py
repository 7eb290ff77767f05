"""The learner gives way to the predictor while signal requests wait (agents.turns.give_way)."""

from __future__ import annotations

import asyncio
import time

from agents.turns import give_way


def test_returns_at_once_when_nothing_waits() -> None:
    calls = []

    def pending() -> int:
        calls.append(1)
        return 0

    asyncio.run(give_way(pending))
    assert calls == [1]


def test_other_tasks_take_every_waiting_request_before_it_returns() -> None:
    """A stand-in predictor takes one request per turn of the loop, as Faust hands out events."""

    async def scenario() -> list[str]:
        queue = list(range(20))
        order: list[str] = []

        async def predictor() -> None:
            while queue:
                await asyncio.sleep(0)
                queue.pop(0)
                order.append("signal")

        task = asyncio.ensure_future(predictor())
        await asyncio.sleep(0)  # the predictor starts and waits for its next turn
        await give_way(lambda: len(queue))
        order.append("outcome")
        await task
        return order

    order = asyncio.run(scenario())
    assert order == ["signal"] * 20 + ["outcome"]


def test_stops_waiting_after_its_limit() -> None:
    """A predictor that cannot take its requests (blocked elsewhere) does not stop learning."""

    async def scenario() -> float:
        start = time.perf_counter()
        await give_way(lambda: 5, limit_s=0.02)
        return time.perf_counter() - start

    waited = asyncio.run(scenario())
    assert 0.02 <= waited < 5.0
