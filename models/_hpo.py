"""Hyperparameter search with Optuna under a trial and a time budget.

Each trial trains on walk-forward folds of the training rows and is scored by its mean validation
log loss (lower is better). Every finished trial is reported to ``on_trial`` at once, so a caller
such as the registry can record it (for example as a nested MLflow run) while the search goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from models._config import TrainingConfig

if TYPE_CHECKING:
    import optuna

__all__ = ["TrialReport", "search"]


@dataclass(frozen=True)
class TrialReport:
    """One finished trial: its parameters, its score and how it ended.

    >>> TrialReport(0, {"max_depth": 3}, 0.5, {"log_loss": 0.5}, 1.0, "COMPLETE").value
    0.5
    """

    number: int
    params: dict[str, float | int]
    value: float | None
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    state: str = "COMPLETE"


Scorer = Callable[[TrainingConfig], dict[str, float]]


def _suggest(trial: optuna.Trial, base: TrainingConfig) -> dict[str, float | int]:
    """The search space: around the preset's depth and up to its number of trees."""
    depth_hi = max(2, min(base.max_depth + 2, 10))
    trees_lo = min(base.n_estimators, max(10, base.n_estimators // 4))
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, depth_hi),
        "n_estimators": trial.suggest_int("n_estimators", trees_lo, base.n_estimators),
        "subsample": trial.suggest_float("subsample", 0.6, 1.0),
        "colsample": trial.suggest_float("colsample", 0.6, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def search(
    base: TrainingConfig,
    score: Scorer,
    on_trial: Callable[[TrialReport], None] | None = None,
) -> tuple[TrainingConfig, list[TrialReport]]:
    """Search around ``base``; return the best config (``base`` itself if no trial finished).

    ``score(config)`` returns metrics with at least ``log_loss``. The sampler is seeded with
    ``base.seed``; with a time budget the number of trials, and so the result, can vary.
    """
    import optuna

    reports: list[TrialReport] = []

    def objective(trial: optuna.Trial) -> float:
        cfg = base.replace(**_suggest(trial, base))
        metrics = score(cfg)
        for key, val in metrics.items():
            trial.set_user_attr(key, float(val))
        loss = float(metrics["log_loss"])
        return loss if np.isfinite(loss) else float("inf")

    def callback(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        duration = frozen.duration.total_seconds() if frozen.duration is not None else 0.0
        report = TrialReport(
            number=frozen.number,
            params=dict(frozen.params),
            value=frozen.value,
            metrics={k: float(v) for k, v in frozen.user_attrs.items()},
            duration_s=duration,
            state=frozen.state.name,
        )
        reports.append(report)
        if on_trial is not None:
            on_trial(report)

    sampler = optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=min(10, base.hpo_trials))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(
        objective,
        n_trials=base.hpo_trials,
        timeout=base.hpo_timeout_s,
        callbacks=[callback],
        catch=(),
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return base, reports
    return base.replace(**study.best_trial.params), reports
