"""The synthetic trade generator: determinism, structure, imbalance, drift and realised R/R."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import ConfigError
from models.synthetic import TradeGenerator, TradeRow
from models.trainer import evaluate


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    return evaluate(y, 1.0 / (1.0 + np.exp(-score)))["roc_auc"]


def _logit_fit(X: np.ndarray, y: np.ndarray, steps: int = 300) -> np.ndarray:
    """Plain gradient-descent logistic regression (no library warnings to worry about)."""
    Xb = np.hstack([X, np.ones((len(X), 1))])
    w = np.zeros(Xb.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-Xb @ w))
        w -= 0.5 * Xb.T @ (p - y) / len(y)
    return w


def test_same_seed_same_rows_and_other_seed_differs() -> None:
    a = TradeGenerator(seed=7).frame(300)
    b = TradeGenerator(seed=7).frame(300)
    c = TradeGenerator(seed=8).frame(300)
    assert a.equals(b)
    assert not np.allclose(a["f0"], c["f0"])


def test_rows_are_a_prefix_and_match_the_frame() -> None:
    gen = TradeGenerator(n_features=4, n_informative=2, drift_points=(5,), seed=3)
    rows = gen.rows(20)
    assert rows[:10] == gen.rows(10)
    frame = gen.frame(20)
    assert list(frame.columns) == [
        "signal_id",
        "outcome_id",
        "symbol",
        "ts",
        "f0",
        "f1",
        "f2",
        "f3",
        "label",
        "realized_rr",
        "regime",
    ]
    for i, row in enumerate(rows):
        assert isinstance(row, TradeRow)
        assert row.signal_id == frame.loc[i, "signal_id"]
        assert row.ts == frame.loc[i, "ts"]
        assert row.features == {f"f{j}": frame.loc[i, f"f{j}"] for j in range(4)}
        assert row.label == frame.loc[i, "label"]
        assert row.realized_rr == frame.loc[i, "realized_rr"]
        assert row.regime == frame.loc[i, "regime"]
    assert len({r.outcome_id for r in rows}) == 20
    assert {r.symbol for r in rows} <= {"BTCUSDT", "ETHUSDT"}
    assert np.all(np.diff(frame["ts"].to_numpy()) == 60_000)


@pytest.mark.parametrize("rate", [0.1, 0.35, 0.6])
def test_positive_rate_is_close_to_the_target(rate: float) -> None:
    y = TradeGenerator(positive_rate=rate, seed=1).frame(5000)["label"]
    assert abs(y.mean() - rate) < 0.04


def test_informative_features_carry_signal_and_noise_features_do_not() -> None:
    df = TradeGenerator(n_features=8, n_informative=3, seed=2).frame(4000)
    y = df["label"].to_numpy()
    strength = [abs(_auc(y, df[f"f{j}"].to_numpy()) - 0.5) for j in range(8)]
    assert min(strength[:3]) > 0.1
    assert max(strength[3:]) < 0.05


def test_regime_changes_at_drift_points_and_breaks_the_old_model() -> None:
    gen = TradeGenerator(n_features=6, n_informative=4, drift_points=(2000, 4000), seed=4)
    df = gen.frame(6000)
    assert df["regime"].tolist() == [0] * 2000 + [1] * 2000 + [2] * 2000
    assert not np.allclose(gen.coefficients(0), gen.coefficients(1))
    X = df[[f"f{j}" for j in range(6)]].to_numpy()
    y = df["label"].to_numpy()
    w = _logit_fit(X[:1500], y[:1500])
    score = np.hstack([X, np.ones((len(X), 1))]) @ w
    assert _auc(y[1500:2000], score[1500:2000]) > 0.8
    assert _auc(y[2000:4000], score[2000:4000]) < 0.6
    w1 = _logit_fit(X[2000:3500], y[2000:3500])
    score1 = np.hstack([X, np.ones((len(X), 1))]) @ w1
    assert _auc(y[3500:4000], score1[3500:4000]) > 0.8


def test_realized_rr_winners_heavy_tailed_losers_near_minus_one() -> None:
    df = TradeGenerator(seed=5).frame(5000)
    win = df.loc[df["label"] == 1, "realized_rr"]
    loss = df.loc[df["label"] == 0, "realized_rr"]
    assert win.min() >= 1.5
    assert 1.5 < win.median() < 3.0
    assert win.max() > 6.0
    assert loss.between(-1.5, -1.0).all()
    assert abs(loss.median() + 1.0) < 0.1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_features": 0},
        {"n_informative": 0},
        {"n_features": 3, "n_informative": 4},
        {"positive_rate": 0.0},
        {"positive_rate": 1.0},
        {"drift_points": (10, 5)},
        {"drift_points": (0,)},
        {"symbols": ()},
        {"step_ms": -1},
    ],
)
def test_bad_parameters_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TradeGenerator(**kwargs)  # type: ignore[arg-type]


def test_negative_row_count_is_rejected() -> None:
    with pytest.raises(ConfigError):
        TradeGenerator().frame(-1)
