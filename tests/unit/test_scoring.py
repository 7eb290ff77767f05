"""Tests of the fast scorer (models/scoring.py) and its compiled tree path (models/_forest.py)."""

from __future__ import annotations

import math
from typing import Any

import catboost as cb
import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from models._forest import UnsupportedModel, compile_forests
from models.blend import blend
from models.errors import ConfigError, DataError
from models.online import OnlineLearner
from models.scoring import BatchScorer
from models.synthetic import TradeGenerator
from models.trainer import TrainingConfig, train

NAMES = [f"f{j}" for j in range(6)]
WEIGHTS = {"xgb": 0.3, "lgb": 0.3, "cat": 0.2, "online": 0.2}


class Native:
    """The BatchModel protocol over a native booster."""

    def __init__(self, kind: str, booster: Any, names: list[str]) -> None:
        self.kind, self.booster, self.feature_names = kind, booster, names

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "xgb":
            return np.asarray(self.booster.inplace_predict(X))
        if self.kind == "lgb":
            return np.asarray(self.booster.predict(X, num_threads=1))
        return np.asarray(self.booster.predict(X, prediction_type="Probability")[:, 1])


class Shifted(Native):
    """A wrapper whose probabilities are not the booster's own (e.g. calibrated)."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.clip(super().predict_proba(X) * 0.9 + 0.05, 0, 1)


def _data(n: int, seed: int, nan_share: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    frame = TradeGenerator(n_features=6, n_informative=4, seed=seed).frame(n)
    X = frame[NAMES].to_numpy(dtype=np.float64, copy=True)
    X[np.random.default_rng(seed).random(X.shape) < nan_share] = np.nan
    return X, frame["label"].to_numpy()


def _boosters(
    names: list[str], nan_mode: str = "Min", zero_as_missing: bool = False
) -> dict[str, Any]:
    X, y = _data(600, 0)
    bx = xgb.train(
        {"max_depth": 4, "objective": "binary:logistic", "nthread": 1, "verbosity": 0},
        xgb.DMatrix(X, y, feature_names=names),
        15,
    )
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "num_threads": 1}
    params["zero_as_missing"] = zero_as_missing
    bl = lgb.train(params, lgb.Dataset(X, y, feature_name=names), 15)
    bc = cb.CatBoost(
        {
            "depth": 4,
            "iterations": 15,
            "loss_function": "Logloss",
            "verbose": False,
            "thread_count": 1,
            "allow_writing_files": False,
            "nan_mode": nan_mode,
        }
    )
    bc.fit(X, y)
    return {
        "xgb": Native("xgb", bx, names),
        "lgb": Native("lgb", bl, names),
        "cat": Native("cat", bc, names),
    }


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return _boosters(NAMES)


@pytest.fixture(scope="module")
def online() -> OnlineLearner:
    learner = OnlineLearner()
    for r in TradeGenerator(n_features=6, n_informative=4, seed=1).rows(300):
        learner.learn_one(r.features, r.label)
    return learner


def _rows(n: int, seed: int = 5, nan_share: float = 0.0) -> list[dict[str, Any]]:
    X, _ = _data(n, seed, nan_share)
    return [
        {k: (None if math.isnan(v) else v) for k, v in zip(NAMES, row, strict=True)} for row in X
    ]


def test_scores_are_the_blend_of_native_predictions(
    models: dict[str, Any], online: OnlineLearner
) -> None:
    scorer = BatchScorer(models, online=online, weights=WEIGHTS, fast_max_rows=0)
    rows = _rows(20)
    X = np.array([[r[f] for f in NAMES] for r in rows], dtype=float)
    native = {role: m.predict_proba(X) for role, m in models.items()}
    for i, got in enumerate(scorer.score_many(rows)):
        comps = {role: float(p[i]) for role, p in native.items()}
        comps["online"] = online.predict_proba_one(rows[i])[True]
        want = blend(comps, WEIGHTS)
        assert got.components == pytest.approx(comps, abs=1e-12)
        assert got.score == pytest.approx(want.score, abs=1e-12)
        assert got.weights == pytest.approx(want.weights_applied)
        assert not got.degraded


def test_compiled_path_matches_native(models: dict[str, Any], online: OnlineLearner) -> None:
    fast = BatchScorer(models, online=online, weights=WEIGHTS, min_feature_share=0.5)
    slow = BatchScorer(
        models, online=online, weights=WEIGHTS, min_feature_share=0.5, fast_max_rows=0
    )
    assert fast.fast_roles == ("xgb", "lgb", "cat") and slow.fast_roles == ()
    for size in (1, 7, 200):  # 200 > fast_max_rows: native path for both
        rows = _rows(size, seed=size, nan_share=0.2)
        for a, b in zip(fast.score_many(rows), slow.score_many(rows), strict=True):
            assert a.components.keys() == b.components.keys()
            assert a.components == pytest.approx(b.components, abs=1e-6)
            assert a.score == pytest.approx(b.score, abs=1e-6)
    assert fast.score_one(_rows(1)[0]).score == pytest.approx(
        slow.score_one(_rows(1)[0]).score, abs=1e-6
    )


@pytest.mark.parametrize("nan_mode", ["Min", "Max"])
def test_compiled_catboost_nan_modes(nan_mode: str) -> None:
    models = _boosters(NAMES, nan_mode=nan_mode)
    scorer = BatchScorer({"cat": models["cat"]}, weights={"cat": 1.0}, min_feature_share=0.1)
    assert scorer.fast_roles == ("cat",)
    rows = _rows(50, nan_share=0.3)
    X = np.array([[np.nan if r[f] is None else r[f] for f in NAMES] for r in rows])
    want = models["cat"].predict_proba(X)
    assert [s.score for s in scorer.score_many(rows)] == pytest.approx(want.tolist(), abs=1e-9)


def test_unsupported_or_mismatching_models_stay_native() -> None:
    models = _boosters(NAMES, zero_as_missing=True)
    with pytest.raises(UnsupportedModel):
        compile_forests(models["lgb"].booster, NAMES)
    shifted = Shifted("xgb", models["xgb"].booster, NAMES)
    scorer = BatchScorer({"lgb": models["lgb"], "xgb": shifted}, weights={"lgb": 1.0, "xgb": 1.0})
    assert scorer.fast_roles == ()
    row = _rows(1)[0]
    X = np.array([[row[f] for f in NAMES]])
    assert scorer.score_one(row).components["xgb"] == pytest.approx(
        float(shifted.predict_proba(X)[0])
    )


def test_deep_trees_stay_native(models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import models._forest as forest

    monkeypatch.setattr(forest, "MAX_DEPTH", 2)
    with pytest.raises(UnsupportedModel, match="depth"):
        compile_forests(models["xgb"].booster, NAMES)
    assert BatchScorer({"xgb": models["xgb"]}, weights={"xgb": 1.0}).fast_roles == ()


@pytest.mark.parametrize("focal", [False, True])
def test_trainer_models_on_the_compiled_path(focal: bool) -> None:
    X, y = _data(500, 3, nan_share=0.05)
    trained = {
        kind: train(
            TrainingConfig(model_type=kind, n_estimators=10, focal_loss=focal, weight_by_rr=False),
            X,
            y,
            feature_names=NAMES,
        ).model
        for kind in ("xgboost", "lightgbm", "catboost")
    }
    weights = {k: 1.0 for k in trained}
    fast = BatchScorer(trained, weights=weights)
    slow = BatchScorer(trained, weights=weights, fast_max_rows=0)
    if not focal:
        assert set(fast.fast_roles) == set(trained)
    rows = _rows(30, nan_share=0.0)
    for a, b in zip(fast.score_many(rows), slow.score_many(rows), strict=True):
        assert a.components == pytest.approx(b.components, abs=1e-6)


def test_min_feature_share(models: dict[str, Any], online: OnlineLearner) -> None:
    row = dict(_rows(1)[0])
    row["f2"] = None
    strict = BatchScorer(models, online=online, weights=WEIGHTS)
    r = strict.score_one(row)
    assert set(r.components) == {"online"} and r.degraded and r.score == r.components["online"]
    lenient = BatchScorer(models, online=online, weights=WEIGHTS, min_feature_share=5 / 6)
    r = lenient.score_one(row)
    assert set(r.components) == {"xgb", "lgb", "cat", "online"} and not r.degraded
    two_missing = {**row, "f3": math.nan}
    assert set(lenient.score_one(two_missing).components) == {"online"}


def test_mixed_rows_in_one_batch(models: dict[str, Any], online: OnlineLearner) -> None:
    scorer = BatchScorer(models, online=online, weights=WEIGHTS)
    full, partial = _rows(2)
    partial = {**partial, "f0": math.inf}
    a, b = scorer.score_many([full, partial])
    assert not a.degraded and len(a.components) == 4
    assert b.degraded and set(b.components) == {"online"}
    assert scorer.score_many([full])[0] == a


def test_feature_orders_differ_between_models(models: dict[str, Any]) -> None:
    reordered = list(reversed(NAMES))
    cat = models["cat"]
    X, y = _data(600, 0)
    perm = [NAMES.index(f) for f in reordered]
    bc = cb.CatBoost({"depth": 3, "iterations": 10, "verbose": False, "allow_writing_files": False})
    bc.fit(X[:, perm], y)
    other = Native("cat", bc, reordered)
    scorer = BatchScorer({"cat": cat, "rev": other}, weights={"cat": 1.0, "rev": 1.0})
    row = _rows(1)[0]
    got = scorer.score_one(row).components
    x = np.array([[row[f] for f in NAMES]])
    assert got["cat"] == pytest.approx(float(cat.predict_proba(x)[0]), abs=1e-9)
    assert got["rev"] == pytest.approx(float(other.predict_proba(x[:, perm])[0]), abs=1e-9)


def test_configured_role_without_model_degrades(
    models: dict[str, Any], online: OnlineLearner
) -> None:
    scorer = BatchScorer({"monthly_full": models["xgb"]}, online=online)
    r = scorer.score_one(_rows(1)[0])
    assert r.degraded and set(r.weights) == {"monthly_full", "online"}
    assert r.weights["monthly_full"] == pytest.approx(2 / 3)


def test_no_component_answers_gives_nan(models: dict[str, Any]) -> None:
    scorer = BatchScorer({"xgb": models["xgb"]}, weights={"xgb": 1.0})
    r = scorer.score_one({})
    assert math.isnan(r.score) and r.degraded and r.components == {}
    assert scorer.score_many([]) == []


def test_errors(models: dict[str, Any], online: OnlineLearner) -> None:
    with pytest.raises(ConfigError, match="no blend weight"):
        BatchScorer({"mystery": models["xgb"]}, online=online)
    with pytest.raises(ConfigError, match="online"):
        BatchScorer({"online": models["xgb"]}, weights={"online": 1.0})
    with pytest.raises(ConfigError):
        BatchScorer(models, weights=WEIGHTS, min_feature_share=0.0)
    with pytest.raises(ConfigError):
        BatchScorer(models, weights=WEIGHTS, fast_max_rows=-1)
    scorer = BatchScorer(models, weights=WEIGHTS)
    with pytest.raises(DataError):
        scorer.score_one({"f0": "high"})


def test_components_many_is_what_score_many_blends(
    models: dict[str, Any], online: OnlineLearner
) -> None:
    for fast_max_rows in (128, 0):
        scorer = BatchScorer(
            models,
            online=online,
            weights=WEIGHTS,
            min_feature_share=5 / 6,
            fast_max_rows=fast_max_rows,
        )
        rows = _rows(40, seed=7, nan_share=0.1)
        comps = scorer.components_many(rows)
        assert len(comps) == len(rows) and all("online" not in c for c in comps)
        assert any(len(c) < 3 for c in comps) and any(len(c) == 3 for c in comps)
        for row, c, got in zip(rows, comps, scorer.score_many(rows), strict=True):
            want = blend({**c, "online": online.predict_proba_one(row)[True]}, WEIGHTS)
            assert got.components == {**c, "online": pytest.approx(got.components["online"])}
            assert (got.score, got.weights, got.degraded) == (
                want.score,
                want.weights_applied,
                want.degraded,
            )
    assert scorer.components_many([]) == []


def test_components_many_refuses_probabilities_outside_unit_interval() -> None:
    class Broken:
        feature_names = NAMES

        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            return np.full(len(X), 1.5)

    scorer = BatchScorer({"bad": Broken()}, weights={"bad": 1.0})
    with pytest.raises(DataError, match="outside"):
        scorer.components_many(_rows(2))


class _EmptyOnline:
    """A River classifier that has not answered yet: an empty distribution."""

    def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
        return {}


def test_an_online_model_without_an_answer_is_left_out(models: dict[str, Any]) -> None:
    scorer = BatchScorer({"xgb": models["xgb"]}, online=_EmptyOnline(), weights=WEIGHTS)
    r = scorer.score_one(_rows(1)[0])
    assert set(r.components) == {"xgb"} and r.degraded
    assert math.isnan(scorer.score_one({}).score)
