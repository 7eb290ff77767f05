"""Fit the blend of the batch champions and the online model on recent joined history, leak-free.

The ensemble is fitted on component probabilities that never saw their own row, nor a later one:

* **batch models, out of fold.** Each champion's model type and configuration
  (:func:`config_from_params`) is refitted on expanding time-ordered folds
  (:func:`models.ensembler.time_ordered_folds`) and predicts the block after its training rows
  (:func:`models.ensembler.out_of_fold`). The first block is never predicted, so its rows only
  train; they are left out of the fit.
* **online model, prequential** (:func:`prequential_online`). A fresh online model per model key,
  as the worker keeps them, predicts each row and then learns it, in time order.

:func:`fit_ensemble` then calls :func:`models.ensembler.fit_on_history`: the ensemble is fitted
on the earlier rows and scored, with the fixed blend, on the later ones. Nothing here reads Kafka
or MLflow: rows in, numbers out.

Examples
--------
>>> from models.synthetic import TradeGenerator
>>> frame = TradeGenerator(n_features=4, n_informative=2, seed=3).frame(600)
>>> frame["model_key"] = frame["symbol"]
>>> cfg = TrainingConfig(model_type="lightgbm", n_estimators=20)
>>> fit = fit_ensemble(frame.drop(columns="regime"), {"weekly_quick": cfg},
...                    {"weekly_quick": ["f0", "f1", "f2", "f3"]}, "weights",
...                    {"weekly_quick": 0.8, "online": 0.2}, n_folds=4)
>>> fit.names, fit.n_rows, fit.n_scored, fit.held_out.n_holdout
(('weekly_quick', 'online'), 600, 480, 96)
>>> sorted(fit.report.metrics)
['ensemble', 'fixed', 'online', 'weekly_quick']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models._booster import TrainedModel, fit_booster
from models._config import TrainingConfig
from models._data import TrainingData
from models._weights import sample_weights, scale_pos_weight_from_labels
from models.ensembler import (
    EvaluationReport,
    Factory,
    HeldOutFit,
    OutOfFold,
    evaluate,
    fit_on_history,
    out_of_fold,
    time_ordered_folds,
)
from models.errors import ConfigError, DataError
from models.keyed import KeyedOnline
from models.online import OnlineConfig
from models.roles import ONLINE

__all__ = [
    "MIN_ROWS",
    "EnsembleFit",
    "config_from_params",
    "fit_ensemble",
    "prequential_online",
    "refit_factory",
]

MIN_ROWS = 100
"""Fewest joined outcomes an ensemble is fitted on."""

# What a refit never takes from a champion's logged config: a fold is fitted from scratch, once.
_NOT_REFITTED = ("model_type", "cadence", "warm_start", "hpo_trials", "hpo_timeout_s")


def _parse(raw: str, annotation: str) -> Any:
    """A logged parameter back in its field's type (MLflow keeps every parameter as a string).

    >>> _parse("None", "float | None"), _parse("0.05", "float"), _parse("4", "int")
    (None, 0.05, 4)
    >>> _parse("True", "bool"), _parse("weekly_quick", "str")
    (True, 'weekly_quick')
    """
    if raw == "None" and "None" in annotation:
        return None
    if annotation.startswith("bool"):
        if raw not in ("True", "False"):
            raise ValueError(f"not a bool: {raw!r}")
        return raw == "True"
    if annotation.startswith("int"):
        return int(raw)
    if annotation.startswith("float"):
        return float(raw)
    return raw


def config_from_params(params: Mapping[str, str], model_type: str, role: str) -> TrainingConfig:
    """The configuration to refit a champion of ``role`` with, from its run's ``cfg.*`` params.

    A searched champion's logged config holds the parameters the search chose; a refit does not
    search again. A champion that continued another (``nightly_incremental``) added a few trees to
    it, which says little about a model fitted from scratch: it is refitted with ``role``'s preset.
    Missing or unreadable params also give the preset.

    >>> params = {"cfg.cadence": "monthly_full", "cfg.max_depth": "3", "cfg.hpo_trials": "25",
    ...           "cfg.learning_rate": "0.2", "cfg.reg_lambda": "None"}
    >>> cfg = config_from_params(params, "lightgbm", "monthly_full")
    >>> cfg.max_depth, cfg.learning_rate, cfg.hpo_trials, cfg.n_estimators
    (3, 0.2, 0, 300)
    >>> config_from_params({"cfg.cadence": "nightly_incremental"}, "xgboost", "weekly_quick")
    ... # doctest: +ELLIPSIS
    TrainingConfig(model_type='xgboost', cadence='weekly_quick', ..., n_estimators=150, ...)
    """
    preset = TrainingConfig.for_cadence(model_type, role, hpo_trials=0, hpo_timeout_s=None)
    if params.get("cfg.cadence") in (None, "nightly_incremental"):
        return preset
    changes: dict[str, Any] = {}
    try:
        for f in dataclasses.fields(TrainingConfig):
            raw = params.get(f"cfg.{f.name}")
            if raw is not None and f.name not in _NOT_REFITTED:
                changes[f.name] = _parse(raw, str(f.type))
        return preset.replace(**changes)
    except (ValueError, TypeError, ConfigError):
        return preset


class _RowModel:
    """A refitted model that predicts rows of the history by their index."""

    def __init__(self, model: TrainedModel, X: np.ndarray) -> None:
        self.model = model
        self.X = X

    def predict_proba(self, idx: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(self.X[idx])


def refit_factory(config: TrainingConfig, data: TrainingData) -> Factory:
    """A factory for :func:`models.ensembler.out_of_fold` over row indices of ``data``.

    Called with the indices of a fold's training rows, it fits ``config`` on them as the trainer
    would (the config's time window, class balance and R/R weights, no holdout) and returns a
    model that predicts rows by index.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 2)); y = (X[:, 0] > 0).astype(int)
    >>> data = TrainingData.from_arrays(X, y)
    >>> model = refit_factory(TrainingConfig("xgboost", n_estimators=5), data)(np.arange(100), y)
    >>> model.predict_proba(np.arange(100, 104)).shape
    (4,)
    """

    def fit(idx: np.ndarray, y_train: np.ndarray) -> _RowModel:
        part = data.take(np.asarray(idx)).window(config.window_days)
        spw = config.scale_pos_weight
        if spw is None:
            spw = scale_pos_weight_from_labels(part.y)
        w = sample_weights(
            part.y, part.rr, spw, config.weight_by_rr, config.rr_scale, config.rr_weight_max
        )
        return _RowModel(fit_booster(config, part.X, part.y, w, list(part.feature_names)), data.X)

    return fit


def prequential_online(
    features: Sequence[Mapping[str, float]],
    keys: Sequence[str],
    labels: Sequence[int | bool],
    rr: Sequence[float | None] | None = None,
    config: OnlineConfig | None = None,
) -> np.ndarray:
    """Each row's online probability from the rows before it: predict, then learn, in order.

    One fresh online model per model key, weighted by R/R as the worker's learner weighs them.

    >>> p = prequential_online([{"x": 1.0}] * 3, ["A", "B", "A"], [1, 1, 1])
    >>> p[:2].tolist(), bool(p[2] > 0.5)
    ([0.5, 0.5], True)
    """
    n = len(features)
    if len(keys) != n or len(labels) != n or (rr is not None and len(rr) != n):
        raise DataError("features, keys, labels and rr must have one entry per row")
    keyed = KeyedOnline(config, max_seen_ids=n + 1)
    out = np.empty(n)
    for i in range(n):
        out[i] = keyed.predict(keys[i], features[i])[0]
        keyed.learn(str(i), keys[i], features[i], bool(labels[i]), None if rr is None else rr[i])
    return out


@dataclass(frozen=True)
class EnsembleFit:
    """A fitted ensemble with what it was fitted on and how it did on the held-out rows.

    ``report`` holds ROC AUC, log loss and Brier score on the held-out rows of every component,
    of the fitted ensemble (``ensemble``) and of the fixed blend (``fixed``).
    """

    held_out: HeldOutFit
    oof: OutOfFold
    report: EvaluationReport
    n_rows: int
    """Rows of history given."""
    n_scored: int
    """Rows with an out-of-fold prediction: the rows the ensemble was fitted and scored on."""

    @property
    def names(self) -> tuple[str, ...]:
        """The components, batch roles first, then ``online``."""
        return self.held_out.ensemble.names


def _columns(data: TrainingData, names: Sequence[str]) -> np.ndarray:
    """``data``'s features in ``names`` order; a feature it lacks is missing (NaN) in every row."""
    X = np.full((len(data), len(names)), np.nan)
    where = {n: j for j, n in enumerate(data.feature_names)}
    for k, name in enumerate(names):
        if name in where:
            X[:, k] = data.X[:, where[name]]
    return X


def fit_ensemble(
    frame: pd.DataFrame,
    configs: Mapping[str, TrainingConfig],
    feature_names: Mapping[str, Sequence[str]],
    method: str,
    fixed_weights: Mapping[str, float],
    *,
    online_config: OnlineConfig | None = None,
    n_folds: int = 5,
    holdout: float = 0.2,
) -> EnsembleFit:
    """Fit ``method`` on ``frame``'s joined outcomes (see the module text).

    Parameters
    ----------
    frame
        Joined outcomes as :func:`stream.history.read_outcome_history` gives them: ``label``,
        ``realized_rr``, ``ts``, ``model_key`` (else ``symbol``) and one column per feature.
    configs, feature_names
        By batch role: the configuration to refit and the champion's features, in order.
    method
        ``"weights"`` or ``"stacking"`` (:data:`models.ensembler.FIT_METHODS`).
    fixed_weights
        The configured fixed blend, which the fitted ensemble is compared with.

    Raises
    ------
    DataError
        Fewer than :data:`MIN_ROWS` rows, or a fold whose training rows hold one class only.
    """
    if not configs:
        raise DataError("no batch model to blend; train weekly_quick or monthly_full first")
    if set(configs) != set(feature_names):
        raise ConfigError("configs and feature_names must name the same batch roles")
    if "ts" in frame.columns:
        frame = frame.sort_values("ts", kind="stable")
    frame = frame.reset_index(drop=True)
    data = TrainingData.from_frame(frame)  # keeps the rows in order: they are sorted already
    n = len(data)
    if n < MIN_ROWS:
        raise DataError(
            f"the history holds {n} joined outcomes; fitting an ensemble needs at least "
            f"{MIN_ROWS}: let more outcomes arrive first"
        )
    key_column = "model_key" if "model_key" in frame.columns else "symbol"
    keys = frame[key_column].astype(str).tolist() if key_column in frame.columns else []
    if len(keys) != len(data):
        keys = ["default"] * len(data)
    factories = {
        role: refit_factory(
            cfg,
            TrainingData(
                _columns(data, feature_names[role]),
                data.y,
                tuple(feature_names[role]),
                data.rr,
                data.ts,
            ),
        )
        for role, cfg in configs.items()
    }
    oof = out_of_fold(factories, np.arange(n), data.y, time_ordered_folds(n, n_folds))
    rows = [
        {name: v for name, v in zip(data.feature_names, row, strict=True) if v == v}
        for row in data.X.tolist()
    ]
    rr = None if data.rr is None else [v if v == v else None for v in data.rr.tolist()]
    online = prequential_online(rows, keys, data.y.tolist(), rr, online_config)
    mask = oof.mask
    components = {**oof.components(), ONLINE: online[mask]}
    y = data.y[mask]
    fit = fit_on_history(components, y, method, fixed_weights, holdout)
    late = {k: v[fit.n_fit :] for k, v in components.items()}
    report = evaluate(
        y[fit.n_fit :],
        {
            **late,
            "ensemble": fit.ensemble.predict_proba(late),
            "fixed": fit.fixed.predict_proba(late),
        },
    )
    return EnsembleFit(fit, oof, report, n, int(mask.sum()))
