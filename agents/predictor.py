"""Predictor agent: signal requests in, contract Predictions out.

The agent is a thin loop: decode, score with :func:`predict`, encode, send. Unusable messages go to
the dead-letter topic with a reason, and the loop carries on. Each answered signal's features are
kept in memory so that its outcome can be learned without features; after a restart or a
rebalance the join store is rebuilt from the signals topic itself.
"""

from __future__ import annotations

import logging
from typing import Any

from agents._deadletter import send_dead_letter
from agents._partitions import JoinEntry, PartitionStore
from models.blend import BlendWeights, blend
from models.keyed import KeyedOnline
from stream.codec import ContractViolation, decode_signal, encode, now_ms
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
    record_ts: int,
    now: int,
) -> Prediction:
    """The Prediction for one request from the batch components present and the online model.

    >>> req = SignalRequest("s1", "BTCUSDT", {"a": 1.0}, "BTCUSDT")
    >>> p = predict(req, KeyedOnline(), record_ts=5, now=7)
    >>> p.score, p.components, p.weights, p.model_versions, p.degraded, p.ts
    (0.5, {'online': 0.5}, {'online': 1.0}, {'online': 0}, True, 5)
    """
    online, n_learned = keyed.predict(req.model_key, req.features)
    components = {**(batch_components or {}), "online": online}
    result = blend(components, weights)
    versions: dict[str, int | str] = {
        r: v for r, v in (batch_versions or {}).items() if r in components
    }
    versions["online"] = n_learned
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


def register(app: Any, rt: Runtime, store: PartitionStore) -> Any:
    """Declare the predictor agent on ``app``."""
    weights = BlendWeights()

    @app.agent(rt.topics["signals"], name="predictor")
    async def predictor(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                req = decode_signal(msg.value, rt.limits)
            except ContractViolation as exc:
                await send_dead_letter(rt, msg, exc.reason, exc.detail)
                continue
            key = req.model_key.encode()
            if msg.key != key:
                # Wrong or missing key: send it on to the partition of its model key.
                await rt.send("signals", key, msg.value)
                rt.count("signals.rerouted")
                continue
            msg_ts = int(msg.timestamp * 1000)
            try:
                st = await store.ensure(msg.partition)
                batch: dict[str, float] = {}
                serving = rt.serving  # read once: the reloader swaps it whole
                if serving.scorer is not None:
                    batch = serving.scorer.score_one(req.features).components
                pred = predict(
                    req,
                    st.keyed,
                    batch_components=batch,
                    batch_versions=serving.versions,
                    weights=weights,
                    record_ts=msg_ts,
                    now=now_ms(),
                )
            except Exception as exc:  # unknown failure: dead-letter as internal, keep serving
                log.exception("predictor failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                await send_dead_letter(rt, msg, "internal", f"{type(exc).__name__}: {exc}")
                continue
            st.join[req.signal_id] = JoinEntry(
                req.features, pred.ts, req.model_key, pred.score, pred.components
            )
            rt.observe("predict_latency_s", max(0.0, (pred.predicted_at - msg_ts) / 1000.0))
            rt.count("predictions")
            await rt.send("predictions", key, encode(pred))

    return predictor
