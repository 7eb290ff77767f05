"""Scheduled retraining closes the loop: outcomes in Kafka -> trained, promoted -> served."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from models.schedule import last_slot, parse_schedule
from models.synthetic import TradeGenerator
from stream.codec import now_ms
from stream.registry import open_registry
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, consume_until, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_scheduled_weekly_quick_is_trained_promoted_and_served(
    fresh_mlflow_server: str,
    settings_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **settings_env,
        "MLFLOW_TRACKING_URI": fresh_mlflow_server,
        "ALPHAPULSE_MLFLOW_EXPERIMENT": "retraining",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "1",
        "ALPHAPULSE_RETRAIN_WEEKLY_QUICK_AT": "sun 03:00",
        "ALPHAPULSE_RETRAIN_CHECK_INTERVAL_S": "2",
        "ALPHAPULSE_RETRAIN_MODEL_TYPE": "lightgbm",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    rows = TradeGenerator(n_features=5, n_informative=3, seed=6).rows(400)
    asyncio.run(
        produce(
            settings.bootstrap_servers,
            settings.topic("outcomes"),
            [
                (
                    b"BTC",
                    orjson.dumps(
                        {
                            "outcome_id": r.outcome_id,
                            "signal_id": r.signal_id,
                            "symbol": "BTC",
                            "label": r.label,
                            "realized_rr": r.realized_rr,
                            "features": r.features,
                            "ts": r.ts,
                        }
                    ),
                )
                for r in rows
            ],
        )
    )
    # The last weekly_quick ran before its last slot, so the worker runs the missed one at start.
    now = now_ms()
    slot = last_slot(parse_schedule("sun 03:00"), now)
    assert slot is not None
    open_registry(settings).set_last_run("weekly_quick", slot - 1)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        events = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("model-events"),
                lambda rs: (
                    {"loaded", "promoted", "retrain_finished"} <= {v["event"] for _, v in rs}
                ),
                timeout=150,
            )
        )
        kinds = [(v["event"], v.get("role")) for _, v in events]
        assert ("promoted", "weekly_quick") in kinds, (kinds, worker.log_tail())
        assert ("loaded", "weekly_quick") in kinds, (kinds, worker.log_tail())
        jobs = [v for _, v in events if v["event"].startswith("retrain_")]
        assert [v["event"] for v in jobs[:2]] == ["retrain_started", "retrain_finished"], jobs
        assert all(v["trigger"] == "schedule" for v in jobs), jobs
        assert jobs[1]["promoted"] is True and jobs[1]["role"] == "weekly_quick", jobs
        assert open_registry(settings).last_run("weekly_quick") >= now  # type: ignore[operator]
        deadline = time.monotonic() + 30
        pred: dict = {}
        while time.monotonic() < deadline and "weekly_quick" not in pred.get("components", {}):
            sid = f"after-{time.monotonic_ns()}"
            asyncio.run(
                produce(
                    settings.bootstrap_servers,
                    settings.topic("signals"),
                    [
                        (
                            b"BTC",
                            orjson.dumps(
                                {"signal_id": sid, "symbol": "BTC", "features": rows[0].features}
                            ),
                        )
                    ],
                )
            )
            recs = asyncio.run(
                consume_until(
                    settings.bootstrap_servers,
                    settings.topic("predictions"),
                    lambda rs, sid=sid: any(v["signal_id"] == sid for _, v in rs),
                    timeout=60,
                )
            )
            pred = next(v for _, v in recs if v["signal_id"] == sid)
        assert set(pred["components"]) == {"weekly_quick", "online"}
        # Later jobs weigh the learner's hard examples and may beat the first champion: the
        # served version must be one that a job promoted.
        served = pred["model_versions"]["weekly_quick"]
        promoted = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("model-events"),
                lambda rs: any(
                    v["event"] == "promoted" and v.get("version") == served for _, v in rs
                ),
                timeout=30,
            )
        )
        assert any(v["event"] == "promoted" and v.get("version") == served for _, v in promoted)
        assert pred["model_versions"]["online"] == 400
    finally:
        worker.stop()
