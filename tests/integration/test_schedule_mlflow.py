"""The clock schedule against a real MLflow server: restarts neither repeat nor skip a run.

Each worker is a fresh :class:`agents.retrainer.Retrainer` with an injected clock; the only memory
it shares with the workers before it is the MLflow experiment tag ``alphapulse.last_run.<cadence>``
on a real ``mlflow server``. Jobs are recorded, not trained: the training job has its own tests.
"""

from __future__ import annotations

import asyncio
import uuid
from functools import partial
from typing import Any

from agents.retrainer import Retrainer
from models.roles import CADENCES
from stream.registry import open_registry
from stream.runtime import Runtime
from stream.settings import Settings

HOUR = 3_600_000
DAY = 24 * HOUR
MON = 1_704_067_200_000  # 2024-01-01 00:00 UTC, a Monday


class _Worker(Retrainer):
    """A worker process whose jobs are recorded with the injected time they started at."""

    now: int = 0
    started: list[tuple[str, int]]

    async def run(
        self, cadence: str, reason: str, since_ms: int | None = None
    ) -> dict[str, object] | None:
        assert reason == "schedule"
        self.started.append((cadence, self.now))
        return None


def _live(
    settings: Settings, runs: list[tuple[str, int]], start: int, end: int, every: int
) -> None:
    """One worker's life from ``start`` to ``end``, its timer ticking every ``every`` ms."""
    worker = _Worker(Runtime(settings, topics={}), registry=partial(open_registry, settings))
    worker.started = runs

    async def ticks() -> None:
        worker.now = start + every
        while worker.now <= end:
            await worker.tick(worker.now)
            worker.now += every

    asyncio.run(ticks())


def _settings(mlflow_server: str, **schedule: str) -> Settings:
    values: dict[str, Any] = {f"retrain_{c}_at": "off" for c in CADENCES}
    values.update(
        schedule,
        mlflow_tracking_uri=mlflow_server,
        mlflow_experiment=f"schedule-{uuid.uuid4().hex[:8]}",
    )
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_restarts_every_29_hours_run_each_nightly_slot_once(mlflow_server: str) -> None:
    settings = _settings(mlflow_server, retrain_nightly_incremental_at="02:00")
    runs: list[tuple[str, int]] = []
    # A new deployment records a baseline and waits for the next slot.
    _live(settings, runs, MON, MON + HOUR, HOUR)
    assert runs == []
    assert open_registry(settings).last_run("nightly_incremental") == MON + HOUR
    t = MON + HOUR
    while t < MON + 8 * DAY:
        end = min(t + 29 * HOUR, MON + 8 * DAY)
        _live(settings, runs, t, end, HOUR)
        t = end
    slots = [MON + 2 * HOUR + k * DAY for k in range(8)]
    assert [c for c, _ in runs] == ["nightly_incremental"] * 8, runs
    for (_, ran), slot in zip(runs, slots, strict=True):
        assert slot <= ran <= slot + 2 * HOUR, (runs, slots)


def test_a_slot_missed_while_down_runs_once_at_start(mlflow_server: str) -> None:
    settings = _settings(mlflow_server, retrain_weekly_quick_at="sun 03:00")
    runs: list[tuple[str, int]] = []
    _live(settings, runs, MON, MON + 2 * HOUR, HOUR)
    # Down from Monday 02:00 to the Wednesday after next: two Sunday slots missed, one run.
    start = MON + 16 * DAY
    _live(settings, runs, start, start + 3 * HOUR, HOUR)
    assert runs == [("weekly_quick", start + HOUR)]
    # A restart right after it does not run it again.
    _live(settings, runs, start + 3 * HOUR, start + 6 * HOUR, HOUR)
    assert runs == [("weekly_quick", start + HOUR)]
