"""Evaluation reports with pictures: one self-contained HTML file and the same figures as JSON.

Both ``alphapulse replay`` (a prequential evaluation of history) and ``alphapulse train`` (a holdout
evaluation of a new batch model) write a report with:

- a calibration curve (observed win rate against predicted probability);
- rolling ROC AUC over time, with drift alarms and known regime changes marked;
- each component against the blend (replay) or the new model against the models it is compared
  with (train);
- feature importances.

The HTML embeds its plots as PNG data and fetches nothing. The JSON beside it (same name, suffix
``.json``) holds every number the plots show, under ``metrics``, ``calibration``,
``rolling_auc``, ``drift_points``, ``regime_changes`` and ``feature_importance``. Given a
``plots_dir``, :func:`write_training_report` also saves each plot there as a PNG file
(``calibration.png``, ``rolling_auc.png``, ``components.png``, ``feature_importance.png``), for a
training job to attach them to its MLflow run.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from alphapulse._replay import replay
>>> from alphapulse._rows import generated_rows
>>> result = replay(generated_rows(300, seed=1))
>>> tmp = tempfile.TemporaryDirectory()
>>> html_path, json_path = write_replay_report(result, Path(tmp.name) / "r.html", window=100)
>>> html_path.name, json_path.name, html_path.read_text().count("data:image/png")
('r.html', 'r.json', 4)
>>> tmp.cleanup()
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphapulse._figures import (
    booster_importance,
    calibration,
    component_metrics,
    jsonable,
    online_importance,
    rolling_auc,
)
from models.errors import DataError

if TYPE_CHECKING:
    from alphapulse._replay import ReplayResult
    from models.trainer import TrainingResult

__all__ = [
    "replay_figures",
    "training_figures",
    "write_replay_report",
    "write_report",
    "write_training_report",
]

_METRIC_COLUMNS = ("n", "roc_auc", "log_loss", "brier", "precision", "recall", "expected_r")


def replay_figures(result: ReplayResult, window: int = 500) -> dict[str, Any]:
    """The figures of a replay: prequential metrics of the blend and of each component."""
    steps = result.steps
    y = np.array([s.label for s in steps], dtype=int)
    rr = np.array([np.nan if s.realized_rr is None else s.realized_rr for s in steps], dtype=float)
    names = sorted({name for s in steps for name in s.components})
    probs: dict[str, np.ndarray] = {"blend": np.array([s.score for s in steps], dtype=float)}
    for name in names:
        probs[name] = np.array([s.components.get(name, np.nan) for s in steps], dtype=float)
    importance = {"online": online_importance(list(result.keyed.learners.values()))}
    for role, model in result.batch_models.items():
        importance[role] = booster_importance(model)
    per_key = {
        key: {"n_learned": lr.n_learned, "drift_points": list(lr.drift_points)}
        for key, lr in sorted(result.keyed.learners.items())
    }
    return jsonable(
        {
            "kind": "replay",
            "title": "Prequential replay",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "summary": {
                "rows": result.n_rows,
                "signals": result.n_signals,
                "outcomes learned": result.n_outcomes,
                "unjoinable outcomes": result.unjoinable,
                "duplicate outcomes": result.duplicates,
                "model keys": len(result.keyed.learners),
                "drift alarms": len(result.drift_steps),
                "rolling window": window,
            },
            "x_label": "outcome (time order)",
            "metrics": component_metrics(y, probs, rr) if len(y) else {},
            "calibration": {
                k: calibration(y[~np.isnan(p)], p[~np.isnan(p)]) for k, p in probs.items()
            },
            "rolling_auc": rolling_auc(y, probs, window),
            "drift_points": result.drift_steps,
            "regime_changes": result.regime_changes,
            "feature_importance": importance,
            "online_models": per_key,
        }
    )


def training_figures(
    result: TrainingResult,
    compare: Mapping[str, Any] | None = None,
    drift_points: list[int] | None = None,
) -> dict[str, Any]:
    """The figures of a training job, on its holdout rows (the most recent ones, in time order).

    ``compare`` maps a name (e.g. ``"champion v3"``) to another model with ``feature_names`` and
    ``predict_proba``, scored on the same holdout; a model that cannot score it is left out.
    """
    holdout = result.holdout
    probs = {"model": result.model.predict_proba(holdout.X)}
    skipped: dict[str, str] = {}
    importance = {"model": booster_importance(result.model)}
    for name, other in (compare or {}).items():
        try:
            cols = [holdout.feature_names.index(f) for f in other.feature_names]
            probs[name] = np.asarray(other.predict_proba(holdout.X[:, cols]), dtype=float)
        except (ValueError, DataError) as exc:
            skipped[name] = str(exc)
            continue
        if hasattr(other, "booster"):
            importance[name] = booster_importance(other)
    cfg = result.config
    n = len(holdout)
    summary: dict[str, Any] = {
        "model type": cfg.model_type,
        "cadence": cfg.cadence,
        "training rows": result.n_train,
        "holdout rows": result.n_valid,
        "trees": result.model.n_trees,
        "scale_pos_weight": round(result.scale_pos_weight, 4),
    }
    if result.time_range is not None:
        first, last = (datetime.fromtimestamp(t / 1000, UTC).isoformat() for t in result.time_range)
        summary["time range"] = f"{first} to {last}"
    summary.update({f"not compared: {k}": v for k, v in skipped.items()})
    return jsonable(
        {
            "kind": "training",
            "title": f"Training report: {cfg.cadence} ({cfg.model_type})",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "summary": summary,
            "x_label": "holdout row (time order)",
            "metrics": component_metrics(holdout.y, probs, holdout.rr, cfg.threshold),
            "calibration": {k: calibration(holdout.y, p) for k, p in probs.items()},
            "rolling_auc": rolling_auc(holdout.y, probs, max(50, n // 5)),
            "drift_points": list(drift_points or []),
            "regime_changes": [],
            "feature_importance": importance,
            "trials": [
                {"number": t.number, "value": t.value, "state": t.state, "params": t.params}
                for t in result.trials
            ],
        }
    )


def _paths(path: Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "report.html"
    return path, path.with_suffix(".json")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return html.escape("-" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plots(fig: Mapping[str, Any]) -> list[tuple[str, str, bytes]]:
    """Each plot of ``fig`` as (file stem, caption, PNG bytes)."""
    # matplotlib loads in about a second: only the writing of a report pays for it.
    from alphapulse._plots import (
        plot_calibration,
        plot_components,
        plot_importance,
        plot_rolling_auc,
    )

    auc = plot_rolling_auc(
        fig["rolling_auc"], fig["drift_points"], fig["regime_changes"], fig["x_label"]
    )
    return [
        ("calibration", "Calibration", plot_calibration(fig["calibration"])),
        ("rolling_auc", "Rolling ROC AUC (red: drift alarms; dashed: known regime changes)", auc),
        ("components", "Components against the blend", plot_components(fig["metrics"])),
        ("feature_importance", "Feature importance", plot_importance(fig["feature_importance"])),
    ]


def _render_html(
    fig: Mapping[str, Any], json_name: str, images: list[tuple[str, str, bytes]]
) -> str:
    metrics = fig["metrics"]
    parts = [
        f"<h1>{html.escape(fig['title'])}</h1>",
        f"<p>Written {html.escape(fig['created'])}. The numbers behind every figure are in "
        f"<code>{html.escape(json_name)}</code>.</p>",
        _table(["", ""], [[k, v] for k, v in fig["summary"].items()]),
        "<h2>Metrics</h2>",
        _table(
            ["component", *_METRIC_COLUMNS],
            [[n, *(m.get(c) for c in _METRIC_COLUMNS)] for n, m in metrics.items()],
        ),
    ]
    for _, caption, png in images:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if fig.get("trials"):
        parts.append("<h2>Hyperparameter search</h2>")
        parts.append(
            _table(
                ["trial", "value", "state", "params"],
                [
                    [t["number"], t["value"], t["state"], json.dumps(t["params"])]
                    for t in fig["trials"]
                ],
            )
        )
    style = (
        "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;max-width:1100px}"
        "table{border-collapse:collapse;margin:8px 0 16px}"
        "td,th{border-bottom:1px solid #e5e7eb;padding:3px 10px;text-align:left}"
        "figure{margin:16px 0}img{max-width:100%}figcaption{color:#6b7280}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(fig['title'])}</title><style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def write_report(
    figures: Mapping[str, Any], path: Path, plots_dir: Path | None = None
) -> tuple[Path, Path]:
    """Write ``figures`` as an HTML report at ``path`` and as JSON beside it.

    ``path`` is the HTML file, or a directory (then ``report.html`` in it). Returns both paths.
    With ``plots_dir``, each plot is also saved there as ``<name>.png``.
    """
    html_path, json_path = _paths(path)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    images = _plots(figures)
    json_path.write_text(json.dumps(figures, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    html_path.write_text(_render_html(figures, json_path.name, images), encoding="utf-8")
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for stem, _, png in images:
            (plots_dir / f"{stem}.png").write_bytes(png)
    return html_path, json_path


def write_replay_report(result: ReplayResult, path: Path, window: int = 500) -> tuple[Path, Path]:
    """Write the report of a replay (see :func:`replay_figures`); returns both paths."""
    return write_report(replay_figures(result, window), path)


def write_training_report(
    result: TrainingResult,
    path: Path,
    compare: Mapping[str, Any] | None = None,
    drift_points: list[int] | None = None,
    plots_dir: Path | None = None,
) -> tuple[Path, Path]:
    """Write the report of a training job (see :func:`training_figures`); returns both paths.

    With ``plots_dir``, each plot is also saved there as a PNG file.
    """
    return write_report(training_figures(result, compare, drift_points), path, plots_dir)
