"""Serving a fitted ensemble: the document, the per-request blend and its fallback, the predictor's
Prediction, and the reloader's swap."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from agents.predictor import predict
from agents.reloader import Reloader
from models.blend import BlendWeights
from models.ensembler import Ensemble
from models.errors import ModelError, RegistryError
from models.keyed import KeyedOnline
from models.served_ensemble import ServedEnsemble, ensemble_document
from stream.codec import encode
from stream.records import SignalRequest
from stream.runtime import Runtime, Serving
from stream.settings import Settings

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "stream" / "schemas" / "prediction.json").read_text()
)
ROLES3 = ("monthly_full", "weekly_quick", "online")


def _components(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 1.0, (n, 3))
    p[0] = [0.0, 1.0, 0.5]
    return {r: p[:, j] for j, r in enumerate(ROLES3)}


def _stacked() -> Ensemble:
    comps = _components(300, seed=1)
    y = (comps["weekly_quick"] > 0.5).astype(int)
    return Ensemble.stacked(comps, y)


def _weighted() -> Ensemble:
    return Ensemble.fixed({"monthly_full": 0.1, "weekly_quick": 0.7, "online": 0.2})


@pytest.mark.parametrize("make", [_weighted, _stacked])
def test_the_per_request_blend_equals_the_ensembles_own_prediction(make: Any) -> None:
    ens = make()
    served = ServedEnsemble.from_document(ensemble_document(ens, {"weekly_quick": "3"}), 5)
    comps = _components(200, seed=2)
    want = ens.predict_proba(comps)
    for i in range(200):
        r = served.blend({k: float(v[i]) for k, v in comps.items()})
        assert r is not None and not r.degraded
        assert r.score == pytest.approx(want[i], abs=1e-12)
        assert sum(r.weights_applied.values()) == pytest.approx(1.0)
        assert all(0.0 <= w <= 1.0 for w in r.weights_applied.values())
        if ens.method != "stacked":
            assert tuple(r.weights_applied.values()) == ens.weights
    assert served.version == 5 and served.fitted_on == {"weekly_quick": "3"}


def test_the_stacked_weights_are_each_components_share_of_the_logit() -> None:
    ens = Ensemble("stacked", ("weekly_quick", "online"), coef=(2.0, -1.0), intercept=0.3)
    served = ServedEnsemble.from_document(ensemble_document(ens, {}), 1)
    r = served.blend({"weekly_quick": 0.9, "online": 0.25})
    assert r is not None
    lw, lo = 2.0 * np.log(9.0), -1.0 * np.log(1 / 3)
    assert r.weights_applied["weekly_quick"] == pytest.approx(abs(lw) / (abs(lw) + abs(lo)))
    assert r.score == pytest.approx(1 / (1 + np.exp(-(0.3 + lw + lo))))
    # every logit 0: the coefficients' sizes
    even = served.blend({"weekly_quick": 0.5, "online": 0.5})
    assert even is not None and even.weights_applied == pytest.approx(
        {"weekly_quick": 2 / 3, "online": 1 / 3}
    )


def test_the_ensemble_answers_only_for_exactly_its_components() -> None:
    served = ServedEnsemble.from_document(ensemble_document(_weighted(), {}), 1)
    full = {"monthly_full": 0.6, "weekly_quick": 0.7, "online": 0.4}
    assert served.blend(full) is not None
    assert served.blend({"weekly_quick": 0.7, "online": 0.4}) is None  # one missing
    assert served.blend({**full, "monthly_full": float("nan")}) is None
    assert served.blend({**full, "monthly_full": None}) is None
    two = ServedEnsemble.from_document(
        ensemble_document(Ensemble.fixed({"weekly_quick": 1.0, "online": 1.0}), {}), 2
    )
    assert two.blend(full) is None  # one it was not fitted on


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "format"),
        ({"method": "voting"}, "method"),
        ({"names": ["monthly_full", "weekly_quick", "ensemble"]}, "roles"),
        ({"names": ["online", "online", "weekly_quick"]}, "distinct"),
        ({"weights": [0.5, 0.5, float("nan")]}, "finite"),
        ({"weights": [0.5, 0.5, 0.5]}, "sum to 1"),
        ({"weights": [1.5, -0.5, 0.0]}, ">= 0"),
        ({"weights": [0.5, 0.5]}, "list of 3"),
        ({"weights": ["0.1", 0.7, 0.2]}, "finite"),
        ({"fitted_on": ["weekly_quick"]}, "fitted_on"),
    ],
)
def test_a_bad_document_is_refused(change: dict[str, Any], message: str) -> None:
    doc = {**ensemble_document(_weighted(), {}), **change}
    with pytest.raises(ModelError, match=message):
        ServedEnsemble.from_document(doc, 1)


def test_a_stacked_document_needs_its_intercept_and_a_json_object() -> None:
    doc = ensemble_document(_stacked(), {})
    with pytest.raises(ModelError, match="intercept"):
        ServedEnsemble.from_document({**doc, "intercept": None}, 1)
    with pytest.raises(ModelError, match="intercept"):
        ServedEnsemble.from_document({**doc, "intercept": float("inf")}, 1)
    with pytest.raises(ModelError, match="JSON object"):
        ServedEnsemble.from_document([doc], 1)
    with pytest.raises(ModelError, match="version"):
        ServedEnsemble.from_document(doc, "champion")


def _request() -> SignalRequest:
    return SignalRequest("s1", "BTCUSDT", {"a": 1.0}, "BTCUSDT")


@pytest.mark.parametrize("make", [_weighted, _stacked])
def test_the_prediction_carries_the_ensembles_weights_and_version(make: Any) -> None:
    ens = make()
    served = ServedEnsemble.from_document(ensemble_document(ens, {}), 9)
    batch = {"monthly_full": 0.8, "weekly_quick": 0.7}
    pred = predict(
        _request(),
        KeyedOnline(),
        batch_components=batch,
        batch_versions={"monthly_full": 2, "weekly_quick": 4, "ensemble": 9},
        weights=BlendWeights.from_split(batch=0.8),
        ensemble=served,
        record_ts=5,
        now=6,
    )
    want = served.blend({**batch, "online": 0.5})
    assert want is not None
    assert pred.score == want.score and pred.weights == want.weights_applied
    assert pred.model_versions == {"monthly_full": 2, "weekly_quick": 4, "online": 0, "ensemble": 9}
    assert pred.degraded is False
    jsonschema.validate(json.loads(encode(pred)), SCHEMA)


def test_without_all_its_components_the_fixed_blend_serves() -> None:
    served = ServedEnsemble.from_document(ensemble_document(_weighted(), {}), 9)
    pred = predict(
        _request(),
        KeyedOnline(),
        batch_components={"weekly_quick": 0.8},  # monthly_full did not answer
        batch_versions={"monthly_full": 2, "weekly_quick": 4, "ensemble": 9},
        weights=BlendWeights.from_split(batch=0.6),
        ensemble=served,
        record_ts=5,
        now=6,
    )
    assert pred.weights == pytest.approx({"weekly_quick": 3 / 7, "online": 4 / 7})  # 0.3 : 0.4
    assert pred.score == pytest.approx(3 / 7 * 0.8 + 4 / 7 * 0.5)
    assert pred.degraded is True
    assert pred.model_versions == {"weekly_quick": 4, "online": 0}
    jsonschema.validate(json.loads(encode(pred)), SCHEMA)


class _Topic:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append(value)


class _Registry:
    """Champions by name; the ensemble's documents by version."""

    def __init__(self, champions: dict[str, str], documents: dict[str, Any]) -> None:
        self.champions = champions
        self.documents = documents
        self.loads: list[tuple[str, str]] = []

    def resolve_alias(self, name: str, alias: str) -> str:
        if name not in self.champions:
            cause = Exception("not found")
            cause.error_code = "RESOURCE_DOES_NOT_EXIST"  # type: ignore[attr-defined]
            raise RegistryError(f"{name}@{alias} not found") from cause
        return self.champions[name]

    def load_document(self, name: str, version: str) -> Any:
        self.loads.append((name, version))
        return self.documents[version]


def test_the_reloader_swaps_a_valid_ensemble_in_and_keeps_it_over_a_bad_one() -> None:
    good = ensemble_document(_weighted(), {"monthly_full": "2", "weekly_quick": "4"})
    bad = {**good, "weights": [0.9, 0.9, 0.9]}
    reg = _Registry({"ensemble": "1"}, {"1": good, "2": bad})
    rt = Runtime(Settings(_env_file=None), topics={"model-events": _Topic()})  # type: ignore[call-arg]
    scorer = object()
    rt.serving = Serving(scorer, {})
    reloader = Reloader(rt, lambda: reg)
    events = asyncio.run(reloader.poll_once())
    assert [(e.event, e.role, e.version) for e in events] == [("loaded", "ensemble", "1")]
    assert rt.serving.scorer is scorer  # no batch model changed: the scorer is kept
    assert rt.serving.ensemble is not None and rt.serving.ensemble.version == 1
    assert rt.serving.versions == {"ensemble": 1}
    reg.champions["ensemble"] = "2"
    events = asyncio.run(reloader.poll_once())
    assert [(e.event, e.version) for e in events] == [("rejected", "2")]
    assert "sum to 1" in events[0].detail
    assert rt.serving.ensemble.version == 1  # the old one keeps serving
    assert asyncio.run(reloader.poll_once()) == [] and reg.loads == [
        ("ensemble", "1"),
        ("ensemble", "2"),
    ]
