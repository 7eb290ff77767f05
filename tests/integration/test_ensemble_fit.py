"""A fitted ensemble, served: ``alphapulse ensemble fit`` promotes it, the running worker swaps it
in, and the predictions after the swap carry its weights and version while none goes unanswered.

The history is made so that a fitted blend must beat the fixed 0.8/0.2 one: a trade wins when
``f0`` and ``f1`` share a sign (with 10% noise), which a booster learns and the linear online
model cannot, so the fitted weights put almost everything on the batch model.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from models.schedule import last_slot, parse_schedule
from models.synthetic import TradeGenerator
from stream.codec import now_ms
from stream.registry import open_registry
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Collector, Record, Sender, Worker, probe, produce, train_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_HISTORY = 1500
KEYS = ("BTC", "ETH")


def _history() -> list[tuple[bytes, bytes]]:
    rows = TradeGenerator(n_features=4, n_informative=2, seed=11).rows(N_HISTORY)
    flip = np.random.default_rng(11).random(N_HISTORY) < 0.1
    out = []
    for i, r in enumerate(rows):
        won = bool((r.features["f0"] * r.features["f1"] > 0) ^ flip[i])
        key = KEYS[i % 2]
        doc = {
            "outcome_id": r.outcome_id,
            "signal_id": r.signal_id,
            "symbol": key,
            "label": won,
            "realized_rr": 1.5 if won else -1.0,
            "features": r.features,
            "ts": r.ts,
        }
        out.append((key.encode(), orjson.dumps(doc)))
    return out


class _Signals:
    """Signals at about ``rate`` per second from a thread, each sent once, with its send time."""

    def __init__(self, sender: Sender, topic: str, rate: float = 20.0) -> None:
        self.sender = sender
        self.topic = topic
        self.rate = rate
        self.sent: list[tuple[str, float]] = []
        """``(signal_id, monotonic time its send was acknowledged)``."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="signals", daemon=True)

    def start(self) -> _Signals:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        rng = np.random.default_rng(5)
        n = 0
        per_tick = max(1, round(self.rate / 4))
        while not self._stop.is_set():
            batch, ids = [], []
            for _ in range(per_tick):
                n += 1
                key = KEYS[n % 2]
                sid = f"live-{n}"
                feats = {f"f{j}": round(float(rng.normal()), 6) for j in range(4)}
                doc = {"signal_id": sid, "symbol": key, "features": feats}
                batch.append((key.encode(), orjson.dumps(doc)))
                ids.append(sid)
            self.sender.send(self.topic, batch)
            acked = time.monotonic()
            self.sent.extend((sid, acked) for sid in ids)
            time.sleep(0.25)


def _ensemble_fit(env: dict[str, str]) -> tuple[dict[str, Any], str]:
    res = subprocess.run(
        [sys.executable, "-m", "alphapulse.cli", "ensemble", "fit", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout  # exactly one line: the JSON summary
    summary: dict[str, Any] = orjson.loads(lines[0])
    return summary, res.stderr


def test_a_promoted_ensemble_is_swapped_in_and_serves_every_later_prediction(
    fresh_mlflow_server: str,
    settings_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **settings_env,
        "MLFLOW_TRACKING_URI": fresh_mlflow_server,
        "ALPHAPULSE_ENSEMBLE_METHOD": "weights",  # the stacked path has its unit tests
        "ALPHAPULSE_MLFLOW_EXPERIMENT": "ensemble",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    asyncio.run(produce(settings.bootstrap_servers, settings.topic("outcomes"), _history()))
    trained = train_json(env, "--model-type", "lightgbm", "--cadence", "weekly_quick")
    assert trained["promoted"] is True
    batch_version = trained["version"]

    predictions, events = settings.topic("predictions"), settings.topic("model-events")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        with (
            Collector(settings.bootstrap_servers, [predictions, events]) as collector,
            Sender(settings.bootstrap_servers) as sender,
        ):

            def loaded(role: str, version: Any = None) -> bool:
                return any(
                    v["event"] == "loaded"
                    and v.get("role") == role
                    and (version is None or str(v.get("version")) == str(version))
                    for v in (r.json() for r in collector.records(events))
                )

            assert collector.wait(lambda c: loaded("weekly_quick", batch_version), 120), (
                worker.log_tail()
            )
            signals = _Signals(sender, settings.topic("signals")).start()
            try:
                time.sleep(3)  # answers served by the fixed blend first
                summary, stderr = _ensemble_fit(env)
                assert summary["promoted"] is True, (summary, stderr)
                version = summary["version"]
                assert isinstance(version, int)
                assert summary["method"] == "weights"
                assert summary["fitted_on"] == {"weekly_quick": batch_version}
                assert set(summary["weights"]) == {"weekly_quick", "online"}
                assert summary["weights"]["weekly_quick"] > 0.8
                assert summary["fixed_weights"] == pytest.approx(
                    {"weekly_quick": 2 / 3, "online": 1 / 3}
                )
                assert summary["log_loss"] < summary["fixed_log_loss"]
                assert collector.wait(lambda c: loaded("ensemble", version), 60), worker.log_tail()
                swapped = time.monotonic()  # the reloader announces a swap once it is made
                time.sleep(4)  # answers served by the ensemble
            finally:
                signals.stop()
            sent = [sid for sid, _ in signals.sent]
            after = {sid for sid, t in signals.sent if t > swapped}
            assert after and len(after) < len(sent)

            def answered(c: Collector) -> bool:
                got = {r.json()["signal_id"] for r in c.records(predictions)}
                return set(sent) <= got

            collector.wait(answered, 60)
            preds = [r.json() for r in collector.records(predictions)]
    finally:
        worker.stop()

    live = [p for p in preds if p["signal_id"].startswith("live-")]
    counts = Counter(p["signal_id"] for p in live)
    assert set(counts) == set(sent), f"{len(set(sent) - set(counts))} signals unanswered"
    assert all(n == 1 for n in counts.values()), [s for s, n in counts.items() if n > 1][:5]
    by_id = {p["signal_id"]: p for p in live}
    for sid in after:
        p = by_id[sid]
        assert p["model_versions"]["ensemble"] == version, p
        assert p["model_versions"]["weekly_quick"] == batch_version, p
        assert p["weights"] == pytest.approx(summary["weights"]), p
        assert p["degraded"] is False
        want = sum(summary["weights"][r] * p["components"][r] for r in summary["weights"])
        assert p["score"] == pytest.approx(want)
    first = sent[0]
    assert "ensemble" not in by_id[first]["model_versions"]  # before the fit: the fixed blend
    assert by_id[first]["weights"] == pytest.approx({"weekly_quick": 2 / 3, "online": 1 / 3})
    served = open_registry(settings).get_version("ensemble", version)
    assert orjson.loads(served.tags["alphapulse.fitted_on"]) == {"weekly_quick": str(batch_version)}
    assert "champion" in served.aliases or open_registry(settings).resolve_alias("ensemble") == str(
        version
    )


def test_a_promotion_by_the_retrainer_refits_the_ensemble(
    fresh_mlflow_server: str,
    settings_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        **settings_env,
        "MLFLOW_TRACKING_URI": fresh_mlflow_server,
        "ALPHAPULSE_ENSEMBLE_METHOD": "weights",  # the stacked path has its unit tests
        "ALPHAPULSE_MLFLOW_EXPERIMENT": "ensemble-refit",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "1",
        "ALPHAPULSE_RETRAIN_WEEKLY_QUICK_AT": "sun 03:00",
        "ALPHAPULSE_RETRAIN_CHECK_INTERVAL_S": "2",
        "ALPHAPULSE_RETRAIN_MODEL_TYPE": "lightgbm",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    asyncio.run(produce(settings.bootstrap_servers, settings.topic("outcomes"), _history()))
    # The last weekly_quick ran before its last slot, so the worker runs the missed one at start.
    slot = last_slot(parse_schedule("sun 03:00"), now_ms())
    assert slot is not None
    open_registry(settings).set_last_run("weekly_quick", slot - 1)
    predictions, events = settings.topic("predictions"), settings.topic("model-events")
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        with (
            Collector(settings.bootstrap_servers, [predictions, events]) as collector,
            Sender(settings.bootstrap_servers) as sender,
        ):

            def seen(c: Collector) -> set[tuple[str, str | None]]:
                return {(v["event"], v.get("role")) for v in map(Record.json, c.records(events))}

            wanted = {
                ("promoted", "weekly_quick"),
                ("promoted", "ensemble"),
                ("loaded", "ensemble"),
            }
            assert collector.wait(lambda c: wanted <= seen(c), 240), (
                seen(collector),
                worker.log_tail(),
            )
            promoted = next(
                v
                for v in map(Record.json, collector.records(events))
                if v["event"] == "promoted" and v.get("role") == "ensemble"
            )
            assert "refit after weekly_quick v1 was promoted" in promoted["detail"]
            pred = probe(sender, collector, settings.topic("signals"), predictions, "BTC")
            assert pred is not None
            assert pred["model_versions"]["ensemble"] == promoted["version"], pred
            assert set(pred["weights"]) == {"weekly_quick", "online"}
            assert pred["weights"]["weekly_quick"] > 0.8
    finally:
        worker.stop()
