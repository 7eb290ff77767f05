"""A zombie worker is fenced: one of two workers is paused past its session timeout mid-stream.

Two workers share four partitions while 20,000 outcomes (with re-sent duplicates) stream in. One
is stopped with SIGSTOP for longer than the session timeout; the other takes all partitions over
(it answers every model key while the first is stopped); then the first gets SIGCONT, finds its
writes refused (its log says it was fenced) and rejoins. At the end each model key has learned
each distinct outcome id once, and each key's online model is bit-identical to a model trained
offline on the sequence the outcomes topic holds.
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
from tests.integration.kill_runs import trade_doc
from tests.support import (
    PROBE,
    Collector,
    Sender,
    Worker,
    consume_until,
    free_port,
    online_counts,
    probe_many,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

N_OUTCOMES = 20_000
KEYS = tuple(f"KEY{i}" for i in range(8))
SESSION_TIMEOUT_S = 10.0
"""The worker's consumer session timeout (``broker_session_timeout`` in alphapulse.app); no
setting changes it, so the pause is measured against it."""
PAUSE_S = 3 * SESSION_TIMEOUT_S


def _outcomes() -> list[tuple[bytes, bytes]]:
    """The outcomes of every key, round robin, with about 5% re-sent, sometimes much later."""
    rows = TradeGenerator(n_features=5, n_informative=3, seed=31).rows(N_OUTCOMES)
    rng = random.Random(31)
    out: list[tuple[bytes, bytes]] = []
    for i, r in enumerate(rows):
        key = KEYS[i % len(KEYS)]
        out.append((key.encode(), orjson.dumps(trade_doc(r, key))))
        if rng.random() < 0.05:
            out.insert(rng.randrange(len(out)), out[-1])
    return out


def test_zombie_worker_is_fenced_and_learning_stays_exact(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **settings_env,
        "ALPHAPULSE_CHECKPOINT_INTERVAL_S": "0.5",
        "ALPHAPULSE_CHECKPOINT_MAX_EVENTS": "500",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    bootstrap = settings.bootstrap_servers
    signals, predictions = settings.topic("signals"), settings.topic("predictions")
    env_b = {
        **env,
        "ALPHAPULSE_WEB_PORT": str(free_port()),
        "ALPHAPULSE_DATA_DIR": str(tmp_path / "data-b"),
    }
    messages = _outcomes()
    distinct: dict[str, set[str]] = {k: set() for k in KEYS}
    for key, value in messages:
        distinct[key.decode()].add(orjson.loads(value)["outcome_id"])
    expected = {k: len(v) for k, v in distinct.items()}

    zombie = Worker(env, tmp_path / "zombie.log").start()
    other = Worker(env_b, tmp_path / "other.log").start()
    with Sender(bootstrap) as sender, Collector(bootstrap, [predictions]) as collector:

        def send_all() -> None:
            # About a minute of stream: it goes on before, during and after the pause.
            for i in range(0, len(messages), 250):
                sender.send(settings.topic("outcomes"), messages[i : i + 250])
                time.sleep(0.65)

        producer = threading.Thread(target=send_all)
        try:
            # Both workers answer (each owns some partitions) before the stream starts.
            answered = probe_many(sender, collector, signals, predictions, KEYS, 120)
            assert set(answered) == set(KEYS), (zombie.log_tail(), other.log_tail())
            producer.start()
            time.sleep(8.0)  # both learn and checkpoint their partitions
            paused_at = time.monotonic()
            zombie.pause()
            try:
                # The other worker takes every partition over: it answers every key alone.
                answered = probe_many(sender, collector, signals, predictions, KEYS, PAUSE_S)
                assert set(answered) == set(KEYS), other.log_tail()
                time.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
            finally:
                zombie.resume()
            assert producer.is_alive(), "the stream ended before the zombie woke; send it slower"
            producer.join()
            learned = online_counts(sender, collector, signals, predictions, expected, 240)
            assert learned == expected, (learned, zombie.log_tail(), other.log_tail())
            final = probe_many(sender, collector, signals, predictions, KEYS, 60)
        finally:
            producer.join(300)
            zombie.resume()
            zombie.stop()
            other.stop()
    assert set(final) == set(KEYS)
    assert {k: int(v["model_versions"]["online"]) for k, v in final.items()} == expected

    # Offline: the sequence as the topic holds it (in order per partition, so per key).
    recs = asyncio.run(
        consume_until(bootstrap, settings.topic("outcomes"), lambda rs: len(rs) >= len(messages))
    )
    offline = KeyedOnline(settings.online_config())
    for _, doc in recs:
        offline.learn(
            doc["outcome_id"], doc["symbol"], doc["features"], doc["label"], doc["realized_rr"]
        )
    for model_key in KEYS:
        want, n = offline.predict(model_key, PROBE)
        assert n == expected[model_key]
        assert final[model_key]["components"]["online"] == want, model_key  # bit-identical

    # The paused worker's writes after it woke were refused, and it says so.
    fenced = [line for line in zombie.log_text().splitlines() if "fenced" in line.lower()]
    assert fenced, f"the paused worker never logged that it was fenced:\n{zombie.log_tail(30)}"
