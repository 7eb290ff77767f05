"""The harness's MLflow server is real, and ``alphapulse mlflow up | down`` runs one."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support import free_port

pytestmark = pytest.mark.integration


def test_fixture_server_tracks_runs_and_registers_models(mlflow_server: str) -> None:
    assert mlflow_server.startswith("http://127.0.0.1:")
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    exp = client.create_experiment("harness-check")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "auc", 0.75)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"auc": 0.75}
    client.create_registered_model("harness-model")
    mv = client.create_model_version("harness-model", f"runs:/{run.info.run_id}/m", run.info.run_id)
    client.set_registered_model_alias("harness-model", "champion", mv.version)
    assert client.get_model_version_by_alias("harness-model", "champion").version == mv.version


def test_cli_mlflow_up_and_down(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ALPHAPULSE_DATA_DIR": str(tmp_path), "ALPHAPULSE_MLFLOW_PORT": str(port)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alphapulse.cli", "mlflow", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    try:
        up = cli("up")
        assert up.returncode == 0, up.stderr
        assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in up.stderr.replace("\n", "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            assert r.status == 200
        assert "already running" in cli("up").stderr
    finally:
        down = cli("down")
    assert down.returncode == 0 and "MLflow stopped" in down.stderr
    assert "not running" in cli("down").stderr
