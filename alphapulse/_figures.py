"""The numbers behind the report figures: calibration, rolling AUC, metrics, importances.

Pure numpy on top of :mod:`models`; JSON-ready output (NaN becomes None).

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.35, 0.8])
>>> calibration(y, p, bins=2)["count"]
[3, 1]
>>> jsonable({"a": float("nan"), "b": [np.float64(1.5)]})
{'a': None, 'b': [1.5]}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.metrics import rolling_metrics
from models.trainer import evaluate

__all__ = [
    "booster_importance",
    "calibration",
    "component_metrics",
    "jsonable",
    "online_importance",
    "rolling_auc",
]


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers and NaN or infinities as None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, list[Any]]:
    """Equal-width bins of predicted probability: mean prediction and win rate in each.

    Empty bins are left out.
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    out: dict[str, list[Any]] = {
        "bin_lower": [],
        "bin_upper": [],
        "mean_predicted": [],
        "fraction_positive": [],
        "count": [],
    }
    for b in range(bins):
        mask = idx == b
        n = int(mask.sum())
        if n == 0:
            continue
        out["bin_lower"].append(float(edges[b]))
        out["bin_upper"].append(float(edges[b + 1]))
        out["mean_predicted"].append(float(p[mask].mean()))
        out["fraction_positive"].append(float(y[mask].mean()))
        out["count"].append(n)
    return out


def component_metrics(
    y: np.ndarray,
    probs: Mapping[str, np.ndarray],
    rr: np.ndarray | None = None,
    threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """:func:`models.trainer.evaluate` of each component over the rows where it answered (not NaN).

    >>> y = np.array([0, 1, 1]); p = {"online": np.array([0.2, 0.7, np.nan])}
    >>> component_metrics(y, p)["online"]["roc_auc"]
    1.0
    """
    out: dict[str, dict[str, float]] = {}
    for name, p in probs.items():
        p = np.asarray(p, dtype=float)
        answered = ~np.isnan(p)
        if not answered.any():
            continue
        sub_rr = None if rr is None else np.asarray(rr, dtype=float)[answered]
        m = evaluate(np.asarray(y)[answered], p[answered], sub_rr, threshold)
        m["n"] = float(answered.sum())
        out[name] = m
    return out


def rolling_auc(
    y: np.ndarray, probs: Mapping[str, np.ndarray], window: int, points: int = 400
) -> dict[str, Any]:
    """ROC AUC of each component over the last ``window`` rows, at up to ``points`` positions.

    ``x`` holds the 0-based row index at the end of each window; a series is None where its
    window holds one class only or no answers.
    """
    y = np.asarray(y, dtype=bool)
    n = y.size
    if n == 0:
        return {"window": window, "x": [], "series": {k: [] for k in probs}}
    start = min(n - 1, max(0, min(window, 50) - 1))
    xs = np.unique(np.linspace(start, n - 1, min(points, n - start)).astype(int))
    series: dict[str, list[float | None]] = {}
    for name, p in probs.items():
        p = np.asarray(p, dtype=float)
        values: list[float | None] = []
        for x in xs:
            lo = max(0, x + 1 - window)
            yy, pp = y[lo : x + 1], p[lo : x + 1]
            keep = ~np.isnan(pp)
            pairs = list(zip(yy[keep].tolist(), pp[keep].tolist(), strict=True))
            values.append(rolling_metrics(pairs).roc_auc if pairs else None)
        series[name] = values
    return {"window": window, "x": xs.tolist(), "series": series}


def booster_importance(model: Any) -> dict[str, float]:
    """Gain importance of each feature of a :class:`models.trainer.TrainedModel`, summing to 1.

    CatBoost reports its ``PredictionValuesChange`` importance instead of gain.
    """
    names = list(model.feature_names)
    booster = model.booster
    if model.model_type == "xgboost":
        score = booster.get_score(importance_type="total_gain")
        raw = [float(score.get(n, score.get(f"f{i}", 0.0))) for i, n in enumerate(names)]
    elif model.model_type == "lightgbm":
        raw = [float(v) for v in booster.feature_importance(importance_type="gain")]
    else:
        raw = [float(v) for v in booster.get_feature_importance()]
    total = sum(raw)
    return {n: (v / total if total > 0 else 0.0) for n, v in zip(names, raw, strict=True)}


def online_importance(learners: Sequence[Any]) -> dict[str, float]:
    """Mean absolute weight of each feature over linear online learners, summing to 1.

    The learners standardise their inputs, so the weights are comparable across features.
    Non-linear learners are skipped.
    """
    sums: dict[str, float] = {}
    for learner in learners:
        weights = learner.export().get("weights")
        if not weights:
            continue
        for name, w in weights.items():
            sums[name] = sums.get(name, 0.0) + abs(float(w)) / len(learners)
    total = sum(sums.values())
    return {n: (v / total if total > 0 else 0.0) for n, v in sorted(sums.items())}
