"""Ensemble configuration and online models logged to a real MLflow server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from agents.reloader import Reloader
from agents.state.partitions import PartitionState, PartitionStore
from models.ensembler import Ensemble, evaluate
from models.keyed import KeyedOnline
from models.registry import ModelRegistry
from models.synthetic import TradeGenerator
from stream.runtime import Runtime
from stream.settings import Settings

pytestmark = pytest.mark.integration


def test_ensemble_config_and_metrics_are_logged(mlflow_server: str) -> None:
    y = np.array([0, 1] * 100)
    good, poor = np.where(y == 1, 0.7, 0.3), np.full(200, 0.5)
    ens = Ensemble.optimised({"good": good, "poor": poor}, y)
    report = evaluate(
        y, {"good": good, "poor": poor, "ensemble": ens.predict_proba({"good": good, "poor": poor})}
    )
    logged = ens.to_log_dict(report)
    reg = ModelRegistry(mlflow_server, experiment="ensembles")
    run_id = reg.log_summary("ensemble", logged["params"], logged["metrics"], logged)
    run = MlflowClient(mlflow_server).get_run(run_id)
    assert run.data.params["ensemble.method"] == "optimised"
    assert run.data.metrics["ensemble.log_loss"] == pytest.approx(
        logged["metrics"]["ensemble.log_loss"]
    )
    assert run.info.status == "FINISHED"


def test_reloader_logs_the_online_models(mlflow_server: str, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        MLFLOW_TRACKING_URI=mlflow_server,  # type: ignore[call-arg]
        mlflow_experiment="online-logs",
    )
    rt = Runtime(settings, topics={})
    store = PartitionStore(settings)
    keyed = KeyedOnline()
    for r in TradeGenerator(n_features=3, n_informative=2, seed=2).rows(200):
        keyed.learn(r.outcome_id, "BTC", r.features, bool(r.label), r.realized_rr)
    store.states[0] = PartitionState(0, 200, keyed)
    reloader = Reloader(
        rt, lambda: ModelRegistry(mlflow_server, experiment="online-logs"), store=store
    )
    run_id = asyncio.run(reloader.log_online())
    assert run_id is not None
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.data.metrics["BTC.n_learned"] == 200
    assert 0.0 < run.data.metrics["BTC.accuracy"] <= 1.0
    doc = client.download_artifacts(run_id, "online-models.json", str(tmp_path))
    assert '"weights"' in Path(doc).read_text()
