"""The worker's Redis log stream: log records and performance snapshots, off the hot path.

With ``ALPHAPULSE_REDIS_URL`` set, the worker appends its log records at INFO and above
(:class:`RedisLogHandler`) and a performance snapshot every ``ALPHAPULSE_REDIS_SNAPSHOT_S``
seconds to the stream ``ALPHAPULSE_REDIS_STREAM``, capped with ``XADD ... MAXLEN ~``. Each entry
has the fields ``kind`` (``log`` or ``snapshot``), ``worker`` (``host:pid`` of the worker that
wrote it) and ``data``, one JSON object (a log record as :func:`alphapulse._logs.record_dict`
gives it, or a snapshot: its ``time`` and :meth:`alphapulse.metrics.WorkerMetrics.performance`).

Nothing on the hot path waits for Redis: a handler only puts its record on a bounded queue
(``put_nowait``); one daemon thread (:class:`RedisLogSink`) drains it in batches with redis-py.
When the queue is full the record is dropped and counted (``alphapulse_log_records_dropped_total``
on ``/metrics``). While Redis fails, the thread keeps the batch in hand, logs one line about the
outage (and one when Redis is back), and retries with exponential back-off up to
:data:`BACKOFF_MAX_S`; the queue fills meanwhile and its overflow is dropped and counted.

``redis`` is the optional extra ``alphapulse[redis]``; it is imported only when a URL is set.

Examples
--------
>>> sink = RedisLogSink(lambda: None, "alphapulse:logs", maxlen=100, queue_size=2)
>>> [sink.offer("log", {"message": str(i)}) for i in range(4)], sink.dropped
([True, True, False, False], 2)
>>> read_entry("1-0", {"kind": "log", "data": '{"message":"m"}'})
{'id': '1-0', 'kind': 'log', 'message': 'm'}
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from alphapulse._logs import dumps, iso_time, record_dict
from models.errors import AlphaPulseError, ConfigError

__all__ = [
    "BACKOFF_MAX_S",
    "KINDS",
    "LogStreamError",
    "RedisLogHandler",
    "RedisLogSink",
    "backoff",
    "read_entry",
    "redis_client",
    "redis_where",
    "snapshot_doc",
]

log = logging.getLogger(__name__)

KINDS = ("log", "snapshot")
"""The kinds of entry in the stream."""
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0
"""Longest wait between two attempts to reach Redis."""
BATCH_MAX = 500
"""Most entries written in one pipeline."""


class LogStreamError(AlphaPulseError):
    """The Redis log stream cannot be reached or read."""


def backoff(failures: int, start: float = BACKOFF_START_S, cap: float = BACKOFF_MAX_S) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row: doubling, capped.

    >>> [backoff(n) for n in range(1, 8)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    """
    return float(min(cap, start * 2 ** min(max(failures - 1, 0), 30)))


def redis_where(url: str) -> str:
    """Where ``url`` points, without user or password (for messages).

    >>> redis_where("redis://:secret@cache:6380/2"), redis_where("unix:///run/redis.sock")
    ('cache:6380/2', '/run/redis.sock')
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    db = parts.path if parts.path not in ("", "/") else ""
    return f"{parts.hostname}:{parts.port or 6379}{db}"


def redis_client(url: str, timeout_s: float, read_timeout_s: float | None = None) -> Any:
    """A redis-py client for ``url`` that fails fast: no retries of its own, short timeouts.

    ``read_timeout_s`` (default ``timeout_s``) must exceed the block time of a blocking read.
    Raises :class:`~models.errors.ConfigError` when the ``redis`` package is not installed.
    """
    try:
        # redis is the optional extra alphapulse[redis]: only a configured URL needs it.
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ConfigError(
            "ALPHAPULSE_REDIS_URL is set but the redis package is not installed; "
            "install the extra: pip install 'alphapulse[redis]'"
        ) from None
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s if read_timeout_s is None else read_timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def read_entry(entry_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """One stream entry as one JSON-ready dict: ``id``, ``kind`` and the fields of its data."""
    data = orjson.loads(fields.get("data") or "{}")
    doc: dict[str, Any] = {"id": entry_id, "kind": fields.get("kind", "log")}
    if "worker" in fields:
        doc["worker"] = fields["worker"]
    if isinstance(data, dict):
        doc.update(data)
    else:
        doc["data"] = data
    return doc


class RedisLogSink:
    """A bounded queue of entries and the one thread that appends them to a Redis stream.

    Parameters
    ----------
    connect
        Returns a connected client (:func:`redis_client`); called again after each failure.
    stream
        The stream's key.
    maxlen
        ``MAXLEN ~`` of each ``XADD``: Redis trims whole nodes, so the stream may hold a little
        more.
    queue_size
        Entries that may wait; an entry offered to a full queue is dropped and counted.
    where
        Where Redis is, for the outage messages (no password).
    source
        Which worker writes (``host:pid``): the ``worker`` field of each entry; empty for none.
    backoff_max_s
        Longest wait between two attempts to reach Redis.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        stream: str,
        maxlen: int,
        queue_size: int = 10_000,
        where: str = "Redis",
        source: str = "",
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        if maxlen < 1 or queue_size < 1 or backoff_max_s <= 0:
            raise ValueError("maxlen, queue_size and backoff_max_s must be above 0")
        self.connect = connect
        self.stream = stream
        self.maxlen = maxlen
        self.where = where
        self.source = source
        self.backoff_max_s = backoff_max_s
        self.written = 0
        self.failures = 0
        self._queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(queue_size)
        # The sink's own lines (outage, recovery) skip the queue: when Redis is back the queue
        # is full, and the line saying so would be the one dropped.
        self._own: deque[tuple[str, dict[str, Any]]] = deque(maxlen=100)
        self._dropped = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._client: Any = None
        self._thread = threading.Thread(target=self._run, name="alphapulse-redis-logs", daemon=True)

    @property
    def dropped(self) -> int:
        """Entries dropped so far: the queue was full, or the sink closed with Redis down."""
        with self._lock:
            return self._dropped

    def _drop(self, n: int) -> None:
        with self._lock:
            self._dropped += n

    def offer(self, kind: str, doc: dict[str, Any], own: bool = False) -> bool:
        """Queue one entry without waiting; False (and counted) when the queue is full.

        ``own`` entries (the sink's own log lines) are written first and never wait in the queue.
        """
        if own:
            self._own.append((kind, doc))
            return True
        try:
            self._queue.put_nowait((kind, doc))
        except queue.Full:
            self._drop(1)
            return False
        return True

    def start(self) -> RedisLogSink:
        """Start the thread that writes to Redis."""
        self._thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds while Redis answers), then stop."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[tuple[str, dict[str, Any]]]:
        """Up to :data:`BATCH_MAX` entries, the sink's own first: waits a little for the first,
        not for the others."""
        batch: list[tuple[str, dict[str, Any]]] = []
        while self._own and len(batch) < BATCH_MAX:
            batch.append(self._own.popleft())
        if not batch:
            try:
                batch.append(self._queue.get(timeout=0.2))
            except queue.Empty:
                return []
        while len(batch) < BATCH_MAX:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        batch: list[tuple[str, dict[str, Any]]] = []
        while True:
            if not batch:
                batch = self._take()
                if not batch:
                    if self._closing.is_set():
                        return
                    continue
            if self.write(batch):
                batch = []
                continue
            if self._closing.wait(backoff(self.failures, cap=self.backoff_max_s)):
                # closing with Redis down
                self._drop(len(batch) + self._queue.qsize() + len(self._own))
                return

    def write(self, batch: list[tuple[str, dict[str, Any]]]) -> bool:
        """Append ``batch`` in one pipeline; on failure note the outage and return False."""
        try:
            if self._client is None:
                self._client = self.connect()
            pipe = self._client.pipeline(transaction=False)
            for kind, doc in batch:
                fields: dict[str, str | bytes] = {"kind": kind, "data": dumps(doc)}
                if self.source:
                    fields["worker"] = self.source
                pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            pipe.execute()
        except Exception as exc:  # any failure of Redis is an outage: back off, keep the batch
            self._outage(exc)
            return False
        self.written += len(batch)
        if self.failures:
            log.info(
                "Redis log stream at %s reachable again; %d entries dropped so far",
                self.where,
                self.dropped,
            )
            self.failures = 0
        return True

    def _outage(self, exc: BaseException) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as close_exc:  # the connection is gone anyway
                log.debug("closing the Redis client failed: %r", close_exc)
        self.failures += 1
        if self.failures == 1:  # one line per outage, not one per record
            log.warning(
                "Redis log stream at %s unavailable (%s: %s); log records wait in a queue of %d "
                "and what overflows is dropped and counted (alphapulse_log_records_dropped_total); "
                "retrying with back-off up to %.0f s",
                self.where,
                type(exc).__name__,
                " ".join(str(exc).split())[:200],
                self._queue.maxsize,
                self.backoff_max_s,
            )


class RedisLogHandler(logging.Handler):
    """A logging handler that offers each record (INFO and above by default) to a sink.

    It never waits: a record that finds the sink's queue full is dropped and counted.
    """

    def __init__(self, sink: RedisLogSink, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.offer("log", record_dict(record), own=record.name == __name__)
        except Exception:  # a record that cannot be turned into a dict: logging's own policy
            self.handleError(record)


def snapshot_doc(performance: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """A snapshot entry's data: its ``time`` and the worker's figures.

    >>> snapshot_doc({"rates": {"predictions_per_s": 2.0}}, now=0.0)
    {'time': '1970-01-01T00:00:00.000Z', 'rates': {'predictions_per_s': 2.0}}
    """
    created = time.time() if now is None else now
    return {"time": iso_time(created), **performance}
