"""One training job, the same for ``alphapulse train`` and for the worker's retrainer.

:func:`run_training` reads the rows (a file, the outcomes topic or the PostgreSQL store), warm
starts a ``nightly_incremental`` job from the champion of its library, weighs the learner's hard
examples more, trains, logs the run to MLflow, registers the model and challenges the champion,
optionally writes the report and attaches it to the run (under ``report/``, while the run is
open), and returns a JSON-ready summary. Progress is reported through an
optional :class:`Progress`; nothing here prints.

Hard examples are the outcomes the learner sent to the retrain queue since the newest registered
version of the role being trained (the whole queue when it has none): the sample weight of each
row whose ``outcome_id`` is among them is multiplied by ``hard_example_weight``. Only jobs that
train from the outcomes topic read the queue, beside it on the same cluster: a file or the store
is an offline input that need not come with a broker. Those jobs, and rows without an
``outcome_id``, report ``hard_examples`` 0.

>>> TrainingRequest("lightgbm", "weekly_quick").label_column
'label'
>>> time_ms("2026-01-01"), time_ms("1767225600000")
(1767225600000, 1767225600000)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from models.errors import ConfigError, DataError
from models.roles import WARM_START_ROLES
from stream.history import read_hard_example_ids, read_outcome_history
from stream.registry import open_registry
from stream.settings import Settings
from stream.store import read_training_rows

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from models.registry import ModelRegistry, TrainingRun
    from models.trainer import TrainedModel, TrainingResult

__all__ = [
    "Progress",
    "ReportWriter",
    "TrainingRequest",
    "read_training_file",
    "run_training",
    "time_ms",
]

ReportWriter = Callable[..., tuple[Path, Path]]
"""Writes a training report: ``(result, target, compare=..., plots_dir=...) -> (html, json)``;
with ``plots_dir`` it also saves each plot there as a PNG file."""

REPORT_ARTIFACTS = "report"
"""Where the training run keeps its report: the HTML, the JSON and ``plots/*.png``."""


class Progress(Protocol):
    """Where a job reports its steps: one ``start`` per step, ``advance`` per search trial."""

    def start(self, description: str, total: int | None) -> None:
        """A step begins; ``total`` is its number of units, None when unknown."""

    def advance(self) -> None:
        """One unit of the current step is done."""

    def finish(self) -> None:
        """The current step is done."""


class _Silent:
    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class TrainingRequest:
    """What to train and from which rows."""

    model_type: str
    cadence: str
    from_file: Path | None = None
    from_store: bool = False
    since: str | None = None
    until: str | None = None
    label_column: str = "label"
    rr_column: str = "realized_rr"
    force: bool = False
    report: Path | None = None
    move_alias: bool = True
    """False: the summary's ``promoted`` is the decision and the caller moves the alias."""


def time_ms(value: str | None) -> int | None:
    """Epoch milliseconds from digits or an ISO date/time (naive means UTC)."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"not a time: {value!r}; use epoch ms or an ISO date/time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def read_training_file(path: Path) -> pd.DataFrame:
    """Read a CSV, JSONL (or JSON) or Parquet file into a DataFrame.

    A ``features`` column holding objects (outcomes as on the wire) is expanded by the trainer.
    """
    # pandas takes most of a second to import: only jobs that read a file pay for it here.
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


def _read_rows(settings: Settings, request: TrainingRequest) -> pd.DataFrame:
    if request.from_file is not None and request.from_store:
        raise ConfigError("use either --from-file or --from-store, not both")
    since, until = time_ms(request.since), time_ms(request.until)
    if request.from_file is not None:
        return read_training_file(request.from_file)
    if request.from_store:
        return read_training_rows(settings, since=since, until=until)
    return read_outcome_history(settings, since=since, until=until)


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


def _hard_example_weights(
    settings: Settings,
    request: TrainingRequest,
    registry: ModelRegistry,
    role: str,
    frame: pd.DataFrame,
) -> tuple[np.ndarray | None, int]:
    """Per-row weight multipliers for the rows that were hard examples (or None), and their count.

    The hard examples are those recorded since ``role``'s newest version was registered.
    """
    offline = request.from_file is not None or request.from_store
    if offline or "outcome_id" not in frame.columns:
        return None, 0
    latest = registry.latest_version(role)
    ids = read_hard_example_ids(settings, since=latest.created_ms if latest else None)
    marked = frame["outcome_id"].isin(ids)
    count = int(marked.sum())
    if count == 0:
        return None, 0
    return marked.map({True: settings.hard_example_weight, False: 1.0}).to_numpy(), count


def _summary(
    outcome: Any, result: TrainingResult, model_type: str, report: Path | None, hard: int
) -> dict[str, Any]:
    """The job's JSON-ready summary; keys starting with ``_`` are for people, not ``--json``."""
    return {
        "model_name": outcome.name,
        "version": int(outcome.version),
        "promoted": outcome.promoted,
        "metrics": {k: result.metrics[k] for k in ("roc_auc", "log_loss", "brier")},
        "n_train": result.n_train,
        "n_valid": result.n_valid,
        "hard_examples": hard,
        "_reason": outcome.reason,
        "_model_type": model_type,
        "_report": str(report) if report else None,
    }


def run_training(
    settings: Settings,
    request: TrainingRequest,
    progress: Progress | None = None,
    write_report: ReportWriter | None = None,
) -> dict[str, Any]:
    """Run one training job end to end and return its summary (see the module text).

    The report is written only when ``write_report`` is given, at ``request.report`` or under
    ``reports/`` in the data directory.
    """
    # The boosters, optuna and mlflow load in seconds: only processes that train pay for them.
    import optuna

    from models.trainer import Trainer, TrainingConfig, TrainingData

    steps = progress or _Silent()
    cfg = TrainingConfig.for_cadence(request.model_type, request.cadence)
    steps.start("reading training data", 1)
    frame = _read_rows(settings, request)
    registry = open_registry(settings)
    role, init_version, init_model = request.cadence, None, None
    if cfg.warm_start:
        role, init_version, init_model = _warm_start(registry, request.model_type)
    extra_weight, hard = _hard_example_weights(settings, request, registry, role, frame)
    data = TrainingData.from_frame(
        frame,
        label_column=request.label_column,
        rr_column=request.rr_column,
        extra_weight=extra_weight,
    )
    steps.finish()
    trials = cfg.hpo_trials or None
    steps.start(f"training {request.model_type} ({request.cadence}, {len(data)} rows)", trials)
    if cfg.hpo_trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    champ = registry.champion(role)
    compare: Mapping[str, Any] = (
        {f"champion v{champ.version}": registry.load_version(role, champ.version)} if champ else {}
    )
    with registry.training_run(role, cfg) as run:
        run.log_params({"hard_examples": hard, "hard_example_weight": settings.hard_example_weight})

        def on_trial(report: Any) -> None:
            run.log_trial(report)
            steps.advance()

        result = Trainer(cfg).fit(data, init_model=init_model, on_trial=on_trial)
        steps.finish()
        steps.start(f"registering {role}", 1)
        ref = f"{role}/{init_version}" if init_version else None
        outcome = run.register(
            result, force=request.force, warm_start_from=ref, move_alias=request.move_alias
        )
        steps.finish()
        html = None
        if write_report is not None:
            steps.start("writing the report", 1)
            target = request.report or (
                settings.data_dir / "reports" / f"train-{outcome.name}-v{outcome.version}.html"
            )
            html = _write_and_attach(write_report, run, result, target, compare)
            steps.finish()
    return _summary(outcome, result, request.model_type, html, hard)


def _write_and_attach(
    write_report: ReportWriter,
    run: TrainingRun,
    result: TrainingResult,
    target: Path,
    compare: Mapping[str, Any],
) -> Path:
    """Write the report at ``target`` and attach it, with its plots, to the open ``run``."""
    with tempfile.TemporaryDirectory(prefix="alphapulse-report-") as tmp:
        folder = Path(tmp) / REPORT_ARTIFACTS
        folder.mkdir()
        html, json_path = write_report(result, target, compare=compare, plots_dir=folder / "plots")
        for path in (html, json_path):
            shutil.copy2(path, folder / path.name)
        run.log_artifacts(folder, REPORT_ARTIFACTS)
    return html
