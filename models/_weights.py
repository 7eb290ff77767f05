"""Sample weights: class balance and realised reward/risk.

The reward/risk mapping is bounded so that a single outlier trade cannot dominate a fit::

    w_rr = clip(1 + |rr| / rr_scale, 1, rr_weight_max)      then divided by its mean

A trade that realised ``rr`` multiples of its risk counts ``1 + |rr| / rr_scale`` times, at most
``rr_weight_max`` times; missing (NaN) R/R counts 1. Dividing by the mean keeps the total weight
equal to the row count, so regularisation means the same with or without R/R weighting. With the
defaults (``rr_scale = 1``, ``rr_weight_max = 5``) a stopped-out loser (``rr = -1``) weighs 2, a
``+2R`` winner 3, and a ``+40R`` outlier no more than 5, before the mean normalisation.

Class balance multiplies the weight of every positive row by ``scale_pos_weight`` (the same thing
XGBoost's parameter of that name does), which works the same way for all three libraries and for
custom objectives.
"""

from __future__ import annotations

import numpy as np

from models.errors import DataError

__all__ = ["rr_weights", "sample_weights", "scale_pos_weight_from_labels"]


def rr_weights(rr: np.ndarray, rr_scale: float = 1.0, rr_weight_max: float = 5.0) -> np.ndarray:
    """Bounded, mean-normalised weights from realised reward/risk multiples.

    >>> rr_weights(np.array([-1.0, 2.0, 40.0])).round(3).tolist()
    [0.6, 0.9, 1.5]
    """
    r = np.abs(np.asarray(rr, dtype=np.float64))
    w = np.clip(1.0 + np.nan_to_num(r, nan=0.0, posinf=np.inf) / rr_scale, 1.0, rr_weight_max)
    return w / w.mean() if w.size else w


def scale_pos_weight_from_labels(y: np.ndarray) -> float:
    """``negatives / positives``; raises :class:`DataError` when either class is absent.

    >>> scale_pos_weight_from_labels(np.array([0, 0, 0, 1]))
    3.0
    """
    pos = int(np.sum(y == 1))
    neg = int(np.sum(y == 0))
    if pos == 0 or neg == 0:
        raise DataError(f"need both classes to balance them, got {pos} positive and {neg} negative")
    return neg / pos


def sample_weights(
    y: np.ndarray,
    rr: np.ndarray | None,
    scale_pos_weight: float,
    weight_by_rr: bool,
    rr_scale: float = 1.0,
    rr_weight_max: float = 5.0,
) -> np.ndarray:
    """Combined row weights: R/R mapping (when enabled and ``rr`` given) times class balance.

    >>> sample_weights(np.array([0, 1]), None, 3.0, False).tolist()
    [1.0, 3.0]
    """
    w = np.ones(len(y), dtype=np.float64)
    if weight_by_rr and rr is not None:
        w = rr_weights(rr, rr_scale, rr_weight_max)
    return np.where(np.asarray(y) == 1, w * scale_pos_weight, w)
