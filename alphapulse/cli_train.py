"""``alphapulse train`` and ``alphapulse models``: batch training and the model registry.

Errors follow the one policy of :mod:`alphapulse._errors` (2 usage or configuration, 1 runtime
failure, each one line on stderr). Progress goes to stderr; with ``--json`` the last line on
stdout is one JSON object.

>>> from typer.testing import CliRunner
>>> from alphapulse.cli import app
>>> args = ["train", "--model-type", "sklearn", "--cadence", "weekly_quick"]
>>> result = CliRunner().invoke(app, args)
>>> result.exit_code, result.stderr.strip()  # doctest: +NORMALIZE_WHITESPACE
(2, "error: Invalid value for '--model-type': 'sklearn' is not one of 'xgboost', 'lightgbm',
'catboost'. (see 'root train --help')")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from alphapulse._choices import Cadence, ModelType
from alphapulse._errors import REACH_TIMEOUT_S
from alphapulse._kafka_io import send_model_event
from models.errors import AlphaPulseError, ConfigError
from stream.codec import now_ms
from stream.records import ModelEvent
from stream.settings import Settings

if TYPE_CHECKING:
    from models.registry import ModelRegistry

__all__ = ["ANNOUNCE_TIMEOUT_S", "register"]

ANNOUNCE_TIMEOUT_S = 10.0
"""Longest `train` waits for the broker to take one of its ModelEvents."""


def _registry(settings: Settings) -> ModelRegistry:
    """The registry, once its server (if any) accepts connections."""
    # mlflow loads in seconds: only the commands that use the registry pay for it.
    from stream.registry import check_tracking_server, open_registry

    check_tracking_server(settings, REACH_TIMEOUT_S)
    return open_registry(settings)


class _RichSteps:
    """The training job's steps as rich progress bars on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def start(self, description: str, total: int | None) -> None:
        self._task = self._progress.add_task(description, total=total)

    def advance(self) -> None:
        if self._task is not None:
            self._progress.advance(self._task)

    def finish(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            done = task.total if task.total is not None else max(task.completed, 1)
            self._progress.update(self._task, total=done, completed=done)


def _announce(settings: Settings, err: Console, event: str, role: str, **fields: Any) -> bool:
    """Publish a ModelEvent of this job (trigger ``manual``); a failure is one warning line."""
    version = fields.pop("version", None)
    record = ModelEvent(
        event,
        now_ms(),
        role=role,
        version=version,
        detail=str(fields.pop("detail", "")),
        extra={"trigger": "manual", **fields},
    )
    try:
        send_model_event(settings, record, timeout=ANNOUNCE_TIMEOUT_S)
    except Exception as exc:  # the job's result matters more than its announcement
        reason = " ".join(str(exc).split())
        if isinstance(exc, TimeoutError) or not reason:
            reason = f"no broker answered within {ANNOUNCE_TIMEOUT_S:.0f} s"
        err.print(f"warning: {event} not published: {reason}", markup=False, highlight=False)
        return False
    return True


def _train(request: Any, err: Console) -> dict[str, Any]:
    """Run the job; one that trains from the outcomes topic announces itself on model-events."""
    # The trainer, the boosters and mlflow load in seconds: only `train` pays for them.
    from agents.training import run_training
    from alphapulse.report import write_training_report
    from models.trainer import TrainingConfig
    from stream.registry import check_tracking_server
    from stream.store import check_store

    settings = Settings()
    cadence = request.cadence
    TrainingConfig.for_cadence(request.model_type, cadence)  # a usage error fails before anything
    check_tracking_server(settings, REACH_TIMEOUT_S)
    if request.from_store:
        check_store(settings, REACH_TIMEOUT_S)
    announce = request.from_file is None and not request.from_store
    if announce:  # a broker that misses the start is not asked again
        announce = _announce(settings, err, "retrain_started", cadence, cadence=cadence)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, TimeElapsedColumn(), console=err, transient=False) as progress:
            summary = run_training(
                settings, request, _RichSteps(progress), write_report=write_training_report
            )
    except AlphaPulseError as exc:
        if announce:
            detail = f"failed: {' '.join(str(exc).split())}"
            _announce(
                settings,
                err,
                "retrain_finished",
                cadence,
                detail=detail,
                cadence=cadence,
                promoted=False,
            )
        raise
    if announce:
        role, version, promoted = summary["model_name"], summary["version"], summary["promoted"]
        _announce(
            settings,
            err,
            "retrain_finished",
            role,
            version=version,
            cadence=cadence,
            promoted=promoted,
        )
        if promoted:
            detail = "alphapulse train promoted it"
            _announce(
                settings, err, "promoted", role, version=version, detail=detail, cause="manual"
            )
    err.print(f"report: {summary['_report']}", markup=False, highlight=False)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    m = summary["metrics"]
    state = "champion" if summary["promoted"] else "not promoted"
    typer.echo(
        f"{summary['model_name']} version {summary['version']} ({summary['_model_type']}): {state}"
        f" - {summary['_reason']}"
    )
    typer.echo(
        f"holdout: roc_auc={m['roc_auc']:.4f} log_loss={m['log_loss']:.4f} brier={m['brier']:.4f}"
        f" (n_train={summary['n_train']}, n_valid={summary['n_valid']})"
    )


def _make_train(err: Console) -> Callable[..., None]:
    def train(
        model_type: Annotated[ModelType, typer.Option("--model-type", help="Booster library.")],
        cadence: Annotated[Cadence, typer.Option("--cadence", help="Which batch model to train.")],
        from_file: Annotated[
            Path | None,
            typer.Option("--from-file", help="CSV, JSONL or Parquet file instead of the topic."),
        ] = None,
        from_store: Annotated[
            bool, typer.Option("--from-store", help="Read training rows from the PostgreSQL store.")
        ] = False,
        since: Annotated[
            str | None,
            typer.Option("--since", help="Earliest outcome time (epoch ms or ISO), inclusive."),
        ] = None,
        until: Annotated[
            str | None,
            typer.Option("--until", help="Latest outcome time (epoch ms or ISO), exclusive."),
        ] = None,
        report: Annotated[
            Path | None,
            typer.Option(
                "--report",
                help="Where to write the HTML report with plots (its JSON goes beside it); "
                "default: reports/ under the data directory.",
            ),
        ] = None,
        label_column: Annotated[
            str, typer.Option("--label-column", help="Label column (0/1 or true/false).")
        ] = "label",
        rr_column: Annotated[
            str, typer.Option("--rr-column", help="Realised reward/risk column.")
        ] = "realized_rr",
        force: Annotated[
            bool, typer.Option("--force", help="Promote to champion regardless.")
        ] = False,
        json_out: Annotated[
            bool, typer.Option("--json", help="Print a JSON summary as the last line.")
        ] = False,
    ) -> None:
        """Train a batch model, log it to MLflow, register it and challenge the champion."""
        # agents.training pulls mlflow at import: only `train` pays for it.
        from agents.training import TrainingRequest

        request = TrainingRequest(
            model_type.value,
            cadence.value,
            from_file=from_file,
            from_store=from_store,
            since=since,
            until=until,
            label_column=label_column,
            rr_column=rr_column,
            force=force,
            report=report,
        )
        summary = _train(request, err)
        if json_out:
            public = {k: v for k, v in summary.items() if not k.startswith("_")}
            typer.echo(json.dumps(public))
        else:
            _print_summary(summary)

    return train


def _models_list(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Registered models, their versions and aliases."""
    models = _registry(Settings()).list_models()
    if json_out:
        payload = [
            {
                "name": m.name,
                "aliases": m.aliases,
                "champion_history": list(m.champion_history),
                "versions": [
                    {
                        "version": int(v.version),
                        "aliases": list(v.aliases),
                        "model_type": v.model_type,
                        "run_id": v.run_id,
                        "created_ms": v.created_ms,
                    }
                    for v in m.versions
                ],
            }
            for m in models
        ]
        typer.echo(json.dumps(payload))
        return
    if not models:
        typer.echo("no registered models")
    for m in models:
        typer.echo(f"{m.name}  (champion: {m.aliases.get('champion', '-')})")
        for v in m.versions:
            aliases = ",".join(v.aliases) or "-"
            typer.echo(f"  v{v.version:<4} {v.model_type:<9} aliases={aliases} run={v.run_id}")


def _models_promote(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. weekly_quick.")],
    version: Annotated[str, typer.Argument(help="Exact version to make champion.")],
) -> None:
    """Make VERSION the champion of NAME."""
    if not version.isdigit():
        raise ConfigError(f"VERSION must be a version number, got {version!r}")
    _registry(Settings()).promote(name, version)
    typer.echo(f"{name}: version {version} is champion")


def _models_rollback(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. weekly_quick.")],
) -> None:
    """Move NAME's champion back to the previous champion."""
    version = _registry(Settings()).rollback(name)
    typer.echo(f"{name}: champion rolled back to version {version}")


def register(app: typer.Typer) -> None:
    """Add ``train`` and the ``models`` group to ``app``."""
    err = Console(stderr=True)
    app.command("train")(_make_train(err))
    models_app = typer.Typer(help="Registered batch models: list, promote, roll back.")
    models_app.command("list")(_models_list)
    models_app.command("promote")(_models_promote)
    models_app.command("rollback")(_models_rollback)
    app.add_typer(models_app, name="models")
