"""``alphapulse train`` and ``alphapulse models``: batch training and the model registry.

Errors the project raises on purpose are printed as one line on stderr and exit with status 2.
Progress goes to stderr; with ``--json`` the last line on stdout is one JSON object.

>>> import typer
>>> from typer.testing import CliRunner
>>> app = typer.Typer()
>>> register(app)
>>> args = ["train", "--model-type", "sklearn", "--cadence", "weekly_quick"]
>>> result = CliRunner().invoke(app, args)
>>> result.exit_code, result.stderr.strip()
(2, "error: unknown model_type 'sklearn'; expected one of xgboost, lightgbm, catboost")
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from models.errors import AlphaPulseError, ConfigError, DataError, RegistryError
from stream.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from models.registry import ModelRegistry
    from models.trainer import TrainedModel, TrainingConfig

__all__ = ["read_training_file", "register"]

#: Roles a nightly incremental job may continue, in order of preference.
WARM_START_ROLES = ("weekly_quick", "monthly_full")


@contextmanager
def _cli_errors() -> Iterator[None]:
    try:
        yield
    except AlphaPulseError as exc:
        message = " ".join(str(exc).split())
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2) from exc


def read_training_file(path: Path) -> pd.DataFrame:
    """Read a CSV, JSONL (or JSON) or Parquet file into a DataFrame.

    A ``features`` column holding objects (outcomes as on the wire) is expanded by the trainer.
    """
    import pandas as pd

    if not path.is_file():
        raise DataError(f"no such file: {path}")
    name = path.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path)
        if name.endswith((".jsonl", ".ndjson", ".json")):
            text = path.read_text(encoding="utf-8")
            if name.endswith(".json") and text.lstrip().startswith("["):
                return pd.DataFrame.from_records(json.loads(text))
            lines = (line for line in text.splitlines() if line.strip())
            return pd.DataFrame.from_records([json.loads(line) for line in lines])
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
    except (ValueError, TypeError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    raise DataError(f"{path}: unknown file type; use .csv, .jsonl or .parquet")


def _time_ms(value: str | None) -> int | None:
    """Epoch milliseconds from digits or an ISO date/time (naive means UTC)."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"not a time: {value!r}; use epoch ms or an ISO date/time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _read_source(
    settings: Settings,
    from_file: Path | None,
    from_store: bool,
    since: str | None,
    until: str | None,
) -> pd.DataFrame:
    if from_file is not None and from_store:
        raise ConfigError("use either --from-file or --from-store, not both")
    if from_file is not None:
        return read_training_file(from_file)
    if from_store:
        from stream.store import read_training_rows

        return read_training_rows(settings, since=_time_ms(since), until=_time_ms(until))
    return _read_history(settings, _time_ms(since), _time_ms(until))


def _read_history(
    settings: Settings, since: int | None = None, until: int | None = None
) -> pd.DataFrame:
    try:
        from stream.history import read_outcome_history
    except ImportError as exc:
        raise ConfigError(
            f"reading the outcome history from Kafka is not available ({exc}); pass --from-file"
        ) from exc
    return read_outcome_history(settings, since=since, until=until)


def _registry(settings: Settings) -> ModelRegistry:
    from models.registry import ModelRegistry

    # MLflow draws a tqdm bar on stderr for every artifact download; the CLI has its own progress.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    uri = settings.tracking_uri
    artifacts = settings.artifact_root.as_uri() if uri.startswith("sqlite:") else None
    return ModelRegistry(uri, settings.mlflow_experiment, artifact_location=artifacts)


def _warm_start(registry: ModelRegistry, model_type: str) -> tuple[str, str, TrainedModel]:
    """The role, version and model a nightly job continues: the first champion of its library."""
    seen = []
    for role in WARM_START_ROLES:
        info = registry.champion(role)
        if info is None:
            continue
        if info.model_type == model_type:
            return role, info.version, registry.load_version(role, info.version)
        seen.append(f"{role} v{info.version} is {info.model_type or 'unknown'}")
    if seen:
        raise DataError(
            f"no {model_type} champion to warm-start from ({'; '.join(seen)}); "
            "use that --model-type or train weekly_quick first"
        )
    raise ConfigError(
        "nightly_incremental continues a champion, but neither weekly_quick nor monthly_full "
        "has one yet; train weekly_quick or monthly_full first"
    )


def _train(
    model_type: str,
    cadence: str,
    from_file: Path | None,
    label_column: str,
    rr_column: str,
    force: bool,
    err: Console,
    from_store: bool = False,
    since: str | None = None,
    until: str | None = None,
    report: Path | None = None,
) -> dict[str, Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from models.trainer import Trainer, TrainingConfig, TrainingData

    cfg: TrainingConfig = TrainingConfig.for_cadence(model_type, cadence)
    settings = Settings()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=False) as progress:
        step = progress.add_task("reading training data", total=1)
        frame = _read_source(settings, from_file, from_store, since, until)
        data = TrainingData.from_frame(frame, label_column=label_column, rr_column=rr_column)
        progress.update(step, completed=1)
        registry = _registry(settings)
        role, init_version, init_model = cadence, None, None
        if cfg.warm_start:
            role, init_version, init_model = _warm_start(registry, model_type)
        trials = cfg.hpo_trials or None
        step = progress.add_task(
            f"training {model_type} ({cadence}, {len(data)} rows)", total=trials
        )
        if cfg.hpo_trials:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
        champ = registry.champion(role)
        compare = (
            {f"champion v{champ.version}": registry.load_version(role, champ.version)}
            if champ
            else {}
        )
        with registry.training_run(role, cfg) as run:

            def on_trial(report: Any) -> None:
                run.log_trial(report)
                progress.advance(step)

            result = Trainer(cfg).fit(data, init_model=init_model, on_trial=on_trial)
            progress.update(step, total=trials or 1, completed=trials or 1)
            step = progress.add_task(f"registering {role}", total=1)
            ref = f"{role}/{init_version}" if init_version else None
            outcome = run.register(result, force=force, warm_start_from=ref)
            progress.update(step, completed=1)
        step = progress.add_task("writing the report", total=1)
        from alphapulse.report import write_training_report

        target = report or (
            settings.data_dir / "reports" / f"train-{outcome.name}-v{outcome.version}.html"
        )
        html, _ = write_training_report(result, target, compare=compare)
        progress.update(step, completed=1)
    err.print(f"report: {html}", markup=False, highlight=False)
    return {
        "model_name": outcome.name,
        "version": int(outcome.version),
        "promoted": outcome.promoted,
        "metrics": {k: result.metrics[k] for k in ("roc_auc", "log_loss", "brier")},
        "n_train": result.n_train,
        "n_valid": result.n_valid,
        "_reason": outcome.reason,
        "_model_type": model_type,
        "_report": str(html),
    }


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
        model_type: Annotated[
            str, typer.Option("--model-type", help="xgboost, lightgbm or catboost.")
        ],
        cadence: Annotated[
            str,
            typer.Option("--cadence", help="nightly_incremental, weekly_quick or monthly_full."),
        ],
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
        with _cli_errors():
            summary = _train(
                model_type,
                cadence,
                from_file,
                label_column,
                rr_column,
                force,
                err,
                from_store=from_store,
                report=report,
                since=since,
                until=until,
            )
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
    with _cli_errors():
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
    with _cli_errors():
        if not version.isdigit():
            raise RegistryError(f"VERSION must be a version number, got {version!r}")
        _registry(Settings()).promote(name, version)
    typer.echo(f"{name}: version {version} is champion")


def _models_rollback(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. weekly_quick.")],
) -> None:
    """Move NAME's champion back to the previous champion."""
    with _cli_errors():
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
