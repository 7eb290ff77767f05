"""Writing the learner's checkpoints, and acking the events they cover once they are delivered.

The learner does not ack an outcome event when it has learned it: the event waits in
``PartitionState.pending`` until :func:`checkpoint` has written a checkpoint that covers it, and is
acked (and so committed by Faust) only once that checkpoint is delivered. The committed offsets
therefore never run ahead of the saved state.

Learning goes on while a checkpoint is delivered: the acks run in a task per checkpoint
(:func:`settle` waits for them). Only a delta waits, and only for the full checkpoint it extends,
whose offset in the checkpoints topic it names. A checkpoint that is not delivered leaves its
events to the next one; if it was the newest full one, the next one is full too, since no delta
may name it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from agents.state.checkpoints import checkpoint_key, full_checkpoint_due, take_checkpoint
from agents.state.partitions import PartitionState, PartitionStore
from stream.runtime import Runtime

__all__ = ["ENCODE_INLINE_IDS", "checkpoint", "settle"]

log = logging.getLogger(__name__)

ENCODE_INLINE_IDS = 20_000
"""Checkpoints with more seen ids than this are encoded in a thread, so that encoding a large
full checkpoint does not hold up the event loop."""


async def checkpoint(rt: Runtime, store: PartitionStore, st: PartitionState, stream: Any) -> None:
    """Write a checkpoint of ``st`` (full, or a delta of the last full one) to the checkpoints
    topic; the events it covers are acked on ``stream`` once it is delivered, in a task (see
    :func:`settle`).

    Nothing is written when ``st`` has nothing new, or when its partition was revoked meanwhile
    (its new owner recovers from the last checkpoint).
    """
    async with st.checkpointing:
        if not st.pending and not st.dirty:
            return
        if store.get(st.partition) is not st:
            return
        keyed = st.keyed
        new_ids = keyed.ids_added - st.ids_at_base
        full = full_checkpoint_due(new_ids, len(keyed.seen))
        if not full and st.full_in_flight is not None:
            await st.full_in_flight  # sets base_offset, or clears it if not delivered
        full = full or st.base_offset is None
        taken = take_checkpoint(
            st.next_offset, keyed, None if full else st.base_offset, new_ids, st.waiting_section()
        )
        ids_added = keyed.ids_added
        events, st.pending, st.dirty = st.pending, [], False
        st.last_checkpoint = time.monotonic()
        if len(taken.state.ids) > ENCODE_INLINE_IDS:
            # Learning goes on meanwhile: events from now on wait for the next checkpoint.
            data = await asyncio.get_running_loop().run_in_executor(None, taken.encode)
            if store.get(st.partition) is not st:
                return  # revoked while encoding, as above
        else:
            data = taken.encode()
        key = checkpoint_key(st.partition, delta=not full)
        fut = await rt.send_now("checkpoints", key, data, st.partition)
        rt.count("checkpoints")
        if full:
            st.ids_at_base = ids_added
        _deliver_later(fut, full, store, st, stream, events)


def _deliver_later(
    fut: Any, full: bool, store: PartitionStore, st: PartitionState, stream: Any, events: list[Any]
) -> None:
    """Start the task that acks ``events`` once the checkpoint ``fut`` is delivered
    (:func:`_on_delivery`); a full checkpoint's task is ``st.full_in_flight`` until then."""
    task = asyncio.ensure_future(_on_delivery(fut, full, store, st, stream, events))
    if full:
        st.full_in_flight = task
    st.acking.add(task)
    task.add_done_callback(st.acking.discard)


async def _on_delivery(
    fut: Any, full: bool, store: PartitionStore, st: PartitionState, stream: Any, events: list[Any]
) -> None:
    """Ack ``events`` once the checkpoint ``fut`` is delivered; a full one becomes the base of the
    next deltas. If it is not delivered, the next checkpoint covers the events (a full one, if
    this was the newest full one: no delta may name it)."""
    try:
        meta = await fut
    except Exception as exc:  # any failure to deliver is handled the same way
        log.warning(
            "checkpoint of partition %d not delivered (%s): retried",
            st.partition,
            exc,
            extra={"partition": st.partition},
        )
        st.pending[:0] = events
        st.dirty = True
        if full and st.full_in_flight is asyncio.current_task():
            st.base_offset, st.full_in_flight = None, None
        return
    if full and st.full_in_flight is asyncio.current_task():
        st.base_offset, st.full_in_flight = meta.offset, None
    if store.get(st.partition) is st:  # else revoked: the new owner recovers and skips these
        for event in events:
            await stream.ack(event)


async def settle(st: PartitionState) -> None:
    """Wait until the events of every checkpoint sent so far are acked (or re-queued).

    >>> from models.keyed import KeyedOnline
    >>> st = PartitionState(0, 0, KeyedOnline())
    >>> asyncio.run(settle(st))
    """
    while st.acking:
        await asyncio.gather(*st.acking)
