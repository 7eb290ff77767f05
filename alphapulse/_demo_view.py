"""What the demo shows: its live state, the rich view, progress lines and the final summary.

>>> st = DemoState(started=0.0, duration=60.0, rate=40.0, topic="alphapulse.predictions")
>>> st.signals_sent = 10
>>> "signals=10" in progress_line(st, now=5.0)
True
>>> "predictions made: 0" in summary_text(st, now=60.0)
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from models.roles import BLEND, ROLES

__all__ = ["DemoState", "progress_line", "render_view", "sparkline", "summary_text"]

_ROLES = (BLEND, *ROLES)
_BARS = "▁▂▃▄▅▆▇█"


@dataclass
class DemoState:
    """Everything the view shows; the demo's tasks update it in place."""

    started: float
    duration: float | None
    rate: float
    topic: str
    phase: str = "starting"
    worker: dict[str, Any] = field(default_factory=dict)
    """The worker's ``/dashboard/data``, as last read."""
    events: list[str] = field(default_factory=list)
    signals_sent: int = 0
    outcomes_sent: int = 0
    predictions: int = 0
    drift_signal: int | None = None
    """Index of the live signal at which the synthetic market changes its rules."""
    drift_at_s: float | None = None
    """Seconds into the run when that signal was sent."""
    retrained: str | None = None
    drift_events: int = 0
    ended: float | None = None

    def event(self, text: str, now: float | None = None) -> None:
        """Remember a notable event (model loaded, drift, retrain) with its time."""
        now = time.monotonic() if now is None else now
        self.events.append(f"{_clock(now - self.started)}  {text}")
        del self.events[:-6]


def _clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{float(v):.{digits}f}"


def sparkline(values: list[float | None], width: int = 30) -> str:
    """A one-line chart of the last ``width`` values (gaps for missing ones).

    >>> sparkline([0.0, 0.5, 1.0, None])
    '▁▅█ '
    """
    vals = values[-width:]
    known = [v for v in vals if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = (hi - lo) or 1.0
    return "".join(" " if v is None else _BARS[min(7, round((v - lo) / span * 7))] for v in vals)


def _aucs(worker: dict[str, Any]) -> dict[str, float | None]:
    comps = worker.get("components", {})
    return {r: comps[r]["roc_auc"] for r in _ROLES if r in comps}


def _versions(worker: dict[str, Any]) -> str:
    parts = [f"{role} v{v}" for role, v in sorted(worker.get("versions", {}).items())]
    learned = sum(m.get("n_learned", 0) for m in worker.get("online", {}).values())
    parts.append(f"online n={learned}")
    return ", ".join(parts)


def _drifts(worker: dict[str, Any]) -> str:
    keys = [k for k, m in worker.get("online", {}).items() if m.get("drifts")]
    total = worker.get("drifts_total", 0)
    return f"{total}" + (f" ({', '.join(keys)})" if keys else "")


def render_view(st: DemoState, now: float | None = None) -> Group:
    """The live view: a table of the current figures and the latest events."""
    now = time.monotonic() if now is None else now
    w = st.worker
    elapsed = now - st.started
    total = f" of {_clock(st.duration)}" if st.duration else ""
    title = f"AlphaPulse demo  {_clock(elapsed)}{total}  {st.phase}"
    table = Table(
        title=title, show_header=False, title_justify="left", box=box.SIMPLE, pad_edge=False
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_column(no_wrap=True)
    hist = w.get("history", [])
    rates = w.get("rates", {})
    lat = w.get("latency", {})
    table.add_row("signals / outcomes sent", f"{st.signals_sent} / {st.outcomes_sent}", "")
    table.add_row(
        "predictions received",
        f"{st.predictions} (worker total {w.get('predictions_total', 0)})",
        "",
    )
    table.add_row(
        "requests/s",
        _num(rates.get("predictions_per_s"), 1),
        sparkline([p.get("predictions_per_s") for p in hist]),
    )
    table.add_row(
        "latency p50 / p99",
        f"{_num(lat.get('p50_ms'), 1)} ms / {_num(lat.get('p99_ms'), 1)} ms",
        sparkline([p.get("p99_ms") for p in hist]),
    )
    for role, auc in _aucs(w).items():
        series = [p.get("auc", {}).get(role) for p in hist]
        table.add_row(f"rolling AUC {role}", _num(auc), sparkline(series))
    table.add_row("drift alarms", _drifts(w), "")
    table.add_row("model versions", _versions(w), "")
    dead = w.get("deadletters", {})
    table.add_row("dead letters", ", ".join(f"{k} {v}" for k, v in dead.items()) or "0", "")
    events = Text("\n".join(st.events) if st.events else "no events yet", style="dim")
    return Group(table, events)


def progress_line(st: DemoState, now: float | None = None) -> str:
    """One plain line of the current figures, for output that is not a terminal."""
    now = time.monotonic() if now is None else now
    w = st.worker
    lat = w.get("latency", {})
    aucs = " ".join(f"{r}={_num(v)}" for r, v in _aucs(w).items())
    return (
        f"t={int(now - st.started)}s phase={st.phase!r} signals={st.signals_sent} "
        f"outcomes={st.outcomes_sent} predictions={st.predictions} "
        f"rps={_num(w.get('rates', {}).get('predictions_per_s'), 1)} "
        f"p50_ms={_num(lat.get('p50_ms'), 1)} p99_ms={_num(lat.get('p99_ms'), 1)} "
        f"auc[{aucs}] drifts={w.get('drifts_total', 0)} versions[{_versions(w)}]"
    )


def summary_text(st: DemoState, now: float | None = None) -> str:
    """The plain-text summary printed when the demo ends."""
    now = (st.ended or time.monotonic()) if now is None else now
    w = st.worker
    lat = w.get("latency", {})
    elapsed = max(1e-9, now - st.started)
    aucs = ", ".join(f"{r} {_num(v)}" for r, v in _aucs(w).items()) or "-"
    drift = (
        f"at signal {st.drift_signal} ({_clock(st.drift_at_s)})"
        if st.drift_signal is not None and st.drift_at_s is not None
        else "not reached"
    )
    lines = [
        "AlphaPulse demo summary",
        f"  duration: {elapsed:.1f} s",
        f"  signals sent: {st.signals_sent}, outcomes sent: {st.outcomes_sent}",
        f"  predictions made: {st.predictions} (received on {st.topic})",
        f"  mean requests/s: {st.predictions / elapsed:.1f}",
        f"  latency p50 / p99 (worker, last 60 s): {_num(lat.get('p50_ms'), 1)} ms / "
        f"{_num(lat.get('p99_ms'), 1)} ms",
        f"  rolling ROC AUC: {aucs}",
        f"  regime change: {drift}",
        f"  drift alarms: {_drifts(w)}",
        f"  retrained: {st.retrained or 'not yet'}",
        f"  model versions: {_versions(w)}",
        f"  dead letters: {sum(w.get('deadletters', {}).values())}",
    ]
    return "\n".join(lines)
