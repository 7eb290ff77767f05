"""The learner through a real broker: join by signal id, dedupe by outcome id, unjoinable."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import orjson
import pytest

from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, consume_until, produce

pytestmark = pytest.mark.integration


async def _answer(settings: Settings, sid: str, features: dict) -> dict:
    await produce(
        settings.bootstrap_servers,
        settings.topic("signals"),
        [(b"ETH", orjson.dumps({"signal_id": sid, "symbol": "ETH", "features": features}))],
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


def test_join_dedupe_and_unjoinable(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    worker = Worker(settings_env, tmp_path / "worker.log").start()
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
