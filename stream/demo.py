"""``alphapulse demo`` on the embedded defaults: broker, worker, signals in, predictions out."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console

from models.errors import AlphaPulseError
from stream.kafka import client_kwargs
from stream.settings import Settings
from stream.topics import ensure_topics

__all__ = ["run_demo"]


async def _exchange(settings: Settings, n: int, console: Console, timeout: float) -> int:
    run = uuid.uuid4().hex[:8]
    consumer = AIOKafkaConsumer(
        settings.topic("predictions"),
        **client_kwargs(settings),
        auto_offset_reset="latest",
        group_id=None,
    )
    await consumer.start()
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    try:
        await asyncio.sleep(1.0)  # let the consumer take its position before sending
        wanted = set()
        for i in range(n):
            sid = f"demo-{run}-{i}"
            wanted.add(sid)
            value = {
                "signal_id": sid,
                "symbol": "BTCUSDT",
                "features": {"f0": 0.1 * i, "f1": -0.2, "f2": 1.0},
            }
            await producer.send_and_wait(
                settings.topic("signals"), orjson.dumps(value), key=b"BTCUSDT"
            )
        console.print(f"sent {n} signal requests to {settings.topic('signals')}")
        deadline = time.monotonic() + timeout
        while wanted and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    doc = orjson.loads(rec.value)
                    if doc.get("signal_id") in wanted:
                        wanted.discard(doc["signal_id"])
                        sys.stdout.write(rec.value.decode() + "\n")
                        sys.stdout.flush()
        return n - len(wanted)
    finally:
        await producer.stop()
        await consumer.stop()


def run_demo(settings: Settings, n_signals: int, console: Console, timeout: float = 120.0) -> None:
    """Start the broker (if local) and a worker, send ``n_signals`` requests, print predictions."""
    if settings.uses_local_broker:
        from stream.cli import local_kafka

        local_kafka(settings).up(progress=lambda m: console.print(m))
    asyncio.run(ensure_topics(settings))
    log_path = settings.data_dir / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"starting a worker (log: {log_path})")
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,
        )
    try:
        got = asyncio.run(_exchange(settings, n_signals, console, timeout))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    console.print(
        f"{got} of {n_signals} predictions received; the broker keeps running "
        "('alphapulse broker down' stops it)"
    )
    if got < n_signals:
        raise AlphaPulseError(f"only {got} of {n_signals} predictions arrived; see {log_path}")
