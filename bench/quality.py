"""Learning quality: a synthetic regime change replayed through the worker's model code.

``python -m bench.quality [--json]`` prints three figures (JSON lines: ``name``, ``value``,
``unit`` "ratio", ``goal``, ``met`` and the two numbers of each ratio). ``--sweep`` measures the
online model's forgetting and drift-detection settings instead (the tables in
docs/benchmarks.md, from which the defaults of ``ALPHAPULSE_ONLINE_*`` were chosen).

The stream
----------
For each of ten seeds, :class:`models.synthetic.TradeGenerator` (10 features, 5 informative, 35%
winners, one model key) makes ``history + before + after`` trades, and the regime changes
after the first ``history + before``: the new informative coefficients are anti-correlated with
the old ones, so what was learned before is wrong after. Every trade goes through
:func:`alphapulse._replay.replay` (the predictor's scoring and blend and the learner's online
model, prequentially, in time order). The online models are configured as the worker's settings
say (``Settings().online_config()``), the blend by ``ALPHAPULSE_BLEND_BATCH_WEIGHT``.

The systems
-----------
- *Full system*: a batch model (LightGBM, ``weekly_quick`` preset) is trained on the first
  ``history`` outcomes and swapped in after them; it holds the whole batch weight, the online model
  the rest. Drift retraining (``since_alarm``, as the worker's retrainer does it): when the online
  model signals drift, the batch model is retrained on the outcomes since that alarm once
  ``retrain_at`` of them have arrived (300, 600, 1200 and 2400, the default of
  ``ALPHAPULSE_RETRAIN_DRIFT_OUTCOMES``), and each new model is swapped in at once (no promotion
  gate, no job time). A newer alarm starts the count again (the worker ignores one within
  ``ALPHAPULSE_RETRAIN_DRIFT_MIN_GAP_S``, a wall-clock time this replay does not have). Alarms
  during the first ``history`` outcomes, before any batch model, start nothing. After each swap
  the ensemble is refitted as the worker refits it after a promotion
  (:func:`models.ensemble_fit.fit_ensemble` with ``ALPHAPULSE_ENSEMBLE_METHOD`` on the last
  ``ensemble_history`` outcomes, after a drift retraining those since the alarm) and, when it
  beats the fixed blend on its held-out rows, blends from the next signal on; otherwise the
  ensemble before it (or the fixed blend) goes on serving.
- *Static batch model*: the same first batch model, never retrained, scored alone.
- ``--sweep`` compares the online settings with the fixed blend (no ensemble refit, which
  takes most of a run's time), and also runs the drift retraining the worker did before it
  followed ``since_alarm`` (``whole_window``: the batch weight shared by a ``monthly_full`` that
  is never retrained and a ``weekly_quick`` retrained at each alarm on every outcome so far, as
  its 90-day window covers this whole stream) and ``none``.

The figures
-----------
Each is the median over the seeds of a per-seed ratio, on the outcomes after the first batch
model arrived ("the stream").

- ``blend_log_loss_vs_best_component``: the full system's blended score's log loss over the lower
  of its components' (batch, online) log losses. Goal <= 1.0.
- ``recovery_samples_vs_static``: a system is right about an outcome when ``(p > 0.5) == label``.
  Its level before is its accuracy over the ``window`` (500) outcomes just before the change. It
  has recovered ``k`` outcomes after the change when ``k >= window`` (the window holds the new
  regime only) and its accuracy over the last ``window`` outcomes is at least the level before
  minus ``tolerance`` (2 points). Its recovery is the first such ``k``. A system that never
  recovers is given ``after``, the length of the new regime (a lower bound of its true
  recovery). The figure is full system over static batch model; the goal (<= 0.5) is met only when
  the full system recovered in every seed. The static model, whose old coefficients are wrong in
  the new regime, has not recovered within the stream in any recorded run; its count is then
  ``after`` and the ratio an upper bound of the true one, which depends on ``after`` (4000).
- ``ensemble_log_loss_vs_fixed_blend``: :func:`models.ensembler.fit_on_history` on the full
  system's components (``ALPHAPULSE_ENSEMBLE_METHOD``): the fitted ensemble's log loss over the
  fixed blend's on the held-out last 20% of the stream. Goal <= 1.0.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from alphapulse._replay import ReplayResult, ReplayStep, Swap, replay
from alphapulse._rows import trade_rows
from models.blend import BlendWeights
from models.ensemble_fit import fit_ensemble
from models.ensembler import fit_on_history
from models.metrics import rolling_metrics
from models.online import OnlineConfig
from models.roles import ONLINE
from models.served_ensemble import ServedEnsemble, ensemble_document
from models.synthetic import TradeGenerator
from models.trainer import TrainedModel, TrainingConfig, TrainingData, train
from stream.settings import Settings

__all__ = [
    "POLICIES",
    "Scenario",
    "measure",
    "recovery",
    "run_system",
    "sweep",
]

KEY = "BTCUSDT"
BATCH = "weekly_quick"
"""The role that drift retraining replaces."""
POLICIES = ("since_alarm", "whole_window", "none")


@dataclass(frozen=True)
class Scenario:
    """The stream, the seeds and the recovery rule (see the module docstring)."""

    history: int = 2000
    before: int = 2000
    after: int = 4000
    seeds: tuple[int, ...] = tuple(range(1, 11))
    window: int = 500
    tolerance: float = 0.02
    retrain_at: tuple[int, ...] = (300, 600, 1200, 2400)
    n_estimators: int = 150
    ensemble_history: int = 5000
    """Outcomes the ensemble is refitted on after each swap (``ALPHAPULSE_ENSEMBLE_HISTORY``)."""


@dataclass(frozen=True)
class Stream:
    """One seed's trades as replay rows and as training data."""

    rows: list[dict[str, Any]]
    data: TrainingData
    frame: pd.DataFrame
    """The joined outcomes as the ensemble job reads them from the outcomes topic."""
    start: int
    """Index of the first outcome scored with a batch model."""


@dataclass
class Run:
    """One system replayed over one stream."""

    result: ReplayResult
    start: int
    weights: BlendWeights
    retrains: list[int] = field(default_factory=list)

    def stream_steps(self) -> list[ReplayStep]:
        """The steps after the first batch model arrived."""
        return self.result.steps[self.start :]

    def change(self) -> int:
        """Index, within :meth:`stream_steps`, of the first outcome of the new regime."""
        return self.result.regime_changes[0] - self.start


def make_stream(sc: Scenario, seed: int) -> Stream:
    """The trades of one seed."""
    n = sc.history + sc.before + sc.after
    gen = TradeGenerator(
        n_features=10,
        n_informative=5,
        drift_points=(sc.history + sc.before,),
        symbols=(KEY,),
        seed=seed,
    )
    rows = trade_rows(gen, n)
    data = TrainingData.from_frame(gen.frame(n), exclude=["regime"])
    frame = pd.DataFrame(
        [
            {**r["features"], "label": int(r["label"]), "realized_rr": r["realized_rr"]}
            | {"ts": r["ts"], "model_key": KEY}
            for r in rows
        ]
    )
    return Stream(rows, data, frame, sc.history)


def run_system(
    stream: Stream,
    sc: Scenario,
    online: OnlineConfig,
    batch_weight: float,
    policy: str,
    method: str | None = None,
) -> Run:
    """Replay ``stream`` with drift retraining ``policy`` (one of :data:`POLICIES`).

    With an ensemble ``method``, the ensemble is refitted after each swap of the batch model, as
    the worker refits it after a promotion, and serves while it beats the fixed blend.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    cfg = TrainingConfig.for_cadence("lightgbm", "weekly_quick", n_estimators=sc.n_estimators)
    weights = BlendWeights.from_split(
        batch=batch_weight, monthly_share=0.5 if policy == "whole_window" else 0.0
    )
    ensemble: ServedEnsemble | None = None

    def fit(lo: int, hi: int) -> TrainedModel:
        return train(cfg, stream.data.take(np.arange(lo, hi))).model

    def refit_ensemble(i: int, models: dict[str, TrainedModel]) -> ServedEnsemble | None:
        if method is None:
            return None
        lo = max(0, i + 1 - sc.ensemble_history, alarm + 1 if policy == "since_alarm" else 0)
        frame = stream.frame.iloc[lo : i + 1]
        names = {role: list(m.feature_names) for role, m in models.items()}
        held = fit_ensemble(
            frame, {r: cfg for r in models}, names, method, weights, online_config=online
        ).held_out
        if not held.beats_fixed:
            return ensemble  # not promoted: the champion ensemble keeps serving
        return ServedEnsemble.from_document(ensemble_document(held.ensemble, {}), i)

    first: dict[str, TrainedModel] = {}
    due: list[int] = []
    alarm = -1
    retrains: list[int] = []

    def batch(i: int, model: TrainedModel) -> Swap:
        nonlocal ensemble
        models = {"monthly_full": first[BATCH], BATCH: model} if policy == "whole_window" else {}
        models[BATCH] = model
        ensemble = refit_ensemble(i, models)
        return Swap(models, ensemble)

    def on_outcome(step: ReplayStep, _: ReplayResult) -> Swap | None:
        nonlocal alarm, due
        i = step.index
        if i == stream.start - 1:
            first[BATCH] = fit(0, stream.start)
            return batch(i, first[BATCH])
        if i < stream.start:
            return None
        if step.drift and policy == "whole_window":
            retrains.append(i)
            return batch(i, fit(0, i + 1))
        if step.drift and policy == "since_alarm":
            alarm, due = i, [i + n for n in sc.retrain_at]
        if due and i >= due[0]:
            due.pop(0)
            retrains.append(i)
            return batch(i, fit(alarm + 1, i + 1))
        return None

    result = replay(stream.rows, weights=weights, online_config=online, on_outcome=on_outcome)
    return Run(result, stream.start, weights, retrains)


def recovery(hits: np.ndarray, change: int, window: int, tolerance: float) -> tuple[int, float]:
    """Outcomes after ``change`` until the rolling accuracy is back, and the level before.

    Returns ``len(hits) - change`` (the whole remainder) when it never comes back.

    >>> hits = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], dtype=bool)
    >>> recovery(hits, 4, 2, 0.0), recovery(hits[:6], 4, 2, 0.0)
    ((4, 1.0), (2, 1.0))
    """
    level = float(np.mean(hits[change - window : change]))
    counts = np.concatenate([[0], np.cumsum(hits[change:], dtype=np.int64)])
    accuracy = (counts[window:] - counts[:-window]) / window
    ok = np.flatnonzero(accuracy >= level - tolerance - 1e-9)  # float slack on an exact tie
    return (int(ok[0]) + window if ok.size else len(hits) - change), level


def _hits(scores: Sequence[float], labels: Sequence[bool]) -> np.ndarray:
    return (np.asarray(scores) > 0.5) == np.asarray(labels, dtype=bool)


def _log_loss(labels: Sequence[bool], p: Sequence[float]) -> float:
    value = rolling_metrics(list(zip(labels, p, strict=True))).log_loss
    return math.nan if value is None else value


def _seed_figures(full: Run, static: Run, sc: Scenario, method: str) -> dict[str, float]:
    steps, change = full.stream_steps(), full.change()
    labels = [s.label for s in steps]
    comps = {r: np.array([s.components[r] for s in steps]) for r in full.weights.configured()}
    scores = [s.score for s in steps]
    blend_ll = _log_loss(labels, scores)
    comp_ll = {r: _log_loss(labels, list(p)) for r, p in comps.items()}
    rec_full, level_full = recovery(_hits(scores, labels), change, sc.window, sc.tolerance)
    st_steps = static.stream_steps()
    st_scores = [s.components[BATCH] for s in st_steps]
    rec_static, level_static = recovery(
        _hits(st_scores, [s.label for s in st_steps]), static.change(), sc.window, sc.tolerance
    )
    online_samples, _ = recovery(
        _hits(list(comps[ONLINE]), labels), change, sc.window, sc.tolerance
    )
    held = fit_on_history(comps, np.array(labels, dtype=float), method, dict(full.weights))
    return {
        "blend_log_loss": blend_ll,
        "best_component_log_loss": min(comp_ll.values()),
        "full_samples": rec_full,
        "static_samples": rec_static,
        "full_recovered": float(rec_full < sc.after),
        "static_recovered": float(rec_static < sc.after),
        "full_level_before": level_full,
        "static_level_before": level_static,
        "online_samples": online_samples,
        "online_log_loss": comp_ll[ONLINE],
        "batch_log_loss": comp_ll[BATCH],
        "ensemble_log_loss": held.log_loss,
        "fixed_blend_log_loss": held.fixed_log_loss,
        "alarms_before_change": sum(1 for s in steps[:change] if s.drift),
        "first_alarm_after_change": next(
            (i - change for i, s in enumerate(steps) if s.drift and i >= change), math.nan
        ),
        "retrains": len(full.retrains),
    }


def _median(per_seed: list[dict[str, float]], key: str) -> float:
    values = [d[key] for d in per_seed if not math.isnan(d[key])]
    return float(statistics.median(values)) if values else math.nan


def _ratio(per_seed: list[dict[str, float]], num: str, den: str) -> float:
    return float(statistics.median(d[num] / d[den] for d in per_seed))


def measure(
    sc: Scenario, online: OnlineConfig, batch_weight: float, method: str
) -> list[dict[str, Any]]:
    """The three figures, one record each (see the module docstring)."""
    per_seed = []
    for seed in sc.seeds:
        stream = make_stream(sc, seed)
        full = run_system(stream, sc, online, batch_weight, "since_alarm", method)
        static = run_system(stream, sc, online, batch_weight, "none")
        per_seed.append(_seed_figures(full, static, sc, method))

    def rec(
        name: str, num: str, den: str, goal: float, all_ok: bool = True, **extra: Any
    ) -> dict[str, Any]:
        value = _ratio(per_seed, num, den)
        return {
            "name": name,
            "value": round(value, 4),
            "unit": "ratio",
            "goal": goal,
            "met": bool(value <= goal and all_ok),
            num: round(_median(per_seed, num), 4),
            den: round(_median(per_seed, den), 4),
            "seeds": len(sc.seeds),
            **extra,
        }

    recovered = int(sum(d["full_recovered"] for d in per_seed))
    return [
        rec(
            "blend_log_loss_vs_best_component",
            "blend_log_loss",
            "best_component_log_loss",
            1.0,
            batch_log_loss=round(_median(per_seed, "batch_log_loss"), 4),
            online_log_loss=round(_median(per_seed, "online_log_loss"), 4),
            batch_weight=batch_weight,
        ),
        rec(
            "recovery_samples_vs_static",
            "full_samples",
            "static_samples",
            0.5,
            all_ok=recovered == len(sc.seeds),
            full_recovered=recovered,
            static_recovered=int(sum(d["static_recovered"] for d in per_seed)),
            outcomes_after_change=sc.after,
            window=sc.window,
            full_level_before=round(_median(per_seed, "full_level_before"), 4),
            static_level_before=round(_median(per_seed, "static_level_before"), 4),
            retrains=_median(per_seed, "retrains"),
        ),
        rec(
            "ensemble_log_loss_vs_fixed_blend",
            "ensemble_log_loss",
            "fixed_blend_log_loss",
            1.0,
            method=method,
        ),
    ]


SWEEP_DECAY: tuple[dict[str, Any], ...] = (
    {"decay": False},
    {"decay": True, "decay_window": 250},
    {"decay": True, "decay_window": 500},
    {"decay": True, "decay_window": 1000},
    {"decay": True, "decay_window": 2000},
)
SWEEP_DETECTORS: tuple[dict[str, Any], ...] = (
    {"drift_detector": "adwin", "drift_delta": 0.002},
    {"drift_detector": "adwin", "drift_delta": 0.02},
    {"drift_detector": "page_hinkley", "drift_threshold": 10.0},
    {"drift_detector": "page_hinkley", "drift_threshold": 20.0},
    {"drift_detector": "page_hinkley", "drift_threshold": 50.0},
)

SWEEP_BATCH_WEIGHTS = (0.6, 0.4, 0.2)


def _sweep_row(
    streams: list[Stream],
    statics: list[Run],
    sc: Scenario,
    online: OnlineConfig,
    weight: float,
    policy: str,
) -> dict[str, Any]:
    per_seed = []
    for stream, static in zip(streams, statics, strict=True):
        full = run_system(stream, sc, online, weight, policy)
        per_seed.append(_seed_figures(full, static, sc, "weights"))
    return {
        "policy": policy,
        "batch_weight": weight,
        "decay_window": online.decay_window if online.decay else None,
        "detector": online.drift_detector,
        "delta_or_threshold": (
            online.drift_delta if online.drift_detector == "adwin" else online.drift_threshold
        ),
        "detected": sum(1 for d in per_seed if not math.isnan(d["first_alarm_after_change"])),
        "recovered": int(sum(d["full_recovered"] for d in per_seed)),
        "recovery_vs_static": round(_ratio(per_seed, "full_samples", "static_samples"), 4),
        "recovery_samples": round(_median(per_seed, "full_samples"), 1),
        "recovery_range": "{:.0f}-{:.0f}".format(
            min(d["full_samples"] for d in per_seed), max(d["full_samples"] for d in per_seed)
        ),
        "level_before": round(_median(per_seed, "full_level_before"), 4),
        "blend_vs_best_component": round(
            _ratio(per_seed, "blend_log_loss", "best_component_log_loss"), 4
        ),
        "blend_log_loss": round(_median(per_seed, "blend_log_loss"), 4),
        "online_recovery_samples": round(_median(per_seed, "online_samples"), 1),
        "online_log_loss": round(_median(per_seed, "online_log_loss"), 4),
        "false_alarms": round(statistics.mean(d["alarms_before_change"] for d in per_seed), 2),
        "detection_delay": _median(per_seed, "first_alarm_after_change"),
        "retrains": _median(per_seed, "retrains"),
    }


def sweep(sc: Scenario, configured: OnlineConfig, weight: float) -> list[dict[str, Any]]:
    """Recovery and log loss for each forgetting and detector setting, for each drift
    retraining policy and for other blend weights (the last two with ``configured``)."""
    streams = [make_stream(sc, seed) for seed in sc.seeds]
    statics = [run_system(s, sc, configured, weight, "none") for s in streams]
    rows = []
    for decay in SWEEP_DECAY:
        for detector in SWEEP_DETECTORS:
            online = replace(configured, **{"decay_factor": 0.5, **decay, **detector})
            rows.append(_sweep_row(streams, statics, sc, online, weight, "since_alarm"))
    for policy in ("whole_window", "none"):
        rows.append(_sweep_row(streams, statics, sc, configured, weight, policy))
    for other in SWEEP_BATCH_WEIGHTS:
        rows.append(_sweep_row(streams, statics, sc, configured, other, "since_alarm"))
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("| " + " | ".join("---" for _ in cols) + " |")
    for r in rows:
        print("| " + " | ".join("-" if r[c] is None else str(r[c]) for c in cols) + " |")


def main(argv: list[str] | None = None) -> None:
    """Print the three figures, or with ``--sweep`` the settings sweep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--sweep", action="store_true", help="sweep decay and drift detectors")
    args = parser.parse_args(argv)
    settings = Settings()
    sc, online = Scenario(), settings.online_config()
    start = time.perf_counter()
    if args.sweep:
        rows = sweep(sc, online, settings.blend_batch_weight)
        if args.json:
            for r in rows:
                print(json.dumps({"name": "quality_sweep", **r}), flush=True)
        else:
            _print_table(rows)
    else:
        for rec in measure(sc, online, settings.blend_batch_weight, settings.ensemble_method):
            if args.json:
                print(json.dumps(rec), flush=True)
            else:
                extra = {k: v for k, v in rec.items() if k not in ("name", "value", "unit")}
                print(f"{rec['name']}: {rec['value']} {rec['unit']} {extra}", flush=True)
    if not args.json:
        print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
