"""Predictor agent: signal requests in, contract Predictions out.

The agent is a thin loop: decode, score with :func:`predict_one`, encode, send. Unusable messages
go to the dead-letter topic with a reason, and the loop carries on.
"""

from __future__ import annotations

import logging
from typing import Any

from agents._deadletter import send_dead_letter
from stream.codec import ContractViolation, decode_signal, encode, now_ms
from stream.records import Prediction, SignalRequest
from stream.runtime import Runtime

__all__ = ["predict_one", "register"]

log = logging.getLogger(__name__)

BATCH_ROLES = ("monthly_full", "weekly_quick")


def predict_one(req: SignalRequest, *, record_ts: int, now: int) -> Prediction:
    """Prediction for one request from the components available.

    Until batch models and the online learner are wired in, only the online component answers,
    with its prior of 0.5 and ``model_versions.online = 0``; the configured batch components are
    missing, so the prediction is degraded.

    >>> req = SignalRequest("s1", "BTCUSDT", {"a": 1.0}, "BTCUSDT")
    >>> p = predict_one(req, record_ts=5, now=7)
    >>> p.score, p.components, p.degraded, p.ts
    (0.5, {'online': 0.5}, True, 5)
    """
    online = 0.5
    return Prediction(
        signal_id=req.signal_id,
        symbol=req.symbol,
        model_key=req.model_key,
        score=online,
        components={"online": online},
        weights={"online": 1.0},
        model_versions={"online": 0},
        degraded=True,
        ts=req.ts if req.ts is not None else record_ts,
        predicted_at=now,
    )


def register(app: Any, rt: Runtime) -> Any:
    """Declare the predictor agent on ``app``."""

    @app.agent(rt.topics["signals"], name="predictor")
    async def predictor(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                req = decode_signal(msg.value, rt.limits)
            except ContractViolation as exc:
                await send_dead_letter(rt, msg, exc.reason, exc.detail)
                continue
            try:
                pred = predict_one(req, record_ts=int(msg.timestamp * 1000), now=now_ms())
            except Exception as exc:  # unknown failure: dead-letter as internal, keep serving
                log.exception("predictor failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                await send_dead_letter(rt, msg, "internal", f"{type(exc).__name__}: {exc}")
                continue
            rt.count("predictions")
            await rt.topics["predictions"].send(key=req.model_key.encode(), value=encode(pred))

    return predictor
