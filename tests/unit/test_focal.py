"""Focal loss: exact derivatives against numerical differentiation, and each library's use of it."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from models._focal import (
    HESS_FLOOR,
    focal_grad_hess,
    focal_loss,
    lightgbm_focal_objective,
    xgboost_focal_objective,
)
from models.trainer import TrainingConfig, train

MARGINS = np.linspace(-6.0, 6.0, 49)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("label", [0, 1])
def test_gradient_and_hessian_match_central_differences(
    alpha: float, gamma: float, label: int
) -> None:
    y = np.full_like(MARGINS, label)
    h = 1e-5
    grad, hess = focal_grad_hess(MARGINS, y, alpha, gamma)
    num_grad = (
        focal_loss(MARGINS + h, y, alpha, gamma) - focal_loss(MARGINS - h, y, alpha, gamma)
    ) / (2 * h)
    g_plus, _ = focal_grad_hess(MARGINS + h, y, alpha, gamma)
    g_minus, _ = focal_grad_hess(MARGINS - h, y, alpha, gamma)
    num_hess = (g_plus - g_minus) / (2 * h)
    second = (
        focal_loss(MARGINS + 1e-3, y, alpha, gamma)
        - 2 * focal_loss(MARGINS, y, alpha, gamma)
        + focal_loss(MARGINS - 1e-3, y, alpha, gamma)
    ) / 1e-6
    np.testing.assert_allclose(grad, num_grad, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(hess, num_hess, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(hess, second, rtol=1e-3, atol=1e-6)


def test_gamma_zero_half_alpha_is_half_the_log_loss() -> None:
    y = (np.arange(MARGINS.size) % 2).astype(float)
    p = 1.0 / (1.0 + np.exp(-MARGINS))
    grad, hess = focal_grad_hess(MARGINS, y, 0.5, 0.0)
    np.testing.assert_allclose(grad, 0.5 * (p - y), atol=1e-12)
    np.testing.assert_allclose(hess, 0.5 * p * (1 - p), atol=1e-12)
    logloss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(focal_loss(MARGINS, y, 0.5, 0.0), 0.5 * logloss, rtol=1e-10)


def test_focusing_shrinks_the_gradient_of_easy_rows_more_than_of_hard_rows() -> None:
    y = np.ones(2)
    z = np.array([3.0, -3.0])  # an easy (well classified) and a hard positive
    g0, _ = focal_grad_hess(z, y, 0.5, 0.0)
    g2, _ = focal_grad_hess(z, y, 0.5, 2.0)
    ratio = np.abs(g2 / g0)
    assert ratio[0] < 0.01 < 0.5 < ratio[1]


def test_derivatives_stay_finite_for_extreme_margins() -> None:
    z = np.array([-800.0, -40.0, 40.0, 800.0])
    for label in (0, 1):
        grad, hess = focal_grad_hess(z, np.full(4, label), 0.25, 2.0)
        assert np.all(np.isfinite(grad)) and np.all(np.isfinite(hess))


def _data(n: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3))
    y = (rng.random(n) < 0.4).astype(float)
    w = rng.uniform(0.5, 2.0, n)
    margin = rng.normal(0.0, 3.0, n)
    return X, y, w, margin


def test_xgboost_objective_is_the_weighted_exact_derivative() -> None:
    X, y, w, margin = _data()
    dtrain = xgb.DMatrix(X, label=y, weight=w)
    grad, hess = xgboost_focal_objective(0.25, 2.0)(margin, dtrain)
    g, h = focal_grad_hess(margin, y, 0.25, 2.0)
    np.testing.assert_allclose(grad, g * w, rtol=1e-6)
    np.testing.assert_allclose(hess, np.maximum(h, HESS_FLOOR) * w, rtol=1e-6)
    unweighted, _ = xgboost_focal_objective(0.25, 2.0)(margin, xgb.DMatrix(X, label=y))
    np.testing.assert_allclose(unweighted, g, rtol=1e-6)


def test_lightgbm_objective_is_the_weighted_exact_derivative() -> None:
    X, y, w, margin = _data()
    ds = lgb.Dataset(X, label=y, weight=w, params={"verbosity": -1}).construct()
    grad, hess = lightgbm_focal_objective(0.25, 2.0)(margin, ds)
    g, h = focal_grad_hess(margin, y, 0.25, 2.0)
    np.testing.assert_allclose(grad, g * w, rtol=1e-6)
    np.testing.assert_allclose(hess, np.maximum(h, HESS_FLOOR) * w, rtol=1e-6)
    assert np.all(hess > 0)


@pytest.mark.parametrize("model_type", ["xgboost", "lightgbm", "catboost"])
def test_focal_training_learns_and_differs_from_log_loss(model_type: str) -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 0.7, 400) > 0.6).astype(int)
    base = TrainingConfig(model_type=model_type, n_estimators=30, max_depth=3, scale_pos_weight=1.0)
    focal = train(base.replace(focal_loss=True), X, y)
    plain = train(base, X, y)
    assert focal.model.focal_loss
    p = focal.model.predict_proba(X)
    assert np.all((p > 0) & (p < 1))
    assert focal.metrics["roc_auc"] > 0.8
    assert not np.allclose(p, plain.model.predict_proba(X))
