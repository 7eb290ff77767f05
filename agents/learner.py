"""Learner agent: trade outcomes in, online models updated exactly once.

Events are not acknowledged when processed: each partition's processed events wait in
``PartitionState.pending`` until a checkpoint that covers them is delivered
(:mod:`agents.state.checkpointer`), and only then are they acked (and so committed by Faust).
Outcomes below a loaded checkpoint's ``next_offset`` are skipped, and outcome ids are
deduplicated, so each outcome changes the online model exactly once across crashes, restarts and
rebalances.

The join runs in event time: an outcome without features is joined with its signal when the
signal's time is within the join window before the outcome's own time. One whose signal has not
arrived waits in the partition's state, which checkpoints keep (:mod:`agents.state.waiting`), so
its record's offset may be acked like any other; a timer learns it once the signal arrives
(:func:`resolve_waiting`), or dead-letters it as ``unjoinable`` once the wait bound passes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from agents._decode import decode_or_divert, log_context, send_dead_letter
from agents.backlog import SignalBacklog
from agents.state import (
    WAITING_MAX_BYTES,
    HeldMessage,
    PartitionState,
    PartitionStore,
    Waiting,
    checkpoint,
    join_fields,
    join_ts,
)
from models.keyed import log_loss
from models.online import NonFiniteUpdate
from stream.codec import decode_outcome, encode, now_ms
from stream.records import HardExample, ModelEvent, TradeOutcome
from stream.runtime import Runtime

__all__ = [
    "GIVE_WAY_MAX_S",
    "RESOLVE_INTERVAL_S",
    "DriftHook",
    "give_way",
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


def _event_ms(out: TradeOutcome, msg: Any) -> int:
    """The outcome's time: its own ``ts``, else its record's timestamp (epoch ms)."""
    return out.ts if out.ts is not None else int(msg.timestamp * 1000)


async def _unjoinable(rt: Runtime, msg: Any, out: TradeOutcome, why: str) -> None:
    await send_dead_letter(
        rt, msg, "unjoinable", f"outcome '{out.outcome_id}' has no features and {why}"
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
) -> None:
    t = _event_ms(out, msg)
    if may_wait and (st.outcome_clock is None or t > st.outcome_clock):
        st.outcome_clock = t
    entry = st.join.get(out.signal_id)
    joined_features, score, components = None, None, None
    if entry is not None:
        joined_features, _, score, components = join_fields(entry)
    features = out.features
    if features is None:
        if entry is None:
            if out.outcome_id in st.keyed.seen:
                await send_dead_letter(
                    rt, msg, "duplicate", f"outcome '{out.outcome_id}' was already learned"
                )
            elif not (may_wait and await _hold(rt, st, msg, out, t)):
                await _unjoinable(
                    rt, msg, out, f"signal '{out.signal_id}' did not arrive within the wait"
                )
            return
        if joined_features is None or t - join_ts(entry) > int(rt.settings.join_window_s * 1000):
            await _unjoinable(
                rt, msg, out, f"signal '{out.signal_id}' is older than the join window"
            )
            return
        features = joined_features
    try:
        res = st.keyed.learn(out.outcome_id, out.model_key, features, out.label, out.realized_rr)
    except NonFiniteUpdate as exc:  # refused, the model unchanged: bad input, not a failure
        await send_dead_letter(rt, msg, "bad_feature", f"outcome '{out.outcome_id}': {exc}")
        return
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
        log.info(
            "drift on model key %s after %d outcomes",
            out.model_key,
            res.n_learned,
            extra=log_context(msg, model_key=out.model_key),
        )
        if on_drift is not None:
            on_drift(out.model_key, out.ts if out.ts is not None else int(msg.timestamp * 1000))


GIVE_WAY_MAX_S = 0.05
"""Longest the learner waits, per outcome, for the predictor to take the requests queued for it."""


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
        if store.get(st.partition) is not st:
            break  # revoked meanwhile: the new owner restores them from the checkpoint
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
                    msg,
                    w.outcome,
                    f"signal '{w.outcome.signal_id}' did not arrive within "
                    f"{rt.settings.join_wait_s:g} s of event time",
                )
        except Exception as exc:  # unknown failure: dead-letter as internal, keep learning
            log.exception("learner failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
            await send_dead_letter(rt, msg, "internal", f"{type(exc).__name__}: {exc}")
    return done


async def give_way(pending: Callable[[], int], limit_s: float = GIVE_WAY_MAX_S) -> None:
    """Let the event loop run other tasks while ``pending()`` is above 0, for at most ``limit_s``.

    ``pending`` is :meth:`agents.backlog.SignalBacklog.pending` in the worker. Faust hands each
    agent one event per turn of the event loop, so without this the predictor would take about
    one queued request per outcome the learner handled, and requests would wait behind outcomes.
    Answers come first: an outcome can wait, a request's answer cannot.

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


def register(
    app: Any,
    rt: Runtime,
    store: PartitionStore,
    backlog: SignalBacklog,
    on_drift: DriftHook | None = None,
) -> Any:
    """Declare the learner agent and its checkpoint timer on ``app``.

    The learner gives way to the predictor while ``backlog`` has requests waiting, and calls
    ``on_drift`` with the model key whenever an online model detects drift.
    """
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
                out = await decode_or_divert(rt, msg, decode_outcome, "outcomes")
                if out is not None:
                    await _learn(rt, st, msg, out, on_drift)
            except Exception as exc:  # unknown failure: dead-letter as internal, keep learning
                log.exception(
                    "learner failed on %s[%d]@%d",
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    extra=log_context(msg),
                )
                await send_dead_letter(rt, msg, "internal", f"{type(exc).__name__}: {exc}")
            st.next_offset = msg.offset + 1
            st.pending.append(event)
            st.dirty = True
            if len(st.pending) >= settings.checkpoint_max_events:
                await checkpoint(rt, store, st, s)
            await give_way(backlog.pending)

    @app.timer(interval=RESOLVE_INTERVAL_S, name="learner-waiting")
    async def waiting() -> None:
        for st in list(store.states.values()):
            await resolve_waiting(rt, store, st, on_drift)

    @app.timer(interval=settings.checkpoint_interval_s, name="learner-checkpoints")
    async def checkpoints() -> None:
        store.prune_joins()  # in each partition's event time
        s = holder.get("stream")
        if s is None:
            return
        for st in list(store.states.values()):
            if st.pending or st.dirty:
                await checkpoint(rt, store, st, s)

    return learner
