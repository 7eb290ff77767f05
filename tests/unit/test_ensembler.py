"""Tests of the ensembler (models/ensembler.py)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from models.ensembler import (
    Ensemble,
    evaluate,
    out_of_fold,
    time_ordered_folds,
)
from models.errors import ConfigError, DataError
from models.synthetic import TradeGenerator

FEATURES = [f"f{j}" for j in range(10)]


class _Fitted:
    def __init__(self, model: LogisticRegression, cols: list[int]) -> None:
        self.model, self.cols = model, cols

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(X[:, self.cols])[:, 1]


class SubsetLogit:
    """A component that sees only some features: each one alone is weak, together they are not."""

    def __init__(self, cols: list[int]) -> None:
        self.cols = cols

    def __call__(self, X: np.ndarray, y: np.ndarray) -> _Fitted:
        return _Fitted(LogisticRegression().fit(X[:, self.cols], y), self.cols)


FACTORIES = {"a": SubsetLogit([0, 1, 5]), "b": SubsetLogit([2, 3, 6]), "c": SubsetLogit([3, 4, 7])}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    frame = TradeGenerator(seed=7).frame(4500)
    return frame[FEATURES].to_numpy(), frame["label"].to_numpy()


def test_folds_are_time_ordered_with_gap() -> None:
    folds = time_ordered_folds(100, n_folds=4, gap=3)
    assert len(folds) == 4
    predicted = np.concatenate([f.predict for f in folds])
    assert predicted.tolist() == list(range(20, 100))
    for f in folds:
        assert f.train.max() + 3 < f.predict.min()
        assert f.train.min() == 0
    with pytest.raises(DataError):
        time_ordered_folds(5, n_folds=10)
    with pytest.raises(ConfigError):
        time_ordered_folds(100, n_folds=0)
    with pytest.raises(ConfigError):
        time_ordered_folds(100, gap=-1)


def test_meta_learner_never_sees_a_prediction_from_a_model_trained_on_that_row() -> None:
    """The leakage test: record each fitted model's training rows and check every OOF row."""
    n = 600
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.standard_normal((n, 3)), np.arange(n)])  # last column = row id
    y = (X[:, 0] + rng.standard_normal(n) > 0).astype(int)
    trained_on: list[set[int]] = []

    def factory(X_train: np.ndarray, y_train: np.ndarray) -> Any:
        trained_on.append({int(i) for i in X_train[:, -1]})
        model = LogisticRegression().fit(X_train[:, :-1], y_train)

        class Fitted:
            def predict_proba(self, Z: np.ndarray) -> np.ndarray:
                return model.predict_proba(Z[:, :-1])[:, 1]

        return Fitted()

    oof = out_of_fold({"m": factory}, X, y, time_ordered_folds(n, n_folds=5, gap=10))
    assert len(trained_on) == 5
    rows = np.flatnonzero(oof.mask)
    assert rows.size > 0 and np.all(np.isfinite(oof.predictions[rows]))
    assert np.all(np.isnan(oof.predictions[~oof.mask]))
    for r in rows:
        seen = trained_on[oof.fold_of[r]]
        assert r not in seen
        assert max(seen) < r - 10  # only earlier rows, and not the embargoed ones
    # the meta-learner is fitted on exactly these rows; a NaN (unpredicted row) is refused
    Ensemble.stacked(oof.components(), y[oof.mask])
    with pytest.raises(DataError):
        Ensemble.stacked({"m": oof.predictions[:, 0]}, y)


def test_out_of_fold_refuses_folds_that_look_ahead() -> None:
    bad = time_ordered_folds(40, n_folds=2)
    bad[0] = type(bad[0])(train=np.arange(0, 30), predict=np.arange(13, 26))
    with pytest.raises(DataError, match="trains on rows"):
        out_of_fold(FACTORIES, np.zeros((40, 10)), np.zeros(40), bad)


def test_ensembles_beat_every_component_on_holdout(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Acceptance: blended and stacked ensembles beat each single component in log loss."""
    X, y = data
    train, hold = slice(0, 3000), slice(3000, None)
    oof = out_of_fold(FACTORIES, X[train], y[train], time_ordered_folds(3000, n_folds=5))
    comps, y_oof = oof.components(), y[train][oof.mask]
    ensembles = {
        "fixed": Ensemble.fixed({"a": 1.0, "b": 1.0, "c": 1.0}),
        "optimised": Ensemble.optimised(comps, y_oof),
        "stacked": Ensemble.stacked(comps, y_oof),
    }
    final = {name: f(X[train], y[train]).predict_proba(X[hold]) for name, f in FACTORIES.items()}
    preds = {**final, **{k: e.predict_proba(final) for k, e in ensembles.items()}}
    report = evaluate(y[hold], preds)
    best_single = min(report.metrics[n]["log_loss"] for n in FACTORIES)
    for name in ensembles:
        assert report.metrics[name]["log_loss"] < best_single, report.table()


def test_optimised_weights_on_simplex_and_no_worse_than_any_component(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = data
    comps = {n: f(X[:2000], y[:2000]).predict_proba(X[2000:3000]) for n, f in FACTORIES.items()}
    comps["noise"] = np.full(1000, 0.5)
    ens = Ensemble.optimised(comps, y[2000:3000])
    w = np.array(ens.weights)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    loss = log_loss(y[2000:3000], ens.predict_proba(comps))
    assert all(loss <= log_loss(y[2000:3000], p) + 1e-9 for p in comps.values())
    assert w[-1] < 0.05


def test_evaluate_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    m = evaluate(y, {"p": p}).metrics["p"]
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert np.isnan(evaluate(np.ones(3), {"p": np.full(3, 0.5)}).metrics["p"]["roc_auc"])
    with pytest.raises(DataError):
        evaluate(y, {"p": p[:10]})


def test_to_log_dict_is_plain_and_flat(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    comps = {n: f(X[:1000], y[:1000]).predict_proba(X[1000:1500]) for n, f in FACTORIES.items()}
    for ens in (
        Ensemble.fixed({"a": 2.0, "b": 1.0, "c": 1.0}),
        Ensemble.stacked(comps, y[1000:1500]),
    ):
        report = evaluate(y[1000:1500], {**comps, "ensemble": ens.predict_proba(comps)})
        logged = ens.to_log_dict(report)
        assert set(logged) == {"params", "metrics"}
        json.dumps(logged)
        assert logged["params"]["ensemble.method"] == ens.method
        assert "ensemble.log_loss" in logged["metrics"] and "a.roc_auc" in logged["metrics"]
        assert all(isinstance(v, float) for v in logged["metrics"].values())
    assert "ensemble.weight.a" in Ensemble.fixed({"a": 1.0}).to_log_dict()["params"]


@pytest.mark.parametrize("weights", [{}, {"a": -1.0}, {"a": 0.0}, {"a": float("nan")}])
def test_fixed_rejects_bad_weights(weights: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Ensemble.fixed(weights)


def test_bad_inputs() -> None:
    with pytest.raises(DataError, match="both outcomes"):
        Ensemble.stacked({"a": np.full(10, 0.3)}, np.zeros(10))
    with pytest.raises(ConfigError):
        Ensemble.stacked({"a": np.full(10, 0.3)}, np.arange(10) % 2, C=0.0)
    with pytest.raises(DataError, match="missing"):
        Ensemble.fixed({"a": 1.0}).predict_proba({"b": np.zeros(3)})
    with pytest.raises(DataError):
        Ensemble.fixed({"a": 1.0}).predict_proba({"a": np.array([1.5])})
