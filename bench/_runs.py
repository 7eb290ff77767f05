"""What the end-to-end benchmarks share: a broker, fresh topics, answerer processes, the
latency run and the medians over rounds (:mod:`bench.e2e`, :mod:`bench.cpu_budget`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from alphapulse._procs import stop_process_group
from bench._common import trade_messages
from models.roles import CADENCES
from stream.broker import LocalKafka
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import free_port, free_port_block

PARTITIONS = 4
"""Partitions of the topics :func:`create_topics` makes."""


async def create_topics(bootstrap: str, names: list[str]) -> None:
    """Create those of ``names`` that do not exist yet, with :data:`PARTITIONS` each."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, PARTITIONS, 1) for n in names if n not in existing]
        if new:
            await admin.create_topics(new)
        await asyncio.sleep(1.0)
    finally:
        await admin.close()


async def fill(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]]) -> None:
    """Produce the keyed ``msgs`` to ``topic`` and wait until all are written."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    try:
        futs = [await producer.send(topic, v, key=k) for k, v in msgs]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """This Python with ``args`` in ``env``, in a session of its own, its output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def worker_env(bootstrap: str, prefix: str, work: Path) -> dict[str, str]:
    """This process's environment with a worker's settings for ``prefix``'s topics."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ALPHAPULSE_TOPIC_PREFIX": prefix,
        "ALPHAPULSE_APP_ID": f"bench-{uuid.uuid4().hex[:6]}",
        "ALPHAPULSE_DATA_DIR": str(work / uuid.uuid4().hex[:6]),
        "ALPHAPULSE_WEB_PORT": str(free_port()),
        "ALPHAPULSE_COMMIT_INTERVAL_S": "0.5",
        # The side workers that open MLflow are off: the figures are the hot path's, and each
        # round's new SQLite store ran its migrations at start, 1.7 s of CPU beside the agents.
        "ALPHAPULSE_RELOAD_INTERVAL_S": "0",
        **{f"ALPHAPULSE_RETRAIN_{cadence.upper()}_AT": "off" for cadence in CADENCES},
        "ALPHAPULSE_LOG_LEVEL": "WARNING",
    }


async def receive_predictions(
    consumer: AIOKafkaConsumer, sent: dict[str, float], lat: list[float]
) -> None:
    """Until cancelled: for each prediction of a signal in ``sent`` (its send time), append to
    ``lat`` the milliseconds since it was sent."""
    while True:
        batch = await consumer.getmany(timeout_ms=100)
        now = time.perf_counter()
        for records in batch.values():
            for r in records:
                t = sent.pop(orjson.loads(r.value)["signal_id"], None)
                if t is not None:
                    lat.append((now - t) * 1000)


async def measure_latency(
    bootstrap: str, s: Settings, rate: int, duration: float, lead_in: float = 0.0
) -> list[float]:
    """Latencies of the signals sent in ``duration`` s at ``rate`` signals/s plus as many
    outcomes/s, after ``lead_in`` s of the same load whose signals are not measured."""
    unmeasured = int(rate * lead_in)
    n = unmeasured + int(rate * duration)
    sig = trade_messages(n, "signals")
    outs = trade_messages(n, "outcomes")
    ids = [orjson.loads(v)["signal_id"] for _, v in sig]
    consumer = AIOKafkaConsumer(
        s.topic("predictions"),
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        group_id=None,
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    sent: dict[str, float] = {}
    lat: list[float] = []

    task = asyncio.create_task(receive_predictions(consumer, sent, lat))
    await asyncio.sleep(2.0)
    start = time.perf_counter()
    for i, ((k, v), (ko, vo)) in enumerate(zip(sig, outs, strict=True)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if i >= unmeasured:
            sent[ids[i]] = time.perf_counter()
        await producer.send(s.topic("signals"), v, key=k)
        await producer.send(s.topic("outcomes"), vo, key=ko)
    await asyncio.sleep(5.0)
    task.cancel()
    await producer.stop()
    await consumer.stop()
    return lat


def fresh_topics(bootstrap: str, prefix: str, work: Path) -> tuple[dict[str, str], Settings]:
    """A worker environment with its own topics (created) under ``prefix``, and its settings."""
    env = worker_env(bootstrap, prefix, work)
    s = Settings(
        _env_file=None,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,  # type: ignore[call-arg]
        topic_prefix=prefix,
    )
    asyncio.run(ensure_topics(s))
    return env, s


WORKER_CMD = ["-m", "alphapulse.cli", "worker"]
"""The worker's command line after the Python executable."""

ANSWERERS = {
    "floor": ("bench._noop",),
    "river": ("bench._noop", "--river"),
    "echo": ("bench._echo",),
}
"""Module and options of each answerer other than the worker."""


def answerer_cmd(
    bootstrap: str, env: dict[str, str], s: Settings, kind: str, *extra: str
) -> list[str]:
    """Answerer ``kind`` (see :data:`ANSWERERS`) for the signals of ``s`` in ``env``'s group,
    with the options of its kind and then ``extra``."""
    module, *options = ANSWERERS[kind]
    topics = [s.topic("signals"), env["ALPHAPULSE_APP_ID"], s.topic("outcomes")]
    return ["-m", module, bootstrap, *topics, s.topic("predictions"), *options, *extra]


Figures = dict[str, float]
"""One round's figures by JSON name."""


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of process ``pid`` (all its threads), None when unknown.

    >>> cpu_seconds(os.getpid()) >= 0.0
    True
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def answer_latencies(
    bootstrap: str,
    args: argparse.Namespace,
    work: Path,
    prefix: str,
    name: str,
    kind: str,
    *options: str,
) -> tuple[list[float], float | None]:
    """The latencies (ms) of one answerer on fresh topics under ``prefix``, at ``args.rate``
    for ``args.duration`` s after ``args.lead_in`` s, and the CPU seconds it used meanwhile
    (None when unknown). ``kind`` is ``"worker"`` or one of :data:`ANSWERERS`, run with
    ``options``; its log is ``work / f"{name}-lat.log"``."""
    env, s = fresh_topics(bootstrap, prefix, work)
    log = work / f"{name}-lat.log"
    cmd = WORKER_CMD if kind == "worker" else answerer_cmd(bootstrap, env, s, kind, *options)
    proc = spawn(cmd, env, log)
    try:
        time.sleep(12)  # join the group before the clock starts
        before = cpu_seconds(proc.pid)
        lat = asyncio.run(measure_latency(bootstrap, s, args.rate, args.duration, args.lead_in))
        after = cpu_seconds(proc.pid)
    finally:
        stop_process_group(proc)
    if not lat:
        raise RuntimeError(f"no predictions received; see {log}")
    cpu = None if before is None or after is None else round(after - before, 2)
    return lat, cpu


@contextlib.contextmanager
def kafka_for(work: Path) -> Iterator[str]:
    """The bootstrap servers of ``KAFKA_BOOTSTRAP_SERVERS`` when set, else of a local broker
    started under ``work`` on free ports and stopped on leaving."""
    bootstrap = Settings().kafka_bootstrap_servers  # an existing cluster, if configured
    if bootstrap:
        yield bootstrap
        return
    kafka = LocalKafka(work / "kafka", Settings().cache_dir, base_port=free_port_block(2))
    kafka.up(progress=lambda m: print(m, file=sys.stderr))
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.down(progress=lambda m: None)


_BASELINES = {
    "_vs_noop_throughput": "noop_events_per_s",
    "predictor_vs_floor_throughput": "floor_events_per_s",
    "p99_vs_floor": "floor_signal_to_prediction_p99_ms",
    "p99_vs_echo": "echo_signal_to_prediction_p99_ms",
}
"""The figure each ratio divides by (a suffix or a whole name)."""


def _unit(name: str) -> str:
    """The unit of the figure ``name``, from its suffix.

    >>> [_unit(n) for n in ("a_p99_ms", "noop_events_per_s", "worker_cpu_s", "p99_vs_echo")]
    ['ms', 'events/s', 's', 'ratio']
    """
    if name.endswith("_ms"):
        return "ms"
    if name.endswith("_per_s"):
        return "events/s"
    if name.endswith("_s"):
        return "s"
    return "ratio"


def summarise(rounds: list[Figures]) -> list[tuple[str, float, str, dict[str, float]]]:
    """Each figure's median over the rounds, with its spread (lowest, highest) and, for a ratio,
    the median of its baseline. Ratios are taken within each round, then their median.

    >>> rows = summarise([{"noop_events_per_s": 10.0, "learner_vs_noop_throughput": 0.5},
    ...                   {"noop_events_per_s": 14.0, "learner_vs_noop_throughput": 0.7},
    ...                   {"noop_events_per_s": 12.0, "learner_vs_noop_throughput": 0.4}])
    >>> name, value, unit, extra = rows[1]
    >>> name, value, unit
    ('learner_vs_noop_throughput', 0.5, 'ratio')
    >>> extra
    {'low': 0.4, 'high': 0.7, 'rounds': 3, 'baseline': 12.0}
    """
    out = []
    for name in rounds[0]:
        values = [r[name] for r in rounds if name in r]
        extra: dict[str, float] = {
            "low": round(min(values), 4),
            "high": round(max(values), 4),
            "rounds": len(values),
        }
        base = next((b for k, b in _BASELINES.items() if name.endswith(k)), None)
        if base is not None and base in rounds[0]:
            extra["baseline"] = round(float(np.median([r[base] for r in rounds])), 4)
        elif name == "signal_to_prediction_p99_ms":
            extra["baseline"] = 50.0  # the goal, as before
        out.append((name, float(np.median(values)), _unit(name), extra))
    return out


def progress(message: str) -> None:
    """Say ``message`` on stderr, where it does not mix with the figures."""
    print(message, file=sys.stderr, flush=True)


def latency_arguments(p: argparse.ArgumentParser) -> None:
    """Add the options of a latency run: ``--json``, ``--rate``, ``--duration``, ``--lead-in``."""
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--rate", type=int, default=1000, help="signals/s (and outcomes/s) for latency")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of the latency run")
    p.add_argument(
        "--lead-in", type=float, default=3.0, help="unmeasured seconds of load before each"
    )
