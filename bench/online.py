"""Benchmark of the online learner: per-event predict and learn latency on 10 features.

The learner (default configuration: StandardScaler | LogisticRegression, ADWIN drift detection,
rolling metrics) first learns 2,000 synthetic trades, then each of the next 5,000 trades is
predicted once and learned once, each call timed on its own. ``learn_one`` includes its own
prequential prediction, metric update and drift detector step.

Run ``python -m bench.online --json`` for JSON lines ``{"name", "value", "unit"[, "baseline",
"ratio"]}``. Baselines are the seed document's claims (1,000 us to predict, 5,000 us to learn);
ratio = baseline / value.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench._common import print_records
from models.online import OnlineConfig, OnlineLearner
from models.synthetic import TradeGenerator

__all__ = ["main", "run"]

PREDICT_BASELINE_US, LEARN_BASELINE_US = 1000.0, 5000.0


def _record(name: str, value: float, baseline: float | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": name, "value": round(value, 3), "unit": "us"}
    if baseline is not None:
        rec.update(baseline=baseline, ratio=round(baseline / value, 3))
    return rec


def run(
    config: OnlineConfig | None = None, warmup: int = 2000, events: int = 5000
) -> list[dict[str, Any]]:
    """Time predict and learn per event; return the result records."""
    rows = TradeGenerator(n_features=10, seed=0).rows(warmup + events)
    learner = OnlineLearner(config)
    for r in rows[:warmup]:
        learner.learn_one(r.features, r.label)
    predict_us, learn_us = np.empty(events), np.empty(events)
    clock = time.perf_counter_ns
    for i, r in enumerate(rows[warmup:]):
        t0 = clock()
        learner.predict_proba_one(r.features)
        t1 = clock()
        learner.learn_one(r.features, r.label)
        t2 = clock()
        predict_us[i], learn_us[i] = (t1 - t0) / 1e3, (t2 - t1) / 1e3
    return [
        _record("online_predict_p99_us", float(np.percentile(predict_us, 99)), PREDICT_BASELINE_US),
        _record("online_learn_p99_us", float(np.percentile(learn_us, 99)), LEARN_BASELINE_US),
        _record("online_predict_p50_us", float(np.median(predict_us))),
        _record("online_learn_p50_us", float(np.median(learn_us))),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Online learner latency benchmark.")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args(argv)
    print_records(run(), args.json)


if __name__ == "__main__":
    main()
