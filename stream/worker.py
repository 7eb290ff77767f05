"""Running a worker process: topics first, then the Faust worker until interrupted."""

from __future__ import annotations

import asyncio
import logging

from stream.app import create_app
from stream.settings import Settings
from stream.topics import ensure_topics

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Create missing topics, build the app and run its worker (blocks until stopped)."""
    import faust

    created = asyncio.run(ensure_topics(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    built = create_app(settings)
    worker = faust.Worker(built.app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
