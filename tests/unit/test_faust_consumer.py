"""The worker's changes to Faust's consumer: the fetch loop's fallback and the fetch sizes."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.consumer.fetcher import Fetcher
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from stream import _faust_consumer as fc
from stream.fetched import BatchRoutes, batch_routes


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
        task = asyncio.ensure_future(fc.finish(delivery, pending))
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
        task = asyncio.ensure_future(fc.finish(delivery, pending))
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
        await fc.finish(delivery, pending)

    with pytest.raises(ValueError, match="bad record"):
        asyncio.run(main())


def test_install_and_uninstall_swap_faust_fetch_loop() -> None:
    original = Consumer._drain_messages
    try:
        fc.install(8192, 5)
        assert Consumer._drain_messages is fc._drain_messages
        fc.install(8192, 5)  # twice is harmless
        assert Consumer._drain_messages is fc._drain_messages
    finally:
        fc.uninstall()
    assert Consumer._drain_messages is original


def test_fetch_sizes_follow_whether_the_last_fetch_brought_records() -> None:
    modes = ((1, 1500), (4096, 7))
    sizes = [fc.next_fetch_sizes(modes, got) for got in (True, True, False, True)]
    assert sizes == [(4096, 7), (4096, 7), (1, 1500), (4096, 7)]


def test_install_patches_and_uninstall_restores_the_fetcher() -> None:
    original = Fetcher._proc_fetch_request
    original_actions = Fetcher._get_actions_per_node
    try:
        fc.install(4096, 7)
        assert Fetcher._proc_fetch_request is fc._proc_fetch_request
        assert Fetcher._get_actions_per_node is fc._get_actions_per_node
    finally:
        fc.uninstall()
    assert Fetcher._proc_fetch_request is original
    assert Fetcher._get_actions_per_node is original_actions
    assert AIOKafkaConsumerThread._create_worker_consumer is fc._ORIGINAL_CREATE


def test_a_marked_fetcher_switches_sizes_and_an_unmarked_one_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def original(self: object, assignment: object, node: object, got: bool) -> bool:
        return got

    class FakeFetcher:
        _fetch_min_bytes = 1
        _fetch_max_wait_ms = 1500

    monkeypatch.setattr(fc, "_ORIGINAL_PROC", original)
    marked, plain = FakeFetcher(), FakeFetcher()
    setattr(marked, fc._MODES, ((1, 1500), (4096, 7)))
    for fetcher in (marked, plain):
        asyncio.run(fc._proc_fetch_request(fetcher, None, None, True))
    assert (marked._fetch_min_bytes, marked._fetch_max_wait_ms) == (4096, 7)
    assert (plain._fetch_min_bytes, plain._fetch_max_wait_ms) == (1, 1500)
    asyncio.run(fc._proc_fetch_request(marked, None, None, False))
    assert (marked._fetch_min_bytes, marked._fetch_max_wait_ms) == (1, 1500)


class _FetcherWithRecords:
    """The two attributes of an aiokafka Fetcher that the wait limit reads."""

    def __init__(self, buffered: bool) -> None:
        self._records = {"tp": object()} if buffered else {}
        self._fetch_max_wait_ms = 1500


@pytest.mark.parametrize(
    ("marked", "buffered", "seen"),
    [(True, True, 5), (True, False, 1500), (False, True, 1500), (False, False, 1500)],
)
def test_fetches_wait_briefly_only_while_a_marked_fetcher_holds_records(
    monkeypatch: pytest.MonkeyPatch, marked: bool, buffered: bool, seen: int
) -> None:
    waits: list[int] = []

    def original(self: _FetcherWithRecords, assignment: object) -> str:
        waits.append(self._fetch_max_wait_ms)
        return "actions"

    monkeypatch.setattr(fc, "_ORIGINAL_ACTIONS", original)
    fetcher = _FetcherWithRecords(buffered)
    if marked:
        fc.limit_waits_while_buffered(fetcher, 5)
    assert fc._get_actions_per_node(fetcher, None) == "actions"
    assert waits == [seen]
    assert fetcher._fetch_max_wait_ms == 1500  # restored for the next fetch


def test_the_wait_is_restored_when_building_the_fetch_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def original(self: _FetcherWithRecords, assignment: object) -> str:
        raise RuntimeError("metadata")

    monkeypatch.setattr(fc, "_ORIGINAL_ACTIONS", original)
    fetcher = _FetcherWithRecords(buffered=True)
    fc.limit_waits_while_buffered(fetcher, 5)
    with pytest.raises(RuntimeError):
        fc._get_actions_per_node(fetcher, None)
    assert fetcher._fetch_max_wait_ms == 1500


class _Assignment:
    """The parts of an aiokafka assignment that building a fetch reads."""

    def __init__(self, tps: set[TP]) -> None:
        self.tps = tps
        self.active = True

    def state_value(self, tp: TP) -> str:
        return f"state of {tp.topic}"


@pytest.mark.parametrize(("direct", "fetched"), [(True, ["outcomes"]), (False, ["outcomes", "s"])])
def test_faust_leaves_directly_fetched_topics_out_of_its_fetches(
    monkeypatch: pytest.MonkeyPatch, direct: bool, fetched: list[str]
) -> None:
    seen: list[list[str]] = []

    def original(self: _FetcherWithRecords, assignment: _Assignment) -> str:
        seen.append(sorted(tp.topic for tp in assignment.tps))
        assert assignment.active and assignment.state_value(TP("x", 0)) == "state of x"
        return "actions"

    monkeypatch.setattr(fc, "_ORIGINAL_ACTIONS", original)
    routes = BatchRoutes()
    routes.route("s", object())
    routes.direct = direct
    fetcher = _FetcherWithRecords(buffered=False)
    setattr(fetcher, fc._ROUTES, routes)
    assert fc._get_actions_per_node(fetcher, _Assignment({TP("s", 0), TP("outcomes", 1)})) == (
        "actions"
    )
    assert seen == [fetched]


def test_faust_does_not_check_the_fetches_of_directly_fetched_topics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    monkeypatch.setattr(fc, "_ORIGINAL_VERIFY", lambda self, now, tp: checked.append(tp.topic))

    class _App:
        pass

    class _Thread:
        consumer = type("C", (), {"app": _App()})()

    routes = batch_routes(_Thread.consumer.app)
    routes.route("s", object())
    for direct in (False, True):
        routes.direct = direct
        fc._verify_event_path(_Thread(), 0.0, TP("s", 0))
        fc._verify_event_path(_Thread(), 0.0, TP("o", 0))
    assert checked == ["s", "o", "o"]
