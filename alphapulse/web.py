"""The worker's web pages: ``/metrics`` for Prometheus and ``/dashboard`` for people.

:func:`register_web` is called once by the composition root. It adds, on the worker's web port
(``ALPHAPULSE_WEB_HOST``:``ALPHAPULSE_WEB_PORT``):

``/metrics``
    Prometheus text format, every series prefixed ``alphapulse_`` (see :mod:`alphapulse.metrics`).
``/dashboard``
    A self-contained HTML page (inline script and SVG charts, nothing fetched from elsewhere)
    that polls ``/dashboard/data``.
``/dashboard/data``
    The dashboard's figures as JSON, with a time series sampled once a second.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from agents.state import PartitionStore
from alphapulse.metrics import WorkerMetrics, consumer_lag
from stream.runtime import Runtime

__all__ = ["dashboard_html", "register_web"]

log = logging.getLogger(__name__)


def dashboard_html() -> str:
    """The dashboard page, read from the package data.

    >>> page = dashboard_html()
    >>> "<svg" in page, "src=" in page, "<link" in page, "@import" in page
    (True, False, False, False)
    """
    return resources.files("alphapulse").joinpath("dashboard.html").read_text(encoding="utf-8")


def register_web(
    app: Any, rt: Runtime, store: PartitionStore | None, sample_interval_s: float = 1.0
) -> WorkerMetrics:
    """Add the metrics and dashboard pages and the sampling timer to the Faust ``app``.

    Returns the :class:`~alphapulse.metrics.WorkerMetrics` that serves them, with the online
    models of ``store`` (its latency observer is registered in ``rt.observers``).
    """
    metrics = WorkerMetrics(rt, store)
    page = dashboard_html()
    headers = {"Cache-Control": "no-store"}

    async def refresh_lag() -> None:
        metrics.lag = await consumer_lag(app)

    @app.page("/metrics", name="alphapulse-metrics")
    async def prometheus_metrics(view: Any, request: Any) -> Any:
        await refresh_lag()
        return view.bytes(
            metrics.render(), headers={**headers, "Content-Type": CONTENT_TYPE_LATEST}
        )

    @app.page("/dashboard", name="alphapulse-dashboard")
    async def dashboard(view: Any, request: Any) -> Any:
        return view.html(page, headers=headers)

    @app.page("/dashboard/data", name="alphapulse-dashboard-data")
    async def dashboard_data(view: Any, request: Any) -> Any:
        return view.json(metrics.snapshot(with_history=True), headers=headers)

    @app.timer(interval=sample_interval_s, name="alphapulse-metrics-sampler")
    async def sample() -> None:
        await refresh_lag()
        metrics.sample()

    log.debug("web pages /metrics and /dashboard registered")
    return metrics
