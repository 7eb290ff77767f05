"""PartitionStore loading: preloads on assignment, no state kept from a revoked partition, and
nothing loaded for a partition this worker does not own.

The Kafka reads are replaced by a load that waits for the test to release it (pure logic).
"""

from __future__ import annotations

import asyncio

import pytest

from agents.state.partitions import PRELOAD_CONCURRENCY, PartitionState, PartitionStore
from models.keyed import KeyedOnline
from stream.settings import Settings


class _Loads:
    """A stand-in for PartitionStore._load that counts loads and waits for ``release``."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.release = asyncio.Event()

    async def __call__(self, partition: int) -> PartitionState:
        self.calls.append(partition)
        await self.release.wait()
        return PartitionState(partition, 7, KeyedOnline())


def _store(loads: _Loads) -> PartitionStore:
    store = PartitionStore(Settings(_env_file=None))
    store._load = loads  # type: ignore[method-assign]
    return store


def test_preload_loads_each_partition_once_and_events_wait_for_it() -> None:
    async def run() -> None:
        loads = _Loads()
        store = _store(loads)
        store.preload({2, 0, 1})
        await asyncio.sleep(0)
        assert sorted(loads.calls) == [0, 1, 2]  # all three started, none finished
        first_event = asyncio.ensure_future(store.ensure(1))
        await asyncio.sleep(0)
        assert not first_event.done()
        loads.release.set()
        st = await first_event
        await asyncio.sleep(0)
        assert sorted(store.states) == [0, 1, 2] and store.states[1] is st
        assert st.next_offset == 7
        store.preload({1, 2})  # already loaded: nothing read again
        await asyncio.sleep(0)
        assert sorted(loads.calls) == [0, 1, 2]

    asyncio.run(run())


def test_preloads_run_a_few_at_a_time_and_an_event_does_not_wait_its_turn() -> None:
    async def run() -> None:
        loads = _Loads()
        store = _store(loads)
        many = set(range(PRELOAD_CONCURRENCY + 3))
        store.preload(many)
        for _ in range(3):
            await asyncio.sleep(0)
        assert loads.calls == list(range(PRELOAD_CONCURRENCY))
        last = max(many)
        event = asyncio.ensure_future(store.ensure(last))  # its preload is still waiting
        await asyncio.sleep(0)
        assert loads.calls[-1] == last
        loads.release.set()
        await event
        for _ in range(10):
            await asyncio.sleep(0)
        assert sorted(store.states) == sorted(many)
        assert sorted(loads.calls) == sorted(many)  # each read once

    asyncio.run(run())


def test_state_loaded_for_a_partition_revoked_meanwhile_is_not_kept() -> None:
    async def run() -> None:
        loads = _Loads()
        store = _store(loads)
        store.preload({3})
        event = asyncio.ensure_future(store.ensure(3))
        await asyncio.sleep(0)
        store.drop({3})  # revoked while its state is read
        loads.release.set()
        st = await event
        assert st.partition == 3  # the event in hand still gets a state to finish with
        assert store.get(3) is None and not st.owned
        store.preload({3})  # assigned again: read anew, not the stale state
        again = await store.ensure(3)
        assert again is not st and loads.calls == [3, 3] and store.get(3) is again

    asyncio.run(run())


def test_a_preload_waiting_its_turn_for_a_partition_revoked_meanwhile_loads_nothing() -> None:
    async def run() -> None:
        loads = _Loads()
        store = _store(loads)
        store.preload(set(range(PRELOAD_CONCURRENCY + 1)))
        await asyncio.sleep(0)
        store.drop({PRELOAD_CONCURRENCY})  # still waiting for a slot
        loads.release.set()
        for _ in range(10):
            await asyncio.sleep(0)
        assert sorted(loads.calls) == list(range(PRELOAD_CONCURRENCY))
        assert store.get(PRELOAD_CONCURRENCY) is None

    asyncio.run(run())


def test_a_failed_preload_is_logged_and_the_first_event_loads_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> None:
        store = PartitionStore(Settings(_env_file=None))
        calls: list[int] = []

        async def failing_once(partition: int) -> PartitionState:
            calls.append(partition)
            if len(calls) == 1:
                raise ConnectionError("broker unreachable")
            return PartitionState(partition, 0, KeyedOnline())

        store._load = failing_once  # type: ignore[method-assign]
        store.preload({0})
        for _ in range(3):
            await asyncio.sleep(0)
        assert store.get(0) is None
        st = await store.ensure(0)
        assert calls == [0, 0] and store.get(0) is st

    asyncio.run(run())
    assert any(
        "preloading the state of partition 0 failed" in r.getMessage() for r in caplog.records
    )


def test_a_late_event_of_a_revoked_partition_keeps_no_state_that_its_next_assignment_skips() -> (
    None
):
    """Issue 25: after a revocation, ``ensure`` (an event still in flight) loaded and kept the
    partition's state, and the next assignment's ``preload`` skipped it as loaded: the worker
    then learned on from a state older than what the partition's owner had meanwhile committed."""

    async def run() -> None:
        store = PartitionStore(Settings(_env_file=None))
        calls: list[int] = []

        async def load(partition: int) -> PartitionState:
            calls.append(partition)
            return PartitionState(partition, len(calls), KeyedOnline())  # offset: which load

        store._load = load  # type: ignore[method-assign]
        store.preload({3})
        await store.ensure(3)
        store.drop({3})  # revoked: another worker learns partition 3 on
        await store.ensure(3)  # an event of partition 3 that was still in flight
        loads_before_assignment = len(calls)
        store.preload({3})  # assigned back
        for _ in range(5):
            await asyncio.sleep(0)
        st = await store.ensure(3)
        assert st.next_offset > loads_before_assignment  # loaded after the new assignment
        assert store.get(3) is st

    asyncio.run(run())


def test_a_partition_not_owned_loads_nothing() -> None:
    async def run() -> None:
        loads = _Loads()
        store = _store(loads)
        st = await store.ensure(5)  # never assigned: loading it would fence its owner
        assert loads.calls == [] and not st.owned and not st.learns and store.get(5) is None

    asyncio.run(run())
