"""Security against real services: SASL/SCRAM on Kafka, secrets kept out of logs, models loaded
only from the configured registry by exact version, and size limits enforced end to end.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from mlflow.tracking._model_registry import utils as mlflow_registry_utils
from mlflow.tracking._tracking_service import utils as mlflow_tracking_utils

from agents.reloader import Reloader
from models.registry import ModelRegistry
from models.synthetic import TradeGenerator
from models.trainer import TrainingConfig, TrainingResult, train
from stream.broker import LocalKafka
from stream.runtime import Runtime
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.conftest import CACHE_DIR
from tests.support import (
    Collector,
    Sender,
    Worker,
    free_port_block,
    learned_counts,
    probe,
    worker_env,
)

pytestmark = pytest.mark.integration

USER = "alice"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # unique, so that a leak is easy to find


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A one-node Kafka whose client port accepts only SCRAM-SHA-256 users (SASL_PLAINTEXT)."""
    kafka = LocalKafka(
        state_dir=tmp_path_factory.mktemp("sasl-kafka"),
        cache_dir=CACHE_DIR,
        base_port=free_port_block(2),
        heap="384m",
        client_listener_protocol="SASL_PLAINTEXT",
        scram_users={USER: PASSWORD},
    )
    kafka.up(progress=lambda _m: None)
    try:
        yield kafka
    finally:
        kafka.down(progress=lambda _m: None, timeout=30)


def _sasl_env(kafka: LocalKafka, tmp_path: Path, password: str) -> dict[str, str]:
    return worker_env(
        kafka.bootstrap_servers,
        tmp_path,
        ALPHAPULSE_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        ALPHAPULSE_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        ALPHAPULSE_KAFKA_SASL_USERNAME=USER,
        ALPHAPULSE_KAFKA_SASL_PASSWORD=password,
        ALPHAPULSE_RELOAD_INTERVAL_S="0",
        ALPHAPULSE_LOG_LEVEL="DEBUG",
    )


def _client(password: str) -> dict[str, Any]:
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": USER,
        "sasl_plain_password": password,
    }


@pytest.mark.slow
def test_worker_on_sasl_scram_answers_and_learns_and_keeps_the_password_out_of_logs(
    sasl_kafka: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _sasl_env(sasl_kafka, tmp_path, PASSWORD)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))  # the admin client authenticates too
    worker = Worker(env, tmp_path / "worker.log").start()
    sig, preds, outs = (settings.topic(t) for t in ("signals", "predictions", "outcomes"))
    try:
        with (
            Sender(settings.bootstrap_servers, **_client(PASSWORD)) as sender,
            Collector(settings.bootstrap_servers, [preds], **_client(PASSWORD)) as collector,
        ):
            answer = probe(sender, collector, sig, preds, "BTCUSDT", timeout=120)
            assert answer is not None, worker.log_tail()
            assert answer["model_versions"]["online"] == 0
            # An outcome learned proves the learner's consumer, its checkpoint producer and the
            # state loader (a plain consumer of its own) all authenticate.
            outcome = {
                "outcome_id": "o-1",
                "signal_id": answer["signal_id"],
                "symbol": "BTCUSDT",
                "label": True,
                "features": {"f0": 1.0},
            }
            sender.send(outs, [(b"BTCUSDT", orjson.dumps(outcome))])
            learned = learned_counts(sender, collector, sig, preds, {"BTCUSDT": 1}, timeout=60)
            assert learned == {"BTCUSDT": 1}, worker.log_tail()
    finally:
        worker.stop()

    # The broker refuses a client without credentials.
    async def unauthenticated() -> None:
        p = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000)
        try:
            await p.start()
        finally:
            await p.stop()

    with pytest.raises(KafkaConnectionError):
        asyncio.run(unauthenticated())

    # The password is a SecretStr: it appears in no representation of the settings, and in no
    # line of the worker's DEBUG log.
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == PASSWORD
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(Settings())):
        assert PASSWORD not in text
    log = worker.log_path.read_text(errors="replace")
    assert len(log.splitlines()) > 100  # DEBUG logging really was on
    assert PASSWORD not in log


@pytest.mark.slow
def test_wrong_password_fails_at_once_with_a_clear_error(
    sasl_kafka: LocalKafka, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    env = {**os.environ, **_sasl_env(sasl_kafka, tmp_path, wrong)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "alphapulse.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "refused the SASL credentials of user 'alice'" in out, out[-3000:]
    assert "ALPHAPULSE_KAFKA_SASL_PASSWORD" in out  # says what to check next
    assert wrong not in out
    assert elapsed < 30, f"took {elapsed:.0f}s to give up"  # no 30 s bootstrap retry loop
    print(f'\nFIGURES wrong_password {{"exit_code": 1, "seconds": {elapsed:.1f}}}')


def test_oversized_messages_and_feature_maps_are_deadlettered_too_large(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **settings_env,
        "ALPHAPULSE_MAX_MESSAGE_BYTES": "1024",
        "ALPHAPULSE_MAX_FEATURES": "8",
        "ALPHAPULSE_DEADLETTER_VALUE_MAX_BYTES": "256",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    sig, preds, outs, dead_t = (
        settings.topic(t) for t in ("signals", "predictions", "outcomes", "deadletter")
    )
    nine = {f"f{i}": float(i) for i in range(9)}
    eight = {f"f{i}": float(i) for i in range(8)}
    big_signal = orjson.dumps(
        {"signal_id": "big", "symbol": "K", "features": eight, "strategy": "x" * 1100}
    )
    huge = orjson.dumps(
        {"signal_id": "huge", "symbol": "K", "features": eight, "strategy": "y" * 900_000}
    )
    wide_signal = orjson.dumps({"signal_id": "wide", "symbol": "K", "features": nine})
    wide_outcome = orjson.dumps(
        {"outcome_id": "ow", "signal_id": "wide", "symbol": "K", "label": 1, "features": nine}
    )
    big_outcome = orjson.dumps(
        {"outcome_id": "ob", "signal_id": "s", "symbol": "K", "label": 1, "mine": "z" * 2000}
    )
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        with (
            Sender(settings.bootstrap_servers) as sender,
            Collector(settings.bootstrap_servers, [preds, dead_t]) as collector,
        ):
            assert probe(sender, collector, sig, preds, "K", timeout=120) is not None
            sender.send(sig, [(b"K", big_signal), (b"K", huge), (b"K", wide_signal)])
            sender.send(outs, [(b"K", wide_outcome), (b"K", big_outcome)])
            at_limit = probe(sender, collector, sig, preds, "K", features=eight)
            assert collector.wait(lambda c: len(c.records(dead_t)) >= 5, 60), worker.log_tail()
            time.sleep(1)
            dead = [r.json() for r in collector.records(dead_t)]
    finally:
        worker.stop()
    assert at_limit is not None  # exactly at the feature limit is fine
    assert len(dead) == 5, dead
    assert {d["reason"] for d in dead} == {"too_large"}
    details = sorted(d["detail"] for d in dead)
    assert sum("limit 1024" in d for d in details) == 3, details  # big, huge, big outcome
    assert sum("has 9 entries, limit 8" in d for d in details) == 2, details
    originals = [big_signal, huge, wide_signal, wide_outcome, big_outcome]
    kept = sorted(base64.b64decode(d["value"]) for d in dead)
    # Each dead letter carries its message, cut to the configured 256 bytes.
    assert kept == sorted(o[:256] for o in originals)
    assert worker.proc is not None


FEATURES = [f"f{i}" for i in range(4)]
OTHER = [f"g{i}" for i in range(4)]


def _fit(names: list[str], seed: int) -> TrainingResult:
    frame = TradeGenerator(n_features=len(names), n_informative=2, seed=seed).frame(300)
    X = frame[[f"f{i}" for i in range(len(names))]].to_numpy()
    cfg = TrainingConfig(model_type="lightgbm", n_estimators=10, max_depth=3, seed=seed)
    return train(cfg, X, frame["label"].to_numpy(), feature_names=names)


class _Recording(ModelRegistry):
    """A real registry client that records what it was asked to load."""

    loads: list[tuple[str, str]]

    def load_version(self, name: str, version: str | int) -> Any:
        self.loads = [*getattr(self, "loads", []), (name, str(version))]
        return super().load_version(name, version)


class _Topic:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append(value)


def test_reloader_loads_only_from_the_configured_registry_by_exact_version(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    role = "weekly_quick"  # a real batch role: the scorer accepts only those
    # The configured registry (the MLflow server) holds a model under this role ...
    served = ModelRegistry(mlflow_server, experiment="security")
    with served.training_run(role, _fit(FEATURES, 1).config) as run:
        v_served = run.register(_fit(FEATURES, 1), force=True).version
    # ... and the process-wide MLflow default points at another registry with a different model
    # under the same name and version: the reloader must never read that one.
    decoy_uri = f"sqlite:///{tmp_path / 'decoy' / 'mlflow.db'}"
    decoy = ModelRegistry(decoy_uri, experiment="decoy", artifact_location=str(tmp_path / "a"))
    v_decoy = "0"
    while int(v_decoy) < int(v_served):
        with decoy.training_run(role, _fit(OTHER, 2).config) as run:
            v_decoy = run.register(_fit(OTHER, 2), force=True).version
    assert v_decoy == v_served
    monkeypatch.setenv("MLFLOW_TRACKING_URI", decoy_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", decoy_uri)
    monkeypatch.setattr(mlflow_tracking_utils, "_tracking_uri", decoy_uri)
    monkeypatch.setattr(mlflow_registry_utils, "_registry_uri", decoy_uri)
    assert mlflow.get_tracking_uri() == decoy_uri
    registry = _Recording(mlflow_server, experiment="security")
    topic = _Topic()
    rt = Runtime(Settings(), topics={"model-events": topic})
    reloader = Reloader(rt, lambda: registry, roles=(role,))
    events = asyncio.run(reloader.poll_once())
    assert [(e.event, e.version) for e in events] == [("loaded", v_served)]
    assert events[0].detail == f"models:/{role}/{v_served}"
    assert registry.loads == [(role, v_served)]  # exactly the version the alias named
    assert all(v.isdigit() for _, v in registry.loads)
    assert list(reloader.models[role][1].feature_names) == FEATURES  # served model, not decoy
    assert rt.serving.versions == {role: int(v_served)}
    assert len(topic.sent) == 1 and orjson.loads(topic.sent[0])["event"] == "loaded"
