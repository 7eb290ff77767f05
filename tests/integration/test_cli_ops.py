"""``alphapulse produce``, ``consume`` and ``replay`` as a user runs them, against a real broker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from alphapulse.cli import app
from models.synthetic import TradeGenerator
from tests.support import consume_until

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alphapulse.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_produce_trades_then_consume_them(settings_env: dict[str, str]) -> None:
    env = settings_env
    out = _cli(env, "produce", "trades", "--generate", "60", "--rate", "0", "--outcome-delay", "0")
    assert out.returncode == 0, out.stderr
    assert "sent 60 signals" in out.stderr and "60 outcomes" in out.stderr
    prefix = env["ALPHAPULSE_TOPIC_PREFIX"]

    got = _cli(env, "consume", "--topic", "signals", "--from-beginning", "--max-messages", "60")
    assert got.returncode == 0, got.stderr
    signals = [json.loads(line) for line in got.stdout.splitlines()]
    assert len(signals) == 60
    assert {s["signal_id"] for s in signals} == {f"sig-0-{i:08d}" for i in range(60)}
    assert len(signals[0]["features"]) == 8
    assert "ts" not in signals[0]  # the broker's time is used by default

    records = asyncio.run(
        consume_until(
            env["KAFKA_BOOTSTRAP_SERVERS"], prefix + "outcomes", lambda rs: len(rs) >= 60, 60
        )
    )
    assert len(records) == 60
    for key, value in records:
        assert key == value["symbol"].encode()  # keyed by model key
        assert "features" not in value  # joined by the worker to the signal
        assert value["label"] in (True, False)

    idle = _cli(env, "consume", "--topic", "predictions", "--timeout", "2")
    assert idle.returncode == 0 and idle.stdout == ""


def test_produce_signals_from_a_csv_file(settings_env: dict[str, str], tmp_path: Path) -> None:
    frame = TradeGenerator(n_features=3, n_informative=2, seed=1).frame(20)
    frame["model_key"] = "desk-a"
    path = tmp_path / "signals.csv"
    frame.drop(columns=["label", "realized_rr", "outcome_id"]).to_csv(path, index=False)
    out = _cli(
        settings_env, "produce", "signals", "--file", str(path), "--rate", "200", "--keep-ts"
    )
    assert out.returncode == 0, out.stderr
    records = asyncio.run(
        consume_until(
            settings_env["KAFKA_BOOTSTRAP_SERVERS"],
            settings_env["ALPHAPULSE_TOPIC_PREFIX"] + "signals",
            lambda rs: len(rs) >= 20,
            60,
        )
    )
    assert len(records) == 20
    key, first = next((k, v) for k, v in records if v["signal_id"] == frame["signal_id"][0])
    assert key == b"desk-a" and first["model_key"] == "desk-a"
    assert set(first["features"]) == {"f0", "f1", "f2"}  # regime is not a feature
    assert first["ts"] == int(frame["ts"].iloc[0])


def test_replay_writes_the_report(tmp_path: Path) -> None:
    gen = TradeGenerator(n_features=4, n_informative=2, drift_points=(1000,), seed=1)
    src = tmp_path / "history.jsonl"
    src.write_bytes(
        b"\n".join(orjson.dumps({**r.__dict__, "label": bool(r.label)}) for r in gen.rows(2000))
    )
    report = tmp_path / "reports" / "replay.html"
    out = _cli({}, "replay", str(src), "--report", str(report), "--window", "200")
    assert out.returncode == 0, out.stderr
    assert "blend: roc_auc=" in out.stdout and "2000 outcomes" in out.stdout
    figures = json.loads(report.with_suffix(".json").read_text())
    assert figures["metrics"]["blend"]["n"] == 2000
    assert figures["regime_changes"] == [1000]


def test_errors_and_help() -> None:
    runner = CliRunner()
    for cmd, words in (
        ("produce", ("--generate", "--rate", "trades")),
        ("consume", ("--topic", "--from-beginning")),
        ("replay", ("--report", "prequential")),
    ):
        res = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0
        for w in words:
            assert w in res.output, (cmd, w)
    bad = _cli({}, "produce", "quotes", "--generate", "5")
    assert bad.returncode == 2 and "is not one of" in bad.stderr
    none = _cli({}, "produce", "signals")
    assert none.returncode == 2 and "--file PATH or --generate N" in none.stderr
    missing = _cli({}, "replay", "/nonexistent.jsonl")
    assert missing.returncode == 2 and "no such file" in missing.stderr
