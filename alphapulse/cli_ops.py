"""``alphapulse produce``, ``consume`` and ``replay``: the commands for daily work.

Progress and summaries go to stderr; ``consume`` writes JSON lines to stdout. Errors follow the
one policy of :mod:`alphapulse._errors` (2 usage or configuration, 1 runtime failure).

>>> import typer
>>> from typer.testing import CliRunner
>>> app = typer.Typer()
>>> register(app)
>>> result = CliRunner().invoke(app, ["replay", "--help"])
>>> result.exit_code, "prequential" in result.output
(0, True)
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from alphapulse._choices import Kind, TopicRole
from alphapulse._errors import REACH_TIMEOUT_S
from alphapulse._kafka_io import produce_rows, tail
from alphapulse._rows import generated_rows, read_rows
from models.blend import BlendWeights
from models.errors import ConfigError, DataError
from models.roles import BATCH_ROLES
from stream.settings import Settings

__all__ = ["register"]

_Seed = Annotated[int, typer.Option("--seed", help="Generator seed.")]
_Features = Annotated[int, typer.Option("--features", min=1, help="Generator: number of features.")]
_DriftAt = Annotated[
    list[int] | None,
    typer.Option("--drift-at", help="Generator: row index of a regime change (repeatable)."),
]
_File = Annotated[
    Path | None, typer.Option("--file", help="JSONL or CSV file of rows (see the command help).")
]
_Rate = Annotated[
    float, typer.Option("--rate", min=0, help="Rows per second; 0 sends as fast as it can.")
]
_OutcomeDelay = Annotated[
    float, typer.Option("--outcome-delay", min=0, help="trades: seconds from signal to outcome.")
]
_Generate = Annotated[
    int, typer.Option("--generate", help="Send N rows of the synthetic generator instead.")
]


def _rows(file: Path | None, generate: int, seed: int, features: int, drift_at: list[int]) -> Any:
    if (file is None) == (generate <= 0):
        raise ConfigError("give exactly one source: --file PATH or --generate N")
    if file is not None:
        return read_rows(file)
    return generated_rows(generate, seed=seed, n_features=features, drift_at=tuple(drift_at))


def _make_produce(err: Console) -> Any:
    def produce(
        kind: Annotated[
            Kind,
            typer.Argument(
                help="signals, outcomes, or trades (each row's signal, then its outcome).",
                show_default=False,
            ),
        ],
        file: _File = None,
        generate: _Generate = 0,
        rate: _Rate = 50.0,
        outcome_delay: _OutcomeDelay = 1.0,
        keep_ts: Annotated[
            bool,
            typer.Option(
                "--keep-ts",
                help="Send the rows' ts; by default it is left out and the broker's time is used "
                "(a signal older than the join window cannot be joined to its outcome).",
            ),
        ] = False,
        seed: _Seed = 0,
        features: _Features = 8,
        drift_at: _DriftAt = None,
    ) -> None:
        """Send signals and/or outcomes to the project's topics, rate-limited.

        Rows come from a file or from the synthetic generator. A JSONL row is a wire message
        (signal_id, symbol, features, and for outcomes label, outcome_id, realized_rr); in a CSV
        file, or a JSON line without a features object, every column that is not a contract field
        is a feature. Messages are keyed by model key (model_key, else symbol). In trades mode,
        outcomes carry no features: the worker joins them to their signals.
        """
        settings = Settings()
        rows = _rows(file, generate, seed, features, drift_at or [])
        columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("send", total=len(rows))
            n_sig, n_out = asyncio.run(
                produce_rows(
                    settings,
                    rows,
                    kind.value,
                    rate,
                    keep_ts=keep_ts,
                    outcome_delay=outcome_delay,
                    progress=lambda i: bar.update(task, completed=i),
                    connect_timeout=REACH_TIMEOUT_S,
                )
            )
        err.print(
            f"sent {n_sig} signals to {settings.topic('signals')} and {n_out} outcomes to "
            f"{settings.topic('outcomes')}",
            highlight=False,
        )

    return produce


def consume(
    topic: Annotated[
        TopicRole, typer.Option("--topic", help="Topic role.")
    ] = TopicRole.predictions,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest message, not the newest.")
    ] = False,
    max_messages: Annotated[
        int, typer.Option("--max-messages", min=0, help="Stop after N messages (0: no limit).")
    ] = 0,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0, help="Stop after this many idle seconds (0: never)."),
    ] = 0.0,
) -> None:
    """Tail a topic (by default the predictions) as JSON lines on stdout.

    Reads without a consumer group, so it never moves anyone's committed offsets. Ctrl-C stops.
    """
    settings = Settings()
    out = sys.stdout.buffer

    def write(line: bytes) -> None:
        out.write(line + b"\n")
        out.flush()

    asyncio.run(
        tail(settings, settings.topic(topic.value), write, from_beginning, max_messages, timeout)
    )


def _batch_models(model: list[str], champions: bool, settings: Settings) -> dict[str, Any]:
    # The boosters and mlflow load in seconds: only `replay` pays for them.
    from models.trainer import TrainedModel
    from stream.registry import check_tracking_server, open_registry

    models: dict[str, Any] = {}
    for spec in model:
        role, sep, path = spec.partition("=")
        if not sep or not role or not path:
            raise ConfigError(f"--model takes ROLE=DIRECTORY, got {spec!r}")
        models[role] = TrainedModel.load(Path(path))
    if champions:
        check_tracking_server(settings, REACH_TIMEOUT_S)
        registry = open_registry(settings)
        for role in BATCH_ROLES:
            if role not in models and registry.champion(role) is not None:
                models[role] = registry.load_alias(role)[1]
    return models


def _make_replay(err: Console) -> Any:
    def replay_cmd(
        file: Annotated[
            Path,
            typer.Argument(help="JSONL or CSV history (as for produce).", show_default=False),
        ],
        report: Annotated[
            Path,
            typer.Option("--report", help="HTML report to write; its JSON goes beside it."),
        ] = Path("replay-report.html"),
        window: Annotated[
            int, typer.Option("--window", min=10, help="Outcomes in the rolling-AUC window.")
        ] = 500,
        model: Annotated[
            list[str] | None,
            typer.Option(
                "--model", help="Batch model ROLE=DIRECTORY (TrainedModel.save), repeatable."
            ),
        ] = None,
        champions: Annotated[
            bool,
            typer.Option("--champions", help="Also load each role's champion from MLflow."),
        ] = False,
    ) -> None:
        """Replay a history offline, in time order, and write a prequential evaluation report.

        Each signal is scored by the same code as the predictor (online model of its key, batch
        models when given, the same blend), then its outcome is learned by the same code as the
        learner, so every prediction only uses earlier outcomes. Rows with both features and a
        label are a signal followed by its outcome; outcome rows without features are joined to
        their signal by signal_id. The report shows calibration, rolling ROC AUC with drift
        alarms (and regime changes when the rows carry a regime column), each component against
        the blend, and feature importances; the JSON beside it holds the same figures.
        """
        # The replay and its report load the boosters and matplotlib: only `replay` pays.
        from alphapulse._replay import replay
        from alphapulse.report import write_replay_report

        rows = read_rows(file)
        if not rows:
            raise DataError(f"{file} holds no rows")
        settings = Settings()
        batch = _batch_models(model or [], champions, settings)
        err.print(f"replaying {len(rows)} rows from {file}", highlight=False)
        weights = BlendWeights.from_split(batch=settings.blend_batch_weight)
        result = replay(
            rows, batch_models=batch, weights=weights, online_config=settings.online_config()
        )
        if not result.steps:
            raise DataError(f"{file}: no outcome could be learned (rows need a label)")
        html_path, json_path = write_replay_report(result, report, window=window)
        metrics = json.loads(json_path.read_text())["metrics"]
        for name, m in metrics.items():
            auc = "-" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
            typer.echo(f"{name}: roc_auc={auc} log_loss={m['log_loss']:.4f} n={int(m['n'])}")
        typer.echo(
            f"{result.n_outcomes} outcomes, {len(result.drift_steps)} drift alarms; "
            f"report {html_path}, figures {json_path}"
        )

    return replay_cmd


def _reflow(doc: str | None) -> str:
    r"""A docstring's paragraphs each on one line, so that the help output wraps them itself.

    >>> _reflow("First line\n    goes on.\n\n    Second.")
    'First line goes on.\n\nSecond.'
    """
    paragraphs = (doc or "").strip().split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def register(app: typer.Typer) -> None:
    """Add ``produce``, ``consume`` and ``replay`` to ``app``."""
    err = Console(stderr=True)
    for name, fn in (
        ("produce", _make_produce(err)),
        ("consume", consume),
        ("replay", _make_replay(err)),
    ):
        app.command(name, help=_reflow(fn.__doc__))(fn)
