"""What the benchmarks share: their JSON-lines output and their working directory."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["emit", "work_dir"]


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
