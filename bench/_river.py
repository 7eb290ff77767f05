"""What any learner or predictor built on the online model must do per event, and nothing more.

``bench.e2e`` runs these inside the no-op and floor agents of :mod:`bench._noop` (``--river``) to
bound what the worker's agents can reach on the machine at hand: the learn floor decodes each
outcome and updates River's pipeline with it (no validation, prequential prediction, metrics,
drift, deduplication or checkpoints); the predict floor answers each signal with River's
probability (no validation, blend, batch models or join store). The pipeline is the one
:class:`models.online.OnlineLearner` builds with its default configuration.
"""

from __future__ import annotations

from typing import Any

import orjson

from models.keyed import rr_weight
from models.online import OnlineLearner

__all__ = ["RiverFloor"]


class RiverFloor:
    """River pipelines by model key, fed and asked with raw contract messages.

    >>> floor = RiverFloor()
    >>> signal = b'{"signal_id": "s1", "symbol": "A", "features": {"x": 1.0}}'
    >>> orjson.loads(floor.answer(signal, 7))
    {'signal_id': 's1', 'score': 0.5, 'predicted_at': 7}
    >>> floor.learn(b'{"symbol": "A", "label": 1, "realized_rr": 2.0, "features": {"x": 1.0}}')
    >>> orjson.loads(floor.answer(signal, 7))["score"] > 0.5
    True
    >>> floor.answer(b"not json", 7) is None, floor.answer(b'{"symbol": "B"}', 7) is None
    (True, True)
    """

    def __init__(self) -> None:
        self.pipelines: dict[str, Any] = {}

    def _pipeline(self, doc: dict[str, Any]) -> Any:
        key = doc.get("model_key") or doc["symbol"]
        pipe = self.pipelines.get(key)
        if pipe is None:
            pipe = self.pipelines[key] = OnlineLearner().pipeline
        return pipe

    def learn(self, value: bytes | None) -> None:
        """Update the pipeline of the outcome's model key with it, weighted by its R/R."""
        try:
            doc = orjson.loads(value or b"")
            pipe = self._pipeline(doc)
            weight = rr_weight(doc.get("realized_rr"))
            pipe.learn_one(doc["features"], bool(doc["label"]), w=weight)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return

    def answer(self, value: bytes | None, now: int) -> bytes | None:
        """The signal's id, River's probability that it wins, and ``now``; None if unusable."""
        try:
            doc = orjson.loads(value or b"")
            probs = self._pipeline(doc).predict_proba_one(doc["features"])
            return orjson.dumps(
                {
                    "signal_id": doc["signal_id"],
                    "score": float(probs.get(True, 0.5)),
                    "predicted_at": now,
                }
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return None
