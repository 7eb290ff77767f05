"""Batch model versions as MLflow models: a pyfunc logged from code around the native booster.

:func:`log_booster_model` logs a trained model as an MLflow 3 LoggedModel of the training run:
a pyfunc whose code is :mod:`models.pyfunc_booster` (MLflow's models-from-code, so nothing is
pickled), whose ``booster`` artifact is the folder :meth:`TrainedModel.save` writes (the native
booster file and ``alphapulse_model.json``, what the worker loads), with a signature (the feature
columns in the model's order, double; a double out) and an input example (holdout rows). The
registry then registers the LoggedModel's artifact location as the version's source, so that
``models:/<name>/<version>`` and ``models:/<name>@champion`` load that pyfunc.

The steps are those of ``mlflow.pyfunc.log_model``, done through one :class:`MlflowClient`:
``log_model`` reads the process-wide tracking URI and active run, and the registry may talk to
another server than the process default.

>>> (BOOSTER_PATH, CODE_FILE.name)
('artifacts/booster', 'pyfunc_booster.py')
>>> f'ARTIFACT = "{BOOSTER_ARTIFACT}"' in CODE_FILE.read_text()
True
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS as _VERSIONS_TAG

from models._booster import TrainedModel
from models.errors import ModelError

__all__ = [
    "BOOSTER_ARTIFACT",
    "BOOSTER_PATH",
    "CODE_FILE",
    "LoggedBooster",
    "booster_folder",
    "input_example",
    "link_version",
    "log_booster_model",
    "signature",
]

BOOSTER_ARTIFACT = "booster"
"""The pyfunc's artifact key; ``models.pyfunc_booster.ARTIFACT`` names the same."""
BOOSTER_PATH = f"artifacts/{BOOSTER_ARTIFACT}"
"""Where MLflow puts that artifact inside the model's folder."""
CODE_FILE = Path(__file__).with_name("pyfunc_booster.py")
_EXAMPLE_ROWS = 5
_AGREE_ATOL = 1e-9


@dataclass(frozen=True)
class LoggedBooster:
    """A batch model logged as an MLflow model: its LoggedModel id and artifact location."""

    model_id: str
    artifact_location: str


def signature(feature_names: tuple[str, ...] | list[str]) -> ModelSignature:
    """The feature columns in the model's order as doubles in, one double (the probability) out.

    >>> signature(("a", "b")).inputs.input_names()
    ['a', 'b']
    """
    inputs = Schema([ColSpec(DataType.double, name) for name in feature_names])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(DataType.double)]))


def input_example(
    X: np.ndarray, names: tuple[str, ...], model_names: tuple[str, ...]
) -> pd.DataFrame:
    """A few rows of ``X`` (columns ``names``) in the model's column order, complete rows first.

    Rows with a missing value are used only when there are too few complete ones, since a missing
    value does not survive the example's JSON as a number.

    >>> X = np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]])
    >>> input_example(X, ("a", "b"), ("b", "a")).to_dict("list")
    {'b': [3.0, 5.0, nan], 'a': [2.0, 4.0, 1.0]}
    """
    frame = pd.DataFrame(np.asarray(X, dtype=np.float64), columns=list(names))[list(model_names)]
    complete = frame.notna().all(axis=1)
    rows = pd.concat([frame[complete], frame[~complete]]).head(_EXAMPLE_ROWS)
    return rows.reset_index(drop=True)


def _requirements(model_type: str) -> list[str]:
    # Pinned to what trained the model; listing them also spares MLflow from inferring them by
    # loading the model in a subprocess.
    return [f"{dist}=={dist_version(dist)}" for dist in ("mlflow", "numpy", "pandas", model_type)]


def _save(model: TrainedModel, example: pd.DataFrame, folder: Path, mlflow_model: Model) -> Path:
    """Write the pyfunc into ``folder/pyfunc`` and check that it predicts like ``model``."""
    booster = model.save(folder / BOOSTER_ARTIFACT)
    (booster / "features.json").write_text(json.dumps(list(model.feature_names)))
    path = folder / "pyfunc"
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(CODE_FILE),
        artifacts={BOOSTER_ARTIFACT: str(booster)},
        signature=signature(model.feature_names),
        input_example=example,
        pip_requirements=_requirements(model.model_type),
        mlflow_model=mlflow_model,
    )
    got = np.asarray(mlflow.pyfunc.load_model(str(path)).predict(example), dtype=np.float64)
    want = model.predict_proba(example)
    if got.shape != want.shape or not np.allclose(got, want, rtol=0.0, atol=_AGREE_ATOL):
        raise ModelError("the MLflow pyfunc does not predict like the trained model")
    return path


def log_booster_model(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    model: TrainedModel,
    example: pd.DataFrame,
    tags: dict[str, str] | None = None,
) -> LoggedBooster:
    """Log ``model`` as the pyfunc LoggedModel ``model`` of run ``run_id``; see the module text.

    The LoggedModel ends READY, or FAILED when any step raises (the exception goes on).
    """
    logged = client.create_logged_model(
        experiment_id, name="model", source_run_id=run_id, tags=tags, model_type=model.model_type
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        mlflow_model = Model(
            artifact_path=logged.artifact_location,
            run_id=run_id,
            model_uuid=logged.model_id,
            model_id=logged.model_id,
        )
        with tempfile.TemporaryDirectory(prefix="alphapulse-pyfunc-") as tmp:
            path = _save(model, example, Path(tmp), mlflow_model)
            client.log_model_artifacts(logged.model_id, str(path))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return LoggedBooster(logged.model_id, str(logged.artifact_location))


def link_version(client: MlflowClient, model_id: str, name: str, version: str) -> None:
    """List ``name`` version ``version`` in LoggedModel ``model_id``'s ``mlflow.modelVersions`` tag.

    ``mlflow.register_model`` does the same; a tracking server has done it already, a local store
    has not.
    """
    tags = client.get_logged_model(model_id).tags
    listed = json.loads(tags.get(_VERSIONS_TAG) or "[]")
    if any(e.get("name") == name and str(e.get("version")) == str(version) for e in listed):
        return
    entry = {"name": name, "version": str(version)}
    client.set_logged_model_tags(model_id, {_VERSIONS_TAG: json.dumps([*listed, entry])})


def booster_folder(root: Path) -> Path:
    """The folder holding the native booster in a downloaded version ``root``.

    A pyfunc version keeps it under :data:`BOOSTER_PATH`; versions logged before the pyfunc kept
    it at the root.

    >>> booster_folder(Path("/nowhere"))
    PosixPath('/nowhere')
    """
    nested = root / BOOSTER_PATH
    return nested if nested.is_dir() else root
