"""The predictor takes signal requests in per-partition batches straight from the fetch, on a real
broker: a backlog is answered in few batches, every request once, and the offsets it acked per
batch are committed, so a restarted worker does not answer them again."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, consume_until, produce

pytestmark = pytest.mark.integration

BACKLOG = 3000
MORE = 500


def _signals(start: int, n: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, start + n):
        symbol = f"SYM{i % 8}"
        doc = {"signal_id": f"s{i}", "symbol": symbol, "features": {"f0": i % 7 / 7.0}}
        out.append((symbol.encode(), orjson.dumps(doc)))
    return out


def _counter(base: str, name: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def _answered(settings: Settings, n: int) -> list[str]:
    recs = asyncio.run(
        consume_until(
            settings.bootstrap_servers,
            settings.topic("predictions"),
            lambda got: len({v["signal_id"] for _, v in got}) >= n,
            timeout=120,
        )
    )
    return [v["signal_id"] for _, v in recs]


def test_a_backlog_is_answered_in_batches_once_and_committed(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    signals = settings.topic("signals")
    asyncio.run(produce(settings.bootstrap_servers, signals, _signals(0, BACKLOG)))
    base = f"http://127.0.0.1:{settings_env['ALPHAPULSE_WEB_PORT']}"
    worker = Worker(settings_env, tmp_path / "worker.log").start()
    try:
        ids = _answered(settings, BACKLOG)
        assert sorted(set(ids)) == sorted(f"s{i}" for i in range(BACKLOG))
        assert len(ids) == BACKLOG, "a request was answered twice without any crash"
        deadline = time.monotonic() + 30
        while _counter(base, "alphapulse_predictions_total") < BACKLOG:
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.5)
        batches = _counter(base, "alphapulse_signal_batches_total")
        # 3,000 backlogged records over 4 partitions come in fetches of hundreds per partition.
        assert 1 <= batches <= BACKLOG / 20, batches
    finally:
        worker.stop()
    assert worker.proc is not None and worker.proc.returncode == 0, worker.log_tail()

    asyncio.run(produce(settings.bootstrap_servers, signals, _signals(BACKLOG, MORE)))
    worker = Worker(settings_env, tmp_path / "worker2.log").start()
    try:
        ids = _answered(settings, BACKLOG + MORE)
        assert len(set(ids)) == BACKLOG + MORE
        # The first worker stopped cleanly after committing what it acked: nothing is repeated.
        assert len(ids) == BACKLOG + MORE, len(ids) - len(set(ids))
    finally:
        worker.stop()
