"""Matplotlib renderings of the report figures, as PNG bytes (no pyplot, no global state)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

__all__ = ["plot_calibration", "plot_components", "plot_importance", "plot_rolling_auc"]

_BLEND_FIRST = ("blend", "model")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _order(names: Any) -> list[str]:
    names = list(names)
    return [n for n in _BLEND_FIRST if n in names] + sorted(
        n for n in names if n not in _BLEND_FIRST
    )


def plot_calibration(cal: Mapping[str, Mapping[str, list[Any]]]) -> bytes:
    """Reliability diagram: observed win rate against mean predicted probability per bin."""
    fig = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#9ca3af", linestyle="--", linewidth=1, label="perfect")
    for name in _order(cal):
        c = cal[name]
        ax.plot(c["mean_predicted"], c["fraction_positive"], marker="o", markersize=3, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed win rate")
    ax.set_title("Calibration")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def plot_rolling_auc(
    roll: Mapping[str, Any],
    drift_points: list[int],
    regime_changes: list[int],
    x_label: str,
) -> bytes:
    """Rolling ROC AUC of each series, drift alarms as red ticks, true regime changes dashed."""
    fig = Figure(figsize=(9.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for name in _order(roll["series"]):
        values = [float("nan") if v is None else v for v in roll["series"][name]]
        ax.plot(roll["x"], values, linewidth=1.4 if name in _BLEND_FIRST else 1.0, label=name)
    for i, d in enumerate(drift_points):
        ax.axvline(
            d, color="#dc2626", alpha=0.5, linewidth=0.8, label="drift alarm" if i == 0 else None
        )
    for i, r in enumerate(regime_changes):
        ax.axvline(
            r,
            color="#111827",
            linestyle="--",
            linewidth=1.2,
            label="regime change" if i == 0 else None,
        )
    ax.axhline(0.5, color="#9ca3af", linewidth=0.8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"ROC AUC (last {roll['window']})")
    ax.set_title("Rolling ROC AUC")
    ax.legend(loc="lower left", fontsize=8, ncol=3)
    return _png(fig)


def plot_components(metrics: Mapping[str, Mapping[str, float | None]]) -> bytes:
    """ROC AUC and log loss of each component next to the blend's."""
    names = _order(metrics)
    fig = Figure(figsize=(8.0, 3.5), layout="constrained")
    for i, (key, title) in enumerate((("roc_auc", "ROC AUC"), ("log_loss", "log loss"))):
        ax = fig.add_subplot(1, 2, i + 1)
        values = [metrics[n].get(key) for n in names]
        heights = [float("nan") if v is None else float(v) for v in values]
        colors = ["#2563eb" if n in _BLEND_FIRST else "#9ca3af" for n in names]
        bars = ax.bar(names, heights, color=colors)
        ax.bar_label(bars, labels=[f"{h:.3f}" for h in heights], fontsize=8)
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        if key == "roc_auc":
            ax.set_ylim(0, 1)
    fig.suptitle("Components against the blend")
    return _png(fig)


def plot_importance(importances: Mapping[str, Mapping[str, float]], top: int = 15) -> bytes:
    """The ``top`` features of each model by importance, one panel per model."""
    models = [m for m in importances if importances[m]] or ["none"]
    fig = Figure(figsize=(4.2 * len(models), 0.3 * top + 1.2), layout="constrained")
    for i, model in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        pairs = sorted(importances.get(model, {}).items(), key=lambda kv: kv[1])[-top:]
        ax.barh([p[0] for p in pairs], [p[1] for p in pairs], color="#2563eb")
        ax.set_title(model, fontsize=10)
        ax.tick_params(labelsize=8)
    fig.suptitle("Feature importance (share)")
    return _png(fig)
