"""Small helpers around MLflow client calls, shared by the registry's modules."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from models.errors import RegistryError

__all__ = ["metric_list", "mlflow_errors", "safe_name", "terminate"]


@contextmanager
def mlflow_errors(action: str) -> Iterator[None]:
    """Turn an MLflow failure during ``action`` into a :class:`RegistryError` of one line."""
    try:
        yield
    except MlflowException as exc:
        first = str(exc.message).strip().splitlines()[0] if exc.message else type(exc).__name__
        raise RegistryError(f"{action} failed: {first}") from exc


def safe_name(name: str) -> str:
    """An MLflow-safe metric or param name.

    >>> safe_name("BTC/USDT:roc auc")
    'BTC/USDT_roc auc'
    """
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)[:250]


def terminate(client: MlflowClient, run_id: str, status: str) -> None:
    """End run ``run_id`` with ``status``."""
    # Against a tracking server MLflow writes "View run ..." links to stdout when a run ends;
    # send them to stderr so that stdout stays machine-readable (``alphapulse train --json``).
    with redirect_stdout(sys.stderr):
        client.set_terminated(run_id, status)


def metric_list(
    metrics: dict[str, float], prefix: str = "", model_id: str | None = None
) -> list[Metric]:
    """The finite ``metrics`` as MLflow metrics at step 0, named ``prefix + key``.

    >>> [m.key for m in metric_list({"auc": 0.7, "bad": float("nan")}, "holdout_")]
    ['holdout_auc']
    """
    now = int(time.time() * 1000)
    return [
        Metric(prefix + k, float(v), now, 0, model_id=model_id)
        for k, v in metrics.items()
        if np.isfinite(float(v))
    ]
