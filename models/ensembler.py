"""Combine component models: fixed blends, optimised blends and stacking, with their evaluation.

Rows are assumed to be in time order. :func:`time_ordered_folds` cuts them into contiguous
blocks; fold ``k`` trains on everything before block ``k`` (less an optional ``gap``) and predicts
block ``k``, so every out-of-fold prediction comes from a model that never saw that row, nor any
later one. :func:`out_of_fold` records which fold predicted each row, so this can be checked.

:class:`Ensemble` is the combination rule. ``Ensemble.fixed`` uses given weights,
``Ensemble.optimised`` finds the weights on the simplex that minimise log loss (scipy SLSQP), and
``Ensemble.stacked`` fits a logistic-regression meta-learner on the components' logits. Fit the
last two on out-of-fold predictions, then apply them to the predictions of models refitted on all
the training rows. :func:`evaluate` reports ROC AUC, log loss and Brier score of every component
and ensemble side by side. ``Ensemble.to_log_dict`` gives a plain dict for the registry to log
(this module never talks to MLflow).

Examples
--------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1, 0, 1])
>>> preds = {"a": np.array([.2, .4, .7, .6, .3, .8]), "b": np.array([.3, .2, .6, .9, .4, .7])}
>>> ens = Ensemble.fixed({"a": 1.0, "b": 1.0})
>>> ens.predict_proba(preds).round(2).tolist()
[0.25, 0.3, 0.65, 0.75, 0.35, 0.75]
>>> report = evaluate(y, {**preds, "blend": ens.predict_proba(preds)})
>>> report.metrics["blend"]["roc_auc"]
1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from models.errors import ConfigError, DataError

__all__ = [
    "FIT_METHODS",
    "METHODS",
    "Ensemble",
    "EvaluationReport",
    "Fold",
    "HeldOutFit",
    "OutOfFold",
    "evaluate",
    "fit_on_history",
    "out_of_fold",
    "time_ordered_folds",
]

METHODS: tuple[str, ...] = ("fixed", "optimised", "stacked")
FIT_METHODS: tuple[str, ...] = ("stacking", "weights")
"""What ``alphapulse ensemble fit --method`` accepts: ``stacked`` and ``optimised`` ensembles."""
_EPS = 1e-15


class Predictor(Protocol):
    """A fitted component: ``predict_proba(X)`` returns P(win) per row as a 1-D array."""

    def predict_proba(self, X: Any) -> np.ndarray: ...


Factory = Callable[[Any, np.ndarray], Predictor]
"""Fits a component on ``(X_train, y_train)`` and returns it."""


@dataclass(frozen=True)
class Fold:
    """Row indices one model trains on, and the later rows it predicts."""

    train: np.ndarray
    predict: np.ndarray


def time_ordered_folds(n_rows: int, n_folds: int = 5, gap: int = 0) -> list[Fold]:
    """Expanding-window folds over time-ordered rows.

    The rows are cut into ``n_folds + 1`` contiguous blocks; fold ``k`` (1-based) predicts block
    ``k`` and trains on all rows before it except the last ``gap`` (an embargo for labels that
    overlap in time). Rows of block 0 get no out-of-fold prediction.

    >>> [(f.train.tolist(), f.predict.tolist()) for f in time_ordered_folds(6, n_folds=2)]
    [([0, 1], [2, 3]), ([0, 1, 2, 3], [4, 5])]
    """
    if n_folds < 1:
        raise ConfigError(f"n_folds must be >= 1, got {n_folds}")
    if gap < 0:
        raise ConfigError(f"gap must be >= 0, got {gap}")
    bounds = np.linspace(0, n_rows, n_folds + 2).astype(int)
    if bounds[1] - gap < 1 or np.any(np.diff(bounds) < 1):
        raise DataError(f"{n_rows} rows are too few for {n_folds} folds with gap {gap}")
    return [
        Fold(train=np.arange(0, bounds[k] - gap), predict=np.arange(bounds[k], bounds[k + 1]))
        for k in range(1, n_folds + 1)
    ]


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predictions ``(n_rows, n_components)``; NaN where no fold predicted a row.

    ``fold_of[i]`` is the index in ``folds`` of the fold whose models predicted row ``i``, or -1.
    """

    names: tuple[str, ...]
    predictions: np.ndarray
    fold_of: np.ndarray
    folds: tuple[Fold, ...]

    @property
    def mask(self) -> np.ndarray:
        """Rows that have out-of-fold predictions."""
        return self.fold_of >= 0

    def components(self) -> dict[str, np.ndarray]:
        """Predictions by component, for the rows in :attr:`mask` only."""
        rows = self.predictions[self.mask]
        return {name: rows[:, j] for j, name in enumerate(self.names)}


def _take(X: Any, idx: np.ndarray) -> Any:
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def out_of_fold(
    factories: Mapping[str, Factory], X: Any, y: np.ndarray, folds: list[Fold]
) -> OutOfFold:
    """Fit each component on each fold's training rows and predict that fold's rows.

    ``X`` is an array or a DataFrame in time order; each factory is called as
    ``factory(X_train, y_train)``.
    """
    y = np.asarray(y)
    names = tuple(factories)
    preds = np.full((len(y), len(names)), np.nan)
    fold_of = np.full(len(y), -1, dtype=np.int64)
    for k, fold in enumerate(folds):
        if fold.train.size == 0 or fold.train.max() >= fold.predict.min():
            raise DataError(f"fold {k} trains on rows at or after the rows it predicts")
        X_train, y_train, X_pred = _take(X, fold.train), y[fold.train], _take(X, fold.predict)
        for j, name in enumerate(names):
            model = factories[name](X_train, y_train)
            preds[fold.predict, j] = np.asarray(model.predict_proba(X_pred), dtype=float)
        fold_of[fold.predict] = k
    return OutOfFold(names=names, predictions=preds, fold_of=fold_of, folds=tuple(folds))


def _matrix(components: Mapping[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    missing = [n for n in names if n not in components]
    if missing:
        raise DataError(f"missing component predictions: {missing}")
    P = np.column_stack([np.asarray(components[n], dtype=float) for n in names])
    if not np.all(np.isfinite(P)) or P.min() < 0 or P.max() > 1:
        raise DataError("component predictions must be finite probabilities in [0, 1]")
    return P


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _logit(P: np.ndarray) -> np.ndarray:
    P = np.clip(P, 1e-6, 1 - 1e-6)
    return np.log(P) - np.log1p(-P)


@dataclass(frozen=True)
class Ensemble:
    """A rule combining component probabilities into one.

    ``weights`` (fixed and optimised methods) sum to 1; ``coef`` and ``intercept`` (stacked) are
    the meta-learner's, applied to the components' logits (probabilities clipped to
    [1e-6, 1 - 1e-6]).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0, 1] * 50)
    >>> good, poor = np.where(y == 1, 0.8, 0.2), np.full(100, 0.5)
    >>> ens = Ensemble.optimised({"good": good, "poor": poor}, y)
    >>> ens.method, round(ens.weights[0], 3)
    ('optimised', 1.0)
    >>> Ensemble.stacked({"good": good, "poor": poor}, y).predict_proba({"good": good[:2],
    ...     "poor": poor[:2]}).round(1).tolist()
    [0.0, 1.0]
    """

    method: str
    names: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    coef: tuple[float, ...] | None = None
    intercept: float | None = None
    C: float | None = None

    @classmethod
    def fixed(cls, weights: Mapping[str, float]) -> Ensemble:
        """Weighted mean with the given non-negative weights (normalised to sum to 1)."""
        w = np.array([float(v) for v in weights.values()])
        if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ConfigError(f"weights must be finite, >= 0 and not all 0, got {dict(weights)}")
        return cls("fixed", tuple(weights), weights=tuple((w / w.sum()).tolist()))

    @classmethod
    def optimised(cls, components: Mapping[str, np.ndarray], y: np.ndarray) -> Ensemble:
        """Weights on the simplex minimising log loss on ``(components, y)`` (validation data)."""
        names = tuple(components)
        P, y = _matrix(components, names), np.asarray(y, dtype=float)
        k = len(names)

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            q = np.clip(P @ w, _EPS, 1 - _EPS)
            grad = -((y / q - (1 - y) / (1 - q)) @ P) / len(y)
            return _log_loss(y, q), grad

        res = minimize(
            loss,
            np.full(k, 1.0 / k),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=[
                {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: 1 + 0 * w}
            ],
        )
        w = np.clip(res.x, 0.0, None)
        return cls("optimised", names, weights=tuple((w / w.sum()).tolist()))

    @classmethod
    def stacked(
        cls, components: Mapping[str, np.ndarray], y: np.ndarray, C: float = 1.0
    ) -> Ensemble:
        """Logistic regression on the components' logits, fitted on out-of-fold predictions."""
        if not (math.isfinite(C) and C > 0):
            raise ConfigError(f"C must be finite and > 0, got {C}")
        names = tuple(components)
        y = np.asarray(y)
        if np.unique(y).size != 2:
            raise DataError("stacking needs both outcomes among the out-of-fold rows")
        meta = LogisticRegression(C=C, max_iter=1000).fit(_logit(_matrix(components, names)), y)
        return cls(
            "stacked",
            names,
            coef=tuple(float(c) for c in meta.coef_[0]),
            intercept=float(meta.intercept_[0]),
            C=C,
        )

    def predict_proba(self, components: Mapping[str, np.ndarray]) -> np.ndarray:
        """Ensemble P(win) for aligned arrays of component probabilities."""
        P = _matrix(components, self.names)
        if self.method == "stacked":
            assert self.coef is not None and self.intercept is not None
            z = _logit(P) @ np.array(self.coef) + self.intercept
            return 1.0 / (1.0 + np.exp(-z))
        assert self.weights is not None
        return P @ np.array(self.weights)

    def to_log_dict(self, report: EvaluationReport | None = None) -> dict[str, Any]:
        """``{"params": {...}, "metrics": {...}}`` with flat string keys, ready for the registry."""
        params: dict[str, Any] = {"ensemble.method": self.method}
        params["ensemble.components"] = ",".join(self.names)
        if self.weights is not None:
            params.update(
                {f"ensemble.weight.{n}": w for n, w in zip(self.names, self.weights, strict=True)}
            )
        if self.coef is not None:
            params.update(
                {f"ensemble.coef.{n}": c for n, c in zip(self.names, self.coef, strict=True)}
            )
            params["ensemble.intercept"] = self.intercept
            params["ensemble.C"] = self.C
        metrics = report.flat() if report is not None else {}
        return {"params": params, "metrics": metrics}


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics by model name: ``metrics[name] = {"roc_auc", "log_loss", "brier", "n"}``."""

    metrics: dict[str, dict[str, float]]

    def flat(self) -> dict[str, float]:
        """``{"<name>.<metric>": value}``, skipping undefined values."""
        return {
            f"{name}.{key}": v
            for name, row in self.metrics.items()
            for key, v in row.items()
            if not math.isnan(v)
        }

    def table(self) -> str:
        """Plain-text table, one row per model."""
        lines = [f"{'model':<20} {'roc_auc':>8} {'log_loss':>9} {'brier':>8} {'n':>7}"]
        for name, m in self.metrics.items():
            lines.append(
                f"{name:<20} {m['roc_auc']:>8.4f} {m['log_loss']:>9.4f} {m['brier']:>8.4f} "
                f"{int(m['n']):>7d}"
            )
        return "\n".join(lines)


def evaluate(y: np.ndarray, predictions: Mapping[str, np.ndarray]) -> EvaluationReport:
    """ROC AUC (NaN with one class), log loss and Brier score of each prediction vector."""
    y = np.asarray(y, dtype=float)
    out: dict[str, dict[str, float]] = {}
    for name, p in predictions.items():
        p = np.asarray(p, dtype=float)
        if p.shape != y.shape or not np.all(np.isfinite(p)):
            raise DataError(f"predictions of {name!r} must be finite and match y's shape")
        auc = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else math.nan
        out[name] = {
            "roc_auc": auc,
            "log_loss": _log_loss(y, p),
            "brier": float(np.mean((p - y) ** 2)),
            "n": float(len(y)),
        }
    return EvaluationReport(out)


@dataclass(frozen=True)
class HeldOutFit:
    """A fitted ensemble and the fixed blend, both scored on the same later held-out rows."""

    ensemble: Ensemble
    fixed: Ensemble
    log_loss: float
    fixed_log_loss: float
    n_fit: int
    n_holdout: int

    @property
    def beats_fixed(self) -> bool:
        """True when the fitted ensemble's held-out log loss is strictly lower."""
        return self.log_loss < self.fixed_log_loss


def fit_on_history(
    components: Mapping[str, np.ndarray],
    y: np.ndarray,
    method: str,
    fixed_weights: Mapping[str, float],
    holdout: float = 0.2,
) -> HeldOutFit:
    """Fit ``method`` on the earlier rows, then score it and the fixed blend on the later ones.

    ``components`` are time-ordered probabilities that never saw their own row (out-of-fold for
    batch models, prequential for online ones); ``fixed_weights`` is the configured blend,
    restricted to the components given. ``holdout`` is the later share of rows held out.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> good = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.1, 400), 0.01, 0.99)
    >>> fit = fit_on_history({"batch": good, "online": np.full(400, 0.5)}, y, "weights",
    ...                      {"batch": 0.8, "online": 0.2})
    >>> fit.beats_fixed, fit.n_fit, fit.n_holdout, round(fit.ensemble.weights[0], 2)
    (True, 320, 80, 1.0)
    """
    if method not in FIT_METHODS:
        raise ConfigError(f"method must be one of {FIT_METHODS}, got {method!r}")
    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout}")
    y = np.asarray(y, dtype=float)
    n = len(y)
    cut = n - max(1, round(n * holdout))
    if cut < 2 or n - cut < 1:
        raise DataError(f"fitting an ensemble needs more rows, got {n}")
    names = tuple(components)
    if all(fixed_weights.get(k, 0.0) <= 0.0 for k in names):
        raise ConfigError(f"the fixed blend gives no weight to any of {names}")
    fixed = Ensemble.fixed({k: float(fixed_weights.get(k, 0.0)) for k in names})
    early = {k: np.asarray(v, dtype=float)[:cut] for k, v in components.items()}
    late = {k: np.asarray(v, dtype=float)[cut:] for k, v in components.items()}
    if method == "stacking":
        fitted = Ensemble.stacked(early, y[:cut])
    else:
        fitted = Ensemble.optimised(early, y[:cut])
    return HeldOutFit(
        ensemble=fitted,
        fixed=fixed,
        log_loss=_log_loss(y[cut:], fitted.predict_proba(late)),
        fixed_log_loss=_log_loss(y[cut:], fixed.predict_proba(late)),
        n_fit=cut,
        n_holdout=n - cut,
    )
