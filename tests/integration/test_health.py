"""A running worker's /healthz and /readyz, and the process and model version series of /metrics,
on a real broker and a real MLflow server."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from alphapulse.health import Probe, probe_broker
from models.registry import ModelRegistry
from models.trainer import TrainingConfig, train
from stream.topics import ensure_topics
from tests.support import Worker, free_port

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, bytes]:
    """Status and body of a GET; an error status is an answer too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _wait_ready(
    base: str, worker: Worker, until: Callable[[int, dict[str, Any]], bool], timeout: float = 120
) -> tuple[int, dict[str, Any]]:
    """Poll /readyz until ``until(status, body)``; returns the last answer."""
    deadline = time.monotonic() + timeout
    last: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < deadline:
        assert worker.alive(), worker.log_tail()
        try:
            status, body = _get(f"{base}/readyz")
            last = (status, orjson.loads(body))
        except OSError:  # not listening yet
            time.sleep(0.5)
            continue
        if until(*last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out; last /readyz answer {last}\n{worker.log_tail()}")


def _register_weekly_quick(uri: str) -> str:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = (X[:, 0] > 0).astype(int)
    result = train(TrainingConfig(model_type="lightgbm", n_estimators=5), X, y)
    reg = ModelRegistry(uri, experiment="health")
    with reg.training_run("weekly_quick", result.config) as run:
        return str(run.register(result, force=True).version)


def test_a_worker_becomes_ready_and_exports_process_and_version_series(
    settings_env: dict[str, str], fresh_mlflow_server: str, tmp_path: Path
) -> None:
    version = _register_weekly_quick(fresh_mlflow_server)
    env = {
        **settings_env,
        "MLFLOW_TRACKING_URI": fresh_mlflow_server,
        "ALPHAPULSE_MLFLOW_EXPERIMENT": "health",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "2",
    }
    base = f"http://127.0.0.1:{env['ALPHAPULSE_WEB_PORT']}"
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        status, body = _wait_ready(base, worker, lambda status, _: status == 200)
        checks = body["checks"]
        assert body["ready"] is True and set(checks) == {"partitions", "broker", "registry"}
        assert all(c["ok"] for c in checks.values()), checks
        assert checks["partitions"]["assigned"] == [0, 1, 2, 3]  # the only worker of its group
        assert checks["partitions"]["loading"] == []
        assert checks["registry"]["needed"] is True

        status, live = _get(f"{base}/healthz")
        assert status == 200 and orjson.loads(live)["status"] == "ok"

        # The first poll that loads the model may finish after the registry check first passed.
        info = ("alphapulse_model_version_info", (("role", "weekly_quick"), ("version", version)))
        deadline = time.monotonic() + 60
        while True:
            text = _get(f"{base}/metrics")[1].decode()
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
            }
            if info in samples or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert samples.get(info) == 1.0, text
        assert samples[("alphapulse_model_version", (("role", "weekly_quick"),))] == int(version)
        assert samples[("process_resident_memory_bytes", ())] > 10_000_000
        assert ("process_cpu_seconds_total", ()) in samples
    finally:
        worker.stop(timeout=15)


def test_an_unreachable_registry_makes_the_worker_unready_but_alive(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **settings_env,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # fail at once rather than after minutes
        "ALPHAPULSE_RELOAD_INTERVAL_S": "1",
    }
    base = f"http://127.0.0.1:{env['ALPHAPULSE_WEB_PORT']}"
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        status, body = _wait_ready(
            base,
            worker,
            lambda _, b: (
                b["checks"]["partitions"]["ok"]
                and b["checks"]["broker"]["ok"]
                and b["checks"]["registry"]["detail"].startswith("failed:")
            ),
        )
        assert status == 503 and body["ready"] is False
        registry = body["checks"]["registry"]
        assert registry["ok"] is False and registry["needed"] is True
        assert "RegistryError" in registry["detail"], registry
        status, live = _get(f"{base}/healthz")
        assert status == 200 and orjson.loads(live)["status"] == "ok"
    finally:
        worker.stop(timeout=15)


def test_the_broker_probe_asks_only_for_the_workers_topics(settings: Any) -> None:
    """With many topics on a cluster, a metadata request for all of them costs the worker's event
    loop 0.1 s and more; the probe asks for the topics it is given and the producer's own."""

    async def run() -> tuple[set[str], set[str], bool]:
        await ensure_topics(settings)
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic("predictions"), b"x", partition=0)
            # As the worker's producer was found: tracking no topic, so its refreshes ask for all.
            await producer.client.set_topics([])
            before = set(producer.client.cluster.topics())
            app = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
            probe = Probe()
            await probe_broker(app, probe, timeout_s=10, topics=[settings.topic("predictions")])
            return before, set(producer.client.cluster.topics()), probe.check()["ok"]
        finally:
            await producer.stop()

    before, after, ok = asyncio.run(run())
    assert ok
    assert settings.topic("signals") in before
    assert after == {settings.topic("predictions")}
