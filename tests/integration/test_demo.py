"""``alphapulse demo`` end to end: a terminal's live view, and unattended runs without one."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from alphapulse.demo import run_demo
from stream.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _numbers(pattern: str, text: str) -> list[float]:
    return [float(m) for m in re.findall(pattern, text)]


def test_live_view_shows_real_changing_numbers(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in settings_env.items():
        monkeypatch.setenv(k, v)
    console = Console(record=True, force_terminal=True, width=140, file=io.StringIO())
    state, summary = run_demo(Settings(), console, duration=30, rate=40)
    view = console.export_text()

    received = _numbers(r"predictions received\s+(\d+)", view)
    assert len(set(received)) >= 5, "the view did not refresh with new numbers"
    assert received == sorted(received) and received[-1] >= 1000
    rps = _numbers(r"requests/s\s+(\d+\.\d)", view)
    assert max(rps) > 20
    p99 = _numbers(r"latency p50 / p99\s+[\d.]+ ms / ([\d.]+) ms", view)
    assert p99 and all(v > 0 for v in p99)
    for role in ("blend", "monthly_full", "weekly_quick", "online"):
        aucs = _numbers(rf"rolling AUC {role}\s+(\d\.\d+)", view)
        assert len(set(aucs)) > 3, role
    assert "weekly_quick v2" in view, "the retrained model never showed up in the view"
    assert "regime change at signal 600" in view
    # the batch models trained on the old regime fall apart after the change
    monthly = _numbers(r"rolling AUC monthly_full\s+(\d\.\d+)", view)
    assert max(monthly) > 0.8 and monthly[-1] < 0.7

    assert state.predictions == state.signals_sent == 1200
    assert "predictions made: 1200" in summary
    assert "retrained: weekly_quick v2" in summary


def test_unattended_run_without_a_terminal(settings_env: dict[str, str], tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "alphapulse.cli", "demo", "--duration", "20", "--rate", "30"],
        env={**os.environ, **settings_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "\x1b[" not in out.stderr, "terminal control codes without a terminal"
    made = re.search(r"predictions made: (\d+)", out.stdout)
    assert made and int(made.group(1)) == 600, out.stdout
    progress = _numbers(r"t=\d+s .*? predictions=(\d+)", out.stderr)
    assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] == 600
    assert "champions: monthly_full v1, weekly_quick v1" in out.stderr
    log = Path(settings_env["ALPHAPULSE_DATA_DIR"]) / "demo-worker.log"
    assert log.is_file()
