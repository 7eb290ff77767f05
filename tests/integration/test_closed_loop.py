"""Closed loop on a real broker and a real MLflow server: batch models hot-swapped mid-stream."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

from models.registry import ModelRegistry
from models.synthetic import TradeGenerator
from models.trainer import TrainingConfig, train
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, consume_until, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FEATURES = [f"f{i}" for i in range(6)]


def _fit(seed: int, n: int, names: list[str] = FEATURES):
    gen = TradeGenerator(n_features=len(names), n_informative=3, seed=seed)
    frame = gen.frame(n)
    X = frame[[f"f{i}" for i in range(len(names))]].to_numpy()
    y = frame["label"].to_numpy()
    cfg = TrainingConfig(model_type="lightgbm", n_estimators=20, max_depth=3, seed=seed)
    return train(cfg, X, y, feature_names=names)


def _register(uri: str, result, role: str = "monthly_full") -> str:
    reg = ModelRegistry(uri, experiment="closed-loop")
    with reg.training_run(role, result.config) as run:
        return str(run.register(result, force=True).version)


def _register_corrupt(uri: str, tmp: Path) -> str:
    """Register a copy of the champion whose booster file is garbage, and make it champion."""
    client = MlflowClient(uri, registry_uri=uri)
    good = client.get_model_version_by_alias("monthly_full", "champion")
    source = client.get_model_version_download_uri("monthly_full", good.version)
    booster = f"{source}/artifacts/booster"  # the native files inside the pyfunc's folder
    local = Path(download_artifacts(booster, dst_path=str(tmp / "good"), tracking_uri=uri))
    meta = orjson.loads((local / "alphapulse_model.json").read_text())
    (local / meta["file"]).write_bytes(b"\x00 this is not a booster \xff" * 10)
    exp = client.get_experiment_by_name("closed-loop")
    run = client.create_run(exp.experiment_id, run_name="corrupt")
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    source = f"{run.info.artifact_uri}/model"
    mv = client.create_model_version("monthly_full", source, run.info.run_id)
    client.set_registered_model_alias("monthly_full", "champion", mv.version)
    return str(mv.version)


def _model_events(settings: Settings, want: int) -> list[dict]:
    recs = asyncio.run(
        consume_until(
            settings.bootstrap_servers,
            settings.topic("model-events"),
            lambda rs: len(rs) >= want,
            timeout=90,
        )
    )
    return [v for _, v in recs]


def test_hot_swap_mid_stream_and_bad_model_rejected(
    mlflow_server: str,
    settings_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **settings_env,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "ALPHAPULSE_MLFLOW_EXPERIMENT": "closed-loop",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    v1 = _register(mlflow_server, _fit(1, 400))
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        events = _model_events(settings, 1)
        assert events[0]["event"] == "loaded" and events[0]["version"] == v1, events

        rows = TradeGenerator(n_features=6, n_informative=3, seed=9).rows(600)
        sent: list[str] = []

        def send(part: list) -> None:
            batch = []
            for r in part:
                sent.append(r.signal_id)
                doc = {"signal_id": r.signal_id, "symbol": "BTCUSDT", "features": r.features}
                batch.append((b"BTCUSDT", orjson.dumps(doc)))
            asyncio.run(produce(settings.bootstrap_servers, settings.topic("signals"), batch))

        def answered(ids: list[str]) -> dict[str, dict]:
            preds = asyncio.run(
                consume_until(
                    settings.bootstrap_servers,
                    settings.topic("predictions"),
                    lambda rs: set(ids) <= {v["signal_id"] for _, v in rs},
                    timeout=120,
                )
            )
            return {v["signal_id"]: v for _, v in preds}

        send(rows[:100])  # served by v1
        by_id = answered(sent)
        assert {by_id[s]["model_versions"]["monthly_full"] for s in sent} == {int(v1)}

        def stream_signals() -> None:
            for i in range(100, 500, 50):
                send(rows[i : i + 50])
                time.sleep(0.3)

        t = threading.Thread(target=stream_signals)
        t.start()
        time.sleep(1.0)
        v2 = _register(mlflow_server, _fit(2, 800))  # promoted mid-stream
        t.join()
        events = _model_events(settings, 2)
        assert [e["version"] for e in events if e["event"] == "loaded"] == [v1, v2], events
        send(rows[500:])  # after the swap: served by v2

        by_id = answered(sent)
        assert set(sent) <= set(by_id), "a request went unanswered during the swap"
        versions = [by_id[s]["model_versions"].get("monthly_full") for s in sent]
        assert versions[0] == int(v1) and versions[-1] == int(v2)
        first_v2 = versions.index(int(v2))
        assert all(v == int(v2) for v in versions[first_v2:]), "served v1 again after the swap"
        for s in sent:
            comps = by_id[s]["components"]
            assert set(comps) == {"monthly_full", "online"}
            assert by_id[s]["degraded"] is True  # weekly_quick is configured but absent

        # A model whose features do not match the serving one is rejected; v2 keeps serving.
        bad = _register(mlflow_server, _fit(3, 300, names=[f"g{i}" for i in range(6)]))
        events = _model_events(settings, 3)
        assert events[2]["event"] == "rejected" and events[2]["version"] == bad
        assert "feature names differ" in events[2]["detail"]
        asyncio.run(
            produce(
                settings.bootstrap_servers,
                settings.topic("signals"),
                [
                    (
                        b"BTCUSDT",
                        orjson.dumps(
                            {
                                "signal_id": "after-bad",
                                "symbol": "BTCUSDT",
                                "features": dict(zip(FEATURES, np.ones(6).tolist(), strict=True)),
                            }
                        ),
                    )
                ],
            )
        )
        preds = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("predictions"),
                lambda rs: any(v["signal_id"] == "after-bad" for _, v in rs),
                timeout=60,
            )
        )
        after = next(v for _, v in preds if v["signal_id"] == "after-bad")
        assert after["model_versions"]["monthly_full"] == int(v2)

        # A version whose booster file is corrupt is rejected too, and v2 keeps serving.
        corrupt = _register_corrupt(mlflow_server, tmp_path)
        events = _model_events(settings, 4)
        assert events[3]["event"] == "rejected" and events[3]["version"] == corrupt, events
        assert worker.alive()
    finally:
        worker.stop()
