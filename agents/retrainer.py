"""Scheduled retraining: the trainer's cadences run as jobs of the leader worker.

Each cadence with a non-zero interval runs :func:`agents.training.run_training` every interval
(the first run one interval after the worker starts), and ``weekly_quick`` can also run after a
drift event (at most once per ``retrain_drift_min_gap_s``). Each job runs in a fresh child process,
so the worker's event loop and memory are untouched; the registry decides promotion
(champion/challenger) and the reloader picks up a promoted version, which closes the loop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agents.training import ReportWriter, TrainingRequest, run_training
from models.errors import AlphaPulseError
from stream.codec import encode, now_ms
from stream.records import ModelEvent
from stream.runtime import Runtime

__all__ = ["Retrainer"]

log = logging.getLogger(__name__)


@dataclass
class Retrainer:
    """Runs training jobs one at a time and reports each promotion as a ModelEvent."""

    rt: Runtime
    write_report: ReportWriter | None = None
    """Writes each job's report (the composition root passes the application's writer)."""
    running: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_drift_run: float = -1e18
    runs: int = 0

    async def _train(self, request: TrainingRequest) -> dict[str, Any]:
        """Run the job in a child process started afresh (spawn: no copy of the worker's state)."""
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                pool, run_training, self.rt.settings, request, None, self.write_report
            )
        finally:
            pool.shutdown(wait=False)

    async def run(self, cadence: str, reason: str) -> dict[str, object] | None:
        """Train one cadence now (waits for a job already running); returns its summary."""
        settings = self.rt.settings
        async with self.running:
            t0 = time.monotonic()
            log.info("retraining %s with %s (%s)", cadence, settings.retrain_model_type, reason)
            try:
                summary = await self._train(TrainingRequest(settings.retrain_model_type, cadence))
            except AlphaPulseError as exc:  # the job's own errors: one line, keep serving
                log.warning("retraining %s failed: %s", cadence, exc)
                return None
            except Exception:  # a failed side job must not stop the worker's agents
                log.exception("retraining %s failed", cadence)
                return None
            finally:
                self.runs += 1
            log.info("retrained %s in %.1fs: %s", cadence, time.monotonic() - t0, summary)
            if summary.get("promoted"):
                version = summary.get("version")
                event = ModelEvent(
                    "promoted",
                    now_ms(),
                    role=str(summary.get("model_name")),
                    version=version if isinstance(version, int | str) else None,
                    detail=f"scheduled retraining ({reason}) promoted it",
                    extra={"cause": reason},
                )
                await self.rt.topics["model-events"].send(
                    key=str(summary.get("model_name")).encode(), value=encode(event)
                )
            return summary

    async def on_drift(self, model_key: str | None = None) -> None:
        """Retrain ``weekly_quick`` after a drift event, unless one ran within the minimum gap."""
        settings = self.rt.settings
        now = time.monotonic()
        if not settings.retrain_on_drift:
            return
        if now - self.last_drift_run < settings.retrain_drift_min_gap_s:
            return
        self.last_drift_run = now
        await self.run("weekly_quick", "drift")
