"""The MLflow model registry: with its private helpers, the only AlphaPulse code that uses MLflow.

A training job is one MLflow run (parameters, holdout metrics, the data's time range and row
count, the training report) whose output is an MLflow model: a pyfunc logged from code around the
booster in its library's native format, with a signature and an input example
(:mod:`models._pyfunc`); each hyperparameter-search trial is a nested run. The model is registered
under its role name (``monthly_full``, ``weekly_quick``), so that
``mlflow.pyfunc.load_model("models:/<name>@champion")`` serves it; AlphaPulse itself reads back
only the native booster, by exact version, ``models:/<name>/<v>``.

Champion and challenger
    The alias ``champion`` marks the version that serves. A new version takes it only when its
    holdout **log loss** is strictly lower than the champion's log loss on the *same* holdout rows
    (log loss, because the batch models feed a probability blend and log loss scores calibration
    as well as ranking), or when forced. The first version of a model becomes champion. A champion
    that cannot be scored on the new holdout (its features are missing) is kept unless forced.
    Every promotion is appended to the registered-model tag ``alphapulse.champion_history``;
    :meth:`ModelRegistry.rollback` moves the alias back along it. Stages are never used.

A model that is plain data, the fitted ensemble, is kept as a JSON document beside its run
(:meth:`ModelRegistry.register_document`, :meth:`ModelRegistry.load_document`); whoever fits it
decides its promotion.

If registration fails part way, the half-registered version (and a registered model created for
it) is deleted and the previous champion alias is restored, and a :class:`RegistryError` says why.

:class:`TrainingRun` and the champion challenge live in :mod:`models._registry_run`; the champion
alias, its history, the undoing of a registration and version downloads in
:mod:`models._registry_versions`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Param

from models._mlflow_calls import metric_list, mlflow_errors, safe_name, terminate
from models._pyfunc import booster_folder
from models._registry_run import TrainingRun
from models._registry_types import (
    ModelVersionInfo,
    RegisteredModelInfo,
    Registration,
    parse_history,
    version_info,
)
from models._registry_versions import (
    CHAMPION,
    HISTORY_TAG,
    alias_or_none,
    downloaded,
    prepare_version,
    read_history,
    set_champion,
    undo_version,
)
from models.errors import ModelError, RegistryError
from models.trainer import TrainedModel, TrainingConfig

__all__ = [
    "CHAMPION",
    "ModelRegistry",
    "ModelVersionInfo",
    "RegisteredModelInfo",
    "Registration",
    "TrainingRun",
]

LAST_RUN_TAG = "alphapulse.last_run."
_DOCUMENT = "document.json"


class ModelRegistry:
    """Log, register, promote and load AlphaPulse batch models in MLflow.

    Parameters
    ----------
    tracking_uri : str
        MLflow tracking (and registry) URI: ``http://host:port`` or ``sqlite:///path.db``.
    experiment : str
        Experiment that holds the training runs; created when missing.
    artifact_location : str or None
        Artifact root for a newly created experiment (for a local SQLite store).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from models.trainer import TrainingConfig, train
    >>> tmpdir = tempfile.TemporaryDirectory(); tmp = tmpdir.name
    >>> reg = ModelRegistry(f"sqlite:///{tmp}/mlflow.db", artifact_location=f"{tmp}/artifacts")
    >>> X = np.random.default_rng(0).standard_normal((120, 3)); y = (X[:, 0] > 0).astype(int)
    >>> result = train(TrainingConfig(model_type="lightgbm", n_estimators=5), X, y)
    >>> with reg.training_run("weekly_quick", result.config) as run:
    ...     outcome = run.register(result)
    >>> outcome.version, outcome.promoted, reg.resolve_alias("weekly_quick")
    ('1', True, '1')
    >>> model = reg.load_version("weekly_quick", "1")
    >>> bool(np.array_equal(model.predict_proba(X), result.model.predict_proba(X)))
    True
    >>> tmpdir.cleanup()
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str = "alphapulse",
        artifact_location: str | None = None,
    ) -> None:
        if not tracking_uri:
            raise RegistryError("an MLflow tracking URI is required")
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def last_run(self, cadence: str) -> int | None:
        """When a scheduled job of ``cadence`` last started (epoch ms), None if never.

        Kept as the experiment tag ``alphapulse.last_run.<cadence>``, so that it outlives workers.
        """
        exp_id = self._experiment_id()
        with mlflow_errors(f"reading the last run of {cadence}"):
            value = self.client.get_experiment(exp_id).tags.get(LAST_RUN_TAG + cadence)
        return int(value) if value is not None and value.isdigit() else None

    def set_last_run(self, cadence: str, ms: int) -> None:
        """Record that a scheduled job of ``cadence`` started at ``ms`` (epoch ms).

        >>> import tempfile
        >>> tmpdir = tempfile.TemporaryDirectory()
        >>> reg = ModelRegistry(f"sqlite:///{tmpdir.name}/mlflow.db")
        >>> reg.last_run("weekly_quick") is None
        True
        >>> reg.set_last_run("weekly_quick", 1_704_067_200_000); reg.last_run("weekly_quick")
        1704067200000
        >>> tmpdir.cleanup()
        """
        exp_id = self._experiment_id()
        with mlflow_errors(f"recording the last run of {cadence}"):
            self.client.set_experiment_tag(exp_id, LAST_RUN_TAG + cadence, str(int(ms)))

    def _experiment_id(self) -> str:
        with mlflow_errors(f"opening experiment {self.experiment!r}"):
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is not None:
                return str(exp.experiment_id)
            return str(self.client.create_experiment(self.experiment, self.artifact_location))

    @contextmanager
    def training_run(self, name: str, config: TrainingConfig) -> Iterator[TrainingRun]:
        """A run for one job registering into ``name``; ends FAILED if the block raises."""
        exp_id = self._experiment_id()
        tags = {
            "alphapulse.role": name,
            "alphapulse.model_type": config.model_type,
            "alphapulse.cadence": config.cadence,
        }
        with mlflow_errors("starting a training run"):
            run = self.client.create_run(exp_id, tags=tags, run_name=f"{name}-{config.model_type}")
        handle = TrainingRun(self, name, run.info.run_id, exp_id)
        try:
            yield handle
        except BaseException:
            with mlflow_errors("closing the failed run"):
                terminate(self.client, handle.run_id, "FAILED")
            raise
        with mlflow_errors("closing the run"):
            terminate(self.client, handle.run_id, "FINISHED")

    def get_version(self, name: str, version: str | int) -> ModelVersionInfo:
        """Details of one registered version."""
        with mlflow_errors(f"finding {name} version {version}"):
            return version_info(self.client.get_model_version(name, str(version)))

    def champion(self, name: str) -> ModelVersionInfo | None:
        """The version the ``champion`` alias points at, or ``None`` (also for unknown models)."""
        version = alias_or_none(self.client, name, CHAMPION)
        return None if version is None else self.get_version(name, version)

    def latest_version(self, name: str) -> ModelVersionInfo | None:
        """The most recently registered version of ``name`` (champion or not), or ``None``."""
        with mlflow_errors(f"listing versions of {name!r}"):
            mvs = self.client.search_model_versions(f"name = '{name}'")
        if not mvs:
            return None
        return version_info(max(mvs, key=lambda mv: int(mv.version)))

    def resolve_alias(self, name: str, alias: str = CHAMPION) -> str:
        """The exact version that ``alias`` points at now."""
        with mlflow_errors(f"resolving {name}@{alias}"):
            return str(self.client.get_model_version_by_alias(name, alias).version)

    def load_version(self, name: str, version: str | int) -> TrainedModel:
        """Load ``models:/<name>/<version>`` (an exact version, never an alias)."""
        with downloaded(self.client, self.tracking_uri, name, str(version)) as path:
            return TrainedModel.load(booster_folder(path))

    def load_alias(self, name: str, alias: str = CHAMPION) -> tuple[str, TrainedModel]:
        """Resolve ``alias`` once, then load that exact version."""
        version = self.resolve_alias(name, alias)
        return version, self.load_version(name, version)

    def run_params(self, run_id: str) -> dict[str, str]:
        """The parameters logged on a run (as strings), e.g. a champion's ``cfg.*``."""
        with mlflow_errors(f"reading run {run_id}"):
            return dict(self.client.get_run(run_id).data.params)

    def register_document(
        self,
        name: str,
        document: dict[str, Any],
        *,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        promote: bool,
        reason: str,
    ) -> Registration:
        """Register a model that is plain JSON data (the fitted ensemble) as a version of ``name``.

        One run logs ``params``, ``metrics`` and the document (artifact ``model/document.json``);
        the version gets ``tags`` and becomes champion when ``promote`` (the caller decides, and
        says why in ``reason``). A failure part way is undone as for batch models.

        >>> import tempfile
        >>> tmpdir = tempfile.TemporaryDirectory(); tmp = tmpdir.name
        >>> reg = ModelRegistry(f"sqlite:///{tmp}/mlflow.db", artifact_location=f"{tmp}/artifacts")
        >>> r = reg.register_document("ensemble", {"names": ["online"]}, params={}, metrics={},
        ...                           tags={}, promote=True, reason="first")
        >>> r.version, r.promoted, reg.load_document("ensemble", r.version)
        ('1', True, {'names': ['online']})
        >>> tmpdir.cleanup()
        """
        exp_id = self._experiment_id()
        client = self.client
        with mlflow_errors(f"logging the run of {name!r}"):
            run_id = str(
                client.create_run(exp_id, run_name=name, tags={"alphapulse.role": name}).info.run_id
            )
        try:
            with mlflow_errors(f"logging the run of {name!r}"):
                client.log_batch(
                    run_id,
                    metrics=metric_list({safe_name(k): v for k, v in metrics.items()}),
                    params=[Param(safe_name(k), str(v)[:6000]) for k, v in params.items()],
                )
                client.log_dict(run_id, document, f"model/{_DOCUMENT}")
        except BaseException:
            with mlflow_errors("closing the failed run"):
                terminate(client, run_id, "FAILED")
            raise
        with mlflow_errors("closing the run"):
            terminate(client, run_id, "FINISHED")
        created_model, old_champion, old_history, source = prepare_version(client, name, run_id)
        version: str | None = None
        try:
            with mlflow_errors(f"registering a version of {name!r}"):
                all_tags = {"alphapulse.model_type": name, **tags}
                version = str(
                    client.create_model_version(name, source, run_id, tags=all_tags).version
                )
                client.set_model_version_tag(name, version, "alphapulse.promotion", reason)
            if promote:
                set_champion(client, name, version)
        except BaseException:
            undo_version(client, name, version, created_model, (old_champion, old_history))
            raise
        return Registration(name, version, run_id, promote, reason, old_champion, dict(metrics))

    def load_document(self, name: str, version: str | int) -> Any:
        """The JSON document of ``models:/<name>/<version>`` (an exact version, never an alias).

        Raises :class:`ModelError` when the version holds no readable document.
        """
        with downloaded(self.client, self.tracking_uri, name, str(version)) as path:
            try:
                return json.loads((Path(path) / _DOCUMENT).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelError(f"models:/{name}/{version} holds no readable document") from exc

    def log_summary(
        self,
        run_name: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        document: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Log one finished run of params, metrics and a JSON document; returns its run id.

        Used for the ensemble's configuration and metrics and for the online models' weights.
        Metric names are made MLflow-safe (other characters become ``_``).
        """
        exp_id = self._experiment_id()
        safe = {safe_name(k): float(v) for k, v in metrics.items() if v == v}
        with mlflow_errors(f"logging run {run_name!r}"):
            run = self.client.create_run(exp_id, run_name=run_name, tags=tags or {})
            run_id = str(run.info.run_id)
            self.client.log_batch(
                run_id,
                metrics=metric_list(safe),
                params=[Param(safe_name(k), str(v)[:6000]) for k, v in params.items()],
            )
            if document is not None:
                self.client.log_dict(run_id, document, f"{run_name}.json")
            terminate(self.client, run_id, "FINISHED")
        return run_id

    def list_models(self) -> list[RegisteredModelInfo]:
        """Every registered model with its versions (newest first) and aliases."""
        out = []
        with mlflow_errors("listing registered models"):
            models: list[Any] = []
            token = None
            while True:
                page = self.client.search_registered_models(page_token=token)
                models.extend(page)
                token = page.token
                if not token:
                    break
            for rm in sorted(models, key=lambda m: m.name):
                mvs = self.client.search_model_versions(f"name = '{rm.name}'")
                aliases = {str(k): str(v) for k, v in (rm.aliases or {}).items()}
                versions = tuple(
                    version_info(mv, aliases) for mv in sorted(mvs, key=lambda v: -int(v.version))
                )
                history = tuple(parse_history(rm.tags.get(HISTORY_TAG)))
                out.append(RegisteredModelInfo(rm.name, aliases, versions, history))
        return out

    def promote(self, name: str, version: str | int) -> None:
        """Make ``version`` the champion unconditionally (a no-op if it already is)."""
        version = str(version)
        with mlflow_errors(f"finding {name} version {version}"):
            self.client.get_model_version(name, version)
        if alias_or_none(self.client, name, CHAMPION) != version:
            set_champion(self.client, name, version)

    def rollback(self, name: str) -> str:
        """Move ``champion`` back to the previous champion; returns that version."""
        history = read_history(self.client, name)
        current = alias_or_none(self.client, name, CHAMPION)
        if history and history[-1] == current:
            history.pop()
        with mlflow_errors(f"listing versions of {name!r}"):
            alive = {str(v.version) for v in self.client.search_model_versions(f"name = '{name}'")}
        while history and (history[-1] not in alive or history[-1] == current):
            history.pop()
        if not history:
            raise RegistryError(f"{name!r} has no earlier champion to roll back to")
        with mlflow_errors(f"rolling back {name!r}"):
            self.client.set_registered_model_alias(name, CHAMPION, history[-1])
            self.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        return history[-1]
