"""Many model keys: 50,000 of them over four partitions survive 3 SIGKILLs with exact counts.

Each key (its own symbol) gets two outcomes, the first round of every key before the second, and
the worker is SIGKILLed three times while they stream in. At the end a probe of every key says its
online model learned exactly two outcomes (``model_versions.online``).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import orjson
import pytest

from stream.settings import Settings
from stream.topics import ensure_topics
from tests.integration.kill_runs import kill_and_restart
from tests.support import Collector, Sender, Worker, online_counts, probe_many

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

N_KEYS = 50_000
PER_KEY = 2
KEYS = [f"SYM{i:05d}" for i in range(N_KEYS)]


def _outcomes() -> list[tuple[bytes, bytes]]:
    rng = random.Random(3)
    out = []
    for round_ in range(PER_KEY):
        for key in KEYS:
            x = rng.gauss(0, 1)
            doc = {
                "outcome_id": f"o-{key}-{round_}",
                "signal_id": f"s-{key}-{round_}",
                "symbol": key,
                "label": x + 0.5 * rng.gauss(0, 1) > 0,
                "realized_rr": round(rng.uniform(-1, 2), 3),
                "features": {"f0": round(x, 6), "f1": round(rng.gauss(0, 1), 6)},
            }
            out.append((key.encode(), orjson.dumps(doc)))
    return out


def test_fifty_thousand_keys_survive_kills_with_exact_counts(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**settings_env, "ALPHAPULSE_RELOAD_INTERVAL_S": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    bootstrap = settings.bootstrap_servers
    signals, predictions = settings.topic("signals"), settings.topic("predictions")
    messages = _outcomes()

    with Sender(bootstrap) as sender, Collector(bootstrap, [predictions]) as collector:

        def send_all() -> None:
            for i in range(0, len(messages), 5000):
                sender.send(settings.topic("outcomes"), messages[i : i + 5000])
                time.sleep(1.0)

        def answers(worker: Worker, kills: int) -> None:
            answered = probe_many(sender, collector, signals, predictions, [KEYS[kills]], 120)
            assert answered, worker.log_tail()

        producer = threading.Thread(target=send_all)
        producer.start()
        worker: Worker | None = None
        try:
            worker, _ = kill_and_restart(
                env, tmp_path / "worker.log", answers, lambda kills: kills < 3, (2.0, 6.0), seed=5
            )
            producer.join()
            expected = dict.fromkeys(KEYS, PER_KEY)
            learned = online_counts(sender, collector, signals, predictions, expected, 150)
        finally:
            producer.join(300)
            if worker is not None:
                worker.stop()
    wrong = {k: n for k, n in learned.items() if n != PER_KEY}
    sample = dict(list(wrong.items())[:20])
    assert not wrong, f"{len(wrong)} of {N_KEYS} keys have a wrong count, e.g. {sample}"
