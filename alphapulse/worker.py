"""Running a worker process: topics first, then the Faust worker until interrupted."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from typing import Any

from alphapulse.app import create_app
from stream import _faust_consumer
from stream.settings import Settings, unknown_variables
from stream.topics import ensure_topics

__all__ = [
    "freeze_startup_objects",
    "install_event_loop",
    "prepare_process",
    "run_app",
    "run_worker",
]

log = logging.getLogger(__name__)


def install_event_loop(settings: Settings) -> None:
    """Make a new event loop of the configured kind (``ALPHAPULSE_EVENT_LOOP``) the current one."""
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; running on the asyncio event loop")
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())


def freeze_startup_objects() -> int:
    """Exclude every object alive now from later garbage collections; return how many.

    After the imports, a worker holds some 200,000 objects (functions, classes, modules) that live
    as long as the process. Python's full collections walk them all, which took 80 to 200 ms per
    collection under load and showed up directly in the prediction latency tail. Frozen objects
    are still freed by reference counting; only cycles among them would outlive their use.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def prepare_process(settings: Settings) -> None:
    """Event loop and Faust consumer set-up shared by the worker and the benchmark's baseline."""
    install_event_loop(settings)
    _faust_consumer.install(settings.fetch_min_bytes, settings.fetch_max_wait_ms)


def run_app(app: Any, loglevel: str) -> None:
    """Run a Faust app's worker until stopped, with the start-up objects frozen."""
    import faust

    @app.task
    async def _library_log_levels() -> None:
        # Faust's worker leaves its own and aiokafka's loggers at DEBUG, which costs a log record
        # per message sent; keep them at the worker's level (at least INFO).
        level = max(logging.INFO, logging.getLevelName(loglevel.upper()))
        for name in ("faust", "mode", "aiokafka"):
            logging.getLogger(name).setLevel(level)

    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    log.debug("objects frozen out of garbage collection: %d", freeze_startup_objects())
    worker.execute_from_commandline()


def run_worker(settings: Settings) -> None:
    """Create missing topics, build the app and run its worker (blocks until stopped)."""
    for name, nearest in unknown_variables(os.environ):
        log.warning("unknown %s (%s)", name, f"did you mean {nearest}?" if nearest else "ignored")
    created = asyncio.run(ensure_topics(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    prepare_process(settings)
    run_app(create_app(settings).app, settings.log_level)
