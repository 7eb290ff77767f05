"""A running worker's /metrics and /dashboard, the dashboard loaded in headless Chromium."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models.synthetic import TradeGenerator
from tests.support import Worker, produce

pytestmark = pytest.mark.integration

N = 300


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def _wait_for(url: str, ok: Any, worker: Worker, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert worker.alive(), worker.log_tail()
        try:
            data = orjson.loads(_get(url))
        except OSError:
            data = {}
        if data and ok(data):
            return data
        time.sleep(0.5)
    raise AssertionError(f"timed out; last data {data}\n{worker.log_tail()}")


def _signal(r: Any) -> tuple[bytes, bytes]:
    doc = {"signal_id": r.signal_id, "symbol": r.symbol, "features": r.features}
    return r.symbol.encode(), orjson.dumps(doc)


def _outcome(r: Any) -> tuple[bytes, bytes]:
    doc = {
        "outcome_id": r.outcome_id,
        "signal_id": r.signal_id,
        "symbol": r.symbol,
        "label": bool(r.label),
        "realized_rr": r.realized_rr,
    }
    return r.symbol.encode(), orjson.dumps(doc)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _dump_dom(browser: str, url: str, profile: Path) -> str:
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        url,
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_metrics_and_dashboard_of_a_running_worker(
    settings_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**settings_env, "ALPHAPULSE_RELOAD_INTERVAL_S": "0"}
    base = f"http://127.0.0.1:{env['ALPHAPULSE_WEB_PORT']}"
    prefix = env["ALPHAPULSE_TOPIC_PREFIX"]
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    rows = TradeGenerator(n_features=6, n_informative=3, seed=1).rows(N)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        _wait_for(
            f"{base}/dashboard/data",
            lambda d: any(p["topic"] == prefix + "signals" for p in d["lag"]["partitions"]),
            worker,
        )
        # In rounds: signals, their predictions, then their outcomes, so that later predictions
        # come from an online model that has learned something.
        for start in range(0, N, 50):
            batch = rows[start : start + 50]
            asyncio.run(produce(bootstrap, prefix + "signals", [_signal(r) for r in batch]))
            sent = start + len(batch)
            _wait_for(
                f"{base}/dashboard/data", lambda d, n=sent: d["predictions_total"] >= n, worker
            )
            asyncio.run(produce(bootstrap, prefix + "outcomes", [_outcome(r) for r in batch]))
        data = _wait_for(
            f"{base}/dashboard/data",
            lambda d: (
                d["outcomes_total"] >= N
                and any(p["auc"].get("blend") is not None for p in d["history"])
            ),
            worker,
        )
        assert data["predictions_total"] == N and data["outcomes_total"] == N
        assert data["latency"]["n"] == N and data["latency"]["p99_ms"] >= data["latency"]["p50_ms"]
        assert 0.55 < data["components"]["blend"]["roc_auc"] <= 1.0
        assert set(data["online"]) == {"BTCUSDT", "ETHUSDT"}

        text = _get(f"{base}/metrics").decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }
        # prometheus_client's process and platform collectors keep their usual names
        assert all(name.startswith(("alphapulse_", "process_", "python_")) for name, _ in samples)
        assert samples[("alphapulse_predictions_total", ())] == N
        assert samples[("alphapulse_outcomes_learned_total", ())] == N
        assert samples[("alphapulse_predict_latency_seconds_count", ())] == N
        assert ("alphapulse_component_roc_auc", (("component", "blend"),)) in samples
        lag = {
            labels
            for name, labels in samples
            if name == "alphapulse_consumer_lag" and dict(labels)["topic"] == prefix + "signals"
        }
        assert len(lag) == 4  # every signals partition is assigned to the one worker

        browser = _chromium()
        if browser is None:
            pytest.fail("Debian's chromium is not installed (make install adds it as root)")
        dom = _dump_dom(browser, f"{base}/dashboard", tmp_path / "chromium-profile")
    finally:
        worker.stop(timeout=15)

    def kpi(name: str) -> str:
        m = re.search(rf'id="kpi-{name}">([^<]*)<', dom)
        assert m, f"kpi {name} missing from the rendered page"
        return m.group(1)

    status = re.search(r'id="status">([^<]*)<', dom)
    assert status and status.group(1).startswith("updated"), status
    assert kpi("predictions") == str(N) and kpi("outcomes") == str(N)
    assert 0.55 < float(kpi("auc")) <= 1.0
    assert float(kpi("p99")) >= float(kpi("p50")) > 0
    for chart in ("chart-rate", "chart-latency", "chart-auc", "chart-lag"):
        svg = re.search(rf'<svg[^>]*id="{chart}"[^>]*>(.*?)</svg>', dom, re.S)
        assert svg, chart
        lines = re.findall(r'<polyline[^>]*points="([^"]+)"', svg.group(1))
        assert lines, f"{chart} drew no line"
        for pts in lines:
            assert re.fullmatch(r"(-?\d+(\.\d+)?,-?\d+(\.\d+)? ?)+", pts), pts
    lasts = re.findall(r'data-series="(blend|online)" data-last="([^"]+)"', dom)
    assert {name for name, _ in lasts} == {"blend", "online"}
    assert all(0.55 < float(v) <= 1.0 for _, v in lasts)
