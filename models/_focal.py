"""Binary focal loss on raw margins, and custom objectives for XGBoost and LightGBM.

With ``p = sigmoid(z)``, ``p_t = p`` for a positive and ``1 - p`` for a negative, ``q = 1 - p_t``,
``a_t = alpha`` for a positive and ``1 - alpha`` for a negative, and ``s = +1`` / ``-1``:

* loss ``L = -a_t q**g log(p_t)`` (Lin et al., 2017);
* gradient ``dL/dz = s a_t (g p_t q**g log(p_t) - q**(g + 1))``;
* hessian ``d2L/dz2 = a_t p_t q**g (g log(p_t) (q - g p_t) + (2 g + 1) q)``.

With ``g = 0`` and ``alpha = 0.5`` this is half the log loss. The hessian is negative for badly
misclassified rows when ``g > 0``; the boosting objectives floor it at ``HESS_FLOOR`` so that
Newton steps stay defined (the exact value is what :func:`focal_grad_hess` returns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import expit, log_expit

__all__ = [
    "HESS_FLOOR",
    "focal_grad_hess",
    "focal_loss",
    "lightgbm_focal_objective",
    "xgboost_focal_objective",
]

HESS_FLOOR = 1e-6

Objective = Callable[[np.ndarray, Any], tuple[np.ndarray, np.ndarray]]


def _parts(
    margin: np.ndarray, y: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    z = np.asarray(margin, dtype=np.float64)
    s = np.where(np.asarray(y) > 0.5, 1.0, -1.0)
    a_t = np.where(s > 0, alpha, 1.0 - alpha)
    return s, a_t, expit(s * z), log_expit(s * z)


def focal_loss(margin: np.ndarray, y: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """Per-row focal loss of raw margins ``margin`` for labels ``y`` in {0, 1}.

    >>> round(float(focal_loss(np.array([0.0]), np.array([1]), 0.5, 0.0)[0]), 4)
    0.3466
    """
    _, a_t, p_t, log_p = _parts(margin, y, alpha)
    return -a_t * (1.0 - p_t) ** gamma * log_p


def focal_grad_hess(
    margin: np.ndarray, y: np.ndarray, alpha: float, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact first and second derivatives of :func:`focal_loss` with respect to the margin.

    >>> g, h = focal_grad_hess(np.array([0.0]), np.array([1]), 0.5, 0.0)
    >>> float(g[0]), float(h[0])
    (-0.25, 0.125)
    """
    s, a_t, p_t, log_p = _parts(margin, y, alpha)
    q = 1.0 - p_t
    q_g = q**gamma
    grad = s * a_t * (gamma * p_t * q_g * log_p - q_g * q)
    hess = a_t * p_t * q_g * (gamma * log_p * (q - gamma * p_t) + (2.0 * gamma + 1.0) * q)
    return grad, hess


def _weighted(
    margin: np.ndarray, y: np.ndarray, w: np.ndarray | None, alpha: float, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    grad, hess = focal_grad_hess(margin, y, alpha, gamma)
    hess = np.maximum(hess, HESS_FLOOR)
    if w is not None and len(w):
        grad, hess = grad * w, hess * w
    return grad, hess


def xgboost_focal_objective(alpha: float, gamma: float) -> Objective:
    """Custom objective for ``xgboost.train(obj=...)``; sample weights are applied here."""

    def objective(margin: np.ndarray, dtrain: Any) -> tuple[np.ndarray, np.ndarray]:
        w = dtrain.get_weight()
        return _weighted(margin, dtrain.get_label(), w if w.size else None, alpha, gamma)

    return objective


def lightgbm_focal_objective(alpha: float, gamma: float) -> Objective:
    """Custom objective for LightGBM's ``params["objective"]``; sample weights are applied here."""

    def objective(margin: np.ndarray, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
        w = dataset.get_weight()
        return _weighted(margin, dataset.get_label(), w, alpha, gamma)

    return objective
