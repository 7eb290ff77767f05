"""The direct fetch's bookkeeping against Faust's state (the broker side is in
tests/integration/test_batches.py and every worker test)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from faust.types import TP

from stream import _faust_consumer as fc
from stream.direct_fetch import DirectFetch, direct_fetch_of
from stream.fetched import Batch, batch_routes


@dataclass
class _Rec:
    offset: int
    key: bytes = b"k"
    value: bytes = b"{}"
    timestamp: int = 0


@dataclass
class _FaustConsumer:
    assigned: set[TP]
    flow_active: bool = True
    gaps: list[tuple[TP, int, int]] = field(default_factory=list)

    def assignment(self) -> set[TP]:
        return self.assigned

    def _new_topicpartition(self, topic: str, partition: int) -> TP:
        return TP(topic, partition)

    async def _add_gap(self, tp: TP, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))


class _Channel:
    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def put(self, batch: Batch) -> None:
        self.batches.append(batch)


class _App:
    def __init__(self, assigned: set[TP]) -> None:
        self.consumer = _FaustConsumer(assigned)
        self.consumer_generation_id = 1


class _Consumer:
    """The aiokafka consumer calls the direct fetch makes."""

    def __init__(self, committed: dict[TopicPartition, int | None]) -> None:
        self._committed = committed
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int | str] = {}
        self.fetches: list[dict[TopicPartition, list[_Rec]]] = []
        self.on_fetch: Any = None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = sorted(tps)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._committed.get(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[tp] = "beginning"

    async def getmany(self, timeout_ms: int) -> dict[TopicPartition, list[_Rec]]:
        if self.on_fetch is not None:
            self.on_fetch()
        return self.fetches.pop(0) if self.fetches else {}


def _direct(assigned: set[TP]) -> tuple[DirectFetch, _App, _Channel]:
    app = _App(assigned)
    channel = _Channel()
    batch_routes(app).route("signals", channel)
    direct = DirectFetch(app, lambda: None, 5)  # type: ignore[arg-type,return-value]
    return direct, app, channel


S0, S1 = TopicPartition("signals", 0), TopicPartition("signals", 1)


def test_it_takes_the_routed_partitions_faust_was_assigned_from_the_committed_offsets() -> None:
    direct, app, _ = _direct({TP("signals", 0), TP("signals", 1), TP("other", 0)})
    assert batch_routes(app).direct and direct_fetch_of(app) is direct
    consumer = _Consumer({S0: 7, S1: None})
    asyncio.run(direct._step(consumer))  # type: ignore[arg-type]
    assert consumer.assigned == [S0, S1]
    assert consumer.positions == {S0: 7, S1: "beginning"}


def test_batches_carry_the_generation_and_offset_gaps_are_acked() -> None:
    direct, app, channel = _direct({TP("signals", 0)})
    consumer = _Consumer({S0: 3})
    consumer.fetches = [{S0: [_Rec(3), _Rec(4)]}, {S0: [_Rec(8)]}]

    async def run() -> None:
        for _ in range(3):  # follow the assignment, then two fetches
            await direct._step(consumer)  # type: ignore[arg-type]

    asyncio.run(run())
    assert [(b.first_offset, b.last_offset, b.generation) for b in channel.batches] == [
        (3, 4, 1),
        (8, 8, 1),
    ]
    assert app.consumer.gaps == [(TP("signals", 0), 5, 8)]


def test_records_fetched_across_a_rebalance_are_not_handed_over() -> None:
    direct, app, channel = _direct({TP("signals", 0)})
    consumer = _Consumer({S0: 0})
    consumer.fetches = [{S0: [_Rec(0)]}]

    def rebalance() -> None:
        app.consumer_generation_id = 2

    async def run() -> None:
        await direct._step(consumer)  # type: ignore[arg-type]
        consumer.on_fetch = rebalance
        await direct._step(consumer)  # type: ignore[arg-type]

    asyncio.run(run())
    assert channel.batches == []
    consumer.positions.clear()
    consumer.on_fetch = None
    asyncio.run(direct._step(consumer))  # type: ignore[arg-type]
    assert consumer.positions == {S0: 0}  # from the committed offset again


def test_nothing_is_fetched_while_faust_has_stopped_the_flow() -> None:
    direct, app, channel = _direct({TP("signals", 0)})
    consumer = _Consumer({S0: 0})
    consumer.fetches = [{S0: [_Rec(0)]}]
    app.consumer.flow_active = False
    asyncio.run(direct._step(consumer))  # type: ignore[arg-type]
    assert consumer.assigned == [] and len(consumer.fetches) == 1 and channel.batches == []


def test_a_consumer_that_cannot_start_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stream.direct_fetch._RETRY_S", 0.0)
    made: list[Any] = []

    class _Starting:
        def __init__(self) -> None:
            self.stopped = False
            made.append(self)

        async def start(self) -> None:
            if len(made) < 3:
                raise KafkaConnectionError("no broker yet")

        async def stop(self) -> None:
            self.stopped = True

    direct, _, _ = _direct({TP("signals", 0)})
    direct._make_consumer = _Starting  # type: ignore[assignment]
    started = asyncio.run(direct._started())
    assert started is made[2] and [c.stopped for c in made] == [True, True, False]


def test_the_direct_consumer_fetches_with_the_worker_s_fetch_sizes() -> None:
    class _Fetcher:
        _fetch_min_bytes = 1
        _fetch_max_wait_ms = 500

    class _Started:
        def __init__(self) -> None:
            self._fetcher = _Fetcher()
            self.stopped = False

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            self.stopped = True

    consumer = _Started()
    app = _App({TP("signals", 0)})
    direct = DirectFetch(app, lambda: consumer, 7, 4096)  # type: ignore[arg-type,return-value]

    async def stop_at_once(_: Any) -> None:
        raise asyncio.CancelledError

    direct._step = stop_at_once  # type: ignore[assignment,method-assign]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(direct.run())
    fetcher = consumer._fetcher
    assert getattr(fetcher, fc._MODES) == ((1, 500), (4096, 7))  # idle, then busy sizes
    assert getattr(fetcher, fc._BUFFERED_WAIT) == 7
    assert consumer.stopped
