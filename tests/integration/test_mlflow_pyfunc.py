"""Batch model versions as MLflow models, against a real ``mlflow server``.

Each job goes through the project's own path (:func:`agents.training.run_training` with the
application's report writer). The registered version then loads with
``mlflow.pyfunc.load_model("models:/<role>@champion")`` and predicts what the project's own
booster predicts; it carries a signature and an input example and no pickle; its run holds the
training report. Focal-loss models (raw margins through a sigmoid) agree as well. One test serves
the champion with ``mlflow models serve`` and asks it over HTTP.

The role names are fixed and the server is shared by the session, so every job here is forced to
champion before the alias is read.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.artifacts import download_artifacts
from mlflow.models import Model
from mlflow.types import DataType

from agents.training import TrainingRequest, run_training
from alphapulse.report import write_training_report
from models.registry import ModelRegistry
from models.synthetic import TradeGenerator
from models.trainer import MODEL_TYPES, TrainedModel, TrainingConfig, TrainingData, train
from stream.registry import open_registry
from stream.settings import Settings
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration

ROLE = "weekly_quick"
PLOTS = {"calibration.png", "rolling_auc.png", "components.png", "feature_importance.png"}


@pytest.fixture(scope="module")
def trades(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    frame = TradeGenerator(n_features=5, n_informative=3, seed=17).frame(500)
    frame = frame.drop(columns="regime")
    path = tmp_path_factory.mktemp("data") / "trades.csv"
    frame.to_csv(path, index=False)
    return path, frame


@pytest.fixture
def settings(mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # mlflow.pyfunc.load_model reads the process-wide tracking URI: the environment sets it.
    values = {
        "MLFLOW_TRACKING_URI": mlflow_server,
        "ALPHAPULSE_MLFLOW_EXPERIMENT": f"test-pyfunc-{uuid.uuid4().hex[:8]}",
        "ALPHAPULSE_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return Settings()


def train_champion(
    settings: Settings, model_type: str, csv: Path, report: Path
) -> tuple[str, ModelRegistry]:
    request = TrainingRequest(model_type, ROLE, from_file=csv, force=True, report=report)
    summary = run_training(settings, request, write_report=write_training_report)
    registry = open_registry(settings)
    version = str(summary["version"])
    assert summary["promoted"] and registry.resolve_alias(ROLE) == version
    return version, registry


def scoring_rows(frame: pd.DataFrame, model: TrainedModel) -> pd.DataFrame:
    """The trades' features with some values missing, as a signal may send them."""
    rows = frame[list(model.feature_names)].iloc[:200].copy()
    rows.iloc[::7, 1] = np.nan
    return rows


def artifact_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_champion_is_a_pyfunc_that_predicts_like_the_booster(
    settings: Settings,
    trades: tuple[Path, pd.DataFrame],
    tmp_path: Path,
    model_type: str,
) -> None:
    csv, frame = trades
    report = tmp_path / "report.html"
    version, registry = train_champion(settings, model_type, csv, report)
    booster = registry.load_version(ROLE, version)
    assert booster.model_type == model_type
    rows = scoring_rows(frame, booster)

    pyfunc = mlflow.pyfunc.load_model(f"models:/{ROLE}@champion")
    got = pyfunc.predict(rows)
    assert isinstance(got, np.ndarray) and got.shape == (len(rows),)
    np.testing.assert_allclose(got, booster.predict_proba(rows), rtol=0.0, atol=1e-9)

    local = Path(download_artifacts(f"models:/{ROLE}/{version}", dst_path=str(tmp_path / "v")))
    files = artifact_files(local)
    assert {"MLmodel", "pyfunc_booster.py", "input_example.json"} <= files
    assert "artifacts/booster/alphapulse_model.json" in files  # the file the worker reads
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files
    meta = Model.load(str(local))
    assert "model_code_path" in meta.flavors["python_function"]
    assert "python_model" not in meta.flavors["python_function"]  # the cloudpickle entry
    signature = meta.signature
    assert signature is not None
    assert signature.inputs.input_names() == list(booster.feature_names)
    assert set(signature.inputs.input_types()) == {DataType.double}
    assert signature.outputs.input_types() == [DataType.double]
    example = meta.load_input_example(str(local))
    assert isinstance(example, pd.DataFrame) and 0 < len(example) <= 5
    assert list(example.columns) == list(booster.feature_names)
    real = frame[list(booster.feature_names)].round(12).itertuples(index=False)
    assert set(example.round(12).itertuples(index=False)) <= set(real)  # rows of the data

    client = registry.client
    mv = client.get_model_version(ROLE, version)
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert run.outputs is not None
    model_ids = [o.model_id for o in run.outputs.model_outputs]
    assert len(model_ids) == 1
    logged = client.get_logged_model(model_ids[0])
    assert logged.source_run_id == run.info.run_id
    assert mv.source.rstrip("/") == logged.artifact_location.rstrip("/")
    assert {"name": ROLE, "version": version} in [
        {"name": e["name"], "version": str(e["version"])}
        for e in json.loads(logged.tags["mlflow.modelVersions"])
    ]

    attached = download_artifacts(run_id=run.info.run_id, artifact_path="report")
    report_files = artifact_files(Path(attached))
    assert {"report.html", "report.json"} | {f"plots/{p}" for p in PLOTS} == report_files
    assert (Path(attached) / "report.html").read_text() == report.read_text()
    assert (Path(attached) / "plots" / "calibration.png").read_bytes().startswith(b"\x89PNG")


def test_nightly_version_is_a_pyfunc_too(
    settings: Settings, trades: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    csv, frame = trades
    base, registry = train_champion(settings, "xgboost", csv, tmp_path / "base.html")
    request = TrainingRequest("xgboost", "nightly_incremental", from_file=csv, force=True)
    nightly = run_training(settings, request)
    version = str(nightly["version"])
    assert nightly["model_name"] == ROLE and int(version) > int(base)
    booster = registry.load_version(ROLE, version)
    assert booster.n_trees == registry.load_version(ROLE, base).n_trees + 20
    rows = scoring_rows(frame, booster)
    got = mlflow.pyfunc.load_model(f"models:/{ROLE}/{version}").predict(rows)
    np.testing.assert_allclose(got, booster.predict_proba(rows), rtol=0.0, atol=1e-9)


@pytest.mark.parametrize("model_type", ["xgboost", "lightgbm"])
def test_focal_loss_version_predicts_like_the_booster(
    settings: Settings, trades: tuple[Path, pd.DataFrame], model_type: str
) -> None:
    _, frame = trades
    config = TrainingConfig(model_type=model_type, n_estimators=20, focal_loss=True)
    result = train(config, TrainingData.from_frame(frame))
    registry = open_registry(settings)
    name = f"test_pyfunc_{uuid.uuid4().hex[:10]}"
    with registry.training_run(name, result.config) as run:
        version = run.register(result).version
    booster = registry.load_version(name, version)
    assert booster.focal_loss
    rows = scoring_rows(frame, booster)
    got = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(rows)
    np.testing.assert_allclose(got, booster.predict_proba(rows), rtol=0.0, atol=1e-9)


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_mlflow_models_serve_answers_with_the_champion(
    settings: Settings, trades: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    csv, frame = trades
    version, registry = train_champion(settings, "lightgbm", csv, tmp_path / "r.html")
    booster = registry.load_version(ROLE, version)
    rows = scoring_rows(frame, booster).iloc[:20]
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        *("models", "serve", "-m", f"models:/{ROLE}@champion", "--env-manager", "local"),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]
    log = (tmp_path / "serve.log").open("wb")
    # MLflow starts uvicorn by name: the virtualenv's bin folder must be on PATH, activated or not.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    # Its own session: the server runs uvicorn as a child, and both go down with the group.
    proc = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        up = wait_until(
            lambda: proc.poll() is None and _answers(f"http://127.0.0.1:{port}/ping"), 120
        )
        assert up, (tmp_path / "serve.log").read_text()
        # Python floats keep every digit in JSON (pandas' to_json keeps ten); null is missing.
        data = [[None if np.isnan(v) else float(v) for v in r] for r in rows.to_numpy()]
        split = {"columns": list(rows.columns), "data": data}
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_split": split})
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    got = np.asarray(answer["predictions"], dtype=np.float64)
    np.testing.assert_allclose(got, booster.predict_proba(rows), rtol=0.0, atol=1e-9)
