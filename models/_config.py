"""The one training configuration shared by XGBoost, LightGBM and CatBoost."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from models.errors import ConfigError
from models.roles import CADENCES

__all__ = ["CADENCES", "MODEL_TYPES", "TrainingConfig"]

MODEL_TYPES = ("xgboost", "lightgbm", "catboost")

_PRESETS: dict[str, dict[str, Any]] = {
    # Continue the current champion with a few rounds on the last week of outcomes.
    "nightly_incremental": {
        "n_estimators": 20,
        "learning_rate": 0.05,
        "max_depth": 4,
        "window_days": 7.0,
        "warm_start": True,
    },
    # A fresh model on the last quarter, fast settings, no search.
    "weekly_quick": {
        "n_estimators": 150,
        "learning_rate": 0.1,
        "max_depth": 4,
        "window_days": 90.0,
    },
    # The whole history with a hyperparameter search.
    "monthly_full": {
        "n_estimators": 300,
        "learning_rate": 0.05,
        "max_depth": 6,
        "window_days": None,
        "hpo_trials": 25,
        "hpo_timeout_s": 900.0,
    },
}


def _number(name: str, value: object, lo: float, hi: float, *, lo_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo):
        bracket = "(" if lo_open else "["
        raise ConfigError(f"{name} must be in {bracket}{lo}, {hi}], got {value!r}")


def _integer(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters and options of one training job, validated on construction.

    Parameters
    ----------
    model_type : {"xgboost", "lightgbm", "catboost"}
    cadence : {"nightly_incremental", "weekly_quick", "monthly_full"}
        Which job this is; :meth:`for_cadence` fills in the preset for it.
    learning_rate, max_depth, n_estimators : float, int, int
        Boosting step, tree depth and number of new trees (rounds).
    scale_pos_weight : float or None
        Weight of positive rows; ``None`` computes negatives / positives from the training labels.
    focal_loss, focal_alpha, focal_gamma : bool, float, float
        Train on focal loss instead of log loss (custom objective for XGBoost and LightGBM,
        CatBoost's own ``Focal`` loss).
    weight_by_rr, rr_scale, rr_weight_max : bool, float, float
        Weight rows by realised reward/risk through the bounded mapping in ``models._weights``.
    subsample, colsample, reg_lambda : float, float, float or None
        Row and feature sampling per tree and L2 leaf regularisation (``None``: library default).
    seed, n_jobs : int
        Random seed and threads; a seed with the same ``n_jobs`` gives identical models.
    valid_fraction : float
        Share of the most recent rows held out for the reported metrics.
    window_days : float or None
        Train only on rows within this many days of the newest row (needs a time column).
    threshold : float
        Decision threshold for precision, recall and expected R.
    warm_start : bool
        The job must continue an existing model (``nightly_incremental``).
    hpo_trials, hpo_timeout_s, hpo_splits : int, float or None, int
        Optuna trial budget, time budget and walk-forward folds per trial; 0 trials: no search.

    Examples
    --------
    >>> cfg = TrainingConfig.for_cadence("lightgbm", "weekly_quick", n_estimators=50)
    >>> cfg.n_estimators, cfg.max_depth, cfg.hpo_trials
    (50, 4, 0)
    >>> TrainingConfig(model_type="xgboost", max_depth=0)
    Traceback (most recent call last):
    ...
    models.errors.ConfigError: max_depth must be in [1, 16], got 0
    """

    model_type: str
    cadence: str = "weekly_quick"
    learning_rate: float = 0.1
    max_depth: int = 4
    n_estimators: int = 150
    scale_pos_weight: float | None = None
    focal_loss: bool = False
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    weight_by_rr: bool = True
    rr_scale: float = 1.0
    rr_weight_max: float = 5.0
    subsample: float = 1.0
    colsample: float = 1.0
    reg_lambda: float | None = None
    seed: int = 0
    n_jobs: int = 1
    valid_fraction: float = 0.2
    window_days: float | None = None
    threshold: float = 0.5
    warm_start: bool = False
    hpo_trials: int = 0
    hpo_timeout_s: float | None = None
    hpo_splits: int = 3

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(
                f"unknown model_type {self.model_type!r}; expected one of {', '.join(MODEL_TYPES)}"
            )
        if self.cadence not in CADENCES:
            raise ConfigError(
                f"unknown cadence {self.cadence!r}; expected one of {', '.join(CADENCES)}"
            )
        _number("learning_rate", self.learning_rate, 0.0, 1.0, lo_open=True)
        _integer("max_depth", self.max_depth, 1, 16)
        _integer("n_estimators", self.n_estimators, 1, 100_000)
        if self.scale_pos_weight is not None:
            _number("scale_pos_weight", self.scale_pos_weight, 0.0, 1e6, lo_open=True)
        for flag in ("focal_loss", "weight_by_rr", "warm_start"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        _number("focal_alpha", self.focal_alpha, 0.0, 1.0, lo_open=True)
        if self.focal_alpha >= 1.0:
            raise ConfigError(f"focal_alpha must be below 1, got {self.focal_alpha!r}")
        _number("focal_gamma", self.focal_gamma, 0.0, 10.0)
        _number("rr_scale", self.rr_scale, 0.0, 1e6, lo_open=True)
        _number("rr_weight_max", self.rr_weight_max, 1.0, 1e6)
        _number("subsample", self.subsample, 0.0, 1.0, lo_open=True)
        _number("colsample", self.colsample, 0.0, 1.0, lo_open=True)
        if self.reg_lambda is not None:
            _number("reg_lambda", self.reg_lambda, 0.0, 1e6)
        _integer("seed", self.seed, 0, 2**31 - 1)
        _integer("n_jobs", self.n_jobs, 1, 1024)
        _number("valid_fraction", self.valid_fraction, 0.0, 0.5, lo_open=True)
        if self.window_days is not None:
            _number("window_days", self.window_days, 0.0, 1e6, lo_open=True)
        _number("threshold", self.threshold, 0.0, 1.0, lo_open=True)
        _integer("hpo_trials", self.hpo_trials, 0, 10_000)
        if self.hpo_timeout_s is not None:
            _number("hpo_timeout_s", self.hpo_timeout_s, 0.0, 1e7, lo_open=True)
        _integer("hpo_splits", self.hpo_splits, 1, 20)
        if self.warm_start and self.hpo_trials:
            raise ConfigError(
                "a warm-started job cannot run a hyperparameter search; set hpo_trials=0"
            )

    @classmethod
    def for_cadence(cls, model_type: str, cadence: str, **overrides: Any) -> TrainingConfig:
        """The preset for ``cadence``, with ``overrides`` applied (and validated)."""
        if cadence not in _PRESETS:
            raise ConfigError(f"unknown cadence {cadence!r}; expected one of {', '.join(CADENCES)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(model_type=model_type, cadence=cadence, **{**_PRESETS[cadence], **overrides})

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def as_params(self) -> dict[str, Any]:
        """All fields as a flat dict (for logging)."""
        return dataclasses.asdict(self)
