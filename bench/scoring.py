"""Benchmark of blended scoring: three boosters plus the online model, against the naive path.

Trains XGBoost, LightGBM and CatBoost (100 trees, depth 6 each) with their native APIs on
synthetic trades, and the same three through their scikit-learn wrappers for the naive path:
per row, one ``predict_proba`` call per wrapper plus the online model, then the blend. Our path is
:class:`models.scoring.BatchScorer` over the native boosters, measured per row at batch sizes 1,
16 and 256, with its compiled small-batch path on (default) and off.

Run ``python -m bench.scoring --json`` for JSON lines ``{"name", "value", "unit"[, "baseline",
"ratio"]}`` (ratio = baseline / value for times, so higher is better).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from bench._common import print_records
from models.blend import blend
from models.online import OnlineLearner
from models.roles import ONLINE
from models.scoring import BatchScorer
from models.synthetic import TradeGenerator

__all__ = ["main"]

N_TREES, DEPTH, N_TRAIN = 100, 6, 4000


class _Native:
    """Protocol adapter over a native booster, with the single-thread settings that pay off."""

    def __init__(self, kind: str, booster: Any, names: list[str]) -> None:
        self.kind, self.booster, self.feature_names = kind, booster, names

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "xgboost":
            return np.asarray(self.booster.inplace_predict(X, validate_features=False))
        if self.kind == "lightgbm":
            return np.asarray(self.booster.predict(X, num_threads=1))
        return np.asarray(
            self.booster.predict(X, prediction_type="Probability", thread_count=1)[:, 1]
        )


def _train(X: np.ndarray, y: np.ndarray, names: list[str]) -> tuple[list[_Native], list[Any]]:
    import catboost as cb
    import lightgbm as lgb
    import xgboost as xgb

    bx = xgb.train(
        {"max_depth": DEPTH, "objective": "binary:logistic", "nthread": 1, "verbosity": 0},
        xgb.DMatrix(X, y, feature_names=names),
        N_TREES,
    )
    lgb_params = {"max_depth": DEPTH, "num_leaves": 2**DEPTH - 1, "verbose": -1, "num_threads": 1}
    bl = lgb.train(
        {"objective": "binary", **lgb_params}, lgb.Dataset(X, y, feature_name=names), N_TREES
    )
    bc = cb.CatBoost(
        {
            "depth": DEPTH,
            "iterations": N_TREES,
            "loss_function": "Logloss",
            "verbose": False,
            "thread_count": 1,
            "allow_writing_files": False,
        }
    )
    bc.fit(X, y)
    natives = [
        _Native("xgboost", bx, names),
        _Native("lightgbm", bl, names),
        _Native("catboost", bc, names),
    ]
    wrappers = [
        xgb.XGBClassifier(n_estimators=N_TREES, max_depth=DEPTH, n_jobs=1, verbosity=0).fit(X, y),
        lgb.LGBMClassifier(
            n_estimators=N_TREES,
            n_jobs=1,
            **{k: v for k, v in lgb_params.items() if k != "num_threads"},
        ).fit(X, y),
        cb.CatBoostClassifier(
            iterations=N_TREES,
            depth=DEPTH,
            verbose=False,
            thread_count=1,
            allow_writing_files=False,
        ).fit(X, y),
    ]
    return natives, wrappers


def _timed(fn: Callable[[], object], repeat: int) -> np.ndarray:
    out = np.empty(repeat)
    for i in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - t0) / 1e3
    return out


def _line(name: str, value: float, unit: str, baseline: float | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": name, "value": round(value, 3), "unit": unit}
    if baseline is not None:
        rec.update(baseline=round(baseline, 3), ratio=round(baseline / value, 3))
    return rec


def run() -> list[dict[str, Any]]:
    """Train the models, time both paths and return the result records."""
    gen = TradeGenerator(seed=0)
    frame = gen.frame(N_TRAIN)
    names = [f"f{j}" for j in range(gen.n_features)]
    X, y = frame[names].to_numpy(dtype=np.float64), frame["label"].to_numpy()
    natives, wrappers = _train(X, y, names)
    online = OnlineLearner()
    for r in gen.rows(2000):
        online.learn_one(r.features, r.label)
    roles = ["xgboost", "lightgbm", "catboost"]
    weights = {**{r: 0.8 / 3 for r in roles}, ONLINE: 0.2}
    rows = [r.features for r in TradeGenerator(seed=1).rows(512)]
    fast = BatchScorer(dict(zip(roles, natives, strict=True)), online=online, weights=weights)
    slow = BatchScorer(
        dict(zip(roles, natives, strict=True)), online=online, weights=weights, fast_max_rows=0
    )

    def naive(batch: Sequence[dict[str, float]]) -> None:
        for row in batch:
            x = np.array([[row.get(f, np.nan) for f in names]])
            comps = {
                r: float(m.predict_proba(x)[0, 1]) for r, m in zip(roles, wrappers, strict=True)
            }
            comps[ONLINE] = online.predict_proba_one(row)[True]
            blend(comps, weights)

    # the compiled path must agree with the native one
    a, b = fast.score_many(rows[:64]), slow.score_many(rows[:64])
    assert max(abs(p.score - q.score) for p, q in zip(a, b, strict=True)) < 1e-5
    naive_row = _timed(lambda: naive(rows[:1]), 300)
    naive_256 = float(np.median(_timed(lambda: naive(rows[:256]), 3))) / 256
    out = []
    for label, scorer in (("", fast), ("_native_only", slow)):
        single = _timed(partial(scorer.score_one, rows[7]), 2000)
        out.append(
            _line(
                f"blend_single_row_p50_us{label}",
                float(np.median(single)),
                "us",
                float(np.median(naive_row)),
            )
        )
        out.append(
            _line(
                f"blend_single_row_p99_us{label}",
                float(np.percentile(single, 99)),
                "us",
                float(np.percentile(naive_row, 99)),
            )
        )
        for size, repeat in ((1, 2000), (16, 300), (256, 40)):
            batch = rows[:size]
            per_row = float(np.median(_timed(partial(scorer.score_many, batch), repeat))) / size
            out.append(_line(f"blend_batch{size}_us_per_row{label}", per_row, "us", naive_256))
            if size == 256:
                out.append(
                    _line(f"blend_batch256_speedup_vs_naive{label}", naive_256 / per_row, "ratio")
                )
    out.append(_line("naive_us_per_row", naive_256, "us"))
    out.append(_line("compiled_models", float(len(fast.fast_roles)), "count"))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args(argv)
    print_records(run(), args.json)


if __name__ == "__main__":
    main()
