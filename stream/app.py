"""The composition root: the one place where settings, topics, models and agents meet.

``create_app(settings)`` builds a Faust app with plain-bytes topics (the codec in
:mod:`stream.codec` does all JSON work, so no framework envelope ever reaches the wire), a
:class:`~stream.runtime.Runtime` shared by the agents, and the agents themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust

from stream.codec import Limits
from stream.kafka import faust_broker_kwargs
from stream.runtime import Runtime
from stream.settings import TOPIC_ROLES, Settings

__all__ = ["Built", "create_app"]


@dataclass(frozen=True)
class Built:
    """A configured Faust app and the runtime its agents share."""

    app: faust.App
    runtime: Runtime


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
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        producer_max_request_size=max(1_048_576, settings.max_message_bytes * 4),
        consumer_max_fetch_size=max(1_048_576, settings.max_message_bytes * 4),
        logging_config=None,
    )
    topics: dict[str, Any] = {
        role: app.topic(
            settings.topic(role),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )
        for role in TOPIC_ROLES
    }
    rt = Runtime(
        settings=settings,
        topics=topics,
        limits=Limits(settings.max_message_bytes, settings.max_features),
    )
    from agents import predictor

    predictor.register(app, rt)
    logging.getLogger(__name__).debug(
        "app %s built for %s", settings.app_id, settings.bootstrap_servers
    )
    return Built(app=app, runtime=rt)
