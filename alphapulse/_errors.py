"""The CLI's one error policy: which failures exit with 2 and which with 1, each as one line.

Status 2 (usage or configuration): the command cannot run as given; running it again unchanged
fails the same way. Status 1 (runtime): the command was valid but failed while running, such as
an unreachable or refusing Kafka, MLflow or PostgreSQL; it may succeed later. The table is in
docs/operations.md. An exception outside the policy (a bug) keeps its traceback.

>>> from stream.errors import BrokerError
>>> exit_code(ConfigError("x")), exit_code(BrokerError("x")), exit_code(KeyError("x"))
(2, 1, None)
>>> try:
...     Settings.model_validate({"web_port": "abc", "topic_prefix": "a b"})
... except ValidationError as exc:
...     print(*messages(exc, environ={}), sep="\\n")
ALPHAPULSE_TOPIC_PREFIX must not contain whitespace
ALPHAPULSE_WEB_PORT: must be an integer from 1 to 65535, got 'abc'
"""

from __future__ import annotations

import os
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from aiokafka.errors import KafkaError
from pydantic import SecretStr, ValidationError
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click
from typer.core import TyperGroup

from models.errors import AlphaPulseError, ConfigError, DataError, RegistryError
from stream.errors import ContractViolation
from stream.settings import Settings, env_names

__all__ = ["FAILURE", "REACH_TIMEOUT_S", "USAGE", "GuardedGroup", "exit_code", "messages", "report"]

USAGE = 2
"""Exit status of a usage or configuration error."""
FAILURE = 1
"""Exit status of a runtime failure."""
REACH_TIMEOUT_S = 5.0
"""Longest a command waits for Kafka, MLflow or PostgreSQL to accept a connection."""

# MLflow's codes for a request that is wrong in itself (a missing version, a bad parameter).
_MLFLOW_USAGE_CODES = frozenset(
    {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS"}
)


def _is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a psycopg error; psycopg (the store extra) is asked only if loaded.

    No psycopg error can exist before something imported psycopg, so an install without the
    store extra never imports it here.

    >>> import psycopg
    >>> down = psycopg.OperationalError("connection refused")
    >>> _is_database_error(down), exit_code(down), messages(down, environ={})
    (True, 1, ['PostgreSQL store: connection refused'])
    """
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


def exit_code(exc: BaseException) -> int | None:
    """The exit status for ``exc``, or None when it is outside the policy (re-raise it)."""
    if isinstance(exc, ConfigError | DataError | ContractViolation | ValidationError):
        return USAGE
    if isinstance(exc, UsageError):
        return USAGE
    if isinstance(exc, RegistryError):
        code = getattr(exc.__cause__, "error_code", None)
        return USAGE if code in _MLFLOW_USAGE_CODES else FAILURE
    if isinstance(exc, AlphaPulseError | KafkaError | OSError) or _is_database_error(exc):
        return FAILURE
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def messages(exc: BaseException, environ: Mapping[str, str]) -> list[str]:
    """The lines that say what went wrong (without the ``error:`` prefix)."""
    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        return _settings_messages(exc, environ)
    if isinstance(exc, UsageError):
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return [_one_line(exc.format_message().replace("Value error, ", "")) + where]
    text = _one_line(str(exc))
    if isinstance(exc, KafkaError):
        return [f"Kafka: {text or type(exc).__name__}"]
    if _is_database_error(exc):
        return [f"PostgreSQL store: {text or type(exc).__name__}"]
    if isinstance(exc, TimeoutError) and not text:
        return ["timed out"]
    return [text or type(exc).__name__]


def report(exc: BaseException, environ: Mapping[str, str]) -> int | None:
    """Print ``exc`` as ``error:`` lines on stderr and return its exit status; None if not ours."""
    code = exit_code(exc)
    if code is not None:
        for line in messages(exc, environ):
            typer.echo(f"error: {line}", err=True)
    return code


class GuardedGroup(TyperGroup):
    """A command group whose commands (and their subgroups') follow the policy."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (NoArgsIsHelpError, typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            code = report(exc, os.environ)
            if code is None:
                raise
            raise typer.Exit(code) from None


def _settings_messages(exc: ValidationError, environ: Mapping[str, str]) -> list[str]:
    """One line per bad setting, naming the variable that set it and what it accepts."""
    lines: list[str] = []
    seen: set[str] = set()
    upper = {k.upper() for k in environ}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in seen:
            continue
        seen.add(field)
        if field not in Settings.model_fields:
            lines.append(f"{field}: {error['msg']}")
            continue
        names = env_names(field)
        var = next((n for n in names if n in upper), names[0])
        msg = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "value_error":
            lines.append(msg if any(n in msg for n in names) else f"{var}: {msg}")
            continue
        secret = _is_secret(field)
        got = "'***'" if secret else repr(error.get("input"))
        lines.append(f"{var}: must be {_accepts(field)}, got {got}")
    return lines


def _is_secret(field: str) -> bool:
    return SecretStr in _types(Settings.model_fields[field].annotation)


def _types(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _accepts(field: str) -> str:
    """What the setting accepts, in words.

    >>> _accepts("web_port"), _accepts("log_level"), _accepts("retrain_on_drift")
    ('an integer from 1 to 65535', 'one of DEBUG, INFO, WARNING, ERROR', 'true or false')
    >>> _accepts("join_window_s"), _accepts("broker_heap")
    ('a number greater than 0', 'text matching ^[0-9]+[kmgKMG]?$')
    """
    info = Settings.model_fields[field]
    kind = _types(info.annotation)[0]
    if typing.get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(kind))
    if kind is bool:
        return "true or false"
    if kind is Path:
        return "a path"
    bounds = {
        name: getattr(m, name)
        for m in info.metadata
        for name in ("ge", "gt", "le", "lt")
        if getattr(m, name, None) is not None
    }
    noun = {int: "an integer", float: "a number"}.get(kind)
    if noun is None:
        pattern = next((m.pattern for m in info.metadata if getattr(m, "pattern", None)), None)
        return f"text matching {pattern}" if pattern else "text"
    if "ge" in bounds and "le" in bounds:
        return f"{noun} from {bounds['ge']} to {bounds['le']}"
    words = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
    parts = [f"{words[k]} {v}" for k, v in bounds.items()]
    return f"{noun} {' and '.join(parts)}" if parts else noun
