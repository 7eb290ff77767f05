"""The composition root: the one place where settings, topics, models and agents meet.

``create_app(settings)`` builds a Faust app with plain-bytes topics (the codec in
:mod:`stream.codec` does all JSON work, so no framework envelope ever reaches the wire), a
:class:`~stream.runtime.Runtime` shared by the agents, and the agents themselves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import faust

from agents import learner, leaving, predictor, store_sink
from agents.backlog import SignalBacklog
from agents.learner import DriftHook
from agents.retrainer import Retrainer
from agents.state import PartitionStore
from alphapulse.health import Probe, WatchedReloader
from alphapulse.metrics import WorkerMetrics
from alphapulse.report import write_training_report
from alphapulse.web import register_web
from stream.codec import Limits, now_ms
from stream.kafka import faust_broker_kwargs
from stream.registry import open_registry
from stream.runtime import Runtime
from stream.settings import TOPIC_ROLES, Settings

__all__ = ["INTERNAL_ROLES", "Built", "create_app", "faust_tuning_kwargs"]

log = logging.getLogger(__name__)

INTERNAL_ROLES = ("checkpoints",)


@dataclass(frozen=True)
class Built:
    """A configured Faust app, the runtime its agents share, its partition states and the
    metrics its web pages serve."""

    app: faust.App
    runtime: Runtime
    store: PartitionStore
    metrics: WorkerMetrics


def create_app(settings: Settings) -> Built:
    """Build the worker's Faust app from ``settings``."""
    datadir = settings.data_dir / "worker"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        **faust_broker_kwargs(settings),
        store="memory://",
        datadir=str(datadir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        **faust_tuning_kwargs(settings),
    )
    names = {role: settings.topic(role) for role in TOPIC_ROLES}
    names.update({role: settings.internal_topic(role) for role in INTERNAL_ROLES})
    topics: dict[str, Any] = {
        role: app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
            # The learner's transactions commit the outcomes offsets; Faust must never commit them.
            acks=role != "outcomes",
        )
        for role, name in names.items()
    }
    rt = Runtime(
        settings=settings,
        topics=topics,
        limits=Limits(settings.max_message_bytes, settings.max_features),
        app=app,
        topic_names=names,
    )
    store = PartitionStore(settings, settings.online_config())
    backlog = SignalBacklog()
    on_drift = _schedule_retraining(app, rt)
    predictor.register(app, rt, store, backlog)
    learner.register(app, rt, store, backlog, on_drift)
    store_sink.register(app, rt)
    outcomes_topic = settings.topic("outcomes")

    registry_status: Probe | None = None
    if settings.reload_interval_s > 0:
        reloader = WatchedReloader(rt, partial(open_registry, settings), store=store)
        registry_status = reloader.status  # for /readyz

        @app.task
        async def _reload_models() -> None:
            await reloader.run_forever(settings.reload_interval_s)

    metrics = register_web(app, rt, store, registry=registry_status)

    @app.on_partitions_revoked.connect
    async def _on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", args[0] if args else set())
        partitions = {tp.partition for tp in revoked if tp.topic == outcomes_topic}
        await leaving.commit_leaving(rt, store, partitions)
        store.drop(partitions)
        rt.forget_partitions()

    @app.on_before_shutdown.connect
    async def _stop_transactions(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        # Fetching has stopped by now: what was learned is committed, not left to be learned again.
        await leaving.commit_leaving(rt, store, set(store.states))
        await store.close()  # the learner's producers; the next owner aborts an open transaction

    @app.on_partitions_assigned.connect
    async def _on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = kwargs.get("assigned", args[0] if args else set())
        store.preload({tp.partition for tp in assigned if tp.topic == outcomes_topic})

    log.debug("app %s built for %s", settings.app_id, settings.bootstrap_servers)
    return Built(app=app, runtime=rt, store=store, metrics=metrics)


def faust_tuning_kwargs(settings: Settings) -> dict[str, Any]:
    """The Faust consumer and producer settings of a worker (the bench baseline uses them too)."""
    return dict(
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=32 * 1024 * 1024,
        consumer_max_fetch_size=max(1_048_576, settings.max_message_bytes * 4),
        logging_config=None,
        # A killed worker's partitions move on after this long, not Faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=settings.commit_interval_s,
        # Commits on the interval only. Faust also commits every 10,000 acks from inside its
        # fetch loop, flushing the producer first, and fetching stops meanwhile.
        broker_commit_every=2**62,
        # Every produce request costs the broker and this process far more than a record in it:
        # records wait up to 10 ms to share requests. Predictions go in batches that do not
        # linger (Runtime.send_many); the learner's state goes in its own transactions.
        producer_linger=0.010,
        producer_max_batch_size=256 * 1024,
        # Large polls: while fetched records wait to be consumed, aiokafka sends no new fetch to
        # their broker, so small polls hold back the next fetch. The learner gives way to the
        # predictor (agents.turns.give_way), so a large poll of outcomes does not delay answers.
        broker_max_poll_records=256,
        # Outcomes after the learner's last transaction are simply redelivered to the next owner
        # on shutdown, so do not wait for them.
        stream_wait_empty=False,
    )


def _schedule_retraining(app: faust.App, rt: Runtime) -> DriftHook | None:
    """One timer (on the leader worker) that runs the cadences whose UTC schedule is due; returns
    the learner's drift hook, which retrains after drift, or None when drift does not retrain."""
    settings = rt.settings
    retrainer = Retrainer(
        rt, write_report=write_training_report, registry=partial(open_registry, settings)
    )
    if any(not schedule.off for schedule in retrainer.schedules().values()):

        @app.task
        async def _warm_registry() -> None:
            # Opening MLflow (a SQLite store's migrations, a client) holds the GIL from a thread
            # for up to seconds: at start, not under load at the first tick.
            await retrainer.warm(now_ms())

        @app.timer(settings.retrain_check_interval_s, on_leader=True, name="retrain-schedule")
        async def _retrain_on_schedule() -> None:
            await retrainer.tick(now_ms())

    if not settings.retrain_on_drift:
        return None
    tasks: set[asyncio.Task[None]] = set()

    def on_drift(model_key: str, ts: int) -> None:
        """Plan drift retraining (the retrainer ignores an alarm within its minimum gap)."""
        task = asyncio.ensure_future(retrainer.on_drift(model_key, ts))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return on_drift
