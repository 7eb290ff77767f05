"""Learner agent: trade outcomes in, online models updated exactly once.

Events are not acknowledged when processed: each partition's processed events wait in
``PartitionState.pending`` until :func:`checkpoint` has written a checkpoint that covers them, and
only then are they acked (and so committed by Faust). Outcomes below a loaded checkpoint's
``next_offset`` are skipped, and outcome ids are deduplicated, so each outcome changes the online
model exactly once across crashes, restarts and rebalances.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from agents._deadletter import send_dead_letter
from agents.state.checkpoints import checkpoint_key, full_checkpoint_due, take_checkpoint
from agents.state.partitions import PartitionState, PartitionStore, join_fields, join_ts
from models.keyed import log_loss
from stream.codec import ContractViolation, decode_outcome, encode, now_ms
from stream.records import HardExample, ModelEvent, TradeOutcome
from stream.runtime import Runtime

__all__ = ["checkpoint", "is_hard_example", "register", "settle"]

log = logging.getLogger(__name__)

_ENCODE_INLINE_IDS = 20_000
"""Checkpoints with more seen ids than this are encoded in a thread. A full checkpoint of 200,000
ids took 9-34 ms (median 12) to take and encode on the event loop; with the encoding in a thread
the loop waited 6-14 ms (median 7), for the taking and the thread's turns with the GIL."""


def is_hard_example(prediction: float, label: bool, confidence: float) -> bool:
    """True when ``prediction`` was confidently wrong about ``label``.

    >>> is_hard_example(0.9, False, 0.8), is_hard_example(0.1, True, 0.8)
    (True, True)
    >>> is_hard_example(0.6, False, 0.8)
    False
    """
    return prediction >= confidence if not label else prediction <= 1.0 - confidence


async def checkpoint(rt: Runtime, store: PartitionStore, st: PartitionState, stream: Any) -> None:
    """Write a checkpoint of ``st`` (full, or a delta of the last full one); the events it covers
    are acked once it is delivered, in a task (see :func:`settle`).

    Learning goes on while a checkpoint is delivered: waiting for each delivery took about a
    tenth of the learner's time on a backlog (14 to 17 ms per checkpoint). Only a delta waits, and
    only for the full checkpoint it extends, whose offset it names.
    """
    async with st.checkpointing:
        if not st.pending and not st.dirty:
            return
        if store.get(st.partition) is not st:
            return  # partition revoked meanwhile: its new owner recovers from the last checkpoint
        keyed = st.keyed
        new_ids = keyed.ids_added - st.ids_at_base
        full = full_checkpoint_due(new_ids, len(keyed.seen))
        if not full and st.full_in_flight is not None:
            await st.full_in_flight  # sets base_offset, or clears it if not delivered
        full = full or st.base_offset is None
        taken = take_checkpoint(st.next_offset, keyed, None if full else st.base_offset, new_ids)
        ids_added = keyed.ids_added
        events, st.pending, st.dirty = st.pending, [], False
        st.last_checkpoint = time.monotonic()
        if len(taken.state.ids) > _ENCODE_INLINE_IDS:
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
        log.warning("checkpoint of partition %d not delivered (%s): retried", st.partition, exc)
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
    """Wait until the events of every checkpoint sent so far are acked (or re-queued)."""
    while st.acking:
        await asyncio.gather(*st.acking)


async def _learn(rt: Runtime, st: PartitionState, msg: Any, out: TradeOutcome) -> None:
    entry = st.join.get(out.signal_id)
    joined_features, score, components = None, None, None
    if entry is not None:
        joined_features, _, score, components = join_fields(entry)
    features = out.features
    if features is None:
        horizon = now_ms() - int(rt.settings.join_window_s * 1000)
        if entry is None or joined_features is None or join_ts(entry) < horizon:
            await send_dead_letter(
                rt,
                msg,
                "unjoinable",
                f"outcome '{out.outcome_id}' has no features and signal '{out.signal_id}' is "
                "unknown or older than the join window",
            )
            return
        features = joined_features
    res = st.keyed.learn(out.outcome_id, out.model_key, features, out.label, out.realized_rr)
    if not res.learned:
        await send_dead_letter(
            rt, msg, "duplicate", f"outcome '{out.outcome_id}' was already learned"
        )
        return
    rt.count("outcomes.learned")
    if components is not None and score is not None:
        components["blend"] = score
        rt.monitor.update(components, out.label)
    made = score if score is not None else res.prediction
    if is_hard_example(made, out.label, rt.settings.hard_example_confidence):
        hard = HardExample(
            outcome_id=out.outcome_id,
            signal_id=out.signal_id,
            symbol=out.symbol,
            model_key=out.model_key,
            features=dict(features),
            label=out.label,
            realized_rr=out.realized_rr,
            prediction=made,
            loss=res.loss if made == res.prediction else log_loss(made, out.label),
            ts=out.ts if out.ts is not None else int(msg.timestamp * 1000),
        )
        await rt.send("retrain-queue", out.model_key.encode(), encode(hard))
        rt.count("hard_examples")
    if res.drift:
        event = ModelEvent(
            "drift",
            now_ms(),
            model_key=out.model_key,
            version=res.n_learned,
            detail=f"drift detected on the error stream after {res.n_learned} outcomes",
        )
        await rt.send("model-events", out.model_key.encode(), encode(event))
        rt.count("drifts")
        rt.observe("drift", 1.0)


async def _handle(rt: Runtime, st: PartitionState, msg: Any) -> None:
    try:
        out = decode_outcome(msg.value, rt.limits)
    except ContractViolation as exc:
        await send_dead_letter(rt, msg, exc.reason, exc.detail)
        return
    if msg.key != out.model_key.encode():
        # Wrong or missing key: send it on to the partition of its model key.
        await rt.send("outcomes", out.model_key.encode(), msg.value)
        rt.count("outcomes.rerouted")
        return
    await _learn(rt, st, msg, out)


GIVE_WAY_MAX_S = 0.05
"""Longest the learner waits, per outcome, for the predictor to take the requests queued for it."""


async def give_way(pending: Callable[[], int], limit_s: float = GIVE_WAY_MAX_S) -> None:
    """Let the event loop run other tasks while ``pending()`` is above 0, for at most ``limit_s``.

    Faust hands each agent one event per turn of the event loop, so without this the predictor
    took about one queued request per outcome the learner handled, and requests waited behind
    outcomes. Answers come first: an outcome can wait, a request's answer cannot.

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


def register(app: Any, rt: Runtime, store: PartitionStore) -> Any:
    """Declare the learner agent and its checkpoint timer on ``app``."""
    settings = rt.settings
    holder: dict[str, Any] = {}

    @app.agent(rt.topics["outcomes"], name="learner")
    async def learner(stream: Any) -> None:
        s = stream.noack()
        holder["stream"] = s
        async for event in s.events():
            msg = event.message
            st = await store.ensure(msg.partition)
            if msg.offset < st.next_offset:
                rt.count("outcomes.covered_skipped")
                await s.ack(event)
                continue
            try:
                await _handle(rt, st, msg)
            except Exception as exc:  # unknown failure: dead-letter as internal, keep learning
                log.exception("learner failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                await send_dead_letter(rt, msg, "internal", f"{type(exc).__name__}: {exc}")
            st.next_offset = msg.offset + 1
            st.pending.append(event)
            st.dirty = True
            if len(st.pending) >= settings.checkpoint_max_events:
                await checkpoint(rt, store, st, s)
            await give_way(rt.signals_pending)

    @app.timer(interval=settings.checkpoint_interval_s, name="learner-checkpoints")
    async def checkpoints() -> None:
        store.prune_joins(now_ms())
        s = holder.get("stream")
        if s is None:
            return
        for st in list(store.states.values()):
            if st.pending:
                await checkpoint(rt, store, st, s)

    return learner
