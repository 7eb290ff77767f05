"""The one settings object: env names, defaults, validation, secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stream.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "MLFLOW_TRACKING_URI", "ALPHAPULSE_WEB_PORT"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.web_port == 6066
    assert s.bootstrap_servers == "127.0.0.1:9092" and s.uses_local_broker
    assert s.tracking_uri.startswith("sqlite:///") and s.tracking_uri.endswith("mlflow.db")


def test_standard_and_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("ALPHAPULSE_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("ALPHAPULSE_WEB_PORT", "7000")
    s = Settings()
    assert s.bootstrap_servers == "k1:9092,k2:9092" and not s.uses_local_broker
    assert s.tracking_uri == "http://mlflow:5000"
    assert s.topic("retrain-queue") == "prod.retrain-queue"
    assert s.web_port == 7000


def test_frozen_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.web_port = 1  # type: ignore[misc]
    monkeypatch.setenv("ALPHAPULSE_TOPIC_PARTITIONS", "0")
    with pytest.raises(ValidationError, match="topic_partitions"):
        Settings()
    with pytest.raises(ValueError, match="unknown topic role"):
        s.topic("nope")


@pytest.mark.parametrize("value", ["0.5", "0", "nan", "inf"])
def test_hard_example_weight_is_at_least_one(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    assert Settings().hard_example_weight == 2.0
    monkeypatch.setenv("ALPHAPULSE_HARD_EXAMPLE_WEIGHT", "1")
    assert Settings().hard_example_weight == 1.0
    monkeypatch.setenv("ALPHAPULSE_HARD_EXAMPLE_WEIGHT", value)
    with pytest.raises(ValidationError, match="hard_example_weight"):
        Settings()


def test_password_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPULSE_KAFKA_SASL_PASSWORD", "hunter2")
    s = Settings()
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == "hunter2"
