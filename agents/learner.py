"""Learner agent: trade outcomes in, online models updated exactly once.

The outcomes topic is not acknowledged through Faust at all (the worker declares it without
acks, so Faust never commits its offsets). Each partition commits, in one Kafka transaction of
its own producer, the state of the model keys it touched, its side outputs (dead letters, hard
examples, drift events, re-routed records) and the offset of the next outcome
(:mod:`agents.state.checkpointer`), every ``ALPHAPULSE_CHECKPOINT_MAX_EVENTS`` outcomes or
``ALPHAPULSE_CHECKPOINT_INTERVAL_S``. A worker that lost the partition is fenced by its
producer's epoch and writes nothing its new owner reads. Outcomes below the restored
``next_offset`` are skipped, and outcome ids are deduplicated as well, so each outcome changes the
online model exactly once across crashes, restarts, rebalances and pauses.

A partition whose state was refused (:class:`agents.state.Refusal`) is not learned: its outcomes
are left uncommitted for a worker that can read its state, and a ``state_refused`` ModelEvent says
why.

The join runs in event time: an outcome without features is joined with its signal when the
signal's time is within the join window before the outcome's own time. One whose signal has not
arrived waits in the partition's state, which its meta record keeps (:mod:`agents.state.waiting`),
so its record's offset may be committed like any other; a timer learns it once the signal arrives
(:func:`resolve_waiting`), or dead-letters it as ``unjoinable`` once the wait bound passes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from agents._decode import Sink, decode_or_divert, log_context, send_dead_letter
from agents.backlog import SignalBacklog
from agents.leaving import announce_refusal
from agents.state import (
    COMMIT_TICKS,
    WAITING_MAX_BYTES,
    HeldMessage,
    OutputBuffer,
    PartitionState,
    PartitionStore,
    Refusal,
    Waiting,
    commit,
    due_commits,
    join_fields,
    join_ts,
)
from agents.turns import Turns
from models.keyed import log_loss
from models.online import NonFiniteUpdate
from stream.codec import decode_outcome, encode, now_ms
from stream.fetched import BATCH_QUEUE_MAX, Record, batch_routes, current_batches
from stream.records import HardExample, ModelEvent, TradeOutcome
from stream.runtime import Runtime

__all__ = [
    "RESOLVE_INTERVAL_S",
    "DriftHook",
    "is_hard_example",
    "register",
    "resolve_waiting",
]

log = logging.getLogger(__name__)

DriftHook = Callable[[str, int], None]
"""Called with the model key whose online model detected drift and the event time (epoch ms) of
the outcome that raised it, after the drift ModelEvent is sent."""


def is_hard_example(prediction: float, label: bool, confidence: float) -> bool:
    """True when ``prediction`` was confidently wrong about ``label``.

    >>> is_hard_example(0.9, False, 0.8), is_hard_example(0.1, True, 0.8)
    (True, True)
    >>> is_hard_example(0.6, False, 0.8)
    False
    """
    return prediction >= confidence if not label else prediction <= 1.0 - confidence


def _sink(rt: Runtime, st: PartitionState) -> Sink:
    """Where the side outputs of ``st``'s outcomes go: its next transaction."""
    return OutputBuffer(st, rt.topic_names)


async def _unjoinable(
    rt: Runtime, st: PartitionState, msg: Any, out: TradeOutcome, why: str
) -> None:
    await send_dead_letter(
        rt,
        msg,
        "unjoinable",
        f"outcome '{out.outcome_id}' has no features and {why}",
        _sink(rt, st),
    )


async def _hold(rt: Runtime, st: PartitionState, msg: Any, out: TradeOutcome, t: int) -> bool:
    """Keep ``out`` waiting for its signal; False when it may not wait (no waiting configured,
    or its wait is over already)."""
    s = rt.settings
    now = st.event_time()
    if s.join_wait_max == 0 or (now is not None and now > t + int(s.join_wait_s * 1000)):
        return False
    st.hold(Waiting(msg.offset, msg.key, msg.value, int(msg.timestamp * 1000), out))
    rt.count("outcomes.waiting")
    while len(st.waiting) > s.join_wait_max or st.waiting_bytes > WAITING_MAX_BYTES:
        w = st.release(next(iter(st.waiting)))  # the oldest goes first
        await _unjoinable(
            rt,
            st,
            _held(rt, st, w),
            w.outcome,
            f"more outcomes were waiting for their signal '{w.outcome.signal_id}' than the "
            f"partition keeps ({s.join_wait_max}, or {WAITING_MAX_BYTES} bytes)",
        )
    return True


def _held(rt: Runtime, st: PartitionState, w: Waiting) -> HeldMessage:
    topic = rt.settings.topic("outcomes")
    return HeldMessage(topic, st.partition, w.offset, w.key, w.value, w.timestamp_ms / 1000)


async def _learn(
    rt: Runtime,
    st: PartitionState,
    msg: Any,
    out: TradeOutcome,
    on_drift: DriftHook | None,
    may_wait: bool = True,
    sink: Sink | None = None,
) -> None:
    t = (
        out.ts if out.ts is not None else int(msg.timestamp * 1000)
    )  # its own time, else its record's
    if may_wait and (st.outcome_clock is None or t > st.outcome_clock):
        st.outcome_clock = t
    sink = _sink(rt, st) if sink is None else sink
    entry = st.join.get(out.signal_id)
    joined_features, score, components = None, None, None
    if entry is not None:
        joined_features, _, score, components = join_fields(entry)
    features = out.features
    if features is None:
        if entry is None:
            if out.outcome_id in st.keyed.seen:
                await send_dead_letter(
                    rt, msg, "duplicate", f"outcome '{out.outcome_id}' was already learned", sink
                )
            elif not (may_wait and await _hold(rt, st, msg, out, t)):
                await _unjoinable(
                    rt, st, msg, out, f"signal '{out.signal_id}' did not arrive within the wait"
                )
            return
        if joined_features is None or t - join_ts(entry) > int(rt.settings.join_window_s * 1000):
            await _unjoinable(
                rt, st, msg, out, f"signal '{out.signal_id}' is older than the join window"
            )
            return
        features = joined_features
    try:
        res = st.keyed.learn(out.outcome_id, out.model_key, features, out.label, out.realized_rr)
    except NonFiniteUpdate as exc:  # refused, the model unchanged: bad input, not a failure
        await send_dead_letter(rt, msg, "bad_feature", f"outcome '{out.outcome_id}': {exc}", sink)
        return
    if not res.learned:
        await send_dead_letter(
            rt, msg, "duplicate", f"outcome '{out.outcome_id}' was already learned", sink
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
        await sink.send("retrain-queue", out.model_key.encode(), encode(hard))
        rt.count("hard_examples")
    if res.drift:
        event = ModelEvent(
            "drift",
            now_ms(),
            model_key=out.model_key,
            version=res.n_learned,
            detail=f"drift detected on the error stream after {res.n_learned} outcomes",
        )
        await sink.send("model-events", out.model_key.encode(), encode(event))
        rt.count("drifts")
        log.info(
            "drift on model key %s after %d outcomes",
            out.model_key,
            res.n_learned,
            extra=log_context(msg, model_key=out.model_key),
        )
        if on_drift is not None:
            on_drift(out.model_key, out.ts if out.ts is not None else int(msg.timestamp * 1000))


RESOLVE_INTERVAL_S = 0.1
"""How often the learner looks for the signals that waiting outcomes wait for."""


async def resolve_waiting(
    rt: Runtime, store: PartitionStore, st: PartitionState, on_drift: DriftHook | None = None
) -> int:
    """Learn the waiting outcomes of ``st`` whose signal has arrived, and dead-letter as
    ``unjoinable`` those whose wait is over (the partition's event time is past their own time
    plus ``ALPHAPULSE_JOIN_WAIT_S``). Returns how many stopped waiting."""
    if not st.waiting:
        return 0
    now = st.event_time()
    wait_ms = int(rt.settings.join_wait_s * 1000)
    done = 0
    for w in list(st.waiting.values()):
        if store.get(st.partition) is not st or not st.learns:
            break  # revoked meanwhile: the new owner restores them from the state
        arrived = w.outcome.signal_id in st.join
        if w.offset not in st.waiting or not (
            arrived or (now is not None and now > w.time + wait_ms)
        ):
            continue
        st.release(w.offset)
        st.dirty = True
        done += 1
        msg = _held(rt, st, w)
        try:
            if arrived:
                await _learn(rt, st, msg, w.outcome, on_drift, may_wait=False)
            else:
                await _unjoinable(
                    rt,
                    st,
                    msg,
                    w.outcome,
                    f"signal '{w.outcome.signal_id}' did not arrive within "
                    f"{rt.settings.join_wait_s:g} s of event time",
                )
        except Exception as exc:  # unknown failure: dead-letter as internal, keep learning
            log.exception("learner failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
            await send_dead_letter(
                rt, msg, "internal", f"{type(exc).__name__}: {exc}", _sink(rt, st)
            )
    return done


def register(
    app: Any,
    rt: Runtime,
    store: PartitionStore,
    backlog: SignalBacklog,
    on_drift: DriftHook | None = None,
) -> Any:
    """Declare the learner agent and its commit timer on ``app``.

    The learner gives way to the predictor while ``backlog`` has requests waiting, and calls
    ``on_drift`` with the model key whenever an online model detects drift. A partition state
    that ``store`` refuses is announced (:func:`announce_refusal`).
    """
    settings = rt.settings
    commits: dict[int, asyncio.Future[bool]] = {}
    announcing: set[asyncio.Future[Any]] = set()

    def on_refused(why: Refusal) -> None:
        task = announce_refusal(rt, why)
        announcing.add(task)
        task.add_done_callback(announcing.discard)

    store.on_refused = on_refused

    def commit_soon(st: PartitionState) -> asyncio.Future[bool]:
        """The running commit of ``st``'s partition, or a new one: learning goes on meanwhile."""
        running = commits.get(st.partition)
        if running is not None and not running.done():
            return running
        task = asyncio.ensure_future(commit(rt, store, st))
        commits[st.partition] = task
        return task

    channel = app.channel(maxsize=BATCH_QUEUE_MAX)
    app.topics.add(rt.topics["outcomes"])  # subscribed and assigned by Faust, iterated by none
    batch_routes(app).route(rt.topic_names["outcomes"], channel)

    async def learn_one(st: PartitionState, msg: Record, sink: Sink) -> None:
        try:
            out = await decode_or_divert(rt, msg, decode_outcome, "outcomes", sink)
            if out is not None:
                await _learn(rt, st, msg, out, on_drift, sink=sink)
        except Exception as exc:  # unknown failure: dead-letter as internal, keep learning
            log.exception(
                "learner failed on %s[%d]@%d",
                msg.topic,
                msg.partition,
                msg.offset,
                extra=log_context(msg),
            )
            await send_dead_letter(
                rt, msg, "internal", f"{type(exc).__name__}: {exc}", _sink(rt, st)
            )
        st.next_offset = msg.offset + 1
        st.uncommitted += 1
        st.dirty = True

    turns = Turns(backlog.pending)

    @app.agent(channel, name="learner")
    async def learner(stream: Any) -> None:
        async for batch in current_batches(app, stream):
            rt.count("batches.outcomes")
            st = await store.ensure(batch.partition)
            sink = _sink(rt, st)
            turns.start()
            for msg in batch.records:
                if not st.learns:
                    # Not owned here (revoked, fenced) or refused: left for a worker that can.
                    rt.count("outcomes.not_learned_here")
                    continue
                if msg.offset < st.next_offset:
                    rt.count("outcomes.covered_skipped")
                    continue
                await learn_one(st, msg, sink)
                if st.uncommitted >= settings.checkpoint_max_events:
                    running = commit_soon(st)
                    if st.uncommitted >= 4 * settings.checkpoint_max_events:
                        await running  # commits fall behind: wait rather than pile up state
                await turns.between()  # fetches and answers are not held up

    @app.timer(interval=RESOLVE_INTERVAL_S, name="learner-waiting")
    async def waiting() -> None:
        for st in list(store.states.values()):
            if st.learns:
                await resolve_waiting(rt, store, st, on_drift)

    @app.timer(interval=settings.checkpoint_interval_s / COMMIT_TICKS, name="learner-checkpoints")
    async def checkpoints() -> None:
        store.prune_joins()  # in each partition's event time
        pending = {
            p: st.last_commit
            for p, st in store.states.items()
            if st.learns and (st.dirty or st.outputs or st.keyed.touched)
        }
        for p in due_commits(pending, time.monotonic(), settings.checkpoint_interval_s):
            commit_soon(store.states[p])

    return learner
