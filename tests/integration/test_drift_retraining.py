"""Drift closes the loop: a regime change raises drift, a job retrains, promotes and is served.

The first ``weekly_quick`` is trained on regime A. A worker with drift retraining on (and every
schedule off) learns regime A, then regime B, whose informative coefficients are anti-correlated
with A's (:class:`models.synthetic.TradeGenerator`). The online learner's drift detector fires, the
drift-triggered job, once 300 outcomes have been learned after the alarm, trains on the outcomes
from the alarm on and challenges the champion on the same holdout rows, the worker promotes it and
the reloader swaps it in. The model-events topic must tell that story in
order, and a prediction made after the swap must name the new version.

model-events has several partitions, keyed by role or model key: events of one key are compared
by offset, events of different keys by their ``ts``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from mlflow import MlflowClient

from models.synthetic import TradeGenerator, TradeRow
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.integration.kill_runs import trade_doc
from tests.support import (
    Collector,
    Record,
    Sender,
    Worker,
    learned_counts,
    probe,
    train_json,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

ROLE = "weekly_quick"
KEY = "BTC"
N_A = 300
N_B = 400
SEED = 0
"""With this seed the online learner's detector stays quiet through regime A and fires 35 to 50
outcomes into regime B (checked offline with ADWIN and with Page-Hinkley plus decay)."""


def _regimes() -> tuple[list[TradeRow], list[TradeRow]]:
    gen = TradeGenerator(
        n_features=5, n_informative=3, positive_rate=0.5, drift_points=(N_A,), seed=SEED
    )
    rows = gen.rows(N_A + N_B)
    a, b = rows[:N_A], rows[N_A:]
    assert {r.regime for r in a} == {0} and {r.regime for r in b} == {1}
    return a, b


def _outcome(r: TradeRow) -> tuple[bytes, bytes]:
    return KEY.encode(), orjson.dumps(trade_doc(r, KEY))


def _signal(r: TradeRow) -> tuple[bytes, bytes]:
    doc = {"signal_id": r.signal_id, "symbol": KEY, "features": r.features}
    return KEY.encode(), orjson.dumps(doc)


def _events(c: Collector, topic: str) -> list[tuple[Record, dict[str, Any]]]:
    return [(r, r.json()) for r in c.records(topic)]


def _find(
    events: list[tuple[Record, dict[str, Any]]], event: str, **match: Any
) -> tuple[Record, dict[str, Any]] | None:
    """The first ModelEvent ``event`` (in read order) whose fields equal ``match``.

    Fields are compared as text: the reloader writes versions as strings, the retrainer as
    numbers.
    """
    for rec, v in events:
        if v["event"] == event and all(str(v.get(k)) == str(w) for k, w in match.items()):
            return rec, v
    return None


def _assert_in_order(story: list[tuple[Record, dict[str, Any]]]) -> None:
    """Each event's ``ts`` is no earlier than the one before it, and events of one key (one
    partition of model-events) come in offset order."""
    told = [(v["event"], v["ts"], r.partition, r.offset) for r, v in story]
    assert all(a["ts"] <= b["ts"] for (_, a), (_, b) in itertools.pairwise(story)), told
    for i, (ra, _) in enumerate(story):
        assert all(
            ra.offset < rb.offset for rb, _ in story[i + 1 :] if rb.partition == ra.partition
        ), told


def test_drift_retrains_promotes_and_serves_the_new_version(
    fresh_mlflow_server: str,
    settings_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **settings_env,
        "MLFLOW_TRACKING_URI": fresh_mlflow_server,
        "ALPHAPULSE_MLFLOW_EXPERIMENT": "drift-retraining",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "1",
        "ALPHAPULSE_RETRAIN_ON_DRIFT": "true",
        # One drift job: a second alarm later in regime B must not start another.
        "ALPHAPULSE_RETRAIN_DRIFT_MIN_GAP_S": "3600",
        "ALPHAPULSE_RETRAIN_MODEL_TYPE": "lightgbm",
        # The ensemble refit after a promotion is another job on the same two cores; its own
        # test covers it.
        "ALPHAPULSE_ENSEMBLE_REFIT": "false",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    bootstrap = settings.bootstrap_servers
    signals, outcomes = settings.topic("signals"), settings.topic("outcomes")
    events_topic, predictions = settings.topic("model-events"), settings.topic("predictions")
    regime_a, regime_b = _regimes()

    with (
        Sender(bootstrap) as sender,
        Collector(bootstrap, [events_topic, predictions], isolation_level="read_committed") as c,
    ):
        # 1. Version 1 is trained on regime A, read from the outcomes topic.
        sender.send(signals, [_signal(r) for r in regime_a])
        sender.send(outcomes, [_outcome(r) for r in regime_a])
        first = train_json({**os.environ, **env}, "--cadence", ROLE, "--model-type", "lightgbm")
        assert first["model_name"] == ROLE and first["promoted"] is True, first
        v1 = int(first["version"])

        worker = Worker(env, tmp_path / "worker.log").start()
        try:
            # 2. The worker serves version 1 and learns regime A (already in the topic).
            ok = c.wait(
                lambda c: (
                    _find(_events(c, events_topic), "loaded", role=ROLE, version=v1) is not None
                ),
                timeout=120,
            )
            assert ok, ([v for _, v in _events(c, events_topic)], worker.log_tail())
            learned = learned_counts(sender, c, signals, predictions, {KEY: N_A}, timeout=120)
            assert learned == {KEY: N_A}, (learned, worker.log_tail())
            pred = probe(sender, c, signals, predictions, KEY, regime_a[0].features, timeout=60)
            assert pred is not None, worker.log_tail()
            assert pred["model_versions"][ROLE] == v1, pred
            evs = _events(c, events_topic)
            assert not [v for _, v in evs if v["event"] == "drift"], [v for _, v in evs]

            # 3. Regime B: the rules change until the learner raises drift.
            sender.send(signals, [_signal(r) for r in regime_b])
            sender.send(outcomes, [_outcome(r) for r in regime_b])

            def story_told(c: Collector) -> bool:
                evs = _events(c, events_topic)
                done = _find(evs, "retrain_finished", role=ROLE, trigger="drift")
                if done is None:
                    return False
                version = done[1].get("version")
                return not done[1].get("promoted") or (
                    _find(evs, "loaded", role=ROLE, version=version) is not None
                    and _find(evs, "promoted", role=ROLE, version=version) is not None
                )

            ok = c.wait(story_told, timeout=180)
            evs = _events(c, events_topic)
            assert ok, ([v for _, v in evs], worker.log_tail())

            # 4. The story, in order.
            drifts = [(r, v) for r, v in evs if v["event"] == "drift"]
            assert drifts, [v for _, v in evs]
            assert all(v["model_key"] == KEY for _, v in drifts), drifts
            # The regime change raised it: no alarm while the learner was in regime A.
            assert all(int(v["version"]) > N_A for _, v in drifts), [v for _, v in drifts]
            # alphapulse train announced version 1 as a manual job.
            manual = [
                v for _, v in evs if v.get("trigger") == "manual" or v.get("cause") == "manual"
            ]
            assert [(v["event"], v.get("version")) for v in manual] == [
                ("retrain_started", None),
                ("retrain_finished", v1),
                ("promoted", v1),
            ], manual
            assert manual[1]["promoted"] is True and manual[1]["cadence"] == ROLE, manual
            jobs = [
                v for _, v in evs if v["event"].startswith("retrain_") and v["trigger"] == "drift"
            ]
            assert [v["event"] for v in jobs] == ["retrain_started", "retrain_finished"], jobs
            assert all(v["trigger"] == "drift" and v["cadence"] == ROLE for v in jobs), jobs
            finished = jobs[1]
            assert finished["role"] == ROLE and finished["promoted"] is True, finished
            assert finished["detail"] == "", finished
            v2 = int(finished["version"])
            assert v2 > v1

            loaded_v1 = _find(evs, "loaded", role=ROLE, version=v1)
            started = _find(evs, "retrain_started", role=ROLE, trigger="drift")
            done = _find(evs, "retrain_finished", role=ROLE, trigger="drift")
            promoted = _find(evs, "promoted", role=ROLE, version=v2)
            loaded_v2 = _find(evs, "loaded", role=ROLE, version=v2)
            assert loaded_v1 and started and done and promoted and loaded_v2
            assert promoted[1]["cause"] == "drift", promoted[1]
            # The worker moves the alias after the job ends, so the swap comes last.
            _assert_in_order([loaded_v1, drifts[0], started, done, promoted, loaded_v2])

            # 5. A genuine promotion: version 2 beat version 1 on the same holdout rows.
            client = MlflowClient(fresh_mlflow_server)
            reason = client.get_model_version(ROLE, str(v2)).tags["alphapulse.promotion"]
            m = re.fullmatch(rf"beats champion: log loss (\S+) vs champion v{v1} (\S+)", reason)
            assert m is not None and float(m[1]) < float(m[2]), reason
            # The job trained on the outcomes from the alarm on: regime B only, although regime A
            # lies inside weekly_quick's 90-day window.
            alarm = regime_b[int(drifts[0][1]["version"]) - N_A - 1]
            run_id = client.get_model_version(ROLE, str(v2)).run_id
            assert run_id is not None
            params = client.get_run(run_id).data.params
            assert int(params["data_ts_min"]) == alarm.ts, (params, alarm)
            assert 300 <= int(params["n_rows"]) <= N_B - regime_b.index(alarm), params

            # 6. A signal sent after the swap is answered by the new version.
            after = probe(sender, c, signals, predictions, KEY, regime_b[-1].features, timeout=60)
            assert after is not None, worker.log_tail()
            assert after["model_versions"][ROLE] == v2, after
            assert set(after["components"]) >= {ROLE, "online"}, after
        finally:
            worker.stop()
