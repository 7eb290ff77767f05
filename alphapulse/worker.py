"""Running a worker process: topics first, then the Faust worker until interrupted."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer

from alphapulse._logs import WORKER_TEXT_FORMAT, configure_logging
from alphapulse._logsink import (
    RedisLogHandler,
    RedisLogSink,
    redis_client,
    redis_where,
    snapshot_doc,
)
from alphapulse.app import Built, create_app
from stream import _faust_consumer
from stream.direct_fetch import DirectFetch
from stream.kafka import client_kwargs
from stream.settings import Settings, unknown_variables
from stream.topics import ensure_topics
from stream.transactions import read_committed

__all__ = [
    "REDIS_TIMEOUT_S",
    "attach_direct_fetch",
    "attach_log_sink",
    "freeze_startup_objects",
    "install_event_loop",
    "open_log_sink",
    "prepare_process",
    "run_app",
    "run_worker",
]

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0
"""Longest the log stream's thread waits for Redis to connect or answer."""


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
    """Run a Faust app's worker until stopped, with the start-up objects frozen.

    Logging stays as the caller configured it (:func:`alphapulse._logs.configure_logging`):
    Faust's worker would replace the root logger's handlers with its own.
    """
    import faust

    @app.task
    async def _library_log_levels() -> None:
        # Faust's worker leaves its own and aiokafka's loggers at DEBUG, which costs a log record
        # per message sent; keep them at the worker's level (at least INFO).
        level = max(logging.INFO, logging.getLevelName(loglevel.upper()))
        for name in ("faust", "mode", "aiokafka"):
            logging.getLogger(name).setLevel(level)

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    worker.spinner = None  # it writes to stdout, between the log lines
    log.debug("objects frozen out of garbage collection: %d", freeze_startup_objects())
    worker.execute_from_commandline()


def attach_direct_fetch(app: Any, settings: Settings) -> DirectFetch:
    """Fetch ``app``'s batch-routed topics on its event loop (:mod:`stream.direct_fetch`)."""

    conf = app.conf  # the sizes of the worker's Faust consumer (faust_tuning_kwargs)

    def make_consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **client_kwargs(settings),
            group_id=settings.app_id,  # to read the group's committed offsets; it never joins
            enable_auto_commit=False,
            isolation_level="read_committed",  # as the worker's Faust consumer
            auto_offset_reset=conf.consumer_auto_offset_reset,
            max_partition_fetch_bytes=conf.consumer_max_fetch_size,
            max_poll_records=conf.broker_max_poll_records,
        )

    direct = DirectFetch(app, make_consumer, settings.fetch_max_wait_ms, settings.fetch_min_bytes)

    @app.task
    async def _direct_fetch() -> None:
        await direct.run()

    return direct


def open_log_sink(settings: Settings) -> RedisLogSink | None:
    """The Redis log stream's sink when ``ALPHAPULSE_REDIS_URL`` is set (not started yet)."""
    url = settings.redis_url
    if url is None:
        return None
    connect = partial(redis_client, url, REDIS_TIMEOUT_S)
    connect()  # no connection yet: fails now, as a configuration error, if redis is missing
    return RedisLogSink(
        connect,
        settings.redis_stream,
        settings.redis_maxlen,
        settings.redis_queue_size,
        where=redis_where(url),
        source=f"{socket.gethostname()}:{os.getpid()}",
    )


def attach_log_sink(built: Built, sink: RedisLogSink, snapshot_s: float) -> None:
    """Count the sink's drops on ``/metrics`` and offer it a performance snapshot every
    ``snapshot_s`` seconds, from the figures the dashboard shows."""
    metrics = built.metrics
    metrics.log_records_dropped = lambda: sink.dropped

    @built.app.timer(interval=snapshot_s, name="alphapulse-redis-snapshot")
    async def _snapshot() -> None:
        sink.offer("snapshot", snapshot_doc(metrics.performance()))


def run_worker(settings: Settings) -> None:
    """Configure logging, create missing topics, build the app and run its worker (blocks
    until stopped)."""
    sink = open_log_sink(settings)
    handlers = [] if sink is None else [RedisLogHandler(sink)]
    configure_logging(
        settings.log_format,
        settings.log_level,
        text_format=WORKER_TEXT_FORMAT,
        handlers=handlers,
    )
    try:
        if sink is not None:
            sink.start()
            log.info(
                "log records at INFO and above, and a snapshot every %g s, go to the Redis "
                "stream %s at %s (MAXLEN ~ %d)",
                settings.redis_snapshot_s,
                settings.redis_stream,
                sink.where,
                settings.redis_maxlen,
            )
        for name, nearest in unknown_variables(os.environ):
            hint = f"did you mean {nearest}?" if nearest else "ignored"
            log.warning("unknown %s (%s)", name, hint)
        created = asyncio.run(ensure_topics(settings))
        if created:
            log.info("created topics: %s", ", ".join(created))
        prepare_process(settings)
        built = create_app(settings)
        read_committed(built.app)  # re-routed outcomes are written in the learner's transactions
        if settings.direct_fetch:
            attach_direct_fetch(built.app, settings)
        if sink is not None:
            attach_log_sink(built, sink, settings.redis_snapshot_s)
        run_app(built.app, settings.log_level)
    finally:
        if sink is not None:
            for handler in handlers:
                logging.getLogger().removeHandler(handler)
            sink.close()
