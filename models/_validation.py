"""Time-ordered validation: walk-forward splits and the metrics every trained model reports.

Rows are assumed to be in time order already (the trainer sorts them by ``ts``). No split ever
shuffles, and every validation row comes after every training row of its split.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
from scipy.stats import rankdata

from models.errors import DataError

__all__ = ["evaluate", "holdout_split", "walk_forward_splits"]

_EPS = 1e-15


def holdout_split(n: int, valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first ``1 - valid_fraction`` rows (train) and the last rows (holdout).

    >>> tr, va = holdout_split(10, 0.2)
    >>> tr.tolist(), va.tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    n_valid = max(1, round(n * valid_fraction))
    if n - n_valid < 2:
        raise DataError(f"need at least 3 rows to split off a holdout, got {n}")
    idx = np.arange(n)
    return idx[: n - n_valid], idx[n - n_valid :]


def walk_forward_splits(
    n: int, n_splits: int, min_train_fraction: float = 0.5
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window splits: train on rows ``[0, k)``, validate on the next block.

    The first ``min_train_fraction`` of the rows is always training data; the rest is cut into
    ``n_splits`` consecutive validation blocks.

    >>> [(tr.size, va.tolist()) for tr, va in walk_forward_splits(10, 2)]
    [(5, [5, 6]), (7, [7, 8, 9])]
    """
    if n_splits < 1:
        raise DataError(f"n_splits must be >= 1, got {n_splits}")
    start = int(n * min_train_fraction)
    if start < 1 or n - start < n_splits:
        raise DataError(f"{n} rows are too few for {n_splits} walk-forward splits")
    edges = np.linspace(start, n, n_splits + 1).astype(int)
    idx = np.arange(n)
    for lo, hi in itertools.pairwise(edges):
        yield idx[:lo], idx[lo:hi]


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(
    y: np.ndarray, p: np.ndarray, rr: np.ndarray | None = None, threshold: float = 0.5
) -> dict[str, float]:
    """ROC AUC, log loss, Brier score, precision/recall at ``threshold`` and expected R.

    ``expected_r`` is the mean realised R/R of the trades whose probability is at least
    ``threshold`` (0 when no trade passes, or when ``rr`` is not given); ``n_taken`` counts them.
    ``roc_auc`` is NaN when ``y`` holds one class only.

    >>> m = evaluate(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]), np.array([-1.0, 2.0, 1.5]))
    >>> m["roc_auc"], m["precision"], m["recall"], m["expected_r"]
    (1.0, 1.0, 0.5, 2.0)
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.size == 0 or y.shape != p.shape:
        raise DataError(
            f"need equal, non-empty label and prediction arrays, got {y.shape}, {p.shape}"
        )
    pc = np.clip(p, _EPS, 1.0 - _EPS)
    taken = p >= threshold
    true_pos = float(np.sum(taken & (y == 1)))
    n_taken = int(taken.sum())
    rr_taken = np.asarray(rr, dtype=np.float64)[taken] if rr is not None else np.empty(0)
    rr_taken = rr_taken[np.isfinite(rr_taken)]
    return {
        "roc_auc": _roc_auc(y, p),
        "log_loss": float(-np.mean(y * np.log(pc) + (1.0 - y) * np.log(1.0 - pc))),
        "brier": float(np.mean((p - y) ** 2)),
        "precision": true_pos / n_taken if n_taken else 0.0,
        "recall": true_pos / float(np.sum(y == 1)) if np.any(y == 1) else 0.0,
        "expected_r": float(rr_taken.mean()) if rr_taken.size else 0.0,
        "n_taken": float(n_taken),
        "threshold": float(threshold),
    }
