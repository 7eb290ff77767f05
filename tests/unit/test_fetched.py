"""Acking a fetched batch: Faust's ack bookkeeping for every offset of the batch, once."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from stream.fetched import Batch, Record, ack_batch, batch_routes, current_batches


class _Consumer:
    """The attributes of Faust's consumer that acking reads and writes."""

    def __init__(self) -> None:
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._n_acked = 0

    def _new_topicpartition(self, topic: str, partition: int) -> TP:
        return TP(topic, partition)


def _batch(offsets: list[int], partition: int = 1) -> Batch:
    recs = [Record("s", partition, o, None, b"{}", 0.0) for o in offsets]
    return Batch("s", partition, recs, generation=1)


def _app() -> Any:
    return SimpleNamespace(consumer=_Consumer())


def test_every_offset_of_the_batch_is_acked_gaps_included() -> None:
    app = _app()
    # Offsets 12 and 13 hold no record (a transaction's markers, or compacted away).
    ack_batch(app, _batch([10, 11, 14]))
    tp = TP("s", 1)
    assert app.consumer._acked[tp] == [10, 11, 12, 13, 14]
    assert app.consumer._acked_index[tp] == {10, 11, 12, 13, 14}
    assert app.consumer._n_acked == 5


def test_offsets_acked_before_or_below_the_committed_one_are_left_out() -> None:
    app = _app()
    tp = TP("s", 1)
    app.consumer._committed_offset[tp] = 12
    ack_batch(app, _batch([10, 11, 12, 13]))
    ack_batch(app, _batch([13, 14]))  # fetched again after a rebalance
    assert app.consumer._acked[tp] == [12, 13, 14]
    assert app.consumer._n_acked == 3


def test_a_batch_wholly_below_the_committed_offset_acks_nothing() -> None:
    app = _app()
    tp = TP("s", 1)
    app.consumer._committed_offset[tp] = 50
    ack_batch(app, _batch([10, 11]))
    assert app.consumer._acked[tp] == [] and app.consumer._n_acked == 0


def test_partitions_are_acked_apart() -> None:
    app = _app()
    ack_batch(app, _batch([1, 2], partition=0))
    ack_batch(app, _batch([7], partition=3))
    assert app.consumer._acked[TP("s", 0)] == [1, 2]
    assert app.consumer._acked[TP("s", 3)] == [7]


def test_each_app_keeps_its_own_routes() -> None:
    a, b = SimpleNamespace(), SimpleNamespace()
    batch_routes(a).route("signals", "channel-a")
    assert batch_routes(a).channel_of("signals") == "channel-a"
    assert batch_routes(b).channel_of("signals") is None
    assert batch_routes(a) is batch_routes(a)


def test_batches_fetched_before_a_rebalance_are_skipped() -> None:
    app = SimpleNamespace(consumer_generation_id=2)
    old, new = _batch([1]), Batch("s", 1, _batch([2]).records, generation=2)

    async def channel() -> Any:
        for b in (old, new):
            yield b

    async def taken() -> list[Batch]:
        return [b async for b in current_batches(app, channel())]

    assert asyncio.run(taken()) == [new]
