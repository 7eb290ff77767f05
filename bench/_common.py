"""What the benchmarks share: their JSON-lines output, their working directory and messages."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from models.synthetic import TradeGenerator

__all__ = ["emit", "print_records", "trade_messages", "work_dir"]


@contextmanager
def work_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A fresh directory for a run's broker, worker state and logs.

    It is removed when the run succeeds, unless ``keep``; when the run raises or exits with an
    error it is kept, and its path is printed on stderr.

    >>> with work_dir("doctest-") as d:
    ...     _ = (d / "log").write_text("x")
    >>> d.exists()
    False
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    failed = True
    try:
        yield path
        failed = False
    except SystemExit as exc:
        failed = exc.code not in (None, 0)
        raise
    finally:
        if failed or keep:
            print(f"logs and state kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def emit(name: str, value: float, unit: str, json_out: bool, **extra: float) -> None:
    """Print one figure, as a JSON line (``name``, ``value``, ``unit``, extras) or as text."""
    rec = {"name": name, "value": round(float(value), 4), "unit": unit, **extra}
    print(json.dumps(rec) if json_out else f"{name}: {value:.4g} {unit} {extra or ''}", flush=True)


def print_records(records: list[dict[str, Any]], json_out: bool) -> None:
    """Print a benchmark's records as JSON lines, or as aligned text with any baseline and ratio.

    >>> rec = {"name": "a", "value": 2.0, "unit": "x", "baseline": 1.0, "ratio": 2.0}
    >>> print_records([rec], False)
    a 2.0 x  (baseline 1.0, ratio 2.0)
    """
    width = max((len(rec["name"]) for rec in records), default=0)
    for rec in records:
        if json_out:
            print(json.dumps(rec))
            continue
        extra = ", ".join(f"{k} {rec[k]}" for k in ("baseline", "ratio") if k in rec)
        print(
            f"{rec['name']:<{width}} {rec['value']} {rec['unit']}"
            + (f"  ({extra})" if extra else "")
        )


def trade_messages(n: int, kind: str) -> list[tuple[bytes, bytes]]:
    """``n`` keyed contract messages of one synthetic trade each: signal requests, or (``kind``
    ``"outcomes"``) the outcomes of the same trades, with their features.

    >>> key, value = trade_messages(1, "outcomes")[0]
    >>> sorted(orjson.loads(value)), key in (b"A", b"B", b"C", b"D")
    (['features', 'label', 'outcome_id', 'realized_rr', 'signal_id', 'symbol'], True)
    """
    rows = TradeGenerator(n_features=10, n_informative=5, seed=1, symbols=("A", "B", "C", "D"))
    out = []
    for r in rows.rows(n):
        key = r.symbol.encode()
        if kind == "signals":
            doc: dict[str, Any] = {
                "signal_id": r.signal_id,
                "symbol": r.symbol,
                "features": r.features,
            }
        else:
            doc = {
                "outcome_id": r.outcome_id,
                "signal_id": r.signal_id,
                "symbol": r.symbol,
                "label": r.label,
                "realized_rr": r.realized_rr,
                "features": r.features,
            }
        out.append((key, orjson.dumps(doc)))
    return out
