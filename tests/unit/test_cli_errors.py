"""The CLI's one error policy: exit statuses, one-line errors, settings messages, --version."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from alphapulse.cli import app


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def runner(tmp_path, monkeypatch) -> CliRunner:
    monkeypatch.setenv("ALPHAPULSE_DATA_DIR", str(tmp_path))
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip().startswith("alphapulse 0.")


def test_bad_setting_is_one_line_naming_the_variable(runner: CliRunner) -> None:
    res = runner.invoke(app, ["config"], env={"ALPHAPULSE_WEB_PORT": "abc"})
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        "error: ALPHAPULSE_WEB_PORT: must be an integer from 1 to 65535, got 'abc'"
    )


def test_choice_setting_says_what_it_accepts(runner: CliRunner) -> None:
    res = runner.invoke(app, ["config"], env={"ALPHAPULSE_LOG_LEVEL": "LOUD"})
    assert res.exit_code == 2
    assert "ALPHAPULSE_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR" in res.stderr


def test_unknown_variable_warns_with_nearest(runner: CliRunner) -> None:
    res = runner.invoke(app, ["config"], env={"ALPHAPULSE_WEBPORT": "7000"})
    assert res.exit_code == 0
    assert "warning: unknown ALPHAPULSE_WEBPORT (did you mean ALPHAPULSE_WEB_PORT?)" in res.stderr


def test_config_masks_secrets(runner: CliRunner) -> None:
    env = {
        "ALPHAPULSE_STORE_PASSWORD": "hunter2",
        "MLFLOW_TRACKING_URI": "http://ap:pw42@mlflow:5000",
    }
    res = runner.invoke(app, ["config", "--json"], env=env)
    assert res.exit_code == 0
    shown = json.loads(res.stdout)
    assert shown["ALPHAPULSE_STORE_PASSWORD"] == "***"
    assert shown["MLFLOW_TRACKING_URI"] == "http://ap:***@mlflow:5000"
    assert "hunter2" not in res.stdout and "pw42" not in res.stdout
    text = runner.invoke(app, ["config"], env=env)
    assert "hunter2" not in text.stdout and "ALPHAPULSE_WEB_PORT" in text.stdout


def test_bad_choice_is_usage_error_and_help_lists_choices(runner: CliRunner) -> None:
    res = runner.invoke(app, ["produce", "quotes", "--generate", "1"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ")
    assert len(res.stderr.strip().splitlines()) == 1
    help_ = runner.invoke(app, ["consume", "--help"], env={"COLUMNS": "200"})
    assert "retrain-queue" in help_.stdout


def test_missing_source_is_usage_error(runner: CliRunner) -> None:
    res = runner.invoke(app, ["produce", "signals"])
    assert res.exit_code == 2 and "--file PATH or --generate N" in res.stderr


def test_unreachable_broker_is_one_line_exit_1(runner: CliRunner) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_closed_port()}"}
    res = runner.invoke(app, ["consume", "--timeout", "1"], env=env)
    assert res.exit_code == 1
    assert res.stderr.startswith("error: cannot reach Kafka")
    assert "Traceback" not in res.stderr and "Unclosed" not in res.stderr


def test_unreachable_mlflow_is_one_line_exit_1(runner: CliRunner) -> None:
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}"}
    res = runner.invoke(app, ["models", "list"], env=env)
    assert res.exit_code == 1
    assert (
        res.stderr.strip().splitlines() == [res.stderr.strip()]
        and "cannot reach MLflow" in res.stderr
    )
