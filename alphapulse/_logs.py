"""Logging of every command and of the worker: the one place that configures it.

``ALPHAPULSE_LOG_FORMAT=text`` (the default) writes plain lines; ``json`` writes one JSON object
per line (:class:`JsonFormatter`) with ``time`` (ISO 8601, UTC), ``level``, ``logger``,
``message``, the context a log call passes with ``extra=`` (``model_key``, ``topic``,
``partition``, ``offset``, ``offsets``, ...) and, for an exception, ``exc`` with its traceback.

Examples
--------
>>> import orjson
>>> record = logging.makeLogRecord(
...     {"name": "agents.learner", "levelno": 30, "levelname": "WARNING", "msg": "late %s",
...      "args": ("o1",), "created": 0.0, "partition": 3, "offset": 17}
... )
>>> doc = orjson.loads(JsonFormatter().format(record))
>>> doc["time"], doc["level"], doc["logger"], doc["message"], doc["partition"], doc["offset"]
('1970-01-01T00:00:00.000Z', 'WARNING', 'agents.learner', 'late o1', 3, 17)
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, Any

import orjson

from stream._throttle import LogThrottle

__all__ = [
    "CLI_TEXT_FORMAT",
    "WORKER_TEXT_FORMAT",
    "JsonFormatter",
    "RepeatFilter",
    "configure_logging",
    "dumps",
    "iso_time",
    "record_dict",
]

CLI_TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""Text lines of the short-lived commands."""
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Text lines of the worker, which runs for days: each line has its time."""

REPEAT_WINDOW_S = 10.0
"""Shortest time between two lines of the same library message (:class:`RepeatFilter`)."""
OWN_PACKAGES = frozenset({"alphapulse", "agents", "stream", "models", "bench"})
"""Top-level packages whose log records :class:`RepeatFilter` always lets through."""

# Attributes every LogRecord has; any other attribute came from ``extra=`` and is context.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_EXC_FORMATTER = logging.Formatter()


def iso_time(created: float) -> str:
    """``created`` (epoch seconds) as ISO 8601 UTC with milliseconds.

    >>> iso_time(1714564800.25)
    '2024-05-01T12:00:00.250Z'
    """
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def record_dict(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of ``record`` as a JSON-ready dict (the message formatted, context added)."""
    doc: dict[str, Any] = {
        "time": iso_time(record.created),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            doc[key] = value
    if record.exc_info and not record.exc_text:  # cached on the record, as Formatter does
        record.exc_text = _EXC_FORMATTER.formatException(record.exc_info)
    if record.exc_text:
        doc["exc"] = record.exc_text
    if record.stack_info:
        doc["stack"] = record.stack_info
    return doc


def dumps(doc: dict[str, Any]) -> bytes:
    """``doc`` as compact JSON; values JSON does not know (paths, sets, ...) as their ``str``.

    >>> dumps({"partition": 1, "offsets": {0: [4, 9]}, "path": frozenset()})
    b'{"partition":1,"offsets":{"0":[4,9]},"path":"frozenset()"}'
    """
    return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        return dumps(record_dict(record)).decode()


class RepeatFilter(logging.Filter):
    """Let a library's message through at most once per ``window_s``, with the count of the
    repeats it dropped.

    A library retrying without end (aiokafka when no broker answers: some 500 lines a second)
    would otherwise flood the console and the Redis stream. Records of the project's own
    packages (:data:`OWN_PACKAGES`) always pass. Of any other logger, the first record of each
    message (logger, level and format string) passes, its repeats within ``window_s`` are
    dropped and counted, and the first one after the window passes with the count appended.
    When a flood stops, the count of its last window is not reported.
    One filter may serve several handlers: each record is decided once.

    >>> now = [0.0]
    >>> f = RepeatFilter(window_s=10.0, clock=lambda: now[0])
    >>> def rec(name, msg):
    ...     return logging.makeLogRecord({"name": name, "levelno": 40, "msg": msg, "args": (1,)})
    >>> [f.filter(rec("aiokafka", "node %s down")) for _ in range(3)]
    [True, False, False]
    >>> f.filter(rec("agents.learner", "late %s")), f.filter(rec("agents.learner", "late %s"))
    (True, True)
    >>> now[0] = 10.5
    >>> again = rec("aiokafka", "node %s down")
    >>> f.filter(again), again.getMessage()
    (True, 'node 1 down (2 repeats not logged since its previous line)')
    """

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        own: frozenset[str] = OWN_PACKAGES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.own = own
        self._throttle = LogThrottle(burst=1, window_s=window_s, clock=clock)
        self._lock = threading.Lock()
        self._last: tuple[logging.LogRecord, bool] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.partition(".")[0] in self.own:
            return True
        with self._lock:
            last = self._last
            if last is not None and last[0] is record:  # another handler, the same record
                return last[1]
            passes, held = self._throttle.allow(f"{record.name}\0{record.levelno}\0{record.msg}")
            if passes and held:
                record.msg = f"{record.msg} ({held} repeats not logged since its previous line)"
            self._last = (record, passes)
            return passes


def configure_logging(
    fmt: str = "text",
    level: int | str = logging.WARNING,
    *,
    text_format: str = CLI_TEXT_FORMAT,
    handlers: Iterable[logging.Handler] = (),
    stream: IO[str] | None = None,
) -> None:
    """Replace the root logger's handlers: one on ``stream`` (default stderr) in ``fmt``
    (``"text"`` or ``"json"``), plus ``handlers`` (each keeps its own level and formatter).
    Every one of them drops a library's repeated messages (:class:`RepeatFilter`).

    Calling it again replaces the configuration; warnings of the :mod:`warnings` module are logged
    too, so that in JSON they are JSON as well.

    >>> import io
    >>> out = io.StringIO()
    >>> configure_logging("json", "INFO", stream=out)
    >>> logging.getLogger("x").info("ready", extra={"model_key": "BTC"})
    >>> orjson.loads(out.getvalue())["model_key"]
    'BTC'
    >>> configure_logging()
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
    console = logging.StreamHandler(sys.stderr if stream is None else stream)
    console.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    repeats = RepeatFilter()
    for handler in (console, *handlers):
        for old_filter in [f for f in handler.filters if isinstance(f, RepeatFilter)]:
            handler.removeFilter(old_filter)
        handler.addFilter(repeats)
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
