"""What learning one outcome gives back, and the two numbers around it: the sample weight of an
outcome from its realised R/R, and the log loss of a prediction."""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["LearnResult", "log_loss", "rr_weight"]


def rr_weight(rr: float | None, scale: float = 1.0, w_max: float = 5.0) -> float:
    """Sample weight of an outcome from its realised R/R: ``clip(1 + |rr|/scale, 1, w_max)``.

    Bounded, so a single outlier trade cannot dominate; an outcome without R/R weighs 1.

    >>> rr_weight(None), rr_weight(1.0), rr_weight(-1.0), rr_weight(100.0)
    (1.0, 2.0, 2.0, 5.0)
    """
    if rr is None or not math.isfinite(rr):
        return 1.0
    return float(min(max(1.0 + abs(rr) / scale, 1.0), w_max))


class LearnResult(NamedTuple):
    """What learning one outcome did.

    ``learned`` is False for a duplicate outcome id (nothing changed). ``prediction`` is the online
    model's probability for the outcome's features just before it learned them, and ``loss`` its
    log loss against the label.
    """

    learned: bool
    prediction: float
    loss: float
    drift: bool
    n_learned: int


def log_loss(p: float, label: bool) -> float:
    """Log loss of probability ``p`` for ``label`` (clipped away from 0 and 1).

    >>> round(log_loss(0.5, True), 4)
    0.6931
    """
    q = min(max(p, 1e-15), 1 - 1e-15)
    return -math.log(q if label else 1 - q)
