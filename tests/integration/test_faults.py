"""Faults around a running worker: Kafka stopped or killed, MLflow killed, local state deleted.

Each test that stops or kills Kafka nodes starts its own cluster on free ports, so the session
broker is never disturbed. The worker under test is a real ``alphapulse worker`` process; traffic
and checks use plain aiokafka clients. Each test prints one ``FIGURES`` line (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.registry import ModelRegistry
from models.synthetic import TradeGenerator
from models.trainer import TrainingConfig, TrainingResult, train
from stream.broker import LocalKafka
from stream.mlflow_server import MlflowServer
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import (
    KEYS,
    Collector,
    Sender,
    Traffic,
    Worker,
    free_port_block,
    learned_counts,
    probe,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return Settings()


def _figures(name: str, **figures: Any) -> None:
    print(f"\nFIGURES {name} {json.dumps(figures, sort_keys=True)}")


def _start_worker(env: dict[str, str], settings: Settings, tmp_path: Path, name: str) -> Worker:
    asyncio.run(ensure_topics(settings))
    return Worker(env, tmp_path / f"{name}.log").start()


def _answered(collector: Collector, settings: Settings) -> Counter[str]:
    return Counter(r.json()["signal_id"] for r in collector.records(settings.topic("predictions")))


def _dead_reasons(collector: Collector, settings: Settings) -> Counter[str]:
    return Counter(r.json()["reason"] for r in collector.records(settings.topic("deadletter")))


def _wait_answering(
    sender: Sender, collector: Collector, settings: Settings, worker: Worker, timeout: float = 120
) -> float:
    """Seconds until the worker answers a probe (fails the test if it never does)."""
    t0 = time.monotonic()
    pred = probe(
        sender,
        collector,
        settings.topic("signals"),
        settings.topic("predictions"),
        KEYS[0],
        timeout=timeout,
    )
    assert pred is not None, f"worker does not answer\n{worker.log_tail()}"
    return time.monotonic() - t0


def _check_stream(
    traffic: Traffic,
    sender: Sender,
    collector: Collector,
    settings: Settings,
    worker: Worker,
) -> dict[str, Any]:
    """Every signal answered, every distinct outcome learned once; the figures."""
    sent, distinct = traffic.expected()
    topic = settings.topic("predictions")
    collector.wait(lambda c: set(sent) <= set(_answered(c, settings)), 180)
    answered = _answered(collector, settings)
    missing = [s for s in sent if s not in answered]
    assert not missing, (
        f"{len(missing)} signals unanswered, e.g. {missing[:5]}\n{worker.log_tail()}"
    )
    learned = learned_counts(
        sender, collector, settings.topic("signals"), topic, distinct, timeout=180
    )
    assert learned == distinct, f"learned {learned}, sent {distinct}\n{worker.log_tail()}"
    collector.wait(lambda c: _dead_reasons(c, settings)["duplicate"] >= traffic.resent, 60)
    reasons = _dead_reasons(collector, settings)
    assert set(reasons) <= {"duplicate"}, reasons
    assert reasons["duplicate"] >= traffic.resent
    assert worker.alive(), worker.log_tail()
    return {
        "signals_sent": len(sent),
        "answered": sum(1 for s in sent if s in answered),
        "predictions_written": sum(answered[s] for s in sent),
        "outcomes_sent": sum(distinct.values()) + traffic.resent,
        "outcomes_distinct": sum(distinct.values()),
        "learned": sum(learned.values()),
        "deadlettered_duplicate": reasons["duplicate"],
        "producer_retries": sender.retries,
    }


def _recovery(collector: Collector, settings: Settings, since_ms: int) -> float | None:
    """Seconds from ``since_ms`` to the first prediction the worker made after it."""
    after = [
        d["predicted_at"]
        for d in (r.json() for r in collector.records(settings.topic("predictions")))
        if d["predicted_at"] >= since_ms
    ]
    return (min(after) - since_ms) / 1000.0 if after else None


def test_broker_stopped_20s_mid_stream(
    own_kafka: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = worker_env(own_kafka.bootstrap_servers, tmp_path, ALPHAPULSE_CHECKPOINT_INTERVAL_S="0.5")
    settings = _settings(env, monkeypatch)
    worker = _start_worker(env, settings, tmp_path, "worker")
    topics = [settings.topic("predictions"), settings.topic("deadletter")]
    try:
        with (
            Sender(settings.bootstrap_servers) as sender,
            Collector(settings.bootstrap_servers, topics) as collector,
        ):
            startup = _wait_answering(sender, collector, settings, worker)
            traffic = Traffic(
                sender, settings.topic("signals"), settings.topic("outcomes"), rate=40, seed=1
            ).start()
            time.sleep(8)
            t_stop = time.monotonic()
            own_kafka.stop_node(0)
            stopped_for = 20.0 - (time.monotonic() - t_stop)
            time.sleep(max(0.0, stopped_for))
            own_kafka.restart_node(0)
            ready_ms = time.time_ns() // 1_000_000
            down_s = time.monotonic() - t_stop
            time.sleep(10)
            traffic.stop()
            figures = _check_stream(traffic, sender, collector, settings, worker)
            recovery = _recovery(collector, settings, ready_ms)
    finally:
        worker.stop()
    assert recovery is not None
    _figures(
        "broker_stopped",
        broker_down_s=round(down_s, 1),
        recovery_s=round(recovery, 2),
        worker_startup_s=round(startup, 1),
        traffic_stall_s=round(sum(traffic.stalls), 1),
        **figures,
    )


@pytest.mark.parametrize("own_kafka", [3], indirect=True)
def test_one_of_three_brokers_killed_mid_stream(
    own_kafka: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = worker_env(
        own_kafka.bootstrap_servers,
        tmp_path,
        ALPHAPULSE_TOPIC_REPLICATION="3",
        ALPHAPULSE_CHECKPOINT_INTERVAL_S="0.5",
    )
    settings = _settings(env, monkeypatch)
    worker = _start_worker(env, settings, tmp_path, "worker")
    topics = [settings.topic("predictions"), settings.topic("deadletter")]
    try:
        with (
            Sender(settings.bootstrap_servers) as sender,
            Collector(settings.bootstrap_servers, topics) as collector,
        ):
            startup = _wait_answering(sender, collector, settings, worker)
            coordinator = asyncio.run(_coordinator(settings))
            victim = coordinator - 1  # node ids are 1-based, launcher nodes 0-based
            traffic = Traffic(
                sender, settings.topic("signals"), settings.topic("outcomes"), rate=40, seed=2
            ).start()
            time.sleep(8)
            killed_ms = time.time_ns() // 1_000_000
            own_kafka.kill_node(victim)
            time.sleep(15)
            traffic.stop()
            figures = _check_stream(traffic, sender, collector, settings, worker)
            recovery = _recovery(collector, settings, killed_ms)
            replicas = asyncio.run(_replicas(settings))
    finally:
        worker.stop()
    assert recovery is not None
    assert replicas == {3}
    _figures(
        "broker_killed",
        killed_node=victim,
        killed_was_group_coordinator=True,
        first_prediction_after_kill_s=round(recovery, 2),
        worker_startup_s=round(startup, 1),
        traffic_stall_s=round(sum(traffic.stalls), 1),
        **figures,
    )


async def _coordinator(settings: Settings) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        return int(await admin.find_coordinator(settings.app_id))
    finally:
        await admin.close()


async def _replicas(settings: Settings) -> set[int]:
    """Replica counts found over the partitions of the signals and outcomes topics."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(
            [settings.topic("signals"), settings.topic("outcomes")]
        )
        return {len(p["replicas"]) for d in described for p in d["partitions"]}
    finally:
        await admin.close()


# ----- MLflow killed ---------------------------------------------------------------------------

FEATURES = [f"f{i}" for i in range(5)]


def _fit(seed: int) -> TrainingResult:
    frame = TradeGenerator(n_features=len(FEATURES), n_informative=3, seed=seed).frame(400)
    cfg = TrainingConfig(model_type="lightgbm", n_estimators=15, max_depth=3, seed=seed)
    return train(cfg, frame[FEATURES].to_numpy(), frame["label"].to_numpy(), feature_names=FEATURES)


def _register(uri: str, result: TrainingResult) -> str:
    reg = ModelRegistry(uri, experiment="faults")
    with reg.training_run("monthly_full", result.config) as run:
        return str(run.register(result, force=True).version)


def _loaded(collector: Collector, settings: Settings) -> list[str]:
    return [
        str(d["version"])
        for d in (r.json() for r in collector.records(settings.topic("model-events")))
        if d["event"] == "loaded"
    ]


def test_mlflow_killed_predictions_continue_and_reloads_resume(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = MlflowServer(tmp_path / "mlflow", port=free_port_block(1))
    mlflow.up()
    env = worker_env(
        kafka_bootstrap,
        tmp_path,
        MLFLOW_TRACKING_URI=mlflow.uri,
        ALPHAPULSE_MLFLOW_EXPERIMENT="faults",
        ALPHAPULSE_RELOAD_INTERVAL_S="1",
    )
    settings = _settings(env, monkeypatch)
    worker: Worker | None = None
    topics = [settings.topic(t) for t in ("predictions", "deadletter", "model-events")]
    try:
        v1 = _register(mlflow.uri, _fit(1))
        worker = _start_worker(env, settings, tmp_path, "worker")
        with (
            Sender(settings.bootstrap_servers) as sender,
            Collector(settings.bootstrap_servers, topics) as collector,
        ):
            assert collector.wait(lambda c: _loaded(c, settings) == [v1], 120), worker.log_tail()
            traffic = Traffic(
                sender,
                settings.topic("signals"),
                settings.topic("outcomes"),
                rate=20,
                seed=3,
                resend=0.0,
            ).start()
            time.sleep(3)
            mlflow.kill()
            killed = time.monotonic()
            n_before_kill = len(traffic.expected()[0])
            time.sleep(8)
            during, _ = traffic.expected()
            during = during[n_before_kill:]
            mlflow.up()
            back = time.monotonic()
            back_ms = time.time_ns() // 1_000_000
            v2 = _register(mlflow.uri, _fit(2))
            ok = collector.wait(lambda c: _loaded(c, settings) == [v1, v2], 120)
            reload_s = time.monotonic() - back
            assert ok, f"v2 not loaded: {_loaded(collector, settings)}\n{worker.log_tail()}"
            time.sleep(2)
            traffic.stop()
            sent, _ = traffic.expected()
            assert collector.wait(lambda c: set(sent) <= set(_answered(c, settings)), 120)
            preds = {
                d["signal_id"]: d
                for d in (r.json() for r in collector.records(settings.topic("predictions")))
            }
            after = probe(
                sender, collector, settings.topic("signals"), settings.topic("predictions"), "BTC"
            )
            reasons = _dead_reasons(collector, settings)
            events = [r.json() for r in collector.records(settings.topic("model-events"))]
    finally:
        if worker is not None:
            worker.stop()
        mlflow.down()
    assert worker is not None and not reasons, reasons
    # While MLflow was down every answer still came from the loaded batch model v1.
    assert during, "no signals were sent while MLflow was down"
    for sid in during:
        assert preds[sid]["model_versions"].get("monthly_full") == int(v1), preds[sid]
        assert "monthly_full" in preds[sid]["components"]
    assert after is not None and after["model_versions"]["monthly_full"] == int(v2)
    assert [e["event"] for e in events] == ["loaded", "loaded"], events  # nothing rejected
    _figures(
        "mlflow_killed",
        mlflow_down_s=round(back - killed, 1),
        signals_sent=len(sent),
        answered=sum(1 for s in sent if s in preds),
        answered_while_mlflow_down=len(during),
        reload_after_mlflow_back_s=round(reload_s, 1),
        first_v2_prediction_after_back_s=_first_version(preds, int(v2), back_ms),
    )


def _first_version(preds: dict[str, dict[str, Any]], version: int, since_ms: int) -> float | None:
    times = [
        d["predicted_at"]
        for d in preds.values()
        if d["model_versions"].get("monthly_full") == version
    ]
    return round((min(times) - since_ms) / 1000.0, 1) if times else None


# ----- local state deleted ---------------------------------------------------------------------


def _outcome(oid: str, sid: str, key: str, label: bool, features: dict[str, float] | None) -> bytes:
    doc: dict[str, Any] = {"outcome_id": oid, "signal_id": sid, "symbol": key, "label": label}
    if features is not None:
        doc["features"] = features
    return orjson.dumps(doc)


def test_local_state_deleted_is_rebuilt_from_kafka(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = worker_env(kafka_bootstrap, tmp_path, ALPHAPULSE_CHECKPOINT_INTERVAL_S="0.5")
    settings = _settings(env, monkeypatch)
    data_dir = Path(env["ALPHAPULSE_DATA_DIR"])
    rows = TradeGenerator(n_features=5, n_informative=3, seed=4).rows(400)
    topics = [settings.topic("predictions"), settings.topic("deadletter")]
    sig_t, pred_t, out_t = (settings.topic(t) for t in ("signals", "predictions", "outcomes"))
    worker = _start_worker(env, settings, tmp_path, "worker-1")
    try:
        with (
            Sender(settings.bootstrap_servers) as sender,
            Collector(settings.bootstrap_servers, topics) as collector,
        ):
            _wait_answering(sender, collector, settings, worker)
            # 300 outcomes carry their features; 100 signals are answered now and their
            # outcomes (without features) are sent only after the restart: joined from Kafka.
            first, later = rows[:300], rows[300:]
            sender.send(
                out_t,
                [
                    (
                        KEYS[i % 4].encode(),
                        _outcome(r.outcome_id, r.signal_id, KEYS[i % 4], bool(r.label), r.features),
                    )
                    for i, r in enumerate(first)
                ],
            )
            sender.send(
                sig_t,
                [
                    (
                        KEYS[i % 4].encode(),
                        orjson.dumps(
                            {
                                "signal_id": r.signal_id,
                                "symbol": KEYS[i % 4],
                                "features": r.features,
                            }
                        ),
                    )
                    for i, r in enumerate(later)
                ],
            )
            expected = dict(Counter(KEYS[i % 4] for i in range(len(first))))
            before = learned_counts(sender, collector, sig_t, pred_t, expected)
            assert before == expected, worker.log_tail()
            assert collector.wait(
                lambda c: {r.signal_id for r in later} <= set(_answered(c, settings)), 60
            )
            probes_before = {k: probe(sender, collector, sig_t, pred_t, k) for k in KEYS}
            worker.stop()
            assert data_dir.exists()
            shutil.rmtree(data_dir)
            worker = Worker(env, tmp_path / "worker-2.log").start()
            recovery = _wait_answering(sender, collector, settings, worker)
            probes_after = {k: probe(sender, collector, sig_t, pred_t, k) for k in KEYS}
            sender.send(
                out_t,
                [
                    (
                        KEYS[i % 4].encode(),
                        _outcome(r.outcome_id, r.signal_id, KEYS[i % 4], bool(r.label), None),
                    )
                    for i, r in enumerate(later)
                ],
            )
            final_expected = {
                k: expected[k] + sum(1 for i in range(len(later)) if KEYS[i % 4] == k) for k in KEYS
            }
            final = learned_counts(sender, collector, sig_t, pred_t, final_expected)
            reasons = _dead_reasons(collector, settings)
            rebuilt = data_dir.exists()
    finally:
        worker.stop()
    for k in KEYS:
        b, a = probes_before[k], probes_after[k]
        assert b is not None and a is not None
        assert a["model_versions"]["online"] == b["model_versions"]["online"] == expected[k]
        assert a["components"]["online"] == b["components"]["online"]  # same state, bit for bit
    assert final == final_expected, worker.log_tail()
    assert not reasons, reasons  # no outcome was unjoinable: the join store came back too
    _figures(
        "state_deleted",
        outcomes_before=sum(expected.values()),
        learned_after_restart_before_new=sum(
            int(p["model_versions"]["online"]) for p in probes_after.values() if p
        ),
        joined_after_restart=len(later),
        learned_final=sum(final.values()),
        deadlettered=sum(reasons.values()),
        data_dir_recreated=rebuilt,
        recovery_s=round(recovery, 1),
    )
