"""Side outputs exactly once: hard examples and drift events survive 5 SIGKILLs without repeats.

Four model keys each learn a stream whose rules change three times (anti-correlated regimes), so
the online models raise drift several times and are confidently wrong often. The worker is
SIGKILLed five times mid-stream. Read with ``isolation_level="read_committed"``, the retrain queue
then holds one hard example per outcome id and model-events one drift event per
``(model_key, version)``, and both are exactly the ones an offline run of the same sequence makes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from agents.learner import is_hard_example
from models.keyed import KeyedOnline
from models.synthetic import TradeGenerator
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.integration.kill_runs import kill_and_restart, trade_doc
from tests.support import Collector, Sender, Worker, online_counts, probe_many, read_committed

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

KEYS = ("K0", "K1", "K2", "K3")
PER_KEY = 1600
DRIFT_POINTS = (400, 800, 1200)
CONFIDENCE = 0.6
"""A lower bar than the default, so that hundreds of outcomes per key are hard examples."""


def _stream() -> list[tuple[bytes, bytes]]:
    """Outcomes (with features, no signals) of every key, interleaved key by key."""
    per_key = [
        TradeGenerator(
            n_features=5, n_informative=3, positive_rate=0.5, drift_points=DRIFT_POINTS, seed=i
        ).rows(PER_KEY)
        for i in range(len(KEYS))
    ]
    out = []
    for j in range(PER_KEY):
        for key, rows in zip(KEYS, per_key, strict=True):
            out.append((key.encode(), orjson.dumps(trade_doc(rows[j], key))))
    return out


def _offline(settings: Settings, messages: list[tuple[bytes, bytes]]) -> tuple[set[str], set]:
    """Hard example ids and drift ``(model_key, version)`` of the same sequence, learned offline.

    No outcome has a signal, so the prediction a hard example is judged by is the online model's
    own before it learns the outcome, as in the worker.
    """
    keyed = KeyedOnline(settings.online_config())
    hard: set[str] = set()
    drifts: set[tuple[str, int]] = set()
    for _, value in messages:
        doc = orjson.loads(value)
        res = keyed.learn(
            doc["outcome_id"], doc["symbol"], doc["features"], doc["label"], doc["realized_rr"]
        )
        if res.learned and is_hard_example(res.prediction, doc["label"], CONFIDENCE):
            hard.add(doc["outcome_id"])
        if res.drift:
            drifts.add((doc["symbol"], res.n_learned))
    return hard, drifts


def test_side_outputs_once_across_kills(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **settings_env,
        "ALPHAPULSE_HARD_EXAMPLE_CONFIDENCE": str(CONFIDENCE),
        "ALPHAPULSE_CHECKPOINT_INTERVAL_S": "0.5",
        "ALPHAPULSE_CHECKPOINT_MAX_EVENTS": "500",
        # The reloader has no registry to read here; it would only compete for the CPU.
        "ALPHAPULSE_RELOAD_INTERVAL_S": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    bootstrap = settings.bootstrap_servers
    signals, predictions = settings.topic("signals"), settings.topic("predictions")
    messages = _stream()
    want_hard, want_drifts = _offline(settings, messages)
    assert len(want_hard) > 500 and len(want_drifts) >= 4, (len(want_hard), want_drifts)

    with Sender(bootstrap) as sender, Collector(bootstrap, [predictions]) as collector:

        def send_all() -> None:
            # About 70 s of stream, so that most kills fall in it.
            for i in range(0, len(messages), 100):
                sender.send(settings.topic("outcomes"), messages[i : i + 100])
                time.sleep(1.0)

        def answers(worker: Worker, _: int) -> None:
            answered = probe_many(sender, collector, signals, predictions, [KEYS[0]], 120)
            assert answered, worker.log_tail()

        producer = threading.Thread(target=send_all)
        producer.start()
        worker: Worker | None = None
        try:
            worker, _ = kill_and_restart(
                env,
                tmp_path / "worker.log",
                answers,
                lambda kills: producer.is_alive() or kills < 5,
                (0.5, 3.0),
                seed=7,
            )
            producer.join()
            expected = dict.fromkeys(KEYS, PER_KEY)
            learned = online_counts(sender, collector, signals, predictions, expected, 180)
            assert learned == expected, (learned, worker.log_tail())
            # Outputs of the last outcomes are committed with the checkpoint that covers them.
            time.sleep(3.0)
        finally:
            producer.join(300)
            if worker is not None:
                worker.stop()

    hard = Counter(
        orjson.loads(r.value or b"null")["outcome_id"]
        for r in asyncio.run(read_committed(bootstrap, settings.topic("retrain-queue"), 4))
    )
    events = [
        orjson.loads(r.value or b"null")
        for r in asyncio.run(read_committed(bootstrap, settings.topic("model-events"), 4))
    ]
    drifts = Counter((e["model_key"], int(e["version"])) for e in events if e["event"] == "drift")
    problems = {
        "hard examples repeated": {oid: n for oid, n in hard.items() if n > 1},
        "hard examples missing": sorted(want_hard - set(hard)),
        "hard examples unexpected": sorted(set(hard) - want_hard),
        "drifts repeated": {cause: n for cause, n in drifts.items() if n > 1},
        "drifts missing": sorted(want_drifts - set(drifts)),
        "drifts unexpected": sorted(set(drifts) - want_drifts),
    }
    found = {what: items for what, items in problems.items() if items}
    counts = {what: len(items) for what, items in found.items()}
    assert not found, f"{counts} (hard examples expected {len(want_hard)}): {found}"
