"""The shared model contract (DESIGN.md, style point 5), run over every model of this issue.

Each case wraps a model behind ``make(seed)``, ``learn(model, x, y)`` and ``predict(model, x)``:
every online-learner classifier, and the batch scorer (three boosters plus an online learner,
which is the part that learns).
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import catboost as cb
import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from models.online import CLASSIFIERS, OnlineConfig, OnlineLearner
from models.scoring import BatchScorer
from models.synthetic import TradeGenerator

NAMES = [f"f{j}" for j in range(6)]


@dataclass(frozen=True)
class Case:
    make: Callable[[int], Any]
    learn: Callable[[Any, dict[str, Any], int], object]
    predict: Callable[[Any, dict[str, Any]], float]


def _online_case(classifier: str) -> Case:
    return Case(
        make=lambda seed: OnlineLearner(OnlineConfig(classifier=classifier, seed=seed)),
        learn=lambda m, x, y: m.learn_one(x, y),
        predict=lambda m, x: m.predict_proba_one(x)[True],
    )


class _Native:
    def __init__(self, kind: str, booster: Any) -> None:
        self.kind, self.booster, self.feature_names = kind, booster, NAMES

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "xgb":
            return np.asarray(self.booster.inplace_predict(X))
        if self.kind == "lgb":
            return np.asarray(self.booster.predict(X))
        return np.asarray(self.booster.predict(X, prediction_type="Probability")[:, 1])


def _make_scorer(seed: int) -> BatchScorer:
    frame = TradeGenerator(n_features=6, n_informative=4, seed=seed).frame(300)
    X, y = frame[NAMES].to_numpy(dtype=np.float64), frame["label"].to_numpy()
    bx = xgb.train(
        {"max_depth": 3, "objective": "binary:logistic", "nthread": 1, "seed": seed},
        xgb.DMatrix(X, y, feature_names=NAMES),
        5,
    )
    bl = lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1, "seed": seed},
        lgb.Dataset(X, y, feature_name=NAMES),
        5,
    )
    bc = cb.CatBoost(
        {
            "depth": 3,
            "iterations": 5,
            "verbose": False,
            "random_seed": seed,
            "thread_count": 1,
            "allow_writing_files": False,
        }
    )
    bc.fit(X, y)
    models = {
        "monthly_full": _Native("xgb", bx),
        "weekly_quick": _Native("lgb", bl),
        "cat": _Native("cat", bc),
    }
    weights = {"monthly_full": 0.3, "weekly_quick": 0.3, "cat": 0.2, "online": 0.2}
    return BatchScorer(models, online=OnlineLearner(), weights=weights, min_feature_share=0.5)


CASES = {
    **{c: _online_case(c) for c in CLASSIFIERS},
    "scorer": Case(
        make=_make_scorer,
        learn=lambda m, x, y: m.online.learn_one(x, y),
        predict=lambda m, x: m.score_one(x).score,
    ),
}


def _stream(n: int = 250, seed: int = 11) -> list[tuple[dict[str, Any], int]]:
    rows = TradeGenerator(n_features=6, n_informative=4, seed=seed).rows(n)
    rng = np.random.default_rng(seed)
    out = []
    for r in rows:
        x: dict[str, Any] = dict(r.features)
        for k in NAMES:
            u = rng.random()
            if u < 0.05:
                x[k] = None
            elif u < 0.08:
                x[k] = math.nan
        out.append((x, r.label))
    return out


PROBES: list[dict[str, Any]] = [x for x, _ in _stream(15, seed=99)]


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def _trained(case: Case, seed: int = 0, reverse: bool = False) -> Any:
    model = case.make(seed)
    for x, y in _stream():
        case.learn(model, dict(reversed(x.items())) if reverse else x, y)
    return model


def test_learn_and_predict_do_not_mutate_input(case: Case) -> None:
    model = case.make(0)
    for x, y in _stream(60):
        before = copy.deepcopy(x)
        case.learn(model, x, y)
        case.predict(model, x)
        assert x.keys() == before.keys()
        assert all(
            (v is None and before[k] is None)
            or v == before[k]
            or (math.isnan(v) and math.isnan(before[k]))
            for k, v in x.items()
        )


def test_pickling_round_trips(case: Case) -> None:
    model = _trained(case)
    clone = pickle.loads(pickle.dumps(model))
    assert [case.predict(clone, x) for x in PROBES] == [case.predict(model, x) for x in PROBES]
    for x, y in _stream(40, seed=5):
        case.learn(model, x, y)
        case.learn(clone, x, y)
    assert [case.predict(clone, x) for x in PROBES] == [case.predict(model, x) for x in PROBES]


def test_feature_order_does_not_matter(case: Case) -> None:
    a, b = _trained(case), _trained(case, reverse=True)
    for x in PROBES:
        p = case.predict(a, x)
        assert case.predict(a, dict(reversed(x.items()))) == p
        assert case.predict(b, x) == p


def test_unseen_and_missing_features_do_not_crash(case: Case) -> None:
    model = case.make(0)
    assert 0.0 <= case.predict(model, {"never_seen": 1.0}) <= 1.0
    for x, y in _stream(80):
        case.learn(model, {**x, "extra": 3.0} if y else x, y)
    for x in ({}, {"unseen": 2.0}, {"f0": None, "f1": math.nan}, {k: None for k in NAMES}):
        p = case.predict(model, x)
        assert 0.0 <= p <= 1.0


def test_seeded_runs_repeat(case: Case) -> None:
    a, b = _trained(case, seed=3), _trained(case, seed=3)
    assert [case.predict(a, x) for x in PROBES] == [case.predict(b, x) for x in PROBES]
