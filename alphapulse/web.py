"""The worker's web pages: health for orchestrators, ``/metrics`` for Prometheus, ``/dashboard``
for people.

:func:`register_web` is called once by the composition root. It adds, on the worker's web port
(``ALPHAPULSE_WEB_HOST``:``ALPHAPULSE_WEB_PORT``):

``/metrics``
    Prometheus text format, every series prefixed ``alphapulse_`` (see :mod:`alphapulse.metrics`).
``/dashboard``
    A self-contained HTML page (inline script and SVG charts, nothing fetched from elsewhere)
    that polls ``/dashboard/data``.
``/dashboard/data``
    The dashboard's figures as JSON, with a time series sampled once a second.
``/healthz``
    Liveness: 200 and ``{"status": "ok", ...}`` while the event loop answers.
``/readyz``
    Readiness: 200 and ``{"ready": true, "checks": {...}}`` when the assigned partitions' state is
    loaded, the broker answered a metadata request recently and the registry's last poll
    succeeded; 503 with the same body, naming the failing checks, otherwise
    (:mod:`alphapulse.health`).
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from agents.state import PartitionStore
from alphapulse.health import Health, Probe, probe_broker
from alphapulse.lag import consumer_lag
from alphapulse.metrics import WorkerMetrics
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
    app: Any,
    rt: Runtime,
    store: PartitionStore | None,
    sample_interval_s: float = 1.0,
    registry: Probe | None = None,
    broker_probe_interval_s: float = 5.0,
) -> WorkerMetrics:
    """Add the health, metrics and dashboard pages, the sampling timer and the broker probe to
    the Faust ``app``.

    Returns the :class:`~alphapulse.metrics.WorkerMetrics` that serves them, with the online
    models of ``store`` (its latency observer is registered in ``rt.observers``). ``registry``
    holds the outcomes of the reloader's polls (None: the reloader is off); the broker is probed
    every ``broker_probe_interval_s``.
    """
    metrics = WorkerMetrics(rt, store)
    broker = Probe()
    health = Health(app, store, broker, 3 * broker_probe_interval_s, registry)
    outcomes_topic = rt.settings.topic("outcomes")
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
        # In parts, each short: the loop answers signals in between.
        quantiles = metrics.quantiles()
        await asyncio.sleep(0)
        components = metrics.components()
        await asyncio.sleep(0)
        metrics.sample(quantiles=quantiles, components=components)

    @app.page("/healthz", name="alphapulse-healthz")
    async def healthz(view: Any, request: Any) -> Any:
        return view.json(health.liveness(), headers=headers)

    @app.page("/readyz", name="alphapulse-readyz")
    async def readyz(view: Any, request: Any) -> Any:
        ready, body = health.readiness()
        return view.json(body, status=200 if ready else 503, headers=headers)

    @app.on_partitions_assigned.connect
    async def _note_assignment(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = kwargs.get("assigned", args[0] if args else set())
        health.on_assigned({tp.partition for tp in assigned if tp.topic == outcomes_topic})

    @app.task
    async def _probe_broker() -> None:
        while True:
            await probe_broker(app, broker, topics=rt.topic_names.values())
            # Soon again until the first success, so that a starting worker is ready early.
            await asyncio.sleep(broker_probe_interval_s if broker.last_ok is not None else 1.0)

    log.debug("web pages /healthz, /readyz, /metrics and /dashboard registered")
    return metrics
