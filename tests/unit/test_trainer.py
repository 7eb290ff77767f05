"""The batch trainer for all three libraries: config, warm start, weights, determinism, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score

from models import _booster
from models._weights import rr_weights, sample_weights, scale_pos_weight_from_labels
from models.errors import AlphaPulseError, ConfigError, DataError
from models.synthetic import TradeGenerator
from models.trainer import (
    MODEL_TYPES,
    TrainedModel,
    Trainer,
    TrainingConfig,
    TrainingData,
    TrialReport,
    evaluate,
    train,
    walk_forward_splits,
)

LIBS = list(MODEL_TYPES)


@pytest.fixture(scope="module")
def trades() -> TrainingData:
    df = TradeGenerator(n_features=6, n_informative=3, seed=11).frame(500)
    return TrainingData.from_frame(df, exclude=["regime"])


def small(model_type: str, **kw: object) -> TrainingConfig:
    base: dict[str, object] = {"n_estimators": 20, "max_depth": 3, "learning_rate": 0.1}
    return TrainingConfig(model_type=model_type, **{**base, **kw})  # type: ignore[arg-type]


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_type", "sklearn"),
        ("cadence", "hourly"),
        ("learning_rate", 0.0),
        ("learning_rate", 1.5),
        ("learning_rate", float("nan")),
        ("max_depth", 0),
        ("max_depth", 3.5),
        ("n_estimators", 0),
        ("n_estimators", True),
        ("scale_pos_weight", -1.0),
        ("scale_pos_weight", 0.0),
        ("focal_loss", "yes"),
        ("focal_alpha", 0.0),
        ("focal_alpha", 1.0),
        ("focal_gamma", -0.5),
        ("weight_by_rr", 1),
        ("rr_scale", 0.0),
        ("rr_weight_max", 0.5),
        ("subsample", 0.0),
        ("colsample", 1.2),
        ("reg_lambda", -1.0),
        ("seed", -1),
        ("n_jobs", 0),
        ("valid_fraction", 0.0),
        ("valid_fraction", 0.8),
        ("window_days", 0.0),
        ("threshold", 1.5),
        ("hpo_trials", -1),
        ("hpo_timeout_s", 0.0),
        ("hpo_splits", 0),
    ],
)
def test_every_field_is_validated(field: str, value: object) -> None:
    kwargs: dict[str, object] = {"model_type": "xgboost", field: value}
    with pytest.raises(ConfigError, match=field):
        TrainingConfig(**kwargs)  # type: ignore[arg-type]


def test_cadence_presets() -> None:
    nightly = TrainingConfig.for_cadence("xgboost", "nightly_incremental")
    weekly = TrainingConfig.for_cadence("lightgbm", "weekly_quick")
    monthly = TrainingConfig.for_cadence("catboost", "monthly_full")
    assert nightly.warm_start and nightly.hpo_trials == 0 and nightly.window_days is not None
    assert nightly.n_estimators < weekly.n_estimators
    assert not weekly.warm_start and weekly.hpo_trials == 0 and weekly.window_days is not None
    assert monthly.hpo_trials > 0 and monthly.hpo_timeout_s and monthly.window_days is None
    assert TrainingConfig.for_cadence("xgboost", "monthly_full", hpo_trials=2).hpo_trials == 2
    with pytest.raises(ConfigError, match="cadence"):
        TrainingConfig.for_cadence("xgboost", "hourly")
    with pytest.raises(ConfigError, match="colour"):
        TrainingConfig.for_cadence("xgboost", "weekly_quick", colour="red")
    with pytest.raises(ConfigError, match="hpo_trials"):
        TrainingConfig.for_cadence("xgboost", "nightly_incremental", hpo_trials=3)


# ---------------------------------------------------------------- validation helpers


def test_walk_forward_splits_are_ordered_and_never_look_ahead() -> None:
    seen = []
    for tr, va in walk_forward_splits(100, 4):
        assert np.array_equal(tr, np.arange(tr.size))
        assert np.array_equal(va, np.arange(tr.size, tr.size + va.size))
        assert tr.max() < va.min()
        seen.extend(va.tolist())
    assert seen == list(range(50, 100))
    with pytest.raises(DataError):
        list(walk_forward_splits(3, 5))


def test_metrics_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.4).astype(int)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0.01, 0.99)
    rr = np.where(y == 1, 2.0, -1.0)
    m = evaluate(y, p, rr, threshold=0.6)
    taken = p >= 0.6
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["precision"] == pytest.approx(precision_score(y, taken))
    assert m["recall"] == pytest.approx(recall_score(y, taken))
    assert m["expected_r"] == pytest.approx(rr[taken].mean())
    assert m["n_taken"] == taken.sum()


def test_rr_weights_are_bounded_and_a_single_outlier_cannot_dominate() -> None:
    rr = np.array([-1.0] * 50 + [2.0] * 49 + [1e9])
    w = rr_weights(rr, rr_scale=1.0, rr_weight_max=5.0)
    assert w.mean() == pytest.approx(1.0)
    assert w.max() / w.min() == pytest.approx(2.5)  # 5 / 2
    assert w[-1] / w.sum() < 0.03
    assert np.all(np.isfinite(rr_weights(np.array([np.nan, 1.0]))))
    both = sample_weights(np.array([0, 1]), np.array([-1.0, 1.0]), 2.0, True)
    assert both[1] / both[0] == pytest.approx(2.0)


# ---------------------------------------------------------------- training, per library


@pytest.mark.parametrize("model_type", LIBS)
def test_warm_start_continues_the_old_model(model_type: str, trades: TrainingData) -> None:
    cfg = small(model_type, n_estimators=30)
    old = train(cfg, trades).model
    old_pred = old.predict_proba(trades.X[:100])
    more = train(cfg.replace(n_estimators=10), trades, init_model=old).model
    fresh = train(cfg.replace(n_estimators=10), trades).model
    assert more.n_trees == 40
    assert old.n_trees == 30  # the old model is not modified
    np.testing.assert_array_equal(old.predict_proba(trades.X[:100]), old_pred)
    new_pred = more.predict_proba(trades.X[:100])
    moved = np.abs(new_pred - old_pred).mean()
    assert moved > 1e-4
    assert moved < 0.5 * np.abs(fresh.predict_proba(trades.X[:100]) - old_pred).mean()


@pytest.mark.parametrize("model_type", LIBS)
def test_warm_start_rejects_different_features(model_type: str, trades: TrainingData) -> None:
    old = train(small(model_type, n_estimators=5), trades).model
    frame = pd.DataFrame(trades.X, columns=list(trades.feature_names))
    renamed = frame.rename(columns={"f2": "spread_bps"})
    with pytest.raises(DataError, match=r"missing f2.*unexpected spread_bps"):
        train(small(model_type, n_estimators=5), renamed, trades.y, init_model=old)
    shuffled = frame[list(reversed(frame.columns))]
    cont = train(small(model_type, n_estimators=5), shuffled, trades.y, init_model=old).model
    assert cont.feature_names == old.feature_names and cont.n_trees == 10


def test_warm_start_rejects_another_library_and_another_loss(trades: TrainingData) -> None:
    old = train(small("xgboost", n_estimators=5), trades).model
    with pytest.raises(DataError, match="xgboost"):
        train(small("lightgbm"), trades, init_model=old)
    with pytest.raises(ConfigError, match="focal_loss"):
        train(small("xgboost", focal_loss=True), trades, init_model=old)
    with pytest.raises(ConfigError, match="warm-start"):
        train(TrainingConfig.for_cadence("xgboost", "nightly_incremental"), trades)


@pytest.mark.parametrize("model_type", LIBS)
def test_scale_pos_weight_raises_predicted_win_probability(
    model_type: str, trades: TrainingData
) -> None:
    low = train(small(model_type, scale_pos_weight=1.0, weight_by_rr=False), trades)
    high = train(small(model_type, scale_pos_weight=4.0, weight_by_rr=False), trades)
    auto = train(small(model_type, weight_by_rr=False), trades)
    n_pos = trades.y[: auto.n_train].sum()
    assert auto.scale_pos_weight == pytest.approx((auto.n_train - n_pos) / n_pos)
    X = trades.X
    assert high.model.predict_proba(X).mean() > low.model.predict_proba(X).mean() + 0.1


@pytest.mark.parametrize("model_type", LIBS)
def test_rr_weights_favour_trades_with_large_realised_reward(model_type: str) -> None:
    # Labels do not depend on the features; winners of group 1 realise +5R, of group 0 +1R.
    rng = np.random.default_rng(3)
    n = 800
    group = rng.integers(0, 2, n).astype(float)
    X = np.column_stack([group, rng.standard_normal(n)])
    y = (rng.random(n) < 0.4).astype(int)
    rr = np.where(y == 1, np.where(group == 1, 5.0, 1.0), -1.0)
    probe = np.array([[0.0, 0.0], [1.0, 0.0]])
    cfg = small(model_type, scale_pos_weight=1.0, max_depth=2, n_estimators=40)
    plain = train(cfg.replace(weight_by_rr=False), X, y, rr=rr).model.predict_proba(probe)
    weighted = train(cfg.replace(weight_by_rr=True), X, y, rr=rr).model.predict_proba(probe)
    assert abs(plain[1] - plain[0]) < 0.1
    assert weighted[1] - weighted[0] > 0.15


def _capture_booster_weights(monkeypatch: pytest.MonkeyPatch, model_type: str) -> list[np.ndarray]:
    """Record the weights each fit hands to the library's fitter, then fit as usual."""
    seen: list[np.ndarray] = []
    real = _booster._FITTERS[model_type]

    def spy(cfg: TrainingConfig, X: np.ndarray, y: np.ndarray, w: np.ndarray, *rest: Any) -> Any:
        seen.append(np.array(w, copy=True))
        return real(cfg, X, y, w, *rest)

    monkeypatch.setitem(_booster._FITTERS, model_type, spy)
    return seen


@pytest.mark.parametrize("model_type", LIBS)
def test_extra_weight_multiplies_exactly_the_marked_rows(
    model_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = TradeGenerator(n_features=4, n_informative=3, seed=5).frame(300)
    # Shuffled, so that the marks have to follow their rows through the time sort.
    df = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    marked_ids = set(df["outcome_id"].iloc[::7])
    extra = np.where(df["outcome_id"].isin(marked_ids), 2.5, 1.0)
    plain = TrainingData.from_frame(df, exclude=["regime"])
    marked = TrainingData.from_frame(df, exclude=["regime"], extra_weight=extra)
    assert marked.extra_weight is not None and np.array_equal(marked.X, plain.X)
    seen = _capture_booster_weights(monkeypatch, model_type)
    cfg = small(model_type, n_estimators=3)
    Trainer(cfg).fit(plain)
    Trainer(cfg).fit(marked)
    base, weighted = seen
    n_train = base.size
    train_part = plain.take(np.arange(n_train))
    spw = scale_pos_weight_from_labels(train_part.y)
    # The R/R and class weights still apply: the plain fit gets exactly them.
    expected = sample_weights(train_part.y, train_part.rr, spw, True)
    assert np.allclose(base, expected) and np.unique(base.round(9)).size > 2
    # The training part is the oldest rows; the marks must sit on exactly the marked outcomes.
    in_train = marked.extra_weight[:n_train] == 2.5
    oldest = df.sort_values("ts", kind="stable")["outcome_id"].to_numpy()[:n_train]
    assert np.array_equal(in_train, np.isin(oldest, list(marked_ids))) and in_train.any()
    assert np.allclose(weighted[in_train], 2.5 * base[in_train])
    assert np.array_equal(weighted[~in_train], base[~in_train])


def test_extra_weight_is_checked() -> None:
    X, y = np.zeros((4, 1)), np.array([0, 1, 0, 1])
    with pytest.raises(DataError, match="one value per row"):
        TrainingData.from_arrays(X, y, extra_weight=[1.0, 2.0])
    with pytest.raises(DataError, match="greater than 0"):
        TrainingData.from_arrays(X, y, extra_weight=[1.0, 0.0, 1.0, np.nan])
    data = TrainingData.from_arrays(X, y, ts=[4, 3, 2, 1], extra_weight=[1.0, 1.0, 1.0, 3.0])
    assert data.extra_weight is not None and data.extra_weight.tolist() == [3.0, 1.0, 1.0, 1.0]
    assert data.reorder_features(["f0"]).extra_weight is data.extra_weight


@pytest.mark.parametrize("model_type", LIBS)
def test_same_seed_gives_identical_predictions(model_type: str, trades: TrainingData) -> None:
    cfg = small(model_type, subsample=0.7, colsample=0.7, seed=5)
    a = train(cfg, trades).model.predict_proba(trades.X)
    b = train(cfg, trades).model.predict_proba(trades.X)
    c = train(cfg.replace(seed=6), trades).model.predict_proba(trades.X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("model_type", LIBS)
@pytest.mark.parametrize("focal", [False, True])
def test_save_and_load_predict_identically(
    model_type: str, focal: bool, trades: TrainingData, tmp_path: Path
) -> None:
    model = train(small(model_type, focal_loss=focal), trades).model
    loaded = TrainedModel.load(model.save(tmp_path / "m"))
    assert loaded.feature_names == model.feature_names and loaded.focal_loss == focal
    assert loaded.n_trees == model.n_trees
    np.testing.assert_array_equal(loaded.predict_proba(trades.X), model.predict_proba(trades.X))


def test_predict_proba_takes_a_frame_in_any_column_order(trades: TrainingData) -> None:
    model = train(small("lightgbm"), trades).model
    frame = pd.DataFrame(trades.X, columns=list(trades.feature_names))
    reordered = frame[list(reversed(frame.columns))]
    np.testing.assert_array_equal(model.predict_proba(reordered), model.predict_proba(trades.X))
    with pytest.raises(DataError, match="f3"):
        model.predict_proba(frame.drop(columns="f3"))
    with pytest.raises(DataError, match="columns"):
        model.predict_proba(trades.X[:, :2])


# ---------------------------------------------------------------- time order and search


def test_rows_are_time_ordered_and_the_holdout_is_the_most_recent() -> None:
    df = (
        TradeGenerator(n_features=4, n_informative=2, seed=2)
        .frame(300)
        .sample(frac=1.0, random_state=0)
    )
    df["ts"] = pd.to_datetime(df["ts"], unit="ms", utc=True).map(lambda t: t.isoformat())
    data = TrainingData.from_frame(df, exclude=["regime"])
    assert data.ts is not None
    assert np.all(np.diff(data.ts) > 0)
    result = train(small("xgboost"), data)
    assert result.holdout.ts is not None
    assert result.holdout.ts.min() > data.ts[: result.n_train].max()
    assert result.time_range == (int(data.ts.min()), int(data.ts.max()))


def test_window_keeps_recent_rows_only() -> None:
    df = TradeGenerator(n_features=3, n_informative=2, step_ms=3_600_000, seed=4).frame(
        24 * 20
    )  # 20 days hourly
    data = TrainingData.from_frame(df, exclude=["regime"])
    result = train(small("lightgbm", window_days=10.0), data)
    assert result.n_train + result.n_valid == 24 * 10 + 1


def test_search_reports_every_trial_and_uses_the_best() -> None:
    data = TrainingData.from_frame(
        TradeGenerator(n_features=4, n_informative=3, seed=6).frame(400), exclude=["regime"]
    )
    cfg = TrainingConfig.for_cadence("lightgbm", "monthly_full", n_estimators=20, hpo_trials=3)
    seen: list[TrialReport] = []
    result = train(cfg, data, on_trial=seen.append)
    assert [t.number for t in seen] == [0, 1, 2]
    assert all(t.state == "COMPLETE" and t.value is not None for t in seen)
    assert all({"log_loss", "roc_auc"} <= set(t.metrics) for t in seen)
    best = min(seen, key=lambda t: t.value or np.inf)
    assert result.config.learning_rate == best.params["learning_rate"]
    assert result.config.max_depth == best.params["max_depth"]
    assert result.trials == tuple(seen)


def test_cross_validate_gives_one_result_per_fold(trades: TrainingData) -> None:
    folds = Trainer(small("catboost", n_estimators=10)).cross_validate(trades, n_splits=3)
    assert len(folds) == 3 and all(0.0 <= f["roc_auc"] <= 1.0 for f in folds)


# ---------------------------------------------------------------- bad input


def test_bad_input_gives_clear_errors() -> None:
    cfg = small("xgboost")
    X = np.random.default_rng(0).standard_normal((50, 2))
    y = np.arange(50) % 2
    with pytest.raises(DataError, match="empty"):
        train(cfg, np.empty((0, 2)), np.empty(0))
    with pytest.raises(DataError, match="single class"):
        train(cfg, X, np.zeros(50))
    with pytest.raises(DataError, match=r"missing .*rows 3, 7"):
        train(cfg, X, np.where(np.isin(np.arange(50), [3, 7]), np.nan, y))
    with pytest.raises(DataError, match="0/1"):
        train(cfg, X, y * 2)
    with pytest.raises(DataError, match="holdout"):
        train(cfg, X, (np.arange(50) < 25).astype(int))
    with pytest.raises(ConfigError, match="model_type"):
        train(TrainingConfig(model_type="sklearn"), X, y)
    frame = pd.DataFrame({"a": X[:, 0], "venue": ["x"] * 50, "label": y})
    with pytest.raises(DataError, match="venue"):
        TrainingData.from_frame(frame)
    with pytest.raises(DataError, match="label column"):
        TrainingData.from_frame(frame.drop(columns="label"))
    with pytest.raises(DataError, match="empty"):
        TrainingData.from_frame(frame.iloc[:0])
    assert issubclass(DataError, AlphaPulseError)


def test_non_finite_features_count_as_missing() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 3))
    y = (X[:, 0] > 0).astype(int)
    X[::7, 1] = np.inf
    X[::5, 2] = np.nan
    result = train(small("lightgbm"), X, y)
    assert np.all(np.isfinite(result.model.predict_proba(X)))
