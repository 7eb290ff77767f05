"""Predictor agent: signal requests in, contract Predictions out.

The agent is a thin loop: decode, score with :func:`predict`, encode, send. Unusable messages go to
the dead-letter topic with a reason, and the loop carries on. Each answered signal's features are
kept in memory so that its outcome can be learned without features; after a restart or a
rebalance the join store is rebuilt from the signals topic itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from agents._decode import decode_or_divert, log_context, send_dead_letter
from agents.backlog import SignalBacklog
from agents.state import PartitionState, PartitionStore, remember_signal
from models.blend import BlendWeights, blend
from models.keyed import KeyedOnline
from models.roles import ENSEMBLE
from models.served_ensemble import ServedEnsemble
from stream.codec import decode_signal, encode, now_ms
from stream.fetched import BATCH_QUEUE_MAX, Record, ack_batch, batch_routes, current_batches
from stream.records import Prediction, SignalRequest
from stream.runtime import Runtime

__all__ = ["predict", "register"]

log = logging.getLogger(__name__)


def predict(
    req: SignalRequest,
    keyed: KeyedOnline,
    *,
    batch_components: dict[str, float] | None = None,
    batch_versions: dict[str, int] | None = None,
    weights: BlendWeights | None = None,
    ensemble: ServedEnsemble | None = None,
    record_ts: int,
    now: int,
) -> Prediction:
    """The Prediction for one request from the batch components present and the online model.

    The fitted ``ensemble`` blends them when exactly its components answered, and its version
    goes into ``model_versions``; otherwise the fixed blend of ``weights`` applies.

    >>> req = SignalRequest("s1", "BTCUSDT", {"a": 1.0}, "BTCUSDT")
    >>> p = predict(req, KeyedOnline(), record_ts=5, now=7)
    >>> p.score, p.components, p.weights, p.model_versions, p.degraded, p.ts
    (0.5, {'online': 0.5}, {'online': 1.0}, {'online': 0}, True, 5)
    """
    online, n_learned = keyed.predict(req.model_key, req.features)
    components = {**(batch_components or {}), "online": online}
    versions: dict[str, int | str] = {
        r: v for r, v in (batch_versions or {}).items() if r in components
    }
    versions["online"] = n_learned
    result = None
    if ensemble is not None:
        result = ensemble.blend(components)
        if result is not None:
            versions[ENSEMBLE] = ensemble.version
    if result is None:
        result = blend(components, weights)
    return Prediction(
        signal_id=req.signal_id,
        symbol=req.symbol,
        model_key=req.model_key,
        score=result.score,
        components=components,
        weights=result.weights_applied,
        model_versions=versions,
        degraded=result.degraded,
        ts=req.ts if req.ts is not None else record_ts,
        predicted_at=now,
    )


class _Answer(NamedTuple):
    """A scored request, ready to send (a named tuple: one is made per request)."""

    message: Any
    """The Faust message of the request."""
    request: SignalRequest
    prediction: Prediction
    state: PartitionState
    """The state of the request's partition, whose join store keeps the signal once answered."""
    record_ms: int
    """The request record's Kafka timestamp (epoch ms)."""
    value: bytes
    """The encoded prediction."""


def _offsets(messages: Iterable[Any]) -> dict[str, list[int]]:
    """First and last offset of each ``topic[partition]`` among ``messages`` (log context).

    >>> from types import SimpleNamespace as M
    >>> _offsets([M(topic="s", partition=0, offset=4), M(topic="s", partition=0, offset=9)])
    {'s[0]': [4, 9]}
    """
    out: dict[str, list[int]] = {}
    for m in messages:
        span = out.setdefault(f"{m.topic}[{m.partition}]", [m.offset, m.offset])
        span[0], span[1] = min(span[0], m.offset), max(span[1], m.offset)
    return out


async def _score_batch(
    rt: Runtime, store: PartitionStore, weights: BlendWeights, records: Sequence[Record]
) -> list[_Answer]:
    """Decode and score ``records`` in order (batch models once for the whole batch).

    Unusable messages are dead-lettered and wrongly keyed ones re-routed on the way.
    """
    valid: list[tuple[Any, SignalRequest]] = []
    for msg in records:
        req = await decode_or_divert(rt, msg, decode_signal, "signals")
        if req is not None:
            valid.append((msg, req))
    if not valid:
        return []
    serving = rt.serving  # read once: the reloader swaps it whole
    batch_components: list[dict[str, float]] = [{} for _ in valid]
    if serving.scorer is not None:
        try:
            batch_components = serving.scorer.components_many([req.features for _, req in valid])
        except Exception:  # a failing batch model must not stop the online answers
            log.exception(
                "batch scoring failed for %d signals; answering without it",
                len(valid),
                extra={"offsets": _offsets(msg for msg, _ in valid)},
            )
    answers: list[_Answer] = []
    st: PartitionState | None = None
    for (msg, req), components in zip(valid, batch_components, strict=True):
        msg_ts = int(msg.timestamp * 1000)
        try:
            if st is None or st.partition != msg.partition:  # a batch is one partition's
                st = await store.ensure(msg.partition)
            pred = predict(
                req,
                st.keyed,
                batch_components=components,
                batch_versions=serving.versions,
                weights=weights,
                ensemble=serving.ensemble,
                record_ts=msg_ts,
                now=now_ms(),
            )
            answers.append(_Answer(msg, req, pred, st, msg_ts, encode(pred)))
        except Exception as exc:  # unknown failure: dead-letter as internal, keep serving
            log.exception(
                "predictor failed on %s[%d]@%d",
                msg.topic,
                msg.partition,
                msg.offset,
                extra=log_context(msg, model_key=req.model_key),
            )
            await send_dead_letter(rt, msg, "internal", f"{type(exc).__name__}: {exc}")
    return answers


async def _deliver(rt: Runtime, answers: list[_Answer]) -> None:
    """Send the answers together (:meth:`stream.runtime.Runtime.send_many`), then keep each
    signal for the outcome join; if sending fails, their requests are dead-lettered."""
    if not answers:
        return
    try:
        await rt.send_many("predictions", [(a.message.key, a.value) for a in answers])
    except Exception as exc:  # unknown failure: dead-letter as internal, keep serving
        log.exception(
            "sending %d predictions failed",
            len(answers),
            extra={"offsets": _offsets(a.message for a in answers)},
        )
        for a in answers:
            await send_dead_letter(rt, a.message, "internal", f"{type(exc).__name__}: {exc}")
        return
    latencies = []
    for a in answers:
        req, pred = a.request, a.prediction
        remember_signal(
            a.state.join,
            req.signal_id,
            req.features,
            pred.ts,
            req.model_key,
            pred.score,
            pred.components,
        )
        latencies.append(max(0.0, (pred.predicted_at - a.record_ms) / 1000.0))
    rt.observe_many("predict_latency_s", latencies)
    rt.count("predictions", len(answers))


def register(app: Any, rt: Runtime, store: PartitionStore, backlog: SignalBacklog) -> Any:
    """Declare the predictor agent on ``app``; it reports the requests waiting in ``backlog``.

    The agent takes the signals topic's records in per-partition batches as fetched
    (:mod:`stream.fetched`) and answers each in chunks of at most
    ``ALPHAPULSE_PREDICT_BATCH_MAX``; a record fetched alone is answered at once, so batching adds
    no waiting.
    """
    weights = BlendWeights.from_split(batch=rt.settings.blend_batch_weight)
    max_batch = rt.settings.predict_batch_max
    channel = app.channel(maxsize=BATCH_QUEUE_MAX)
    topic = rt.topics["signals"]
    app.topics.add(topic)  # subscribed and assigned by Faust, though no agent iterates it
    batch_routes(app).route(rt.topic_names["signals"], channel, first=True)

    @app.agent(channel, name="predictor")
    async def predictor(stream: Any) -> None:
        backlog.watch(stream)
        async for batch in current_batches(app, stream):
            records = batch.records
            rt.count("batches.signals")
            for start in range(0, len(records), max_batch):
                answers = await _score_batch(rt, store, weights, records[start : start + max_batch])
                # Requests waiting while answers wait for the producer need no CPU: the learner
                # goes on.
                backlog.delivering = True
                try:
                    await _deliver(rt, answers)
                finally:
                    backlog.delivering = False
            ack_batch(app, batch)

    return predictor
