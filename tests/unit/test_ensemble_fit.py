"""Fitting the ensemble on history (models/ensemble_fit.py): leak-free, prequential, comparable."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

import models.ensemble_fit as ensemble_fit
from models.ensemble_fit import config_from_params, fit_ensemble, prequential_online
from models.errors import ConfigError, DataError
from models.keyed import KeyedOnline
from models.synthetic import TradeGenerator
from models.trainer import TrainingConfig

FEATURES = ["f0", "f1", "f2", "f3"]
FIXED = {"monthly_full": 0.4, "weekly_quick": 0.4, "online": 0.2}


def interaction_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Trades that win when f0 and f1 share a sign (10% noise): boosters learn it, a linear
    online model cannot."""
    frame = TradeGenerator(n_features=4, n_informative=2, seed=seed).frame(n)
    frame = frame.drop(columns="regime")
    flip = np.random.default_rng(seed).random(n) < 0.1
    frame["label"] = ((frame["f0"] * frame["f1"] > 0) ^ flip).astype(int)
    frame["model_key"] = frame["symbol"]
    return frame


class _Constant:
    feature_names = ("rowid",)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), 0.5)


def test_no_row_is_predicted_by_a_model_that_saw_it_or_a_later_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = interaction_frame(600).sample(frac=1.0, random_state=1)  # shuffled: fit sorts by ts
    frame = frame.assign(rowid=frame["ts"].rank(method="first").astype(int) - 1)
    trained: list[np.ndarray] = []

    def spy(cfg: Any, X: np.ndarray, y: Any, w: Any, names: list[str], init: Any = None) -> Any:
        trained.append(X[:, names.index("rowid")].astype(int))
        return _Constant()

    monkeypatch.setattr(ensemble_fit, "fit_booster", spy)
    cfg = TrainingConfig("lightgbm", n_estimators=5)
    fit = fit_ensemble(
        frame, {"weekly_quick": cfg}, {"weekly_quick": ["rowid", *FEATURES]}, "weights", FIXED
    )
    assert len(trained) == 5  # one refit per fold
    fold_of = fit.oof.fold_of
    for i in np.flatnonzero(fold_of >= 0):
        assert trained[fold_of[i]].max() < i, f"row {i} predicted by a model that saw row >= {i}"
    for k, fold in enumerate(fit.oof.folds):
        assert sorted(trained[k].tolist()) == fold.train.tolist()  # each fold's rows, and only them
    first_block = fit.oof.folds[0].predict.min()
    assert fit.n_rows == 600 and fit.n_scored == 600 - first_block
    assert (fold_of[:first_block] == -1).all()


def test_a_time_window_keeps_each_fold_to_its_own_recent_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = interaction_frame(600).assign(rowid=np.arange(600))
    frame["ts"] = 1_700_000_000_000 + np.arange(600) * 3_600_000  # one row an hour: 25 days
    trained: list[np.ndarray] = []

    def spy(cfg: Any, X: np.ndarray, y: Any, w: Any, names: list[str], init: Any = None) -> Any:
        trained.append(X[:, names.index("rowid")].astype(int))
        return _Constant()

    monkeypatch.setattr(ensemble_fit, "fit_booster", spy)
    cfg = TrainingConfig("lightgbm", n_estimators=5, window_days=2.0)
    fit = fit_ensemble(frame, {"weekly_quick": cfg}, {"weekly_quick": ["rowid"]}, "weights", FIXED)
    for k, fold in enumerate(fit.oof.folds):
        last = fold.train.max()
        assert trained[k].max() == last and trained[k].min() == last - 48


def test_online_probabilities_are_prequential() -> None:
    frame = interaction_frame(300, seed=2)
    rows = frame[FEATURES].to_dict("records")
    keys, labels = frame["model_key"].tolist(), frame["label"].tolist()
    rr = frame["realized_rr"].tolist()
    p = prequential_online(rows, keys, labels, rr)
    for i in (0, 1, 57, 299):
        keyed = KeyedOnline()
        for j in range(i):
            keyed.learn(str(j), keys[j], rows[j], bool(labels[j]), rr[j])
        assert p[i] == keyed.predict(keys[i], rows[i])[0]
    # later labels never change an earlier probability
    flipped = prequential_online(rows, keys, labels[:150] + [1 - v for v in labels[150:]], rr)
    assert np.array_equal(flipped[:151], p[:151]) and not np.array_equal(flipped, p)
    with pytest.raises(DataError):
        prequential_online(rows, keys[:-1], labels)


@pytest.mark.parametrize("method", ["weights", "stacking"])
def test_a_fitted_ensemble_beats_the_fixed_blend_when_one_component_is_useless(
    method: str,
) -> None:
    frame = interaction_frame(1500, seed=3)
    cfg = TrainingConfig("lightgbm", n_estimators=60)
    fit = fit_ensemble(frame, {"weekly_quick": cfg}, {"weekly_quick": FEATURES}, method, FIXED)
    held = fit.held_out
    assert fit.names == ("weekly_quick", "online")
    assert held.fixed.weights is not None
    assert held.fixed.weights == pytest.approx((2 / 3, 1 / 3))  # 0.4 : 0.2 over those present
    assert held.beats_fixed, (held.log_loss, held.fixed_log_loss)
    assert fit.report.metrics["ensemble"]["log_loss"] == pytest.approx(held.log_loss)
    assert fit.report.metrics["fixed"]["log_loss"] == pytest.approx(held.fixed_log_loss)
    ens = held.ensemble
    if method == "weights":
        assert ens.weights is not None and ens.weights[0] > 0.8
    else:
        assert ens.coef is not None and ens.coef[0] > abs(ens.coef[1])


def test_fit_needs_a_batch_model_and_matching_features() -> None:
    frame = interaction_frame(300)
    cfg = TrainingConfig("lightgbm", n_estimators=5)
    with pytest.raises(DataError, match="train weekly_quick or monthly_full"):
        fit_ensemble(frame, {}, {}, "weights", FIXED)
    with pytest.raises(ConfigError):
        fit_ensemble(frame, {"weekly_quick": cfg}, {"monthly_full": FEATURES}, "weights", FIXED)
    with pytest.raises(ConfigError):
        fit_ensemble(frame, {"weekly_quick": cfg}, {"weekly_quick": FEATURES}, "mean", FIXED)
    with pytest.raises(DataError, match="holds 99 joined outcomes"):
        fit_ensemble(
            frame[:99], {"weekly_quick": cfg}, {"weekly_quick": FEATURES}, "weights", FIXED
        )


def test_a_feature_the_history_lacks_is_missing_not_an_error() -> None:
    frame = interaction_frame(600)
    cfg = TrainingConfig("lightgbm", n_estimators=10)
    names = {"weekly_quick": [*FEATURES, "not_in_history"]}
    fit = fit_ensemble(frame, {"weekly_quick": cfg}, names, "weights", FIXED)
    assert np.isfinite(fit.held_out.log_loss)


def test_the_refit_config_comes_from_the_champions_logged_params() -> None:
    params = {
        f"cfg.{k}": str(v) for k, v in TrainingConfig("xgboost", max_depth=7).as_params().items()
    }
    params["cfg.cadence"] = "monthly_full"
    params["cfg.hpo_trials"] = "25"
    cfg = config_from_params(params, "xgboost", "monthly_full")
    assert (cfg.max_depth, cfg.hpo_trials, cfg.cadence, cfg.warm_start) == (
        7,
        0,
        "monthly_full",
        False,
    )
    broken = {**params, "cfg.max_depth": "deep"}
    assert config_from_params(broken, "xgboost", "monthly_full").max_depth == 6  # the preset
    assert config_from_params({}, "catboost", "weekly_quick").n_estimators == 150
