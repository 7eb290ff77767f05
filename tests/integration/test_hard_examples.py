"""Hard examples feed training: the learner's confidently wrong predictions weigh more.

A worker learns outcomes and publishes its hard examples to the retrain queue; ``alphapulse
train`` then reads the outcome history and the hard examples recorded since the role's newest
version, and up-weights exactly those rows. The registry is shared by the test session, so the
test compares against what it reads from the queue itself, not against a fixed number.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from mlflow import MlflowClient

from models.synthetic import TradeGenerator
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, consume_until, produce, train_json

pytestmark = pytest.mark.integration

ROLE = "weekly_quick"
KEY = "BTC"
N_OUTCOMES = 300


async def _committed_values(settings: Settings, role: str, timeout: float = 60.0) -> list[Any]:
    """Every committed value of a topic, decoded, read with a plain consumer up to its end."""
    topic, partitions = settings.topic(role), settings.topic_partitions
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            assert time.monotonic() < deadline, f"{topic} not read to its end in {timeout}s"
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for records in batch.values():
                out.extend(orjson.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


def _online_count(settings: Settings, sid: str) -> int:
    """Send one probe signal; the number of outcomes its answer says were learned (-1: none)."""
    doc = {"signal_id": sid, "symbol": KEY, "features": {"f0": 0.0}}
    signals = settings.topic("signals")
    asyncio.run(produce(settings.bootstrap_servers, signals, [(KEY.encode(), orjson.dumps(doc))]))
    recs = asyncio.run(
        consume_until(
            settings.bootstrap_servers,
            settings.topic("predictions"),
            lambda rs: any(v["signal_id"] == sid for _, v in rs),
            timeout=60,
        )
    )
    found = [v for _, v in recs if v["signal_id"] == sid]
    return int(found[0]["model_versions"]["online"]) if found else -1


def _learned(settings: Settings, n: int, timeout: float = 120.0) -> int:
    """Probe the key until its online model has learned ``n`` outcomes; the last count seen."""
    deadline = time.monotonic() + timeout
    online, probe = -1, 0
    while online < n and time.monotonic() < deadline:
        probe += 1
        online = _online_count(settings, f"probe-{probe}")
        if online < n:
            time.sleep(1.0)
    return online


def _hard_example(outcome: dict[str, Any]) -> tuple[bytes, bytes]:
    """A HardExample record for ``outcome``, as the learner writes one."""
    doc = {
        "outcome_id": outcome["outcome_id"],
        "signal_id": outcome["signal_id"],
        "symbol": KEY,
        "model_key": KEY,
        "features": outcome["features"],
        "label": bool(outcome["label"]),
        "realized_rr": outcome["realized_rr"],
        "prediction": 0.95 if not outcome["label"] else 0.05,
        "loss": 3.0,
        "ts": outcome["ts"],
    }
    return KEY.encode(), orjson.dumps(doc)


def _train(env: dict[str, str]) -> dict[str, Any]:
    return train_json(env, "--cadence", ROLE, "--model-type", "lightgbm")


def _logged(uri: str, summary: dict[str, Any]) -> str:
    """The ``hard_examples`` parameter of the MLflow run behind the summary's version."""
    client = MlflowClient(uri)
    run_id = client.get_model_version(ROLE, str(summary["version"])).run_id
    assert run_id is not None
    return str(client.get_run(run_id).data.params["hard_examples"])


def test_training_weighs_the_learners_hard_examples(
    settings: Settings, settings_env: dict[str, str], mlflow_server: str, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    rows = TradeGenerator(n_features=4, n_informative=3, seed=21).rows(N_OUTCOMES)
    outcomes = [
        {
            "outcome_id": r.outcome_id,
            "signal_id": r.signal_id,
            "symbol": KEY,
            "features": r.features,
            "label": r.label,
            "realized_rr": r.realized_rr,
            "ts": r.ts,
        }
        for r in rows
    ]
    # A lower bar than the default, so that a few hundred noisy outcomes surely make some.
    worker_env = {**settings_env, "ALPHAPULSE_HARD_EXAMPLE_CONFIDENCE": "0.6"}
    worker = Worker(worker_env, tmp_path / "worker.log").start()
    try:
        asyncio.run(
            produce(
                settings.bootstrap_servers,
                settings.topic("outcomes"),
                [(KEY.encode(), orjson.dumps(o)) for o in outcomes],
            )
        )
        learned = _learned(settings, N_OUTCOMES)
        assert learned == N_OUTCOMES, worker.log_tail()
    finally:
        worker.stop()

    queue = settings.topic("retrain-queue")
    by_learner = {
        v["outcome_id"] for v in asyncio.run(_committed_values(settings, "retrain-queue"))
    }
    training_ids = {o["outcome_id"] for o in outcomes}
    assert by_learner and by_learner <= training_ids, worker.log_tail()
    # One outcome once more (still one row) and one that is not a training row (not counted).
    again = next(o for o in outcomes if o["outcome_id"] in by_learner)
    ghost = {**outcomes[0], "outcome_id": "not-a-training-row"}
    asyncio.run(
        produce(settings.bootstrap_servers, queue, [_hard_example(again), _hard_example(ghost)])
    )
    hard_ids = {v["outcome_id"] for v in asyncio.run(_committed_values(settings, "retrain-queue"))}
    expected = len(hard_ids & training_ids)
    assert expected == len(by_learner) > 0

    env = {
        **os.environ,
        **settings_env,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "ALPHAPULSE_MLFLOW_EXPERIMENT": "hard-examples",
    }
    first = _train(env)
    assert first["n_train"] + first["n_valid"] == N_OUTCOMES
    assert first["hard_examples"] == expected
    assert _logged(mlflow_server, first) == str(expected)

    # Everything in the queue was recorded before the version just registered.
    second = _train(env)
    assert second["hard_examples"] == 0 and _logged(mlflow_server, second) == "0"

    fresh = next(o for o in outcomes if o["outcome_id"] not in by_learner)
    asyncio.run(produce(settings.bootstrap_servers, queue, [_hard_example(fresh)]))
    third = _train(env)
    assert third["hard_examples"] == 1 and _logged(mlflow_server, third) == "1"
