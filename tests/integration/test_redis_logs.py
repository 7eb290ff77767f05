"""Structured logs and the Redis log stream, against a real ``redis-server`` and a real broker.

A worker with ``ALPHAPULSE_LOG_FORMAT=json`` and ``ALPHAPULSE_REDIS_URL`` writes JSON lines and
appends its records and snapshots to the stream; ``alphapulse logs`` reads them back; a Redis
outage slows no prediction, its drops are counted on ``/metrics``, and the records flow again once
the same server is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from alphapulse._logsink import RedisLogHandler, RedisLogSink, read_entry, redis_client
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.integration.conftest_redis import NODE_ENTRIES, RedisServer
from tests.support import KEYS, Collector, Sender, Worker, probe, wait_until

pytestmark = pytest.mark.integration

RECORD_FIELDS = {"time", "level", "logger", "message"}


def _env(settings_env: dict[str, str], srv: RedisServer, **more: str) -> dict[str, str]:
    return {
        **settings_env,
        "ALPHAPULSE_LOG_FORMAT": "json",
        "ALPHAPULSE_REDIS_URL": srv.url,
        "ALPHAPULSE_REDIS_STREAM": f"logs:{uuid.uuid4().hex[:8]}",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "0",  # no MLflow needed
        **more,
    }


def _entries(client: Any, stream: str) -> list[dict[str, Any]]:
    try:
        return [read_entry(i, f) for i, f in client.xrange(stream)]
    except redis.ConnectionError:
        return []


def _epoch(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC time ending in ``Z``."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00").timestamp()


def _is_utc_time(text: str) -> bool:
    return abs(_epoch(text) - time.time()) < 3600


def _id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alphapulse.cli", "logs", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _dropped(port: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "alphapulse_log_records_dropped_total":
                return float(s.value)
    raise AssertionError("no alphapulse_log_records_dropped_total on /metrics")


def test_maxlen_caps_the_stream(redis_server: RedisServer) -> None:
    client = redis_client(redis_server.url, 5.0)
    sink = RedisLogSink(lambda: client, "capped", maxlen=50, queue_size=5000).start()
    logger = logging.getLogger("tests.capped")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(RedisLogHandler(sink))
    try:
        for i in range(1000):
            logger.info("record %d", i)
        logger.debug("below INFO: not written")
    finally:
        logger.handlers.clear()
        sink.close(timeout=30)
    assert sink.written == 1000 and sink.dropped == 0
    assert 50 <= client.xlen("capped") <= 50 + NODE_ENTRIES  # MAXLEN ~ trims whole nodes
    newest = read_entry(*client.xrevrange("capped", count=1)[0])
    assert newest["message"] == "record 999" and newest["kind"] == "log"


def test_worker_logs_json_to_redis_and_logs_reads_them_back(
    settings: Settings, settings_env: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    env = _env(settings_env, redis_server, ALPHAPULSE_REDIS_SNAPSHOT_S="1")
    stream = env["ALPHAPULSE_REDIS_STREAM"]
    client = redis_client(redis_server.url, 5.0)
    sig_t, pred_t = settings.topic("signals"), settings.topic("predictions")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        with (
            Sender(settings.bootstrap_servers) as sender,
            Collector(settings.bootstrap_servers, [pred_t]) as collector,
        ):
            first = probe(sender, collector, sig_t, pred_t, "BTCUSDT", timeout=120)
            assert first is not None, worker.log_tail()
            ((part, offset),) = sender.send(sig_t, [(b"BTCUSDT", b"{not json")])

        def complete() -> bool:
            entries = _entries(client, stream)
            dead = [e for e in entries if e.get("reason") == "invalid_json"]
            served = [e for e in entries if e["kind"] == "snapshot" and e["predictions_total"]]
            return bool(dead) and bool(served)

        assert wait_until(complete, 60), worker.log_tail()
        entries = _entries(client, stream)
        logs = [e for e in entries if e["kind"] == "log"]
        snapshots = [e for e in entries if e["kind"] == "snapshot"]
        assert {e["kind"] for e in entries} == {"log", "snapshot"}
        for e in logs:
            assert set(e) >= RECORD_FIELDS and _is_utc_time(e["time"]), e
            assert e["level"] in ("INFO", "WARNING", "ERROR", "CRITICAL"), e
            assert e["worker"].endswith(f":{worker.proc.pid}")  # type: ignore[union-attr]
        dead = next(e for e in logs if e.get("reason") == "invalid_json")
        assert (dead["topic"], dead["partition"], dead["offset"]) == (sig_t, part, offset)
        loaded = [e for e in logs if "state loaded" in e["message"]]
        assert {e["partition"] for e in loaded} == {0, 1, 2, 3}
        assert all(isinstance(e["offset"], int) for e in loaded)
        for s in snapshots:
            assert _is_utc_time(s["time"])
            assert set(s["rates"]) == {"predictions_per_s", "outcomes_per_s"}
            assert {"p50_ms", "p99_ms"} <= set(s["latency"]) and "total" in s["lag"]
            assert isinstance(s["components"], dict)
        assert any(s["latency"]["p50_ms"] is not None for s in snapshots)

        # alphapulse logs --json: every entry, oldest first, as stored
        res = _cli(env, "--json", "--count", "100000")
        assert res.returncode == 0, res.stderr
        shown = [orjson.loads(line) for line in res.stdout.splitlines()]
        ids = [e["id"] for e in shown]
        assert ids[: len(entries)] == [e["id"] for e in entries]
        assert shown[: len(entries)] == entries
        res = _cli(env, "--count", "3")
        assert res.returncode == 0 and len(res.stdout.splitlines()) >= 3, res.stderr
        assert "SNAPSHOT" in res.stdout or " INFO " in res.stdout, res.stdout

        # --follow: new entries as they come (a snapshot a second), until Ctrl-C
        follow = subprocess.Popen(
            [sys.executable, "-m", "alphapulse.cli", "logs", "--follow", "--json", "--count", "0"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert follow.stdout is not None
            ready, _, _ = select.select([follow.stdout], [], [], 30)
            assert ready, "alphapulse logs --follow printed nothing in 30 s"
            new = orjson.loads(follow.stdout.readline())
            assert _id(new["id"]) > _id(entries[-1]["id"]), (new, entries[-1])
        finally:
            follow.send_signal(signal.SIGINT)
            follow.wait(15)
        assert follow.returncode == 0, follow.stderr.read() if follow.stderr else ""
    finally:
        worker.stop(timeout=15)
    lines = (tmp_path / "worker.log").read_text().splitlines()
    assert lines
    for line in lines:  # every local log line is one JSON record
        doc = orjson.loads(line)
        assert set(doc) >= RECORD_FIELDS and _is_utc_time(doc["time"]), line


def test_logs_without_url_or_redis_follows_the_error_policy(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    assert "ALPHAPULSE_REDIS_URL" not in os.environ
    res = _cli({})
    assert res.returncode == 2, res
    assert res.stderr.startswith("error: ALPHAPULSE_REDIS_URL is not set")
    redis_server.down()
    res = _cli({"ALPHAPULSE_REDIS_URL": redis_server.url})
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1, res.stderr
    assert "Redis log stream at 127.0.0.1" in res.stderr and "Traceback" not in res.stderr


def _burst(
    sender: Sender, collector: Collector, sig_t: str, pred_t: str, n: int, bad: int = 0
) -> float:
    """Seconds from sending ``n`` signals (and ``bad`` broken ones among them, each logged as a
    dead letter) to having all their predictions."""
    tag = uuid.uuid4().hex[:8]
    ids = {f"{tag}-{i}" for i in range(n)}
    msgs = [
        (
            KEYS[i % len(KEYS)].encode(),
            orjson.dumps({"signal_id": f"{tag}-{i}", "symbol": KEYS[i % len(KEYS)],
                          "features": {"f0": 0.1 * (i % 7)}}),
        )
        for i in range(n)
    ]  # fmt: skip
    for j in range(bad):
        msgs.insert(j * n // max(bad, 1), (b"BTCUSDT", b"{not json"))
    t0 = time.monotonic()
    sender.send(sig_t, msgs)

    def answered(c: Collector) -> bool:
        return ids <= {r.json()["signal_id"] for r in c.records(pred_t)}

    assert collector.wait(answered, 60), f"not all {n} signals of {tag} were answered"
    return time.monotonic() - t0


def _said(client: Any, stream: str, text: str) -> int:
    """How many log entries of the stream contain ``text``."""
    return sum(text in e.get("message", "") for e in _entries(client, stream))


def test_a_redis_outage_slows_no_prediction_and_records_flow_again_after_it(
    settings: Settings, settings_env: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    env = _env(
        settings_env,
        redis_server,
        ALPHAPULSE_REDIS_SNAPSHOT_S="0.2",
        ALPHAPULSE_REDIS_QUEUE_SIZE="20",
    )
    stream, port = env["ALPHAPULSE_REDIS_STREAM"], env["ALPHAPULSE_WEB_PORT"]
    client = redis_client(redis_server.url, 5.0)
    sig_t, pred_t = settings.topic("signals"), settings.topic("predictions")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        with (
            Sender(settings.bootstrap_servers) as sender,
            Collector(settings.bootstrap_servers, [pred_t]) as collector,
        ):
            first = probe(sender, collector, sig_t, pred_t, "BTCUSDT", timeout=120)
            assert first is not None, worker.log_tail()
            _burst(sender, collector, sig_t, pred_t, 100)  # warm-up
            before = _burst(sender, collector, sig_t, pred_t, 300)
            assert _dropped(port) == 0

            # A hung Redis: each attempt waits for its timeout, off the hot path.
            redis_server.freeze()
            try:
                hung = _burst(sender, collector, sig_t, pred_t, 300, bad=10)
                # Snapshots every 0.2 s fill the queue of 20 within seconds; then it overflows.
                assert wait_until(lambda: _dropped(port) > 0, 30), worker.log_tail()
                hung = max(hung, _burst(sender, collector, sig_t, pred_t, 300, bad=10))
            finally:
                redis_server.thaw()
            assert wait_until(lambda: _said(client, stream, "reachable again") == 1, 60)

            # A stopped Redis: connections are refused.
            redis_server.down()
            dropped = _dropped(port)
            stopped = _burst(sender, collector, sig_t, pred_t, 300, bad=10)
            assert wait_until(lambda: _dropped(port) > dropped, 30), worker.log_tail()
            stopped = max(stopped, _burst(sender, collector, sig_t, pred_t, 300, bad=10))
            assert max(hung, stopped) <= 3 * before + 2.0, (before, hung, stopped)
            assert worker.alive(), worker.log_tail()

            redis_server.up()  # the same port, empty: no persistence
            t = time.time()

            def flowing() -> bool:
                entries = _entries(client, stream)
                said = " ".join(e.get("message", "") for e in entries)
                back = "unavailable" in said and "reachable again" in said  # both outage lines
                fresh = [e for e in entries if e["kind"] == "snapshot" and _epoch(e["time"]) > t]
                return back and len(fresh) >= 3

            assert wait_until(flowing, 60), _entries(client, stream)[-20:]
            assert probe(sender, collector, sig_t, pred_t, "ETHUSDT", timeout=30)
    finally:
        worker.stop(timeout=15)
    records = [orjson.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines()]
    sink = [r for r in records if r["logger"] == "alphapulse._logsink"]
    outages = [r for r in sink if "unavailable" in r["message"]]
    assert len(outages) == 2, sink  # one line per outage, not one per record
    assert all(r["level"] == "WARNING" for r in outages)
    assert "TimeoutError" in outages[0]["message"] and "ConnectionError" in outages[1]["message"]
    assert sum("reachable again" in r["message"] for r in sink) == 2, sink
