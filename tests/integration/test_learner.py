"""The learner through a real broker: join by signal id, dedupe by outcome id, unjoinable."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, committed_offset, consume_until, group_offset, produce

pytestmark = pytest.mark.integration


async def _predict(settings: Settings, key: str, sid: str, features: dict) -> dict:
    doc = {"signal_id": sid, "symbol": key, "features": features}
    await produce(
        settings.bootstrap_servers, settings.topic("signals"), [(key.encode(), orjson.dumps(doc))]
    )
    recs = await consume_until(
        settings.bootstrap_servers,
        settings.topic("predictions"),
        lambda rs: any(v["signal_id"] == sid for _, v in rs),
        timeout=90,
    )
    found = [v for _, v in recs if v["signal_id"] == sid]
    assert found, f"{sid} not answered"
    return found[0]


async def _answer(settings: Settings, sid: str, features: dict) -> dict:
    return await _predict(settings, "ETH", sid, features)


def test_join_dedupe_and_unjoinable(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    # No waiting for a signal that has not arrived (tests/integration/test_event_time.py waits).
    env = {**settings_env, "ALPHAPULSE_JOIN_WAIT_MAX": "0"}
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        first = asyncio.run(_answer(settings, "sig-1", {"x": 1.0, "y": 2.0}))
        assert first["model_versions"]["online"] == 0
        outcome = {
            "outcome_id": "o-1",
            "signal_id": "sig-1",
            "symbol": "ETH",
            "label": True,
            "realized_rr": 1.5,
        }  # no features: joined from sig-1
        unknown = {"outcome_id": "o-2", "signal_id": "never-sent", "symbol": "ETH", "label": 0}
        asyncio.run(
            produce(
                settings.bootstrap_servers,
                settings.topic("outcomes"),
                [
                    (b"ETH", orjson.dumps(outcome)),
                    (b"ETH", orjson.dumps(outcome)),  # duplicate id
                    (None, orjson.dumps({**outcome, "outcome_id": "o-3"})),  # keyless: re-routed
                    (b"ETH", orjson.dumps(unknown)),
                ],
            )
        )
        dead = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("deadletter"),
                lambda rs: len(rs) >= 2,
                timeout=90,
            )
        )
        reasons = sorted(v["reason"] for _, v in dead)
        assert reasons == ["duplicate", "unjoinable"], dead
        unjoinable = next(v for _, v in dead if v["reason"] == "unjoinable")
        assert orjson.loads(base64.b64decode(unjoinable["value"]))["outcome_id"] == "o-2"
        deadline = time.monotonic() + 60
        pred = asyncio.run(_answer(settings, "sig-2", {"x": 1.0, "y": 2.0}))
        while pred["model_versions"]["online"] < 2 and time.monotonic() < deadline:
            time.sleep(1)
            pred = asyncio.run(_answer(settings, f"sig-{time.monotonic_ns()}", {"x": 1.0}))
        assert pred["model_versions"]["online"] == 2  # o-1 once, o-3 once
        assert pred["components"]["online"] != 0.5
    finally:
        worker.stop()


def test_join_store_is_rebuilt_from_the_signals_topic_after_a_restart(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    worker = Worker(settings_env, tmp_path / "a.log").start()
    try:
        asyncio.run(_answer(settings, "early", {"x": 0.5, "y": -1.0}))
    finally:
        worker.kill()  # no clean shutdown: only Kafka holds what the worker knew
    outcome = {"outcome_id": "late", "signal_id": "early", "symbol": "ETH", "label": 1}
    asyncio.run(
        produce(
            settings.bootstrap_servers,
            settings.topic("outcomes"),
            [(b"ETH", orjson.dumps(outcome))],
        )
    )
    worker = Worker(settings_env, tmp_path / "b.log").start()
    try:
        deadline = time.monotonic() + 90
        pred = asyncio.run(_answer(settings, "check-0", {"x": 0.5}))
        while pred["model_versions"]["online"] < 1 and time.monotonic() < deadline:
            time.sleep(1)
            pred = asyncio.run(_answer(settings, f"check-{time.monotonic_ns()}", {"x": 0.5}))
        assert pred["model_versions"]["online"] == 1, worker.log_tail()
        dead = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("deadletter"),
                lambda rs: False,
                timeout=3,
            )
        )
        assert dead == []
    finally:
        worker.stop()


def test_bad_input_is_dead_lettered_and_leaves_the_model_as_it_was(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 25, part 5: keys named twice and ids over 256 bytes are ``schema``; outcomes at
    1e300 and -1e300 are ``bad_feature`` and the model answers as before; an outcome with
    ``features: {}`` is joined with its signal's."""
    asyncio.run(ensure_topics(settings))
    worker = Worker(settings_env, tmp_path / "worker.log").start()
    probe = {"x": 0.5, "y": -1.0}
    try:
        asyncio.run(_predict(settings, "BAD", "bad-first", probe))
        warm = [
            (
                b"BAD",
                orjson.dumps(
                    {
                        "outcome_id": f"w{i}",
                        "signal_id": f"none-{i}",
                        "symbol": "BAD",
                        "label": i % 3 == 0,
                        "features": {"x": i / 10, "y": (i % 7) - 3.0},
                    }
                ),
            )
            for i in range(30)
        ]
        asyncio.run(produce(settings.bootstrap_servers, settings.topic("outcomes"), warm))
        deadline = time.monotonic() + 60
        before = asyncio.run(_predict(settings, "BAD", "bad-before-0", probe))
        while before["model_versions"]["online"] < 30 and time.monotonic() < deadline:
            time.sleep(1)
            before = asyncio.run(
                _predict(settings, "BAD", f"bad-before-{time.monotonic_ns()}", probe)
            )
        assert before["model_versions"]["online"] == 30, worker.log_tail()
        asyncio.run(_predict(settings, "EMPTY", "sig-empty-1", {"x": 2.0, "y": 1.0}))
        asyncio.run(_predict(settings, "EMPTY", "sig-empty-0", {"x": -2.0, "y": 1.0}))

        base = {"signal_id": "none", "symbol": "BAD", "label": 1}
        extreme = [
            orjson.dumps({**base, "outcome_id": "huge", "features": {"x": 1e300, "y": 0.0}}),
            orjson.dumps({**base, "outcome_id": "tiny", "features": {"x": -1e300, "y": 0.0}}),
        ]
        schema = [
            b'{"outcome_id":"twice","signal_id":"none","symbol":"BAD","label":1,'
            b'"features":{"x":1.0,"y":2.0,"x":3.0}}',
            orjson.dumps({**base, "outcome_id": "\u00e9" * 129, "features": {"x": 1.0}}),
        ]
        empty = [  # joined with the features of their signals, as if they had none
            orjson.dumps(
                {
                    "outcome_id": f"empty-{label}",
                    "signal_id": f"sig-empty-{label}",
                    "symbol": "EMPTY",
                    "label": label,
                    "features": {},
                }
            )
            for label in (1, 0)
        ]
        asyncio.run(
            produce(
                settings.bootstrap_servers,
                settings.topic("outcomes"),
                [(b"BAD", v) for v in extreme + schema] + [(b"EMPTY", v) for v in empty],
            )
        )
        dead = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("deadletter"),
                lambda rs: len(rs) >= 4,
                timeout=90,
            )
        )
        got = sorted((v["reason"], base64.b64decode(v["value"])) for _, v in dead)
        assert got == sorted(
            [("bad_feature", v) for v in extreme] + [("schema", v) for v in schema]
        )
        details = " ".join(v["detail"] for _, v in dead)
        assert "duplicate key 'x'" in details and "258 UTF-8 bytes" in details
        assert "feature 'x'" in details

        after = asyncio.run(_predict(settings, "BAD", "bad-after", probe))
        assert after["model_versions"]["online"] == 30  # the refused ones are not counted
        assert after["components"]["online"] == before["components"]["online"]
        assert 0.0 < after["components"]["online"] < 1.0
        deadline = time.monotonic() + 60
        joined = asyncio.run(_predict(settings, "EMPTY", "empty-check-0", {"x": 2.0}))
        while joined["model_versions"]["online"] < 2 and time.monotonic() < deadline:
            time.sleep(1)
            joined = asyncio.run(
                _predict(settings, "EMPTY", f"empty-{time.monotonic_ns()}", {"x": 2.0})
            )
        assert joined["model_versions"]["online"] == 2, worker.log_tail()
        # Learned from their signals' features (x = 2 won, x = -2 lost), not from empty rows.
        other = asyncio.run(_predict(settings, "EMPTY", "empty-other", {"x": -2.0}))
        assert other["components"]["online"] < joined["components"]["online"]
        late = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("deadletter"),
                lambda rs: False,
                timeout=3,
            )
        )
        assert len(late) == 4, late
    finally:
        worker.stop()


def _key_on(partition: int, partitions: int, prefix: str) -> str:
    """A model key that Kafka's default partitioner puts on ``partition``."""
    for i in range(10_000):
        key = f"{prefix}{i}"
        if (murmur2(key.encode()) & 0x7FFFFFFF) % partitions == partition:
            return key
    raise AssertionError(f"no key found for partition {partition}")


def _five_outcomes_each(keys: list[str]) -> list[tuple[bytes, bytes]]:
    """Five outcomes with features (no signal to join) for each of ``keys``, as records."""
    return [
        (
            key.encode(),
            orjson.dumps(
                {
                    "outcome_id": f"{key}-{i}",
                    "signal_id": "none",
                    "symbol": key,
                    "label": i % 2,
                    "features": {"x": float(i)},
                }
            ),
        )
        for key in keys
        for i in range(5)
    ]


def test_a_partition_whose_state_cannot_be_read_is_refused_loudly(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 25, part 3: a meta record that does not decode stops its partition (not learned,
    not started afresh) with a log line, the metric and a ``state_refused`` ModelEvent; the
    other partitions learn on."""
    asyncio.run(ensure_topics(settings))
    bad, good = _key_on(1, 4, "bad"), _key_on(2, 4, "good")
    asyncio.run(
        _produce_to(settings, settings.internal_topic("checkpoints"), 1, b"\xffmeta", b"junk")
    )
    env = {**settings_env, "ALPHAPULSE_CHECKPOINT_INTERVAL_S": "0.2"}
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        events = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("model-events"),
                lambda rs: any(v["event"] == "state_refused" for _, v in rs),
                timeout=90,
            )
        )
        refused = [v for _, v in events if v["event"] == "state_refused"]
        assert len(refused) == 1, worker.log_tail()
        detail = refused[0]["detail"]
        topic = settings.internal_topic("checkpoints")
        assert f"partition 1 of {topic} at offset 0" in detail and "unreadable_meta" in detail
        outcomes = _five_outcomes_each([bad, good])
        asyncio.run(produce(settings.bootstrap_servers, settings.topic("outcomes"), outcomes))
        deadline = time.monotonic() + 60
        learned = asyncio.run(_predict(settings, good, "good-0", {"x": 1.0}))
        while learned["model_versions"]["online"] < 5 and time.monotonic() < deadline:
            time.sleep(1)
            learned = asyncio.run(
                _predict(settings, good, f"good-{time.monotonic_ns()}", {"x": 1.0})
            )
        assert learned["model_versions"]["online"] == 5, worker.log_tail()
        not_learned = asyncio.run(_predict(settings, bad, "bad-0", {"x": 1.0}))
        assert not_learned["model_versions"]["online"] == 0  # refused: not learned, not afresh
        port = settings_env["ALPHAPULSE_WEB_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'alphapulse_state_refused_total{reason="unreadable_meta"} 1.0' in metrics
        log_text = (tmp_path / "worker.log").read_text(errors="replace")
        assert f"{topic}[1]@0" in log_text
        assert "state refused, partition 1 (unreadable_meta)" in log_text
    finally:
        worker.stop()


async def _produce_to(
    settings: Settings, topic: str, partition: int, key: bytes, value: bytes
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_a_stopped_worker_commits_what_it_learned(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM commits every partition's learning, long before its checkpoint interval is due:
    the next owner does not learn those outcomes again."""
    asyncio.run(ensure_topics(settings))
    env = {**settings_env, "ALPHAPULSE_CHECKPOINT_INTERVAL_S": "3600"}
    keys = [_key_on(p, settings.topic_partitions, "stop") for p in range(2)]
    outcomes = _five_outcomes_each(keys)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(settings.bootstrap_servers, settings.topic("outcomes"), outcomes))
        deadline = time.monotonic() + 60
        for key in keys:
            learned = asyncio.run(_predict(settings, key, f"{key}-probe", {"x": 1.0}))
            while learned["model_versions"]["online"] < 5 and time.monotonic() < deadline:
                time.sleep(0.5)
                sid = f"{key}-{time.monotonic_ns()}"
                learned = asyncio.run(_predict(settings, key, sid, {"x": 1.0}))
            assert learned["model_versions"]["online"] == 5, worker.log_tail()
        before = [asyncio.run(group_offset(settings, p)) for p in range(2)]
        assert before == [None, None]  # the interval is an hour away
    finally:
        worker.stop()
    after = [asyncio.run(committed_offset(settings, p, 5)) for p in range(2)]
    assert after == [5, 5], worker.log_tail()
