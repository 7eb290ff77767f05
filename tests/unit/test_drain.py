"""The direct-delivery fetch loop's fallback: finishing a delivery that blocked part-way."""

from __future__ import annotations

import asyncio

import pytest
from faust.transport.consumer import Consumer

from stream import _drain


async def _blocks_then_returns(gate: asyncio.Event, log: list[str]) -> str:
    log.append("started")
    await gate.wait()
    log.append("resumed")
    return "done"


def test_finish_runs_a_delivery_that_blocked_to_the_end() -> None:
    async def main() -> tuple[str, list[str]]:
        gate = asyncio.Event()
        log: list[str] = []
        delivery = _blocks_then_returns(gate, log)
        pending = delivery.send(None)  # first step, as the fetch loop runs it: blocks on the gate
        assert log == ["started"]
        task = asyncio.ensure_future(_drain.finish(delivery, pending))
        await asyncio.sleep(0.01)
        assert not task.done()
        gate.set()
        return await task, log

    result, log = asyncio.run(main())
    assert result == "done"
    assert log == ["started", "resumed"]


def test_cancelling_the_fallback_cancels_the_delivery() -> None:
    async def main() -> list[str]:
        log: list[str] = []

        async def delivery_body() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                log.append("delivery cancelled")
                raise

        delivery = delivery_body()
        pending = delivery.send(None)
        task = asyncio.ensure_future(_drain.finish(delivery, pending))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return log

    assert asyncio.run(main()) == ["delivery cancelled"]


def test_an_error_after_blocking_reaches_the_caller() -> None:
    async def main() -> None:
        async def delivery_body() -> None:
            await asyncio.sleep(0)
            raise ValueError("bad record")

        delivery = delivery_body()
        pending = delivery.send(None)
        await _drain.finish(delivery, pending)

    with pytest.raises(ValueError, match="bad record"):
        asyncio.run(main())


def test_install_and_uninstall_swap_faust_fetch_loop() -> None:
    original = Consumer._drain_messages
    try:
        _drain.install()
        assert Consumer._drain_messages is _drain._drain_messages
        _drain.install()  # twice is harmless
        assert Consumer._drain_messages is _drain._drain_messages
    finally:
        _drain.uninstall()
    assert Consumer._drain_messages is original
