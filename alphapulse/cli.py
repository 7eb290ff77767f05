"""The ``alphapulse`` command line.

Every command reads the one settings object from the environment. Every command follows the one
error policy of :mod:`alphapulse._errors`: a usage or configuration error exits with status 2, a
runtime failure (Kafka, MLflow or PostgreSQL unreachable, ...) with status 1, each as one line on
stderr without a traceback.

>>> from typer.testing import CliRunner
>>> result = CliRunner().invoke(app, ["--version"])
>>> result.exit_code, result.stdout.startswith("alphapulse ")
(0, True)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console

from alphapulse import cli_ensemble, cli_logs, cli_ops, cli_train
from alphapulse._errors import REACH_TIMEOUT_S, GuardedGroup, report
from alphapulse._logs import configure_logging
from alphapulse.demo import run_demo
from stream.broker import LocalKafka, local_kafka
from stream.mlflow_server import MlflowServer
from stream.settings import Settings, env_names, unknown_variables
from stream.topics import describe_topics, ensure_topics

__all__ = ["app", "main"]

app = typer.Typer(
    cls=GuardedGroup,
    help="AlphaPulse: continuous learning from trading results over Apache Kafka. "
    "Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
broker_app = typer.Typer(help="Run a local Apache Kafka (KRaft) on loopback.", no_args_is_help=True)
mlflow_app = typer.Typer(help="Run a local MLflow tracking server.", no_args_is_help=True)
topics_app = typer.Typer(help="Create and describe the project's topics.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(mlflow_app, name="mlflow")
app.add_typer(topics_app, name="topics")

err = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


def _version() -> str:
    try:
        return version("alphapulse")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree not installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"alphapulse {_version()}")
        raise typer.Exit(0)


def warn_unknown_variables() -> None:
    """One warning line on stderr per ``ALPHAPULSE_*`` variable that sets nothing."""
    for name, nearest in unknown_variables(os.environ):
        hint = f"did you mean {nearest}?" if nearest else "see 'alphapulse config'"
        typer.echo(f"warning: unknown {name} ({hint})", err=True)


@app.callback()
def _root(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    if ctx.invoked_subcommand != "worker":  # the worker logs them itself
        warn_unknown_variables()
        # aiokafka logs each failed connection; the command's own error line says it once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _mask_url(text: str) -> str:
    """``text`` with the password of a URL in it replaced by ``***``.

    >>> _mask_url("http://ap:secret@mlflow:5000/x"), _mask_url("h1:9092,h2:9092")
    ('http://ap:***@mlflow:5000/x', 'h1:9092,h2:9092')
    """
    parts = urlsplit(text) if "://" in text else None
    if parts is None or parts.password is None:
        return text
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Every setting by its environment variable, secrets and passwords in URLs masked.

    >>> shown = effective_settings(Settings(_env_file=None, store_password="pw", web_port=7000))
    >>> shown["ALPHAPULSE_STORE_PASSWORD"], shown["ALPHAPULSE_WEB_PORT"]
    ('***', 7000)
    """
    shown: dict[str, Any] = {}
    for field in Settings.model_fields:
        value = getattr(settings, field)
        if isinstance(value, SecretStr):
            value = "***"
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, str):
            value = _mask_url(value)
        shown[env_names(field)[0]] = value
    return shown


@app.command("config")
def config(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print the settings in force, by environment variable; secrets are masked as ***."""
    shown = effective_settings(_settings())
    if json_out:
        typer.echo(json.dumps(shown))
        return
    width = max(map(len, shown))
    for name, value in shown.items():
        text = (
            "(unset)" if value is None else str(value).lower() if isinstance(value, bool) else value
        )
        typer.echo(f"{name:<{width}}  {text}")


def _local_broker(settings: Settings, nodes: int) -> LocalKafka | None:
    """The local broker, or None (with a notice) when ``KAFKA_BOOTSTRAP_SERVERS`` names one."""
    if settings.uses_local_broker:
        return local_kafka(settings, nodes)
    err.print(
        f"KAFKA_BOOTSTRAP_SERVERS is set ({settings.bootstrap_servers}); "
        "using that cluster, nothing to start or stop"
    )
    return None


@broker_app.command("up")
def broker_up(
    nodes: int = typer.Option(
        1, "--nodes", help="1, or 3 for a replicated cluster (RF 3, min ISR 2)."
    ),
) -> None:
    """Start the local Kafka broker (fetches the jars through Maven on first use)."""
    k = _local_broker(_settings(), nodes)
    if k is None:
        return
    if not k.up(progress=lambda m: err.print(m)):
        err.print(f"Kafka is already running on {k.bootstrap_servers}")
        return
    err.print(f"Kafka is running on {k.bootstrap_servers}")


@broker_app.command("down")
def broker_down(
    nodes: int = typer.Option(1, "--nodes", help="Stop the cluster started with this --nodes."),
) -> None:
    """Stop the local Kafka broker."""
    k = _local_broker(_settings(), nodes)
    if k is not None:
        k.down(progress=lambda m: err.print(m))


@broker_app.command("status")
def broker_status(
    nodes: int = typer.Option(1, "--nodes", help="Show the cluster started with this --nodes."),
) -> None:
    """Show whether the local Kafka nodes run. Exit status 3 when one does not."""
    s = _settings()
    k = _local_broker(s, nodes)
    if k is None:
        return
    ok = True
    for st in k.status():
        state = f"running (pid {st.pid})" if st.running else "stopped"
        typer.echo(f"node {st.node_id}  {s.broker_host}:{st.port}  {state}")
        ok = ok and st.running
    if not ok:
        raise typer.Exit(3)


def _mlflow(settings: Settings) -> MlflowServer:
    return MlflowServer(settings.data_dir / "mlflow-server", port=settings.mlflow_port)


@mlflow_app.command("up")
def mlflow_up() -> None:
    """Start a real `mlflow server` on loopback (ALPHAPULSE_MLFLOW_PORT, default 5000)."""
    srv = _mlflow(_settings())
    if not srv.up():
        err.print(f"MLflow is already running at {srv.uri}")
        return
    err.print(f"MLflow is running at {srv.uri}; export MLFLOW_TRACKING_URI={srv.uri} to use it")


@mlflow_app.command("down")
def mlflow_down() -> None:
    """Stop the local MLflow server."""
    srv = _mlflow(_settings())
    err.print("MLflow stopped" if srv.down() else "MLflow is not running")


@topics_app.command("create")
def topics_create() -> None:
    """Create the project's missing topics with the configured partitions and retention."""
    s = _settings()
    created = asyncio.run(ensure_topics(s, connect_timeout=REACH_TIMEOUT_S))
    typer.echo("created: " + (", ".join(created) if created else "nothing (all exist)"))


@topics_app.command("describe")
def topics_describe() -> None:
    """Show each of the project's topics and its partition count."""
    for name, parts in asyncio.run(
        describe_topics(_settings(), connect_timeout=REACH_TIMEOUT_S)
    ).items():
        typer.echo(f"{name}  {'missing' if parts is None else f'{parts} partitions'}")


@app.command("worker")
def worker(
    start_broker: bool = typer.Option(
        False, "--start-broker", help="Start the local broker first when none is configured."
    ),
) -> None:
    """Run a worker: the agents of this process, until interrupted."""
    # Faust, the agents and the models load in seconds: only `worker` pays for them.
    from alphapulse.worker import run_worker

    s = _settings()
    if start_broker and s.uses_local_broker:
        local_kafka(s).up(progress=lambda m: err.print(m))
    run_worker(s)


@app.command("demo")
def demo(
    duration: float | None = typer.Option(
        None, "--duration", min=1, help="Run unattended for this many seconds, then summarise."
    ),
    rate: float = typer.Option(40.0, "--rate", min=1, help="Live signals per second."),
    keep_broker: bool = typer.Option(
        False, "--keep-broker", help="Leave the local broker running when the demo ends."
    ),
) -> None:
    """Train, stream, drift, retrain and watch it live: the whole loop on the embedded defaults.

    Starts the local broker (unless KAFKA_BOOTSTRAP_SERVERS is set), trains monthly_full and
    weekly_quick on synthetic history into the local MLflow store, starts a worker, streams
    signals and their outcomes with a regime change midway, retrains weekly_quick once, and shows
    requests/s, latency, rolling AUC, drift alarms and model versions. Ctrl-C stops everything.
    """
    _, summary = run_demo(
        _settings(), console=err, duration=duration, rate=rate, keep_broker=keep_broker
    )
    typer.echo(summary)


cli_train.register(app)
cli_ensemble.register(app)
cli_ops.register(app)
cli_logs.register(app)


def main() -> None:
    """Console-script entry point."""
    try:
        log_format = Settings().log_format
    except ValidationError:  # the command reports the bad setting itself, as its error
        log_format = "text"
    configure_logging(log_format, logging.WARNING)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # raised outside a command (the group handles the commands' own)
        code = report(exc, os.environ)
        if code is None:
            raise
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
