"""Scheduled retraining: the trainer's cadences run as child processes of the leader worker.

Each cadence with a non-zero interval runs ``alphapulse train --model-type T --cadence C --json``
every interval (the first run one interval after the worker starts), and ``weekly_quick`` can also
run after a drift event (at most once per ``retrain_drift_min_gap_s``). Training runs in its own
process, so the worker's event loop and memory are untouched; the registry decides promotion
(champion/challenger) and the reloader picks up a promoted version, which closes the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field

import orjson

from stream.codec import encode, now_ms
from stream.records import ModelEvent
from stream.runtime import Runtime

__all__ = ["Retrainer", "train_command"]

log = logging.getLogger(__name__)


def train_command(model_type: str, cadence: str) -> list[str]:
    """The command line of one training job.

    >>> train_command("lightgbm", "weekly_quick")[-5:]
    ['--model-type', 'lightgbm', '--cadence', 'weekly_quick', '--json']
    """
    return [
        sys.executable,
        "-m",
        "alphapulse.cli",
        "train",
        "--model-type",
        model_type,
        "--cadence",
        cadence,
        "--json",
    ]


@dataclass
class Retrainer:
    """Runs training jobs one at a time and reports each as a ModelEvent."""

    rt: Runtime
    running: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_drift_run: float = -1e18
    runs: int = 0

    async def run(self, cadence: str, reason: str) -> dict[str, object] | None:
        """Train one cadence now (waits for a job already running); returns its JSON summary."""
        settings = self.rt.settings
        async with self.running:
            t0 = time.monotonic()
            log.info("retraining %s with %s (%s)", cadence, settings.retrain_model_type, reason)
            proc = await asyncio.create_subprocess_exec(
                *train_command(settings.retrain_model_type, cadence),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            self.runs += 1
            if proc.returncode != 0:
                tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                log.warning("retraining %s failed (exit %s): %s", cadence, proc.returncode, tail[0])
                return None
            summary: dict[str, object] = orjson.loads(out.decode().strip().splitlines()[-1])
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

    async def on_drift(self) -> None:
        """Retrain ``weekly_quick`` after a drift event, unless one ran within the minimum gap."""
        settings = self.rt.settings
        now = time.monotonic()
        if not settings.retrain_on_drift:
            return
        if now - self.last_drift_run < settings.retrain_drift_min_gap_s:
            return
        self.last_drift_run = now
        await self.run("weekly_quick", "drift")
