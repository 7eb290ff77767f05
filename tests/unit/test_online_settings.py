"""The online model's forgetting and drift detector come from the settings into the worker."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from alphapulse.app import create_app
from models.online import DRIFT_DETECTORS, OnlineConfig
from stream.settings import Settings

ENV = {
    "ALPHAPULSE_ONLINE_DECAY": "true",
    "ALPHAPULSE_ONLINE_DECAY_WINDOW": "1234",
    "ALPHAPULSE_ONLINE_DECAY_FACTOR": "0.25",
    "ALPHAPULSE_ONLINE_DRIFT_DETECTOR": "adwin",
    "ALPHAPULSE_ONLINE_DRIFT_DELTA": "0.01",
    "ALPHAPULSE_ONLINE_DRIFT_THRESHOLD": "30",
}
EXPECTED = OnlineConfig(
    decay=True,
    decay_window=1234,
    decay_factor=0.25,
    drift_detector="adwin",
    drift_delta=0.01,
    drift_threshold=30.0,
)


def test_environment_sets_the_online_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in ENV.items():
        monkeypatch.setenv(var, value)
    assert Settings().online_config() == EXPECTED


def test_the_worker_store_gets_the_configured_online_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var, value in ENV.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("ALPHAPULSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ALPHAPULSE_RELOAD_INTERVAL_S", "0")
    built = create_app(Settings())
    assert built.store.online_config == EXPECTED


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("ALPHAPULSE_ONLINE_DECAY", "maybe"),
        ("ALPHAPULSE_ONLINE_DECAY_WINDOW", "0"),
        ("ALPHAPULSE_ONLINE_DECAY_WINDOW", "many"),
        ("ALPHAPULSE_ONLINE_DECAY_FACTOR", "1.5"),
        ("ALPHAPULSE_ONLINE_DRIFT_DETECTOR", "ddm"),
        ("ALPHAPULSE_ONLINE_DRIFT_DELTA", "0"),
        ("ALPHAPULSE_ONLINE_DRIFT_THRESHOLD", "nan"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=var):
        Settings()


def test_the_detector_choices_are_the_models() -> None:
    annotation = Settings.model_fields["online_drift_detector"].annotation
    assert typing.get_args(annotation) == DRIFT_DETECTORS
