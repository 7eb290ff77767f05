"""Stopping a worker whose broker is gone: it exits in seconds, and its log does not flood.

aiokafka retries without end when no broker answers: its producers' stop waits for ever to
deliver, a commit of offsets waits for ever for the group's coordinator, its consumer's stop
raised ``CancelledError`` out of a fetch in back-off (aiokafka#647), and it logs every failed
connection, some 500 lines a second. The worker bounds the first two, ends the third quietly, and
lets each library message through once per 10 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stream.broker import LocalKafka
from stream.settings import Settings
from stream.topics import ensure_topics
from stream.transactions import Outgoing, PartitionTransactions, TransactionFenced
from tests.support import KEYS, Collector, Sender, Traffic, Worker, probe, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STOP_WITHIN_S = 25.0
"""The worker gives up its leaving commits after 5 s, its producers after 2 s more and its
last offset commit after 5 s more; Faust then gathers its tasks for up to 2 s (about 14 s)."""


def test_worker_stops_within_seconds_when_the_broker_is_gone(
    own_kafka: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = worker_env(own_kafka.bootstrap_servers, tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        with (
            Sender(settings.bootstrap_servers) as sender,
            Collector(settings.bootstrap_servers, [settings.topic("predictions")]) as collector,
        ):
            answer = probe(
                sender,
                collector,
                settings.topic("signals"),
                settings.topic("predictions"),
                KEYS[0],
                timeout=120,
            )
            assert answer is not None, f"worker does not answer\n{worker.log_tail()}"
            traffic = Traffic(
                sender, settings.topic("signals"), settings.topic("outcomes"), rate=40, seed=3
            ).start()
            time.sleep(4)  # outcomes learned and not yet committed when the broker goes
            traffic.stop()
        assert own_kafka.stop_node(0)
        time.sleep(12)  # the clients retry meanwhile, as they would during an outage
        assert worker.proc is not None and worker.alive(), worker.log_tail()
        t0 = time.monotonic()
        os.killpg(worker.proc.pid, signal.SIGTERM)
        try:
            rc = worker.proc.wait(60)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
    finally:
        worker.kill()
    log = worker.log_text()
    print(f"\nFIGURES worker_stop_broker_gone stop_s={took:.1f} log_lines={len(log.splitlines())}")
    assert rc == 0, f"worker did not exit cleanly within 60 s (rc {rc})\n{worker.log_tail()}"
    assert took < STOP_WITHIN_S, f"worker took {took:.1f} s to stop\n{worker.log_tail()}"
    assert "did not finish within 5 s" in log  # its leaving commits were given up, and said so
    library = [line for line in log.splitlines() if " aiokafka" in line]
    assert "not logged" in log, "no repeated library message was held back"
    # About 16 s without a broker, a handful of aiokafka messages, each once per 10 s at most.
    assert len(library) < 60, "\n".join(library[-20:])


def test_a_transactional_producer_given_up_without_a_broker_is_closed(
    own_kafka: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition revoked while the broker is gone: its producer's stop gives up, and then
    nothing of it retries on, and the commit that was waiting for the broker fails as fenced
    (nothing more is written for the partition from here)."""
    for k, v in worker_env(own_kafka.bootstrap_servers, tmp_path).items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    topic = settings.topic("retrain-queue")

    async def run() -> None:
        await ensure_topics(settings)
        txn = PartitionTransactions(settings, 0)
        await txn.start()
        await txn.commit([Outgoing(topic, b"k", b"before", 0)], next_offset=1)
        await asyncio.to_thread(own_kafka.stop_node, 0)
        waiting = asyncio.ensure_future(txn.commit([Outgoing(topic, b"k", b"after", 0)], 2))
        await asyncio.sleep(2)
        assert not waiting.done()  # no broker: the commit waits
        t0 = time.monotonic()
        await txn.stop(timeout_s=1.0)
        assert time.monotonic() - t0 < 6.0
        with pytest.raises(TransactionFenced, match="after its producer was stopped"):
            await asyncio.wait_for(waiting, 5)
        await asyncio.sleep(1)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not left, f"tasks still running after the producer was given up: {left}"

    asyncio.run(run())
