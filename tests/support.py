"""Helpers for integration tests: free ports, worker processes, plain Kafka clients.

The Kafka side uses plain aiokafka clients, never project code, so tests see the wire exactly as
a user's trading system would.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = [
    "Worker",
    "consume_until",
    "free_port",
    "free_port_block",
    "produce",
]


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_block(n: int) -> int:
    """First port of ``n`` consecutive free loopback ports, below the ephemeral port range.

    Below it, because a server that is stopped and started again on the same port (a fault test)
    must find that port still free: a client that keeps reconnecting to a port inside the
    ephemeral range can be handed that very port as its own source port (a TCP self-connect),
    which then holds it.
    """
    top = min(40000, _ephemeral_low()) - n
    for _ in range(200):
        base = random.randrange(20000, max(20002, top), 2)
        if all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no block of {n} free ports found")


async def produce(
    bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes]]
) -> None:
    """Send ``(key, value)`` pairs with a plain aiokafka producer and wait for each ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def consume_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Any]], bool],
    timeout: float = 60.0,
    decode: bool = True,
) -> list[Any]:
    """Read ``topic`` from the beginning with a plain consumer until ``done(records)`` or timeout.

    Records are ``(key, value)`` with the value decoded as JSON when ``decode``.
    """
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(out):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    out.append((r.key, orjson.loads(r.value) if decode else r.value))
    finally:
        await consumer.stop()
    return out


class Worker:
    """``alphapulse worker`` as a child process with the given environment."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        """Start the worker process (returns at once)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "alphapulse.cli", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if not self.alive():
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP the worker's process group: it halts unaware (a long GC, a stalled VM)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the worker's process group after :meth:`pause`."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def log_text(self) -> str:
        """The worker's whole log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        """Last lines of the worker's log, for assertion messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def run(coro: Any) -> Any:
    """Run a coroutine to completion in a fresh event loop."""
    return asyncio.run(coro)


# ----- helpers for the fault, fuzz, soak-style and security tests ---------------------------------


def worker_env(bootstrap: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A worker environment isolated to one test (own topics, group, data dir and web port).

    Like the ``settings_env`` fixture, but for a broker the test starts itself.
    """
    import uuid

    run = uuid.uuid4().hex[:10]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ALPHAPULSE_TOPIC_PREFIX": f"t{run}.",
        "ALPHAPULSE_APP_ID": f"alphapulse-test-{run}",
        "ALPHAPULSE_DATA_DIR": str(tmp_path / f"data-{run}"),
        "ALPHAPULSE_WEB_PORT": str(free_port()),
        "ALPHAPULSE_TOPIC_PARTITIONS": "4",
        # No training jobs unless a test asks for them: they would compete for the CPU.
        "ALPHAPULSE_RETRAIN_NIGHTLY_INCREMENTAL_AT": "off",
        "ALPHAPULSE_RETRAIN_WEEKLY_QUICK_AT": "off",
        "ALPHAPULSE_RETRAIN_MONTHLY_FULL_AT": "off",
        "ALPHAPULSE_RETRAIN_ON_DRIFT": "false",
    }
    cache = os.environ.get("ALPHAPULSE_CACHE_DIR")
    if cache:
        env["ALPHAPULSE_CACHE_DIR"] = cache
    env.update(extra)
    return env


def train_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run ``alphapulse train ARGS --json`` in a child process; return its JSON summary."""
    res = subprocess.run(
        [sys.executable, "-m", "alphapulse.cli", "train", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    summary: dict[str, Any] = orjson.loads(res.stdout.strip().splitlines()[-1])
    return summary


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def wait_until(cond: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds have passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


class Record:
    """One record read back by :class:`Collector` (value kept as raw bytes)."""

    __slots__ = ("key", "offset", "partition", "received", "topic", "value")

    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.received = time.monotonic()

    def json(self) -> Any:
        """The value decoded as JSON."""
        return orjson.loads(self.value or b"null")


class Collector:
    """Reads ``topics`` from the beginning in a background thread, with a plain aiokafka consumer.

    The consumer reconnects by itself when brokers go away and come back, so a collector keeps
    reading through broker faults. ``client`` holds extra aiokafka options (e.g. SASL).
    """

    def __init__(self, bootstrap: str, topics: Iterable[str], **client: Any) -> None:
        import threading

        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.client = client
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def __enter__(self) -> Collector:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError(f"collector could not start on {self.bootstrap}: {self._error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._consume())
        except BaseException as exc:  # reported through records() and __enter__
            self._error = exc
            self._ready.set()

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            metadata_max_age_ms=2000,
            **self.client,
        )
        await consumer.start()
        self._ready.set()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                got = [
                    Record(r.topic, r.partition, r.offset, r.key, r.value)
                    for records in batch.values()
                    for r in records
                ]
                if got:
                    with self._lock:
                        self._records.extend(got)
        finally:
            await consumer.stop()

    def records(self, topic: str | None = None) -> list[Record]:
        """A copy of the records read so far (of one topic, or all)."""
        if self._error is not None:
            raise RuntimeError(f"collector failed: {self._error!r}") from self._error
        with self._lock:
            return [r for r in self._records if topic is None or r.topic == topic]

    def wait(self, cond: Callable[[Collector], bool], timeout: float) -> bool:
        """Wait until ``cond(self)`` is true; returns whether it became true."""
        return wait_until(lambda: cond(self), timeout)


class Sender:
    """A plain aiokafka producer in a background thread, usable from synchronous test code.

    ``send`` retries a message until the cluster acknowledges it (``acks=all``), so a sender keeps
    going through broker faults; it returns ``(partition, offset)`` of each message. A retry after
    an unclear failure may write a message twice (aiokafka's idempotent producer does not survive
    a broker restart: it fails with ``OutOfOrderSequenceNumber``), so tests count by unique ids.
    """

    def __init__(self, bootstrap: str, **client: Any) -> None:
        import threading

        self.bootstrap = bootstrap
        self.client = client
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sender", daemon=True)
        self._producer: AIOKafkaProducer | None = None
        self.retries = 0

    def __enter__(self) -> Sender:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._stop(), timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            max_request_size=4 * 1024 * 1024,
            request_timeout_ms=10_000,
            metadata_max_age_ms=2000,
            **self.client,
        )
        await self._producer.start()

    async def _stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def _send_all(
        self, topic: str, messages: list[tuple[bytes | None, bytes]], give_up: float
    ) -> list[tuple[int, int]]:
        from aiokafka.errors import KafkaError

        assert self._producer is not None
        out: list[tuple[int, int] | None] = [None] * len(messages)
        todo = list(range(len(messages)))
        deadline = time.monotonic() + give_up
        while todo:
            futures = []
            try:
                for i in todo:
                    key, value = messages[i]
                    futures.append((i, await self._producer.send(topic, value, key=key)))
            except KafkaError:
                pass  # the ones queued so far are awaited below, the rest are sent again
            queued = {j for j, _ in futures}
            failed = [i for i in todo if i not in queued]
            for i, fut in futures:
                try:
                    md = await fut
                    out[i] = (md.partition, md.offset)
                except KafkaError:
                    failed.append(i)
            todo = sorted(failed)
            if todo:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(todo)} messages to {topic} not acknowledged")
                self.retries += len(todo)
                await asyncio.sleep(0.5)
        return [o for o in out if o is not None]

    def send(
        self, topic: str, messages: Iterable[tuple[bytes | None, bytes]], give_up: float = 120.0
    ) -> list[tuple[int, int]]:
        """Send each ``(key, value)`` in order, wait for its ack; ``(partition, offset)`` each."""
        return list(self._call(self._send_all(topic, list(messages), give_up)))


KEYS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
PROBE = {"f0": 0.3, "f1": -1.2, "f2": 0.7, "f3": 0.0, "f4": 2.0}


class Traffic:
    """Signals and outcomes (with features) at ``rate`` per second each, sent from a thread.

    Model keys cycle through :data:`KEYS`. Every signal and outcome id is unique; a share
    ``resend`` of the outcomes is sent a second time, byte-identical (a duplicate to dead-letter).
    """

    def __init__(
        self,
        sender: Sender,
        signals_topic: str,
        outcomes_topic: str,
        rate: float = 40.0,
        seed: int = 0,
        resend: float = 0.03,
        tick: float = 0.5,
    ) -> None:
        import threading

        self.sender = sender
        self.signals_topic = signals_topic
        self.outcomes_topic = outcomes_topic
        self.rate = rate
        self.seed = seed
        self.resend = resend
        self.tick = tick
        self.signals: list[str] = []
        self.outcomes: dict[str, str] = {}
        """outcome id -> model key, of every distinct outcome sent."""
        self.resent = 0
        self.stalls: list[float] = []
        """Seconds spent by each tick that took over a second (waiting for the cluster)."""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> Traffic:
        """Start sending in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending; returns once the last message was acknowledged."""
        self._stop.set()
        self._thread.join(300)

    def _run(self) -> None:
        rng = random.Random(self.seed)
        per_tick = max(1, round(self.rate * self.tick))
        n = 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            sigs: list[tuple[bytes | None, bytes]] = []
            outs: list[tuple[bytes | None, bytes]] = []
            sids: list[str] = []
            oids: dict[str, str] = {}
            for _ in range(per_tick):
                n += 1
                key = KEYS[n % len(KEYS)]
                feats = {f"f{i}": round(rng.gauss(0, 1), 6) for i in range(5)}
                sid = f"s-{self.seed}-{n}"
                sig = {"signal_id": sid, "symbol": key, "features": feats}
                sigs.append((key.encode(), orjson.dumps(sig)))
                sids.append(sid)
                oid = f"o-{self.seed}-{n}"
                doc = {
                    "outcome_id": oid,
                    "signal_id": sid,
                    "symbol": key,
                    "label": feats["f0"] + 0.5 * rng.gauss(0, 1) > 0,
                    "realized_rr": round(rng.uniform(-1, 2), 3),
                    "features": feats,
                    "ts": time.time_ns() // 1_000_000,
                }
                outs.append((key.encode(), orjson.dumps(doc)))
                oids[oid] = key
                if rng.random() < self.resend:
                    outs.append(outs[-1])
                    self.resent += 1
            self.sender.send(self.signals_topic, sigs, give_up=300)
            self.sender.send(self.outcomes_topic, outs, give_up=300)
            with self._lock:
                self.signals.extend(sids)
                self.outcomes.update(oids)
            spent = time.monotonic() - t0
            if spent > 1.0:
                self.stalls.append(spent)
            time.sleep(max(0.0, self.tick - spent))

    def expected(self) -> tuple[list[str], dict[str, int]]:
        """Signal ids sent so far, and the number of distinct outcomes sent per model key."""
        from collections import Counter

        with self._lock:
            return list(self.signals), dict(Counter(self.outcomes.values()))


def probe(
    sender: Sender,
    collector: Collector,
    signals_topic: str,
    predictions_topic: str,
    key: str,
    features: dict[str, float] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any] | None:
    """Send one signal for ``key`` (default :data:`PROBE` features); its prediction, or None."""
    import uuid

    sid = f"probe-{key}-{uuid.uuid4().hex[:12]}"
    doc = {"signal_id": sid, "symbol": key, "features": features or PROBE}
    sender.send(signals_topic, [(key.encode(), orjson.dumps(doc))])
    found: list[dict[str, Any]] = []

    def answered(c: Collector) -> bool:
        found[:] = [
            d for d in (r.json() for r in c.records(predictions_topic)) if d["signal_id"] == sid
        ]
        return bool(found)

    collector.wait(answered, timeout)
    return found[0] if found else None


def learned_counts(
    sender: Sender,
    collector: Collector,
    signals_topic: str,
    predictions_topic: str,
    expected: dict[str, int],
    timeout: float = 120.0,
) -> dict[str, int]:
    """``model_versions.online`` per key, probed until it equals ``expected`` or time runs out.

    A key whose probe goes unanswered reads -1.
    """
    deadline = time.monotonic() + timeout
    got: dict[str, int] = {}
    while True:
        for key in expected:
            if got.get(key) == expected[key]:
                continue
            pred = probe(sender, collector, signals_topic, predictions_topic, key, timeout=30)
            got[key] = -1 if pred is None else int(pred["model_versions"]["online"])
        if all(got.get(k) == v for k, v in expected.items()) or time.monotonic() > deadline:
            return got
        time.sleep(1.0)


__all__ += [
    "KEYS",
    "PROBE",
    "Collector",
    "Record",
    "Sender",
    "Traffic",
    "learned_counts",
    "probe",
    "rss_mb",
    "wait_until",
    "worker_env",
]


# ----- helpers for the exactly-once acceptance tests (fencing, state topic, side outputs) -------


async def read_committed(
    bootstrap: str, topic: str, partitions: int, timeout: float = 60.0
) -> list[Record]:
    """Every committed record of ``topic`` (of ``partitions`` partitions), read from the beginning
    up to its end.

    ``isolation_level="read_committed"``: records of aborted transactions are not returned, and
    the end is the last stable offset, so records of open transactions are not waited for.
    """
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=32 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    out: list[Record] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} not read to its end in {timeout}s")
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for records in batch.values():
                out.extend(Record(r.topic, r.partition, r.offset, r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return out


def probe_many(
    sender: Sender,
    collector: Collector,
    signals_topic: str,
    predictions_topic: str,
    keys: Iterable[str],
    timeout: float = 60.0,
) -> dict[str, dict[str, Any]]:
    """One probe signal (:data:`PROBE` features) per key, sent at once; the answers by key.

    Keys whose probe went unanswered within ``timeout`` are missing from the result.
    """
    import uuid

    tag = uuid.uuid4().hex[:12]
    wanted = {f"probe-{tag}-{i}": key for i, key in enumerate(keys)}
    sender.send(
        signals_topic,
        [
            (key.encode(), orjson.dumps({"signal_id": sid, "symbol": key, "features": PROBE}))
            for sid, key in wanted.items()
        ],
    )
    found: dict[str, dict[str, Any]] = {}
    seen = 0

    def answered(c: Collector) -> bool:
        nonlocal seen
        records = c.records(predictions_topic)
        for r in records[seen:]:
            doc = r.json()
            key = wanted.get(doc.get("signal_id"))
            if key is not None:
                found[key] = doc
        seen = len(records)
        return len(found) == len(wanted)

    collector.wait(answered, timeout)
    return found


def online_counts(
    sender: Sender,
    collector: Collector,
    signals_topic: str,
    predictions_topic: str,
    expected: dict[str, int],
    timeout: float = 120.0,
) -> dict[str, int]:
    """``model_versions.online`` per key, probed in bulk until it equals ``expected`` or time
    runs out (like :func:`learned_counts`, for many keys). An unanswered key reads -1."""
    deadline = time.monotonic() + timeout
    got: dict[str, int] = {k: -1 for k in expected}
    while True:
        todo = [k for k, v in expected.items() if got[k] != v]
        left = deadline - time.monotonic()
        if not todo or left <= 0:
            return got
        answers = probe_many(
            sender, collector, signals_topic, predictions_topic, todo, timeout=min(60.0, left)
        )
        for key, doc in answers.items():
            got[key] = int(doc["model_versions"]["online"])
        if any(got[k] != expected[k] for k in todo):
            time.sleep(1.0)


def metric_total(port: int, name: str, timeout: float = 5.0) -> float | None:
    """The sum of every series ``name`` on the worker's ``/metrics``; None when the page cannot
    be read or has no such series."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + " ", name + "{"))
    ]
    return sum(values) if values else None


__all__ += ["metric_total", "online_counts", "probe_many", "read_committed"]


# ----- the learner group's committed outcomes offsets ---------------------------------------------


async def group_offset(settings: Any, partition: int, role: str = "outcomes") -> int | None:
    """The offset of ``partition`` of the ``role`` topic committed by the worker's group (the
    app id)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(settings.app_id)
    finally:
        await admin.close()
    meta = got.get(TopicPartition(settings.topic(role), partition))
    return None if meta is None else meta.offset


async def committed_offset(settings: Any, partition: int, expect: int | None = None) -> int | None:
    """:func:`group_offset`, waited for up to 10 s until it is ``expect``: the commit markers
    reach the offsets topic just after the commit returns."""
    got = None
    for _ in range(100):
        got = await group_offset(settings, partition)
        if expect is None or got == expect:
            break
        await asyncio.sleep(0.1)
    return got


__all__ += ["committed_offset", "group_offset"]
