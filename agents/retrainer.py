"""Retraining: the trainer's cadences run as jobs of the leader worker, by the clock and on drift.

Each cadence runs :func:`agents.training.run_training` by its UTC schedule
(:mod:`models.schedule`): :meth:`Retrainer.tick`, called by a timer, starts every cadence that a
slot has passed since its last run, which the registry remembers (so a restart neither repeats nor
forgets a run).

A drift alarm plans ``weekly_quick`` jobs on the outcomes since the alarm: each runs once that many
outcomes have been learned after it (``retrain_drift_outcomes``, 300, 600, 1200 and 2400 by
default), so that the new model learns the new regime only, and sooner with little data than late
with more. An alarm within ``retrain_drift_min_gap_s`` of the one that started the plan is
ignored; a later one starts a new plan. ``bench.quality`` measures this policy.

Each job runs in a fresh child process, so the worker's event loop and memory are untouched. The
job decides promotion (champion/challenger) but leaves the alias to the worker, which moves it and
publishes ``promoted`` (:mod:`agents.promotion`); the reloader then swaps the version in. Each job
publishes ``retrain_started`` and ``retrain_finished`` ModelEvents with its trigger. After a
promotion the ensemble is refitted (:func:`agents.ensemble_fit.refit_after_promotion`), after a
drift job on the same outcomes as the job.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agents.ensemble_fit import refit_after_promotion
from agents.promotion import promote_and_announce
from agents.training import ReportWriter, TrainingRequest, run_training
from models.errors import AlphaPulseError
from models.registry import ModelRegistry
from models.roles import CADENCES
from models.schedule import Schedule, due, parse_schedule
from stream.codec import encode, now_ms
from stream.records import ModelEvent
from stream.runtime import Runtime

__all__ = ["TRIGGERS", "Retrainer"]

log = logging.getLogger(__name__)

DRIFT_POLL_S = 1.0
"""How often a drift plan checks the count of learned outcomes."""

TRIGGERS = ("schedule", "drift", "manual")
"""What starts a job, as its ModelEvents say; any other reason counts as ``manual``."""


@dataclass
class DriftPlan:
    """The drift-triggered jobs still to run after one alarm."""

    since_ms: int
    """Event time of the outcome that raised the alarm: the jobs train on outcomes from it on."""
    learned_at: int
    """The worker's count of learned outcomes when the alarm came."""
    due: list[int]
    """Outcomes learned after the alarm at which the remaining jobs run, in increasing order."""


@dataclass
class Retrainer:
    """Runs training jobs one at a time and reports each as ModelEvents.

    ``registry`` opens the registry that remembers each cadence's last scheduled run (called in
    an executor, as MLflow calls block); without it, :meth:`tick` runs nothing.
    """

    rt: Runtime
    write_report: ReportWriter | None = None
    """Writes each job's report (the composition root passes the application's writer)."""
    registry: Callable[[], ModelRegistry] | None = None
    running: asyncio.Lock = field(default_factory=asyncio.Lock)
    opening: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while the registry is opened: the warm at start and a first tick open it once."""
    last_alarm: float = -1e18
    """When (monotonic seconds) the alarm that started the drift plan was accepted."""
    plan: DriftPlan | None = None
    follower: asyncio.Task[None] | None = None
    runs: int = 0
    _registry: ModelRegistry | None = None
    _last_runs: dict[str, int] = field(default_factory=dict)
    """Each cadence's last run as this worker last read or wrote it."""

    def schedules(self) -> dict[str, Schedule]:
        """Each cadence's schedule, from the ``retrain_<cadence>_at`` settings."""
        settings = self.rt.settings
        return {c: parse_schedule(getattr(settings, f"retrain_{c}_at")) for c in CADENCES}

    async def warm(self, now: int) -> None:
        """Open the registry and read each cadence's last run now, at start, giving a cadence that
        never ran ``now`` as its baseline (as :meth:`tick` would), so that the first tick does not
        open MLflow under load; a failure is left to the ticks."""
        schedules = {c: s for c, s in self.schedules().items() if not s.off}
        if self.registry is None or not schedules:
            return
        try:
            for cadence in schedules:
                await self._read_last_run(cadence, now)
        except AlphaPulseError as exc:
            log.warning("reading the retraining schedules' last runs failed: %s", exc)

    async def _read_last_run(self, cadence: str, now: int) -> int | None:
        """``cadence``'s last run as the registry has it, remembered here; a cadence that never
        ran gets ``now`` as its baseline (its first run is the next slot), and None is returned."""
        registry = await self._open()
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(None, registry.last_run, cadence)
        if last is None:
            await loop.run_in_executor(None, registry.set_last_run, cadence, now)
            log.info("%s never ran: its first run is its next scheduled time", cadence)
        self._last_runs[cadence] = now if last is None else last
        return last

    async def _open(self) -> ModelRegistry:
        """The registry, opened once (in an executor) and kept."""
        assert self.registry is not None
        async with self.opening:
            if self._registry is None:
                loop = asyncio.get_running_loop()
                self._registry = await loop.run_in_executor(None, self.registry)
        return self._registry

    async def tick(self, now: int) -> list[str]:
        """Run every cadence due at ``now`` (epoch ms), in turn; returns the cadences started.

        A cadence that never ran gets ``now`` as its baseline (its first run is the next slot).
        The start is recorded before the job runs: a job cut short by a crash is not repeated.
        The registry is asked only when a cadence's last run is unknown here or a slot has passed
        since it: a last run only moves forward, so one that was not due is still not due.
        """
        schedules = {c: s for c, s in self.schedules().items() if not s.off}
        if not schedules or self.registry is None:
            return []
        started: list[str] = []
        try:
            for cadence, schedule in schedules.items():
                known = self._last_runs.get(cadence)
                if known is not None and not due(schedule, known, now):
                    continue
                # Due by what this worker knows: ask again, another leader may have run it.
                last = await self._read_last_run(cadence, now)
                if last is None or not due(schedule, last, now):
                    continue
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, (await self._open()).set_last_run, cadence, now)
                self._last_runs[cadence] = now
                started.append(cadence)
                await self.run(cadence, "schedule")
        except AlphaPulseError as exc:  # MLflow unreachable: the next tick tries again
            log.warning("checking the retraining schedules failed: %s", exc)
        return started

    async def _event(self, event: str, role: str, **fields: Any) -> None:
        version = fields.pop("version", None)
        detail = str(fields.pop("detail", ""))
        record = ModelEvent(
            event,
            now_ms(),
            role=role,
            version=version if isinstance(version, int | str) else None,
            detail=detail,
            extra=fields,
        )
        await self.rt.topics["model-events"].send(key=role.encode(), value=encode(record))

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

    async def run(
        self, cadence: str, reason: str, since_ms: int | None = None
    ) -> dict[str, object] | None:
        """Train one cadence now (waits for a job already running); returns its summary.

        ``reason`` ``"schedule"`` or ``"drift"`` is the events' trigger; anything else is
        ``"manual"``. ``since_ms`` limits the job to outcomes from that event time on.
        """
        settings = self.rt.settings
        trigger = reason if reason in TRIGGERS else "manual"
        async with self.running:
            t0 = time.monotonic()
            log.info(
                "retraining %s with %s (%s)",
                cadence,
                settings.retrain_model_type,
                reason,
                extra={"cadence": cadence, "trigger": trigger},
            )
            await self._event("retrain_started", cadence, trigger=trigger, cadence=cadence)
            summary: dict[str, Any] | None = None
            failure = ""
            try:
                since = None if since_ms is None else str(since_ms)
                request = TrainingRequest(
                    settings.retrain_model_type, cadence, since=since, move_alias=False
                )
                summary = await self._train(request)
            except AlphaPulseError as exc:  # the job's own errors: one line, keep serving
                log.warning("retraining %s failed: %s", cadence, exc, extra={"cadence": cadence})
                failure = f"failed: {exc}"
            except Exception as exc:  # a failed side job must not stop the worker's agents
                log.exception("retraining %s failed", cadence, extra={"cadence": cadence})
                failure = f"failed: {type(exc).__name__}"
            finally:
                self.runs += 1
            promoted = bool(summary and summary.get("promoted"))
            version = summary.get("version") if summary else None
            role = str(summary.get("model_name") or cadence) if summary else cadence
            await self._event(
                "retrain_finished",
                role,
                version=version,
                detail=failure,
                trigger=trigger,
                cadence=cadence,
                promoted=promoted,
            )
            if summary is None:
                return None
            log.info(
                "retrained %s in %.1fs: %s",
                cadence,
                time.monotonic() - t0,
                summary,
                extra={"cadence": cadence, "role": role, "version": version},
            )
            if promoted and version is not None:
                detail = f"scheduled retraining ({reason}) promoted it"
                if await promote_and_announce(self.rt, role, version, detail, cause=reason):
                    cause = f"{role} v{version} was promoted"
                    await refit_after_promotion(self.rt, cause, since_ms)
            return summary

    async def on_drift(self, model_key: str | None = None, ts: int | None = None) -> None:
        """Plan drift retraining after an alarm raised by the outcome of event time ``ts``.

        Ignored within ``retrain_drift_min_gap_s`` of the alarm that started the plan.
        """
        settings = self.rt.settings
        now = time.monotonic()
        if not settings.retrain_on_drift or not settings.drift_outcomes():
            return
        if now - self.last_alarm < settings.retrain_drift_min_gap_s:
            return
        self.last_alarm = now
        learned = self.rt.counters["outcomes.learned"]
        self.plan = DriftPlan(
            ts if ts is not None else now_ms(), learned, [*settings.drift_outcomes()]
        )
        log.info(
            "drift on model key %s: weekly_quick retrains after %s more outcomes",
            model_key,
            settings.retrain_drift_outcomes,
            extra={"model_key": model_key},
        )
        if self.follower is None or self.follower.done():
            self.follower = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        """Run the plan's jobs as their outcomes arrive; a new plan replaces the old one."""
        while self.plan is not None and self.plan.due:
            plan = self.plan
            if self.rt.counters["outcomes.learned"] - plan.learned_at < plan.due[0]:
                await asyncio.sleep(DRIFT_POLL_S)
                continue
            plan.due.pop(0)
            await self.run("weekly_quick", "drift", since_ms=plan.since_ms)
        self.plan = None
