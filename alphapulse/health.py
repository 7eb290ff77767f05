"""Liveness and readiness of a worker: the figures behind ``/healthz`` and ``/readyz``.

Liveness is only that the event loop answers: the page is served from it. Readiness has three
checks, each read from state the worker keeps anyway, so that a request makes no network call:

``partitions``
    The worker has had its first partition assignment, is not in a rebalance, and the learner
    state of every outcomes partition assigned to it is loaded
    (:class:`~agents.state.PartitionStore`).
``broker``
    A metadata request of the worker's producer was answered recently. :func:`probe_broker` sends
    one every few seconds, with a short timeout, from a task of its own.
``registry``
    The reloader's last finished poll of the MLflow registry succeeded (:class:`WatchedReloader`).
    With the reloader off the registry is not needed, and the check says so.

Examples
--------
>>> probe = Probe()
>>> probe.check(now=10.0)["ok"]
False
>>> probe.succeeded(now=10.0); probe.check(now=12.5)
{'ok': True, 'age_s': 2.5, 'detail': 'last success 2.5 s ago'}
>>> probe.check(now=40.0, max_age_s=20.0)["ok"]
False
>>> probe.failed(ConnectionError("refused"), now=41.0); probe.check(now=41.0)["detail"]
'failed: ConnectionError: refused'
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from faust.exceptions import NotReady

from agents.reloader import Reloader
from agents.state import PartitionStore
from stream.records import ModelEvent

__all__ = ["Health", "Probe", "WatchedReloader", "partitions_check", "probe_broker"]

log = logging.getLogger(__name__)

_USERINFO = re.compile(r"//[^/@\s]+@")


@dataclass
class Probe:
    """The outcome of a repeated check (a registry poll, a broker metadata request), and when.

    Times are :func:`time.monotonic` seconds.
    """

    last_ok: float | None = None
    """When the check last succeeded; None before the first success."""
    error: str | None = None
    """Why the last finished check failed; None when it succeeded."""
    error_at: float | None = None

    def succeeded(self, now: float | None = None) -> None:
        """Record a success."""
        self.last_ok = time.monotonic() if now is None else now
        self.error = self.error_at = None

    def failed(self, reason: BaseException | str, now: float | None = None) -> None:
        """Record a failure; an exception is kept as its type and message, cut short."""
        if isinstance(reason, BaseException):
            reason = f"{type(reason).__name__}: {reason}"
        # MLflow and Kafka errors quote URLs, which may carry a user and password.
        self.error = _USERINFO.sub("//***@", reason)[:300]
        self.error_at = time.monotonic() if now is None else now

    def check(self, now: float | None = None, max_age_s: float | None = None) -> dict[str, Any]:
        """``ok`` when the last finished check succeeded (at most ``max_age_s`` ago, if given)."""
        now = time.monotonic() if now is None else now
        out: dict[str, Any] = {"ok": False}
        if self.last_ok is not None:
            out["age_s"] = round(now - self.last_ok, 1)
        if self.error is not None:
            out["detail"] = f"failed: {self.error}"
        elif self.last_ok is None:
            out["detail"] = "no check has finished yet"
        elif max_age_s is not None and now - self.last_ok > max_age_s:
            out["detail"] = f"no success for {now - self.last_ok:.1f} s"
        else:
            out["ok"] = True
            out["detail"] = f"last success {out['age_s']} s ago"
        return out


@dataclass
class WatchedReloader(Reloader):
    """A :class:`~agents.reloader.Reloader` that records the outcome of each poll in ``status``.

    A poll that raises (MLflow unreachable or failing) is a failure; one that rejects a model
    is a success, since the registry answered.
    """

    status: Probe = field(default_factory=Probe)

    async def poll_once(self) -> list[ModelEvent]:
        """One poll of :class:`~agents.reloader.Reloader`, its outcome recorded."""
        try:
            events = await super().poll_once()
        except Exception as exc:
            self.status.failed(exc)
            raise  # the reloader logs it and backs off
        self.status.succeeded()
        return events


def partitions_check(
    assigned: set[int] | None, loaded: set[int], rebalancing: bool
) -> dict[str, Any]:
    """The ``partitions`` check: ``assigned`` is None before the first assignment.

    >>> partitions_check({0, 1}, {0}, rebalancing=False)["ok"]
    False
    >>> partitions_check({0, 1}, {0, 1, 3}, rebalancing=False)
    {'ok': True, 'assigned': [0, 1], 'loading': [], 'detail': 'state of 2 partitions loaded'}
    >>> partitions_check(set(), set(), rebalancing=False)["ok"]  # more workers than partitions
    True
    >>> partitions_check(None, set(), rebalancing=False)["detail"]
    'waiting for the first partition assignment'
    """
    if assigned is None:
        return {"ok": False, "detail": "waiting for the first partition assignment"}
    loading = sorted(assigned - loaded)
    out: dict[str, Any] = {"ok": False, "assigned": sorted(assigned), "loading": loading}
    if rebalancing:
        out["detail"] = "rebalancing"
    elif loading:
        out["detail"] = f"loading the state of partitions {loading}"
    else:
        out["ok"] = True
        out["detail"] = f"state of {len(assigned)} partitions loaded"
    return out


async def probe_broker(
    app: Any, probe: Probe, timeout_s: float = 2.0, topics: Iterable[str] = ()
) -> None:
    """Ask the broker for metadata through ``app``'s producer; record the outcome in ``probe``.

    The request goes through the producer's own metadata refresh, for ``topics`` (the worker's)
    and those the producer tracks, so it adds one small request and waits at most ``timeout_s``;
    the producer keeps sending meanwhile.
    """
    try:
        client = app.producer._ensure_producer().client
        for topic in topics:
            # A client that tracks no topic asks for every topic of the cluster: 0.1 to 0.3 s of
            # decoding on the event loop with 10,000 partitions.
            client.add_topic(topic)
        answered = await asyncio.wait_for(client.force_metadata_update(), timeout_s)
    except NotReady:
        probe.failed("the producer has not started")
    except TimeoutError:
        probe.failed(f"no metadata answer within {timeout_s} s")
    except Exception as exc:  # a health probe must never take the worker down; report it
        log.warning("broker probe failed: %r", exc)
        probe.failed(exc)
    else:
        if answered:
            probe.succeeded()
        else:
            probe.failed("no broker answered a metadata request")


class Health:
    """What ``/healthz`` and ``/readyz`` report for one worker.

    Parameters
    ----------
    app
        The Faust app (its ``rebalancing`` flag is read).
    store
        The worker's learner state.
    broker
        Outcomes of :func:`probe_broker`.
    broker_max_age_s
        The broker check fails when its last success is older than this.
    registry
        Outcomes of the reloader's polls; None when the reloader is off.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from stream.settings import Settings
    >>> app, store = SimpleNamespace(rebalancing=False), PartitionStore(Settings(_env_file=None))
    >>> health = Health(app, store, Probe(last_ok=time.monotonic()), 15.0, registry=None)
    >>> ready, body = health.readiness()
    >>> ready, body["checks"]["partitions"]["detail"], body["checks"]["registry"]["needed"]
    (False, 'waiting for the first partition assignment', False)
    >>> health.on_assigned(set()); health.readiness()[0]
    True
    """

    def __init__(
        self,
        app: Any,
        store: PartitionStore | None,
        broker: Probe,
        broker_max_age_s: float,
        registry: Probe | None,
    ) -> None:
        if broker_max_age_s <= 0:
            raise ValueError("broker_max_age_s must be above 0")
        self.app = app
        self.store = store
        self.broker = broker
        self.broker_max_age_s = broker_max_age_s
        self.registry = registry
        self.assigned: set[int] | None = None
        self.started = time.monotonic()

    def on_assigned(self, partitions: set[int]) -> None:
        """Record the outcomes partitions of a new assignment (all of them, not the new ones)."""
        self.assigned = set(partitions)

    def liveness(self) -> dict[str, Any]:
        """The ``/healthz`` body."""
        return {
            "status": "ok",
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 1),
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the worker is ready, and the ``/readyz`` body with every check."""
        now = time.monotonic()
        loaded = set(self.store.states) if self.store is not None else set()
        checks = {
            "partitions": partitions_check(
                self.assigned, loaded, bool(getattr(self.app, "rebalancing", False))
            ),
            "broker": self.broker.check(now, self.broker_max_age_s),
            "registry": self._registry_check(now),
        }
        ready = all(c["ok"] for c in checks.values())
        return ready, {"ready": ready, "checks": checks}

    def _registry_check(self, now: float) -> dict[str, Any]:
        if self.registry is None:
            return {
                "ok": True,
                "needed": False,
                "detail": "the model reloader is off (ALPHAPULSE_RELOAD_INTERVAL_S=0)",
            }
        # No age limit: a poll that loads a new model version can take long, and the models
        # already loaded keep serving meanwhile.
        return {"needed": True, **self.registry.check(now)}
