"""Synthetic trade signals with known structure, for the demo, the tests and the benchmarks.

Features ``f0 ..`` are standard normal; the first ``n_informative`` drive a logistic model of the
win probability (intercept solved for ``positive_rate``), the rest are noise. At each drift point
(a sample index) the regime goes up by one and the informative coefficients are reshuffled and
signed to correlate negatively with the previous regime's, so the old model becomes wrong.
Winners realise a heavy-tailed reward/risk multiple (``1.5 + Pareto(2.5)``), losers about ``-1``
(stop plus slippage). Each part of a row has its own random stream, so ``rows(m)`` is a prefix
of ``rows(n)`` for ``m <= n``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.errors import ConfigError

__all__ = ["TradeGenerator", "TradeRow"]


@dataclass(frozen=True)
class TradeRow:
    """One closed trade: the signal's features, the outcome and the regime it came from.

    >>> row = TradeGenerator(n_features=2, n_informative=1, seed=0).rows(1)[0]
    >>> sorted(row.features), row.label in (0, 1), row.ts
    (['f0', 'f1'], True, 1700000000000)
    """

    signal_id: str
    outcome_id: str
    symbol: str
    ts: int
    features: dict[str, float]
    label: int
    realized_rr: float
    regime: int


class TradeGenerator:
    """Deterministic generator of trade outcomes with imbalance, noise features and drift.

    Parameters
    ----------
    n_features : int
        Total number of features (``f0`` ...).
    n_informative : int
        How many of the first features carry signal; at least 1 and at most ``n_features``.
    positive_rate : float
        Target share of winning trades, in (0, 1).
    drift_points : tuple of int
        Sample indices (strictly increasing, positive) where a new regime starts.
    symbols : tuple of str
        Instruments drawn uniformly for each row.
    start_ts, step_ms : int
        Epoch milliseconds of the first row, and spacing between rows.
    seed : int
        Seed of every random stream.

    Examples
    --------
    >>> gen = TradeGenerator(n_features=4, n_informative=2, drift_points=(50,), seed=1)
    >>> df = gen.frame(100)
    >>> list(df.columns)[:5]
    ['signal_id', 'outcome_id', 'symbol', 'ts', 'f0']
    >>> sorted(df["regime"].unique().tolist())
    [0, 1]
    >>> gen.rows(3) == gen.rows(10)[:3]
    True
    """

    def __init__(
        self,
        n_features: int = 10,
        n_informative: int = 5,
        positive_rate: float = 0.35,
        drift_points: tuple[int, ...] = (),
        symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
        start_ts: int = 1_700_000_000_000,
        step_ms: int = 60_000,
        seed: int = 0,
    ) -> None:
        if n_features < 1:
            raise ConfigError(f"n_features must be >= 1, got {n_features}")
        if not 1 <= n_informative <= n_features:
            raise ConfigError(f"n_informative must be in [1, n_features], got {n_informative}")
        if not 0.0 < positive_rate < 1.0:
            raise ConfigError(f"positive_rate must be in (0, 1), got {positive_rate}")
        points = tuple(int(p) for p in drift_points)
        if any(p <= 0 for p in points) or any(b <= a for a, b in itertools.pairwise(points)):
            raise ConfigError(f"drift_points must be positive and increasing, got {drift_points}")
        if not symbols:
            raise ConfigError("symbols must not be empty")
        if step_ms < 0:
            raise ConfigError(f"step_ms must be >= 0, got {step_ms}")
        self.n_features = n_features
        self.n_informative = n_informative
        self.positive_rate = positive_rate
        self.drift_points = points
        self.symbols = tuple(symbols)
        self.start_ts = start_ts
        self.step_ms = step_ms
        self.seed = seed

    def _streams(self) -> list[np.random.Generator]:
        seqs = np.random.SeedSequence(self.seed).spawn(6)
        return [np.random.default_rng(s) for s in seqs]

    def coefficients(self, regime: int) -> np.ndarray:
        """Informative coefficients in force during ``regime``."""
        rng = self._streams()[0]
        coef = rng.uniform(0.8, 1.6, self.n_informative)
        coef *= np.where(rng.random(self.n_informative) < 0.5, -1.0, 1.0)
        for _ in range(regime):
            nxt = rng.permutation(coef)
            coef = -nxt if float(nxt @ coef) > 0 else nxt
        return coef

    def _intercept(self, coef: np.ndarray) -> float:
        """Intercept giving a mean win probability of ``positive_rate`` (bisection)."""
        z = np.random.default_rng(12345).standard_normal((4000, coef.size)) @ coef
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if np.mean(1.0 / (1.0 + np.exp(-(z + mid)))) < self.positive_rate:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def _arrays(self, n: int) -> dict[str, np.ndarray]:
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        _, f_rng, y_rng, win_rng, loss_rng, s_rng = self._streams()
        x = f_rng.standard_normal((n, self.n_features))
        regime = np.searchsorted(np.asarray(self.drift_points, dtype=int), np.arange(n), "right")
        logit = np.empty(n)
        for r in np.unique(regime):
            mask = regime == r
            coef = self.coefficients(int(r))
            logit[mask] = x[mask, : self.n_informative] @ coef + self._intercept(coef)
        label = (y_rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
        win = 1.5 + win_rng.pareto(2.5, n)
        loss = np.clip(-1.0 - np.abs(loss_rng.normal(0.0, 0.05, n)), -1.5, -1.0)
        rr = np.where(label == 1, win, loss)
        sym = s_rng.integers(0, len(self.symbols), n)
        ts = self.start_ts + self.step_ms * np.arange(n, dtype=np.int64)
        return {"x": x, "label": label, "rr": rr, "regime": regime, "sym": sym, "ts": ts}

    def rows(self, n: int) -> list[TradeRow]:
        """The first ``n`` trades as :class:`TradeRow` objects."""
        a = self._arrays(n)
        names = [f"f{j}" for j in range(self.n_features)]
        return [
            TradeRow(
                signal_id=f"sig-{self.seed}-{i:08d}",
                outcome_id=f"out-{self.seed}-{i:08d}",
                symbol=self.symbols[int(a["sym"][i])],
                ts=int(a["ts"][i]),
                features=dict(zip(names, (float(v) for v in a["x"][i]), strict=True)),
                label=int(a["label"][i]),
                realized_rr=float(a["rr"][i]),
                regime=int(a["regime"][i]),
            )
            for i in range(n)
        ]

    def frame(self, n: int) -> pd.DataFrame:
        """The first ``n`` trades as a DataFrame, one column per feature."""
        a = self._arrays(n)
        cols: dict[str, object] = {
            "signal_id": [f"sig-{self.seed}-{i:08d}" for i in range(n)],
            "outcome_id": [f"out-{self.seed}-{i:08d}" for i in range(n)],
            "symbol": [self.symbols[int(s)] for s in a["sym"]],
            "ts": a["ts"],
        }
        for j in range(self.n_features):
            cols[f"f{j}"] = a["x"][:, j]
        cols.update(label=a["label"], realized_rr=a["rr"], regime=a["regime"].astype(np.int64))
        return pd.DataFrame(cols)
