"""Training-time benchmark: 1000 synthetic trades x 10 features, 100 trees of depth 6.

``python -m bench.training --json`` prints one JSON line per library::

    {"name": "train_xgboost_1000x10_seconds", "value": <median s>, "unit": "s",
     "baseline": 2.0, "ratio": <baseline / value>}

The baselines are the seed document's claimed lower bounds (2 s XGBoost, 1 s LightGBM, 3 s
CatBoost); a ratio above 1 means faster than claimed. Each figure is the median wall time of
``--repeats`` calls to :func:`models.trainer.train` (the whole job: weights, fit on the first 80 %
of the rows, holdout metrics), after one warm-up call, with the trainer's default single thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from models.synthetic import TradeGenerator
from models.trainer import MODEL_TYPES, TrainingConfig, TrainingData, train

__all__ = ["BASELINES", "bench_library", "main"]

BASELINES = {"xgboost": 2.0, "lightgbm": 1.0, "catboost": 3.0}


def bench_library(model_type: str, data: TrainingData, repeats: int = 5) -> dict[str, object]:
    """Median training seconds of one library on ``data``.

    >>> data = TrainingData.from_frame(TradeGenerator(seed=0).frame(200), exclude=["regime"])
    >>> row = bench_library("lightgbm", data, repeats=1)
    >>> row["name"], row["unit"], row["baseline"]
    ('train_lightgbm_1000x10_seconds', 's', 1.0)
    """
    cfg = TrainingConfig(model_type=model_type, n_estimators=100, max_depth=6, learning_rate=0.1)
    train(cfg, data)  # warm-up: imports, thread pools
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        train(cfg, data)
        times.append(time.perf_counter() - start)
    value = statistics.median(times)
    baseline = BASELINES[model_type]
    return {
        "name": f"train_{model_type}_1000x10_seconds",
        "value": round(value, 4),
        "unit": "s",
        "baseline": baseline,
        "ratio": round(baseline / value, 2),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark for every library and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per library")
    args = parser.parse_args(argv)
    frame = TradeGenerator(n_features=10, n_informative=5, seed=0).frame(1000)
    data = TrainingData.from_frame(frame, exclude=["regime"])
    for model_type in MODEL_TYPES:
        row = bench_library(model_type, data, args.repeats)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{row['name']}: {row['value']:.3f} s (baseline {row['baseline']} s)", flush=True)


if __name__ == "__main__":
    main()
