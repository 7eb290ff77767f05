"""What the benchmarks share: their JSON-lines output."""

from __future__ import annotations

import json

__all__ = ["emit"]


def emit(name: str, value: float, unit: str, json_out: bool, **extra: float) -> None:
    """Print one figure, as a JSON line (``name``, ``value``, ``unit``, extras) or as text."""
    rec = {"name": name, "value": round(float(value), 4), "unit": unit, **extra}
    print(json.dumps(rec) if json_out else f"{name}: {value:.4g} {unit} {extra or ''}", flush=True)
