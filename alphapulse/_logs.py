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
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

import orjson

__all__ = [
    "CLI_TEXT_FORMAT",
    "WORKER_TEXT_FORMAT",
    "JsonFormatter",
    "configure_logging",
    "dumps",
    "iso_time",
    "record_dict",
]

CLI_TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
"""Text lines of the short-lived commands."""
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Text lines of the worker, which runs for days: each line has its time."""

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
    for handler in (console, *handlers):
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
