"""Soak benchmark: signals and outcomes at a fixed rate for minutes against one worker process.

``python -m bench.soak --json [--rate 500] [--duration 420]`` starts a local broker on free ports
(or uses ``KAFKA_BOOTSTRAP_SERVERS``), one ``alphapulse worker`` subprocess, and sends ``--rate``
signals per second for ``--duration`` seconds, and an outcome for each (``--outcome-share``
of them) about two seconds after its signal: half of the outcomes carry their features, half are
joined to their signal by the worker. It prints JSON lines
``{"name", "value", "unit"}``:

- ``signals_sent_per_s``, ``outcomes_sent_per_s``, ``predictions_per_s``: achieved rates;
- ``answered_share``: predictions received over signals sent, after draining;
- ``signal_to_prediction_p50_ms`` / ``_p95_ms`` / ``_p99_ms`` / ``_max_ms``: from handing a signal
  to the producer to consuming its prediction; ``signal_to_prediction_p50_ms_window`` the median
  per sample window (with ``t_s``); ``record_time_to_predicted_at_p50_ms`` / ``_p99_ms`` the part
  spent before the worker made the prediction (its ``predicted_at`` minus the record time);
- ``consumer_lag_max`` and ``consumer_lag_end``: records of signals and outcomes not yet committed
  by the worker's group, the largest seen while sending and the one when sending stopped, and
  ``drain_s``, the time to then reach zero;
- ``worker_rss_mb``: one line per sample (with ``t_s``), from ``VmRSS`` in ``/proc/<pid>/status``;
- ``worker_rss_slope_mb_per_min``: slope of a linear fit of RSS over the second half of the run.
  The process exits with status 2 when it is above ``--max-slope`` (memory is not flat).

The worker's state is bounded by configuration: the join store by ``ALPHAPULSE_JOIN_WINDOW_S`` and
``ALPHAPULSE_JOIN_MAX_ENTRIES``, the remembered outcome ids by ``ALPHAPULSE_MAX_SEEN_IDS``. Unless
the environment sets them, the soak uses a 60 s window and 20,000 ids per partition, so that these
bounds are reached within a few minutes and the slope shows whether anything else grows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from alphapulse._procs import stop_process_group
from bench._common import emit, work_dir
from stream.broker import LocalKafka
from stream.kafka import client_kwargs
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import free_port, free_port_block, rss_mb

KEYS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOTUSDT", "BNBUSDT", "LTCUSDT")
N_FEATURES = 10


class Soak:
    """One soak run: traffic, measurements and the worker process."""

    def __init__(self, settings: Settings, rate: float, duration: float, sample_s: float) -> None:
        self.s = settings
        self.rate = rate
        self.outcome_share = 1.0
        self.duration = duration
        self.sample_s = sample_s
        self.pending: dict[str, int] = {}  # signal id -> send time (ns), until answered
        self.latencies_ms: list[float] = []
        self.worker_ms: list[float] = []
        self.received_at: list[float] = []
        self.predictions = 0
        self.deadletters = 0
        self.sent_signals = 0
        self.sent_outcomes = 0
        self.lag_samples: list[tuple[float, int]] = []
        self.rss: list[tuple[float, float]] = []
        self.stop = asyncio.Event()
        self.t0 = 0.0
        self.rng = random.Random(7)

    def _signal(self, n: int) -> tuple[bytes, bytes, str, dict[str, float]]:
        key = KEYS[n % len(KEYS)]
        feats = {f"f{i}": round(self.rng.gauss(0.0, 1.0), 5) for i in range(N_FEATURES)}
        sid = f"sk-{n}"
        doc = {"signal_id": sid, "symbol": key, "features": feats}
        return key.encode(), orjson.dumps(doc), sid, feats

    def _outcome(self, n: int, sid: str, key: str, feats: dict[str, float]) -> bytes:
        doc: dict[str, Any] = {
            "outcome_id": f"ok-{n}",
            "signal_id": sid,
            "symbol": key,
            "label": feats["f0"] + 0.5 * self.rng.gauss(0.0, 1.0) > 0,
            "realized_rr": round(self.rng.uniform(-1.0, 2.0), 3),
        }
        if n % 2 == 0:
            doc["features"] = feats  # the other half is joined to its signal by the worker
        return orjson.dumps(doc)

    async def produce(self, producer: AIOKafkaProducer) -> None:
        sig_t, out_t = self.s.topic("signals"), self.s.topic("outcomes")
        recent: list[tuple[str, str, dict[str, float]]] = []  # signals whose outcome is due
        t0 = time.monotonic()
        n = 0
        while (elapsed := time.monotonic() - t0) < self.duration:
            due = int(self.rate * elapsed)
            while n < due:
                key, value, sid, feats = self._signal(n)
                self.pending[sid] = time.perf_counter_ns()
                await producer.send(sig_t, value, key=key)
                if self.rng.random() < self.outcome_share:
                    recent.append((sid, key.decode(), feats))
                # Each outcome follows its signal by about two seconds.
                if len(recent) > 2 * self.rate * self.outcome_share:
                    osid, okey, ofeats = recent.pop(0)
                    await producer.send(
                        out_t, self._outcome(n, osid, okey, ofeats), key=okey.encode()
                    )
                    self.sent_outcomes += 1
                n += 1
                self.sent_signals += 1
            await asyncio.sleep(0.01)
        for i, (osid, okey, ofeats) in enumerate(recent):  # the outcomes still due
            await producer.send(out_t, self._outcome(n + i, osid, okey, ofeats), key=okey.encode())
            self.sent_outcomes += 1
        await producer.flush()

    async def collect(self, consumer: AIOKafkaConsumer) -> None:
        preds, dead = self.s.topic("predictions"), self.s.topic("deadletter")
        while not self.stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.perf_counter_ns()
            for tp, records in batch.items():
                if tp.topic == dead:
                    self.deadletters += len(records)
                    continue
                if tp.topic != preds:
                    continue
                for r in records:
                    self.predictions += 1
                    doc = orjson.loads(r.value)
                    sent = self.pending.pop(doc["signal_id"], None)
                    if sent is not None:
                        self.latencies_ms.append((now - sent) / 1e6)
                        # In the worker: from the signal's record time to the prediction.
                        self.worker_ms.append(float(doc["predicted_at"] - doc["ts"]))
                        self.received_at.append(time.monotonic())

    async def lag(self, admin: AIOKafkaAdminClient, ends: AIOKafkaConsumer) -> int:
        tps = [
            TopicPartition(self.s.topic(t), p)
            for t in ("signals", "outcomes")
            for p in range(self.s.topic_partitions)
        ]
        committed = await admin.list_consumer_group_offsets(self.s.app_id, partitions=tps)
        end = await ends.end_offsets(tps)
        total = 0
        for tp in tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            total += max(0, end[tp] - done)
        return total

    async def sample(
        self, pid: int, admin: AIOKafkaAdminClient, ends: AIOKafkaConsumer, t0: float
    ) -> None:
        while not self.stop.is_set():
            t = time.monotonic() - t0
            rss = rss_mb(pid)
            if rss is not None:
                self.rss.append((t, rss))
            self.lag_samples.append((t, await self.lag(admin, ends)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.sample_s)


async def _wait_answering(soak: Soak, producer: AIOKafkaProducer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sid = f"warmup-{uuid.uuid4().hex[:8]}"
        soak.pending[sid] = time.perf_counter_ns()
        doc = {"signal_id": sid, "symbol": KEYS[0], "features": {"f0": 0.0}}
        await producer.send_and_wait(
            soak.s.topic("signals"), orjson.dumps(doc), key=KEYS[0].encode()
        )
        for _ in range(20):
            await asyncio.sleep(0.25)
            if sid not in soak.pending:
                return
    raise RuntimeError(f"the worker did not answer within {timeout:.0f}s")


async def run(soak: Soak, worker: subprocess.Popen[bytes], json_out: bool) -> dict[str, float]:
    kw = client_kwargs(soak.s)
    producer = AIOKafkaProducer(**kw, acks=1, linger_ms=5, max_batch_size=256 * 1024)
    consumer = AIOKafkaConsumer(
        soak.s.topic("predictions"), soak.s.topic("deadletter"), **kw, group_id=None
    )
    ends = AIOKafkaConsumer(**kw, group_id=None)
    admin = AIOKafkaAdminClient(**kw)
    for client in (producer, consumer, ends, admin):
        await client.start()
    try:
        collector = asyncio.create_task(soak.collect(consumer))
        await _wait_answering(soak, producer, 180)
        soak.latencies_ms.clear()
        soak.worker_ms.clear()
        soak.received_at.clear()
        soak.predictions = 0
        t0 = time.monotonic()
        soak.t0 = t0
        sampler = asyncio.create_task(soak.sample(worker.pid, admin, ends, t0))
        await soak.produce(producer)
        sent_s = time.monotonic() - t0
        lag_end = await soak.lag(admin, ends)
        drain_start = time.monotonic()
        while time.monotonic() - drain_start < 120:
            if not soak.pending and await soak.lag(admin, ends) == 0:
                break
            await asyncio.sleep(0.5)
        drain_s = time.monotonic() - drain_start
        soak.stop.set()
        await asyncio.gather(collector, sampler)
    finally:
        for client in (producer, consumer, ends):
            await client.stop()
        await admin.close()
    return {"sent_s": sent_s, "lag_end": lag_end, "drain_s": drain_s}


def _report(soak: Soak, res: dict[str, float], json_out: bool, max_slope: float) -> int:
    sent_s = res["sent_s"]
    emit("duration", sent_s, "s", json_out)
    emit("signals_sent_per_s", soak.sent_signals / sent_s, "1/s", json_out)
    emit("outcomes_sent_per_s", soak.sent_outcomes / sent_s, "1/s", json_out)
    emit("predictions_per_s", soak.predictions / (sent_s + res["drain_s"]), "1/s", json_out)
    emit("answered_share", soak.predictions / max(1, soak.sent_signals), "ratio", json_out)
    emit("deadletters", soak.deadletters, "count", json_out)
    lat = np.asarray(soak.latencies_ms or [float("nan")])
    for q in (50, 95, 99):
        emit(f"signal_to_prediction_p{q}_ms", float(np.percentile(lat, q)), "ms", json_out)
    emit("signal_to_prediction_max_ms", float(lat.max()), "ms", json_out)
    inside = np.asarray(soak.worker_ms or [float("nan")])
    for q in (50, 99):
        emit(
            f"record_time_to_predicted_at_p{q}_ms", float(np.percentile(inside, q)), "ms", json_out
        )
    # The latency's course over the run, per window of --sample seconds.
    if soak.latencies_ms:
        at = np.asarray(soak.received_at) - soak.t0
        for start in np.arange(0.0, float(at.max()) + 1e-9, soak.sample_s):
            window = lat[(at >= start) & (at < start + soak.sample_s)]
            if window.size:
                emit(
                    "signal_to_prediction_p50_ms_window",
                    float(np.percentile(window, 50)),
                    "ms",
                    json_out,
                    t_s=round(float(start), 1),
                )
    emit("consumer_lag_max", max((v for _, v in soak.lag_samples), default=0), "records", json_out)
    emit("consumer_lag_end", res["lag_end"], "records", json_out)
    emit("drain_s", res["drain_s"], "s", json_out)
    for t, mb in soak.rss:
        emit("worker_rss_mb", mb, "MB", json_out, t_s=round(t, 1))
    slope = float("nan")
    half = [(t, mb) for t, mb in soak.rss if t >= sent_s / 2]
    if len(half) >= 3:
        ts, mbs = np.array(half).T
        slope = float(np.polyfit(ts / 60.0, mbs, 1)[0])
    emit("worker_rss_slope_mb_per_min", slope, "MB/min", json_out, max_allowed=max_slope)
    return 0 if slope <= max_slope else 2


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--rate", type=float, default=500.0, help="signals/s and outcomes/s")
    parser.add_argument(
        "--outcome-share", type=float, default=1.0, help="outcomes per signal, 0..1 (default 1)"
    )
    # The soak's own id bound (20,000 per partition, 125 outcomes/s each at the default rate) is
    # reached after about 160 s; the slope is fitted over the second half, which must come after.
    parser.add_argument("--duration", type=float, default=420.0, help="seconds of traffic")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--max-slope", type=float, default=1.0, help="largest flat RSS slope, MB/min"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the logs and state of a good run too"
    )
    args = parser.parse_args(argv)

    with work_dir("alphapulse-soak-", keep=args.keep) as work:
        kafka: LocalKafka | None = None
        bootstrap = Settings().kafka_bootstrap_servers  # an existing cluster, if configured
        if not bootstrap:
            cache = Settings().cache_dir
            kafka = LocalKafka(
                state_dir=work / "kafka", cache_dir=cache, base_port=free_port_block(2), heap="768m"
            )
            kafka.up(progress=lambda m: print(m, file=sys.stderr))
            bootstrap = kafka.bootstrap_servers
        run_id = uuid.uuid4().hex[:8]
        env = {
            # Bounded state fills within the run, so the slope shows whether anything else grows.
            "ALPHAPULSE_JOIN_WINDOW_S": "60",
            "ALPHAPULSE_MAX_SEEN_IDS": "20000",
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ALPHAPULSE_TOPIC_PREFIX": f"soak{run_id}.",
            "ALPHAPULSE_APP_ID": f"alphapulse-soak-{run_id}",
            "ALPHAPULSE_DATA_DIR": str(work / "data"),
            "ALPHAPULSE_WEB_PORT": str(free_port()),
            "ALPHAPULSE_RELOAD_INTERVAL_S": "0",
            "ALPHAPULSE_LOG_LEVEL": "WARNING",
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith(("ALPHAPULSE_", "KAFKA_"))})
        settings = Settings()
        asyncio.run(ensure_topics(settings))
        log = (work / "worker.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "alphapulse.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        status = 1
        try:
            soak = Soak(settings, args.rate, args.duration, args.sample)
            soak.outcome_share = args.outcome_share
            res = asyncio.run(run(soak, worker, args.json))
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}; see {log.name}")
            status = _report(soak, res, args.json, args.max_slope)
        finally:
            stop_process_group(worker)
            log.close()
            if kafka is not None:
                kafka.down(progress=lambda m: print(m, file=sys.stderr))
        sys.exit(status)


if __name__ == "__main__":
    main()
