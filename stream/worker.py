"""Running a worker process: topics first, then the Faust worker until interrupted."""

from __future__ import annotations

import asyncio
import logging

from stream.app import create_app
from stream.settings import Settings
from stream.topics import ensure_topics

__all__ = ["install_event_loop", "run_worker"]

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


def run_worker(settings: Settings) -> None:
    """Create missing topics, build the app and run its worker (blocks until stopped)."""
    import faust

    created = asyncio.run(ensure_topics(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    install_event_loop(settings)
    built = create_app(settings)
    worker = faust.Worker(built.app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
