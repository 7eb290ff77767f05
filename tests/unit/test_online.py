"""Tests of the online learner (models/online.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import datasets, evaluate, linear_model, metrics, preprocessing
from sklearn.metrics import roc_auc_score

from models.errors import ConfigError, DataError, ModelError
from models.online import CLASSIFIERS, OnlineConfig, OnlineLearner
from models.synthetic import TradeGenerator

DRIFTS = (2000, 4000)


@pytest.fixture(scope="module")
def drifting_rows() -> list[Any]:
    # seed 3: a regime change that the model notices (the generator's drifts vary in severity)
    return TradeGenerator(drift_points=DRIFTS, seed=3).rows(6000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"classifier": "svm"},
        {"learning_rate": 0.0},
        {"learning_rate": math.nan},
        {"l2": -1.0},
        {"decay_window": 0},
        {"decay_factor": 1.0},
        {"decay_factor": 0.0},
        {"decay": True, "classifier": "hoeffding_tree"},
        {"drift_detector": "ddm"},
        {"drift_delta": 0.0},
        {"drift_threshold": -1.0},
        {"metrics_window": 1},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        OnlineConfig(**kwargs)


def test_prior_before_learning_and_count() -> None:
    learner = OnlineLearner()
    assert learner.predict_proba_one({"a": 1.0}) == {True: 0.5, False: 0.5}
    assert learner.win_probabilities([{}, {"a": 2.0}]) == [0.5, 0.5]
    assert learner.n_learned == 0 and learner.last_prediction is None
    assert learner.learn_one({"a": 1.0}, True) is None
    assert learner.last_prediction == 0.5 and not learner.drift_detected
    learner.learn_many([{"a": 1.0}, {"a": -1.0}], [1, 0], weights=[2.0, 0.5])
    assert learner.n_learned == 3


def test_predict_proba_one_is_a_river_binary_distribution() -> None:
    learner = OnlineLearner()
    for i in range(50):
        learner.learn_one({"a": float(i % 2)}, i % 2 == 1)
    probs = learner.predict_proba_one({"a": 1.0})
    assert set(probs) == {True, False} and probs[True] + probs[False] == pytest.approx(1.0)
    assert probs[True] == learner.win_probability({"a": 1.0}) > 0.5
    assert learner.predict_one({"a": 1.0}) is True and learner.predict_one({"a": 0.0}) is False


def test_matches_river_progressive_val_score_on_phishing() -> None:
    """Acceptance: same accuracy as River's own progressive evaluation of the same pipeline."""
    reference = evaluate.progressive_val_score(
        datasets.Phishing(),
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.Accuracy(),
    )
    learner = OnlineLearner(OnlineConfig(decay=False))
    correct = total = 0
    for x, y in datasets.Phishing():
        correct += learner.predict_one(x) == y
        total += 1
        learner.learn_one(x, y)
    assert correct / total == reference.get()


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_drift_detected_soon_after_each_regime_change(
    drifting_rows: list[Any], detector: str
) -> None:
    learner = OnlineLearner(OnlineConfig(drift_detector=detector))
    fired = []
    for r in drifting_rows:
        learner.learn_one(r.features, r.label)
        fired.append(learner.drift_detected)
    assert [i for i, f in enumerate(fired) if f] == learner.drift_points
    bound = 250
    for point in DRIFTS:
        assert any(point <= d <= point + bound for d in learner.drift_points), learner.drift_points
    assert not [d for d in learner.drift_points if d < DRIFTS[0]], "false alarm in regime 0"


def _prequential(rows: list[Any], config: OnlineConfig) -> np.ndarray:
    learner = OnlineLearner(config)
    hits = []
    for r in rows:
        hits.append((learner.predict_proba_one(r.features)[True] > 0.5) == r.label)
        learner.learn_one(r.features, r.label)
    return np.array(hits)


def test_decay_recovers_faster_after_regime_change(drifting_rows: list[Any]) -> None:
    off = _prequential(drifting_rows, OnlineConfig(decay=False))
    on = _prequential(drifting_rows, OnlineConfig(decay=True))
    for point in DRIFTS:
        after = slice(point, point + 400)
        assert on[after].mean() > off[after].mean() + 0.03, (on[after].mean(), off[after].mean())


def test_rolling_metrics_match_sklearn() -> None:
    rows = TradeGenerator(seed=1).rows(700)
    learner = OnlineLearner(OnlineConfig(metrics_window=300))
    preds = []
    for r in rows:
        preds.append(learner.win_probability(r.features))
        learner.learn_one(r.features, r.label)
    y = np.array([r.label for r in rows[-300:]])
    p = np.array(preds[-300:])
    m = learner.metrics()
    assert m.n == 300
    assert m.roc_auc == pytest.approx(roc_auc_score(y, p))
    assert m.accuracy == pytest.approx(np.mean((p > 0.5) == y))
    assert m.log_loss == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert OnlineLearner().metrics().roc_auc is None


def test_input_validation_and_no_mutation() -> None:
    learner = OnlineLearner()
    x = {"b": 1.0, "a": None, "c": math.nan, "d": math.inf}
    before = dict(x)
    learner.learn_one(x, 1)
    assert x.keys() == before.keys() and x["b"] == 1.0 and x["a"] is None
    assert set(learner.export()["weights"]) == {"b"}
    with pytest.raises(DataError):
        learner.learn_one({"a": "high"}, 1)
    with pytest.raises(DataError):
        learner.learn_one({"a": 1.0}, 2)
    for weight in (-1.0, 1e-300, 1e7, math.nan, math.inf):
        with pytest.raises(DataError):
            learner.learn_one({"a": 1.0}, 1, w=weight)
    with pytest.raises(DataError):
        learner.learn_many([{"a": 1.0}], [1, 0])


def test_zero_weight_leaves_linear_weights_alone() -> None:
    learner = OnlineLearner()
    learner.learn_one({"a": 1.0}, 1)
    learner.learn_one({"a": 3.0}, 0)
    w = learner.export()["weights"]
    learner.learn_one({"a": 2.0}, 1, w=0.0)
    assert learner.export()["weights"] == w


def test_learn_many_equals_learn_one_loop(drifting_rows: list[Any]) -> None:
    rows = drifting_rows[:2500]
    a, b = OnlineLearner(), OnlineLearner()
    a.learn_many([r.features for r in rows], [r.label for r in rows])
    for r in rows:
        b.learn_one(r.features, r.label)
    assert a.drift_points == b.drift_points
    assert a.drift_detected == b.drift_detected
    assert a.snapshot() == b.snapshot()


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_export_is_compact_json(classifier: str) -> None:
    learner = OnlineLearner(OnlineConfig(classifier=classifier))
    for r in TradeGenerator(seed=2).rows(300):
        learner.learn_one(r.features, r.label)
    out = learner.export()
    json.dumps(out)
    assert out["n_learned"] == 300 and out["config"]["classifier"] == classifier
    assert {"roc_auc", "log_loss", "accuracy"} <= set(out["metrics"])
    assert ("weights" in out) == (classifier in ("logistic_regression", "perceptron"))


def test_restore_rejects_foreign_or_newer_snapshots() -> None:
    data = OnlineLearner().snapshot()
    with pytest.raises(ModelError, match="header"):
        OnlineLearner.restore(b"garbage" + data)
    newer = bytearray(data)
    newer[len(b"ALPHAPULSE-ONLINE\n") + 1] += 1
    with pytest.raises(ModelError, match="format"):
        OnlineLearner.restore(bytes(newer))


names = st.sampled_from(["f0", "f1", "f2", "f3"])
values = st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False), st.just(math.nan))
stream = st.lists(
    st.tuples(
        st.dictionaries(names, values, max_size=4),
        st.booleans(),
        st.one_of(st.just(0.0), st.floats(1e-6, 1e6)),
    ),
    min_size=2,
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(CLASSIFIERS), st.booleans(), stream, st.integers(0, 60))
def test_snapshot_restore_is_exact(
    classifier: str, decay: bool, events: list[tuple[dict[str, Any], bool, float]], cut: int
) -> None:
    decay = decay and classifier in ("logistic_regression", "perceptron")
    config = OnlineConfig(classifier=classifier, decay=decay, decay_window=5, metrics_window=10)
    original = OnlineLearner(config)
    cut = min(cut, len(events))
    for x, y, w in events[:cut]:
        original.learn_one(x, y, w)
    clone = OnlineLearner.restore(original.snapshot())
    probes = [x for x, _, _ in events] + [{}, {"f0": 1.0, "zz": 2.0}]
    assert clone.win_probabilities(probes) == original.win_probabilities(probes)
    assert clone.drift_detected == original.drift_detected
    for x, y, w in events[cut:]:
        clone.learn_one(x, y, w)
        original.learn_one(x, y, w)
        assert clone.drift_detected == original.drift_detected
        assert clone.last_prediction == original.last_prediction
    assert clone.win_probabilities(probes) == original.win_probabilities(probes)
    assert clone.drift_points == original.drift_points
    assert clone.n_learned == original.n_learned
    assert clone.metrics() == original.metrics()
    assert clone.export() == original.export()
