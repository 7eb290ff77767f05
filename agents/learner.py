"""Learner agent: trade outcomes in, online models updated exactly once.

Events are not acknowledged when processed: each partition's processed events wait in
``PartitionState.pending`` until a checkpoint that covers them is delivered
(:mod:`agents.state.checkpointer`), and only then are they acked (and so committed by Faust).
Outcomes below a loaded checkpoint's ``next_offset`` are skipped, and outcome ids are
deduplicated, so each outcome changes the online model exactly once across crashes, restarts and
rebalances.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from agents._decode import decode_or_divert, send_dead_letter
from agents.backlog import SignalBacklog
from agents.state import PartitionState, PartitionStore, checkpoint, join_fields, join_ts
from models.keyed import log_loss
from models.online import NonFiniteUpdate
from stream.codec import decode_outcome, encode, now_ms
from stream.records import HardExample, ModelEvent, TradeOutcome
from stream.runtime import Runtime

__all__ = ["GIVE_WAY_MAX_S", "DriftHook", "give_way", "is_hard_example", "register"]

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


async def _learn(
    rt: Runtime, st: PartitionState, msg: Any, out: TradeOutcome, on_drift: DriftHook | None
) -> None:
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
        if on_drift is not None:
            on_drift(out.model_key, out.ts if out.ts is not None else int(msg.timestamp * 1000))


GIVE_WAY_MAX_S = 0.05
"""Longest the learner waits, per outcome, for the predictor to take the requests queued for it."""


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
                log.exception("learner failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                await send_dead_letter(rt, msg, "internal", f"{type(exc).__name__}: {exc}")
            st.next_offset = msg.offset + 1
            st.pending.append(event)
            st.dirty = True
            if len(st.pending) >= settings.checkpoint_max_events:
                await checkpoint(rt, store, st, s)
            await give_way(backlog.pending)

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
