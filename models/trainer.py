"""Batch training of XGBoost, LightGBM and CatBoost models behind one config.

The trainer takes arrays (or a :class:`TrainingData`), sorts them by time, keeps the most recent
``valid_fraction`` of the rows as a holdout, and fits the configured library on the rest, with:

* class balance through ``scale_pos_weight`` (computed as negatives/positives when not given),
  applied as a weight on positive rows;
* optional sample weights from realised reward/risk (bounded mapping, see ``models._weights``);
* an optional per-row multiplier on top of those (``TrainingData.extra_weight``; the training job
  uses it to weigh the learner's hard examples more);
* optional focal loss (custom objective for XGBoost and LightGBM, ``Focal`` for CatBoost);
* warm start: new trees on top of an existing model of the same library and features;
* for ``monthly_full``, an Optuna search scored on walk-forward folds of the training rows.

It never imports MLflow: each search trial is handed to an ``on_trial`` callback, and the registry
(``models.registry``) records runs and versions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models._booster import TrainedModel, check_warm_start, fit_booster
from models._config import CADENCES, MODEL_TYPES, TrainingConfig
from models._data import TrainingData
from models._hpo import TrialReport, search
from models._validation import evaluate, holdout_split, walk_forward_splits
from models._weights import sample_weights, scale_pos_weight_from_labels
from models.errors import ConfigError, DataError

__all__ = [
    "CADENCES",
    "MODEL_TYPES",
    "TrainedModel",
    "Trainer",
    "TrainingConfig",
    "TrainingData",
    "TrainingResult",
    "TrialReport",
    "evaluate",
    "train",
    "walk_forward_splits",
]


@dataclass(frozen=True, eq=False)
class TrainingResult:
    """What a training job produced: the model, the config used and its holdout evaluation.

    ``holdout`` holds the rows the metrics were computed on, so that a registry can score the
    current champion on exactly the same rows. ``config`` carries the best parameters when a
    search ran; ``trials`` lists every search trial.

    >>> import numpy as np
    >>> X = np.random.default_rng(2).standard_normal((60, 2)); y = (X[:, 0] > 0).astype(int)
    >>> r = train(TrainingConfig(model_type="xgboost", n_estimators=3), X, y)
    >>> r.n_train, r.n_valid, len(r.holdout), r.feature_names
    (48, 12, 12, ('f0', 'f1'))
    """

    model: TrainedModel
    config: TrainingConfig
    metrics: dict[str, float]
    n_train: int
    n_valid: int
    holdout: TrainingData
    time_range: tuple[int, int] | None
    scale_pos_weight: float
    trials: tuple[TrialReport, ...] = ()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Features the model was trained on, in order."""
        return self.model.feature_names


def _classes(y: np.ndarray, what: str) -> None:
    pos = int(np.sum(y == 1))
    if pos == 0 or pos == y.size:
        only = "1 (all winners)" if pos else "0 (all losers)"
        raise DataError(
            f"the {what} holds a single class, {only}, in {y.size} row(s); "
            "need both winning and losing trades"
        )


class Trainer:
    """Fits one :class:`TrainingConfig` on time-ordered data.

    Parameters
    ----------
    config : TrainingConfig
        What to train; stored as given.

    Examples
    --------
    >>> from models.synthetic import TradeGenerator
    >>> df = TradeGenerator(n_features=5, n_informative=3, seed=0).frame(400)
    >>> data = TrainingData.from_frame(df, exclude=["regime"])
    >>> cfg = TrainingConfig(model_type="lightgbm", n_estimators=30)
    >>> result = Trainer(cfg).fit(data)
    >>> result.n_train, result.n_valid, result.model.n_trees
    (320, 80, 30)
    >>> result.metrics["roc_auc"] > 0.7
    True
    """

    def __init__(self, config: TrainingConfig) -> None:
        if not isinstance(config, TrainingConfig):
            raise ConfigError(f"config must be a TrainingConfig, got {type(config).__name__}")
        self.config = config

    def _weights(self, cfg: TrainingConfig, data: TrainingData) -> tuple[np.ndarray, float]:
        spw = cfg.scale_pos_weight
        if spw is None:
            spw = scale_pos_weight_from_labels(data.y)
        w = sample_weights(data.y, data.rr, spw, cfg.weight_by_rr, cfg.rr_scale, cfg.rr_weight_max)
        if data.extra_weight is not None:
            w = w * data.extra_weight
        return w, float(spw)

    def _fit(
        self, cfg: TrainingConfig, data: TrainingData, init: TrainedModel | None
    ) -> tuple[TrainedModel, float]:
        w, spw = self._weights(cfg, data)
        return fit_booster(cfg, data.X, data.y, w, list(data.feature_names), init), spw

    def _score_folds(
        self, cfg: TrainingConfig, data: TrainingData, n_splits: int
    ) -> list[dict[str, float]]:
        folds = []
        for tr, va in walk_forward_splits(len(data), n_splits):
            train_part, valid_part = data.take(tr), data.take(va)
            if np.unique(train_part.y).size < 2:
                continue
            model, _ = self._fit(cfg, train_part, None)
            p = model.predict_proba(valid_part.X)
            folds.append(evaluate(valid_part.y, p, valid_part.rr, cfg.threshold))
        return folds

    def cross_validate(self, data: TrainingData, n_splits: int = 3) -> list[dict[str, float]]:
        """Walk-forward metrics of this config, one dict per fold (folds with one class skipped)."""
        return self._score_folds(self.config, self._prepare(data), n_splits)

    def _prepare(self, data: TrainingData) -> TrainingData:
        if not isinstance(data, TrainingData):
            raise DataError(f"expected TrainingData, got {type(data).__name__}")
        data = data.window(self.config.window_days)
        if len(data) == 0:
            raise DataError("no training rows inside the configured time window")
        _classes(data.y, "training data")
        return data

    def fit(
        self,
        data: TrainingData,
        *,
        init_model: TrainedModel | None = None,
        on_trial: Callable[[TrialReport], None] | None = None,
    ) -> TrainingResult:
        """Train on ``data`` and evaluate on its most recent rows.

        ``init_model`` is continued (warm start); it is required when ``config.warm_start``.
        ``on_trial`` receives every hyperparameter-search trial as it finishes.
        """
        cfg = self.config
        if cfg.warm_start and init_model is None:
            raise ConfigError(
                f"{cfg.cadence} continues an existing model; give it one to warm-start from "
                "(train weekly_quick or monthly_full first)"
            )
        data = self._prepare(data)
        if init_model is not None:
            data = data.reorder_features(init_model.feature_names)
            check_warm_start(cfg, init_model, list(data.feature_names))
        tr, va = holdout_split(len(data), cfg.valid_fraction)
        train_part, holdout = data.take(tr), data.take(va)
        _classes(train_part.y, f"training part (first {len(tr)} rows by time)")
        _classes(holdout.y, f"holdout (last {len(va)} rows by time)")

        trials: list[TrialReport] = []
        if cfg.hpo_trials > 0:

            def score(candidate: TrainingConfig) -> dict[str, float]:
                folds = self._score_folds(candidate, train_part, cfg.hpo_splits)
                if not folds:
                    return {"log_loss": float("inf")}
                return {k: float(np.nanmean([f[k] for f in folds])) for k in folds[0]}

            cfg, trials = search(cfg, score, on_trial)

        model, spw = self._fit(cfg, train_part, init_model)
        metrics = evaluate(holdout.y, model.predict_proba(holdout.X), holdout.rr, cfg.threshold)
        return TrainingResult(
            model=model,
            config=cfg,
            metrics=metrics,
            n_train=len(train_part),
            n_valid=len(holdout),
            holdout=holdout,
            time_range=data.time_range,
            scale_pos_weight=spw,
            trials=tuple(trials),
        )


def train(
    config: TrainingConfig,
    X: Any,
    y: Any = None,
    *,
    rr: Any = None,
    ts: Any = None,
    feature_names: Sequence[str] | None = None,
    init_model: TrainedModel | None = None,
    on_trial: Callable[[TrialReport], None] | None = None,
) -> TrainingResult:
    """Train ``config`` on arrays (or on a :class:`TrainingData` passed as ``X``).

    >>> import numpy as np
    >>> X = np.random.default_rng(1).standard_normal((100, 2)); y = (X[:, 1] > 0).astype(int)
    >>> train(TrainingConfig(model_type="catboost", n_estimators=10), X, y).n_valid
    20
    """
    if isinstance(X, TrainingData):
        data = X
    else:
        if y is None:
            raise DataError("labels are required")
        data = TrainingData.from_arrays(X, y, rr=rr, ts=ts, feature_names=feature_names)
    return Trainer(config).fit(data, init_model=init_model, on_trial=on_trial)
