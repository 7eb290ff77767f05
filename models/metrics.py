"""Prequential metrics of (label, probability) pairs: ROC AUC, log loss and accuracy."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

__all__ = ["RollingMetrics", "rolling_metrics"]

_EPS = 1e-15


@dataclass(frozen=True)
class RollingMetrics:
    """Prequential metrics over the last ``n`` outcomes; ``roc_auc`` is None with one class."""

    n: int
    roc_auc: float | None
    log_loss: float | None
    accuracy: float | None


def rolling_metrics(
    recent: Sequence[tuple[bool, float]] | deque[tuple[bool, float]],
) -> RollingMetrics:
    """ROC AUC, log loss and accuracy of ``(label, probability)`` pairs.

    >>> rolling_metrics([(True, 0.9), (False, 0.2), (True, 0.6)]).accuracy
    1.0
    """
    n = len(recent)
    if n == 0:
        return RollingMetrics(0, None, None, None)
    y = np.fromiter((r[0] for r in recent), dtype=bool, count=n)
    p = np.fromiter((r[1] for r in recent), dtype=float, count=n)
    pc = np.clip(p, _EPS, 1 - _EPS)
    log_loss = float(-np.mean(np.where(y, np.log(pc), np.log1p(-pc))))
    accuracy = float(np.mean((p > 0.5) == y))
    n_pos = int(y.sum())
    roc_auc = None
    if 0 < n_pos < n:
        ranks = rankdata(p)
        roc_auc = float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos)))
    return RollingMetrics(n, roc_auc, log_loss, accuracy)
