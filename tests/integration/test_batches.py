"""The predictor takes signal requests in per-partition batches straight from the fetch, on a real
broker: a backlog is answered in few batches, every request once, and the offsets it acked per
batch are committed, so a restarted worker does not answer them again."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, consume_until, group_offset, produce, wait_until

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


async def _produce_one_per_transaction(
    bootstrap: str, topic: str, records: list[Any], pause_s: float = 0.0, aborted: int = 0
) -> None:
    """Each record in a transaction of its own, after a transaction of ``aborted`` records of
    the same key that is aborted."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"tx-{topic}")
    await producer.start()
    try:
        for key, value in records:
            if aborted:
                await producer.begin_transaction()
                for _ in range(aborted):
                    await producer.send_and_wait(topic, b"{}", key=key)
                await producer.abort_transaction()  # its records and marker: offsets to skip
            async with producer.transaction():  # the record is followed by a commit marker
                await producer.send_and_wait(topic, value, key=key)
            await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


async def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        return {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


@pytest.mark.parametrize("direct", ["true", "false"])
def test_signals_written_in_transactions_are_committed_past_their_markers(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path, direct: str
) -> None:
    # Offsets of aborted records and of markers hold no record to answer. Signals sent one at a
    # time come in one fetch each, so these offsets fall between batches: acked as gaps, or the
    # group's commit stops at the first.
    asyncio.run(ensure_topics(settings))
    signals, bootstrap = settings.topic("signals"), settings.bootstrap_servers
    n = 40
    first, rest = _signals(0, 1), _signals(1, n - 1)
    asyncio.run(_produce_one_per_transaction(bootstrap, signals, first))
    env = {**settings_env, "ALPHAPULSE_DIRECT_FETCH": direct}  # on the agents' loop, or Faust's
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        assert _answered(settings, 1) == ["s0"], worker.log_tail()  # the worker is fetching
        asyncio.run(_produce_one_per_transaction(bootstrap, signals, rest, pause_s=0.05, aborted=2))
        ids = _answered(settings, n)
        assert sorted(ids) == sorted(f"s{i}" for i in range(n))
        ends = asyncio.run(_ends(bootstrap, signals))
        # The last record of a partition is followed by its marker, at the end offset minus one.
        want = {p: end - 1 for p, end in ends.items() if end > 0}

        def committed() -> dict[int, int | None]:
            return {p: asyncio.run(group_offset(settings, p, "signals")) for p in want}

        assert wait_until(lambda: committed() == want, timeout=30), (committed(), want)
    finally:
        worker.stop()
