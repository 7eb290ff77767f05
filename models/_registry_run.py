"""One training job as an MLflow run: its search trials, its parameters and model, and the
registration of that model with the champion challenge described in :mod:`models.registry`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Param

from models._hpo import TrialReport
from models._mlflow_calls import metric_list, mlflow_errors, safe_name, terminate
from models._pyfunc import LoggedBooster, input_example, link_version, log_booster_model
from models._registry_types import Registration
from models._registry_versions import prepare_version, set_champion, undo_version
from models.errors import AlphaPulseError, DataError, RegistryError
from models.trainer import TrainedModel, TrainingResult, evaluate

__all__ = ["TrainingRun"]


class _Registry(Protocol):
    """What a run needs of :class:`models.registry.ModelRegistry` (which imports this module)."""

    client: MlflowClient

    def load_version(self, name: str, version: str | int) -> TrainedModel: ...


class TrainingRun:
    """The MLflow run of one training job, made by :meth:`ModelRegistry.training_run`.

    Pass :meth:`log_trial` as the trainer's ``on_trial`` callback, then :meth:`register` the
    result (the :class:`ModelRegistry` example shows the whole flow).

    >>> TrainingRun.log_trial.__doc__.split(" (")[0]
    'Record one search trial as a nested run'
    """

    def __init__(self, registry: _Registry, name: str, run_id: str, experiment_id: str) -> None:
        self.registry = registry
        self.name = name
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.logged: LoggedBooster | None = None
        """The MLflow model that :meth:`register` logged on this run."""

    def log_trial(self, report: TrialReport) -> None:
        """Record one search trial as a nested run (usable as ``on_trial``)."""
        client = self.registry.client
        with mlflow_errors(f"logging trial {report.number}"):
            run = client.create_run(
                self.experiment_id,
                run_name=f"{self.name}-trial-{report.number}",
                tags={"mlflow.parentRunId": self.run_id, "alphapulse.trial": str(report.number)},
            )
            metrics = dict(report.metrics)
            if report.value is not None:
                metrics["objective"] = report.value
            metrics["duration_s"] = report.duration_s
            params = [Param(k, str(v)) for k, v in report.params.items()]
            client.log_batch(run.info.run_id, metrics=metric_list(metrics), params=params)
            status = "FINISHED" if report.state == "COMPLETE" else "FAILED"
            terminate(client, run.info.run_id, status)

    def log_params(self, params: dict[str, Any]) -> None:
        """Record job parameters on this run (such as ``hard_examples``, the up-weighted rows)."""
        with mlflow_errors("logging the run's parameters"):
            self.registry.client.log_batch(
                self.run_id, params=[Param(safe_name(k), str(v)) for k, v in params.items()]
            )

    def register(
        self,
        result: TrainingResult,
        *,
        force: bool = False,
        warm_start_from: str | None = None,
        move_alias: bool = True,
    ) -> Registration:
        """Log ``result`` on this run, register it under the run's name, decide on promotion.

        With ``move_alias`` false the decision is returned but the caller moves the alias
        (:meth:`ModelRegistry.promote`), so that it can announce the promotion before a reloader
        sees it.
        """
        self.logged = self._log_result(result, warm_start_from)
        return _register(
            self.registry, self.name, self.run_id, result, force, move_alias, self.logged
        )

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        """Attach the files under ``local_dir`` to this run at ``artifact_path`` (the report)."""
        with mlflow_errors(f"attaching {artifact_path} to the training run"):
            self.registry.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def _log_result(self, result: TrainingResult, warm_start_from: str | None) -> LoggedBooster:
        client = self.registry.client
        params: dict[str, Any] = {f"cfg.{k}": v for k, v in result.config.as_params().items()}
        params.update(
            n_train=result.n_train,
            n_valid=result.n_valid,
            n_rows=result.n_train + result.n_valid,
            n_features=len(result.feature_names),
            n_trees=result.model.n_trees,
            scale_pos_weight_applied=round(result.scale_pos_weight, 6),
            warm_start_from=warm_start_from or "",
        )
        if result.time_range is not None:
            lo, hi = result.time_range
            params.update(
                data_ts_min=lo,
                data_ts_max=hi,
                data_time_min=pd.Timestamp(lo, unit="ms", tz="UTC").isoformat(),
                data_time_max=pd.Timestamp(hi, unit="ms", tz="UTC").isoformat(),
            )
        metrics = {**result.metrics, "n_train": result.n_train, "n_valid": result.n_valid}
        holdout = result.holdout
        example = input_example(holdout.X, holdout.feature_names, result.feature_names)
        tags = {"alphapulse.role": self.name, "alphapulse.cadence": result.config.cadence}
        with mlflow_errors("logging the training run"):
            client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
            logged = log_booster_model(
                client, self.experiment_id, self.run_id, result.model, example, tags
            )
            # Metrics that name the model show on the LoggedModel as well as on the run.
            client.log_batch(self.run_id, metrics=metric_list(metrics, "holdout_", logged.model_id))
        return logged


def _register(
    registry: _Registry,
    name: str,
    run_id: str,
    result: TrainingResult,
    force: bool,
    move_alias: bool,
    logged: LoggedBooster,
) -> Registration:
    """Register the model ``logged`` on ``run_id`` as a version of ``name``, check that it
    predicts like the trained one, decide on promotion; a failure part way is undone."""
    client = registry.client
    # The LoggedModel's own location: a "models:/<model_id>" source would be resolved by a
    # local SQLite store through the process-wide tracking URI, not this client's.
    created_model, old_champion, old_history, source = prepare_version(
        client, name, run_id, logged.artifact_location
    )
    version: str | None = None
    promoted_alias = False
    try:
        with mlflow_errors(f"registering a version of {name!r}"):
            tags = {
                "alphapulse.model_type": result.model.model_type,
                "alphapulse.focal_loss": str(result.model.focal_loss).lower(),
                "alphapulse.features": json.dumps(list(result.feature_names))[:4900],
                "alphapulse.cadence": result.config.cadence,
            }
            version = str(
                client.create_model_version(
                    name, source, run_id, tags=tags, model_id=logged.model_id
                ).version
            )
            link_version(client, logged.model_id, name, version)
        loaded = registry.load_version(name, version)
        probe = result.holdout.X
        if not np.array_equal(loaded.predict_proba(probe), result.model.predict_proba(probe)):
            raise RegistryError(f"{name} version {version} does not predict like the trained model")
        promote, reason, champ_metrics = _challenge(registry, name, old_champion, result, force)
        if promote and move_alias:
            promoted_alias = True
            set_champion(client, name, version)
        with mlflow_errors("tagging the version"):
            client.set_model_version_tag(name, version, "alphapulse.promotion", reason)
    except BaseException as exc:
        restore = (old_champion, old_history) if promoted_alias else None
        undo_version(client, name, version, created_model, restore)
        if isinstance(exc, AlphaPulseError) or not isinstance(exc, Exception):
            raise
        raise RegistryError(f"registering {name!r} failed: {exc}") from exc
    return Registration(
        name,
        version,
        run_id,
        promote,
        reason,
        old_champion,
        dict(result.metrics),
        champ_metrics,
    )


def _challenge(
    registry: _Registry, name: str, champion: str | None, result: TrainingResult, force: bool
) -> tuple[bool, str, dict[str, float] | None]:
    """Whether ``result`` takes the champion alias, why, and the champion's holdout metrics."""
    new_loss = result.metrics["log_loss"]
    if champion is None:
        return True, "first version of this model", None
    holdout = pd.DataFrame(result.holdout.X, columns=list(result.holdout.feature_names))
    try:
        p = registry.load_version(name, champion).predict_proba(holdout)
    except DataError as exc:
        why = f"champion v{champion} cannot be scored on this holdout ({exc})"
        return force, ("forced; " if force else "kept champion: ") + why, None
    champ = evaluate(result.holdout.y, p, result.holdout.rr, result.config.threshold)
    cmp = f"log loss {new_loss:.5f} vs champion v{champion} {champ['log_loss']:.5f}"
    if force:
        return True, f"forced; {cmp}", champ
    if new_loss < champ["log_loss"]:
        return True, f"beats champion: {cmp}", champ
    return False, f"does not beat champion: {cmp}", champ
