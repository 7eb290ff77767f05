"""Exactly-once learning: the worker is SIGKILLed repeatedly mid-stream and restarted.

At the end the online model has learned each distinct outcome id once, and (one partition) it is
bit-identical to a model trained offline on the same sequence read back from the topic.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import orjson
import pytest

from models.keyed import KeyedOnline
from models.synthetic import TradeGenerator
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, consume_until, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_OUTCOMES = 20_000
KEY = "BTCUSDT"
PROBE = {"f0": 0.3, "f1": -1.2, "f2": 0.7, "f3": 0.0, "f4": 2.0}


def _outcomes(n: int, seed: int) -> list[bytes]:
    rows = TradeGenerator(n_features=5, n_informative=3, seed=seed).rows(n)
    rng = random.Random(seed)
    out = []
    for r in rows:
        doc = {
            "outcome_id": r.outcome_id,
            "signal_id": r.signal_id,
            "symbol": KEY,
            "label": bool(r.label),
            "realized_rr": r.realized_rr,
            "features": r.features,
            "ts": r.ts,
        }
        out.append(orjson.dumps(doc))
        if rng.random() < 0.05:  # re-sent duplicate, sometimes much later
            out.insert(rng.randrange(len(out)), orjson.dumps(doc))
    return out


async def _probe_online(settings: Settings, n: int) -> dict:
    sid = f"probe-{n}-{time.monotonic_ns()}"
    await produce(
        settings.bootstrap_servers,
        settings.topic("signals"),
        [(KEY.encode(), orjson.dumps({"signal_id": sid, "symbol": KEY, "features": PROBE}))],
    )
    recs = await consume_until(
        settings.bootstrap_servers,
        settings.topic("predictions"),
        lambda rs: any(v["signal_id"] == sid for _, v in rs),
        timeout=120,
    )
    found = [v for _, v in recs if v["signal_id"] == sid]
    assert found, "probe signal was not answered"
    return found[0]


def learn_with_kills(
    settings: Settings, env: dict[str, str], tmp_path: Path, messages: list[bytes], wait_s: float
) -> tuple[dict, int]:
    """Stream ``messages`` to the outcomes topic while a worker is SIGKILLed at least 5 times
    and restarted; then wait up to ``wait_s`` for it to have learned every distinct outcome.
    Returns the last probe's prediction and the number of kills."""
    distinct = len({orjson.loads(m)["outcome_id"] for m in messages})

    def send_all() -> None:
        chunk = 500
        for i in range(0, len(messages), chunk):
            asyncio.run(
                produce(
                    settings.bootstrap_servers,
                    settings.topic("outcomes"),
                    [(KEY.encode(), m) for m in messages[i : i + chunk]],
                )
            )
            time.sleep(0.4)

    producer = threading.Thread(target=send_all)
    worker = Worker(env, tmp_path / "worker.log").start()
    producer.start()
    rng = random.Random(5)
    kills = 0
    try:
        while producer.is_alive() or kills < 5:
            # Kill only a worker that is consuming: wait until it answers, then let it learn.
            asyncio.run(_probe_online(settings, kills))
            time.sleep(rng.uniform(0.5, 4.0))
            worker.kill()
            kills += 1
            worker = Worker(env, tmp_path / "worker.log").start()
        producer.join()
        deadline = time.monotonic() + wait_s
        pred = asyncio.run(_probe_online(settings, 100))
        while pred["model_versions"]["online"] < distinct and time.monotonic() < deadline:
            time.sleep(2)
            pred = asyncio.run(_probe_online(settings, 101))
    finally:
        producer.join(300)
        worker.stop()
    assert pred["model_versions"]["online"] == distinct, worker.log_tail()
    return pred, kills


def test_kill9_repeatedly_learns_each_outcome_exactly_once(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **settings_env,
        "ALPHAPULSE_TOPIC_PARTITIONS": "1",
        "ALPHAPULSE_CHECKPOINT_INTERVAL_S": "0.5",
        "ALPHAPULSE_CHECKPOINT_MAX_EVENTS": "500",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    messages = _outcomes(N_OUTCOMES, seed=11)
    distinct = len({orjson.loads(m)["outcome_id"] for m in messages})
    pred, kills = learn_with_kills(settings, env, tmp_path, messages, wait_s=300)
    assert kills >= 5

    # Offline: the same sequence, as the topic holds it, learned by the same pure code.
    recs = asyncio.run(
        consume_until(
            settings.bootstrap_servers,
            settings.topic("outcomes"),
            lambda rs: len(rs) >= len(messages),
            timeout=60,
            decode=True,
        )
    )
    offline = KeyedOnline(settings.online_config())  # as the worker configures it
    for _, doc in recs:
        offline.learn(doc["outcome_id"], KEY, doc["features"], doc["label"], doc["realized_rr"])
    assert offline.n_learned(KEY) == distinct
    expected, _ = offline.predict(KEY, PROBE)
    assert pred["components"]["online"] == expected  # bit-identical, not approximately
