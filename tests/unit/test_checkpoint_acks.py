"""A checkpoint's events are acked once it is delivered, and re-queued if it is not; a delivered
full checkpoint becomes the base of the deltas after it."""

from __future__ import annotations

import asyncio

import pytest

from agents.state import PartitionState, PartitionStore, settle
from agents.state.checkpointer import _deliver_later
from models.keyed import KeyedOnline
from stream.settings import Settings


class _Stream:
    def __init__(self) -> None:
        self.acked: list[int] = []

    async def ack(self, event: int) -> None:
        self.acked.append(event)


class _Meta:
    offset = 42


async def _deliver(
    outcome: Exception | None, *, full: bool, owned: bool = True
) -> tuple[list[int], PartitionState]:
    store = PartitionStore(Settings(_env_file=None))  # type: ignore[call-arg]
    st = PartitionState(partition=0, next_offset=10, keyed=KeyedOnline(), base_offset=7)
    if owned:
        store.states[0] = st  # else revoked while the checkpoint was in flight
    st.pending = [8, 9]  # events processed after the checkpoint was taken
    stream = _Stream()
    fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    _deliver_later(fut, full, store, st, stream, [5, 6, 7])
    await asyncio.sleep(0)
    assert stream.acked == []  # nothing is acked before the delivery
    if outcome is None:
        fut.set_result(_Meta())
    else:
        fut.set_exception(outcome)
    await settle(st)
    assert not st.acking and st.full_in_flight is None
    return stream.acked, st


@pytest.mark.parametrize("full", [False, True], ids=["delta", "full"])
def test_a_delivered_checkpoint_acks_its_events(full: bool) -> None:
    acked, st = asyncio.run(_deliver(None, full=full))
    assert acked == [5, 6, 7]
    assert st.pending == [8, 9] and not st.dirty
    assert st.base_offset == (42 if full else 7)


@pytest.mark.parametrize("full", [False, True], ids=["delta", "full"])
def test_a_checkpoint_not_delivered_leaves_its_events_to_the_next_one_in_order(full: bool) -> None:
    acked, st = asyncio.run(_deliver(ConnectionError("broker gone"), full=full))
    assert acked == []
    assert st.pending == [5, 6, 7, 8, 9] and st.dirty
    # No delta may name a full checkpoint that was not delivered: the next one is full.
    assert st.base_offset == (None if full else 7)


def test_the_events_of_a_revoked_partition_are_not_acked() -> None:
    acked, _ = asyncio.run(_deliver(None, full=False, owned=False))
    assert acked == []
