"""``alphapulse logs``: read the workers' Redis log stream back.

The workers write their log records at INFO and above and a performance snapshot every
``ALPHAPULSE_REDIS_SNAPSHOT_S`` seconds to ``ALPHAPULSE_REDIS_STREAM`` (:mod:`alphapulse._logsink`).
This command prints the newest ``--count`` entries, oldest first, then with ``--follow`` waits for
new ones until Ctrl-C. Text by default, one JSON object per line with ``--json``. Errors follow
:mod:`alphapulse._errors`: no ``ALPHAPULSE_REDIS_URL`` exits with 2, Redis unreachable with 1.

>>> import typer
>>> from typer.testing import CliRunner
>>> app = typer.Typer()
>>> register(app)
>>> CliRunner().invoke(app, ["--help"]).exit_code
0
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer

from alphapulse._errors import REACH_TIMEOUT_S
from alphapulse._logsink import LogStreamError, read_entry, redis_client, redis_where
from models.errors import ConfigError
from stream.settings import Settings

__all__ = ["BLOCK_MS", "register", "render_text"]

BLOCK_MS = 5000
"""Longest one blocking read of ``--follow`` waits at the server before it asks again."""

_RECORD_FIELDS = frozenset({"id", "kind", "worker", "time", "level", "logger", "message", "exc"})


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:g}"


def render_text(doc: dict[str, Any]) -> str:
    """One entry (:func:`alphapulse._logsink.read_entry`) as text: a log record with its context,
    or a snapshot's rates, latency, lag and rolling AUC per component.

    >>> render_text({"id": "1-0", "kind": "log", "worker": "h:7", "time": "T", "level": "INFO",
    ...              "logger": "agents.learner", "message": "m", "partition": 2})
    'T h:7 INFO    agents.learner: m [partition=2]'
    >>> render_text({"kind": "snapshot", "time": "T", "worker": "h:7",
    ...              "rates": {"predictions_per_s": 12.5, "outcomes_per_s": 3.0},
    ...              "latency": {"p50_ms": 1.2, "p99_ms": 9.0}, "lag": {"total": 4},
    ...              "components": {"blend": {"roc_auc": 0.7123}, "online": {"roc_auc": None}}})
    'T h:7 SNAPSHOT predictions/s 12.5 outcomes/s 3.0 p50 1.2 ms p99 9 ms lag 4 auc blend=0.712'
    """
    head = " ".join(str(doc[k]) for k in ("time", "worker") if doc.get(k))
    if doc.get("kind") == "snapshot":
        rates, latency = doc.get("rates") or {}, doc.get("latency") or {}
        aucs = " ".join(
            f"{name}={m['roc_auc']:.3f}"
            for name, m in sorted((doc.get("components") or {}).items())
            if isinstance(m, dict) and m.get("roc_auc") is not None
        )
        return (
            f"{head} SNAPSHOT predictions/s {rates.get('predictions_per_s', 0.0):.1f} "
            f"outcomes/s {rates.get('outcomes_per_s', 0.0):.1f} "
            f"p50 {_ms(latency.get('p50_ms'))} ms p99 {_ms(latency.get('p99_ms'))} ms "
            f"lag {(doc.get('lag') or {}).get('total', 0)}" + (f" auc {aucs}" if aucs else "")
        )
    line = f"{head} {doc.get('level', ''):<7} {doc.get('logger', '')}: {doc.get('message', '')}"
    context = " ".join(f"{k}={v}" for k, v in doc.items() if k not in _RECORD_FIELDS)
    if context:
        line += f" [{context}]"
    if doc.get("exc"):
        line += "\n" + str(doc["exc"])
    return line


def _print(entries: list[tuple[str, dict[str, str]]], json_out: bool) -> None:
    for entry_id, fields in entries:
        doc = read_entry(entry_id, fields)
        typer.echo(orjson.dumps(doc, default=str).decode() if json_out else render_text(doc))


def _read(client: Any, stream: str, count: int, follow: bool, json_out: bool) -> None:
    newest = client.xrevrange(stream, count=count) if count > 0 else []
    _print(list(reversed(newest)), json_out)
    last = newest[0][0] if newest else "$"
    while follow:
        answer = client.xread({stream: last}, count=500, block=BLOCK_MS)
        for _, entries in answer or ():
            _print(entries, json_out)
            if entries:
                last = entries[-1][0]


def register(app: typer.Typer) -> None:
    """Add the ``logs`` command to ``app``."""

    @app.command("logs")
    def logs(
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Then wait for new entries until Ctrl-C.")
        ] = False,
        json_out: Annotated[
            bool, typer.Option("--json", help="One JSON object per line (id, kind and fields).")
        ] = False,
        count: Annotated[
            int, typer.Option("--count", "-n", min=0, help="Newest entries to print first.")
        ] = 100,
    ) -> None:
        """Print the workers' Redis log stream: log records (INFO and above) and performance
        snapshots, oldest first. Needs ALPHAPULSE_REDIS_URL."""
        settings = Settings()
        url = settings.redis_url
        if url is None:
            raise ConfigError(
                "ALPHAPULSE_REDIS_URL is not set: set it to the Redis the workers write their "
                "logs to, such as redis://127.0.0.1:6379/0"
            )
        # A blocking read waits up to BLOCK_MS at the server: the socket must wait longer.
        client = redis_client(url, REACH_TIMEOUT_S, BLOCK_MS / 1000 + REACH_TIMEOUT_S)
        # redis is installed: redis_client raised a ConfigError otherwise.
        from redis.exceptions import RedisError

        try:
            _read(client, settings.redis_stream, count, follow, json_out)
        except KeyboardInterrupt:
            return  # Ctrl-C is how --follow ends
        except RedisError as exc:
            raise LogStreamError(
                f"Redis log stream at {redis_where(url)}: {' '.join(str(exc).split())}"
            ) from None
        finally:
            client.close()
