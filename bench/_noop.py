"""Baseline Faust workers of ``bench.e2e``: they do no work, or as little as answering takes.

``python -m bench._noop BOOTSTRAP TOPIC GROUP`` consumes TOPIC and does nothing (the throughput
baseline). ``python -m bench._noop BOOTSTRAP SIGNALS GROUP OUTCOMES PREDICTIONS`` answers each
signal on PREDICTIONS with :func:`reply` and consumes OUTCOMES doing nothing (the latency floor).
With ``--river`` they do what any agent built on the online model must do, and nothing more
(:class:`bench._river.RiverFloor`): the no-op updates River's pipeline with each outcome of TOPIC
(the learn floor), and the floor answers each signal with River's probability from pipelines
trained first on :data:`TRAINING_OUTCOMES` outcomes of the benchmark's trades, and learns each
outcome of OUTCOMES (the predict floor).

Both run Faust as the project's worker does: the same consumer and producer settings
(:func:`alphapulse.app.faust_tuning_kwargs`), event loop, fetch loop and fetch sizes
(:mod:`stream._faust_consumer`), logging and garbage collector set-up, and the floor answers
micro-batches of queued signals, sent in Kafka batches as the predictor sends them
(:mod:`stream.batching`). The floor sends each answer to the partition number its signal came from
(the topics of ``ensure_topics`` all have the same count), so it does not even hash the key. So
the figures of ``bench.e2e`` against them measure the agents' own work.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from typing import Any

import faust
import orjson

from alphapulse.app import faust_tuning_kwargs
from alphapulse.worker import prepare_process, run_app
from bench._common import trade_messages
from bench._river import RiverFloor
from stream.batching import micro_batches, send_batches
from stream.codec import now_ms
from stream.settings import Settings

TRAINING_OUTCOMES = 2_000
"""Outcomes the predict floor learns before it starts, so that River predicts with weights."""


def reply(value: bytes | None, now: int) -> bytes | None:
    """The floor's answer to a signal: its id and ``now`` as ``predicted_at``; None if unusable.

    >>> orjson.loads(reply(b'{"signal_id": "s1", "symbol": "A"}', 7))
    {'signal_id': 's1', 'predicted_at': 7}
    >>> reply(b"not json", 7) is None, reply(b"[]", 7) is None
    (True, True)
    """
    try:
        doc = orjson.loads(value or b"")
        return orjson.dumps({"signal_id": doc["signal_id"], "predicted_at": now})
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _consume(app: Any, topic: Any, learn: Callable[[bytes | None], None] | None) -> None:
    """Declare the agent that consumes ``topic``: it does nothing, or calls ``learn`` on each
    value."""
    if learn is None:

        @app.agent(topic, name="noop")
        async def noop(stream: Any) -> None:
            async for _ in stream:
                pass

    else:

        @app.agent(topic, name="noop")
        async def learn_floor(stream: Any) -> None:
            async for value in stream:
                learn(value)


def main(argv: list[str]) -> None:
    """Build and run the no-op worker, or the latency floor, until it is terminated."""
    river = "--river" in argv
    argv = [a for a in argv if a != "--river"]
    if len(argv) not in (3, 5):
        raise SystemExit(__doc__)
    models = RiverFloor()
    bootstrap, topic_name, group = argv[:3]
    settings = Settings()
    prepare_process(settings)
    app = faust.App(
        group,
        broker=";".join(f"kafka://{hp}" for hp in bootstrap.split(",")),
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="alphapulse-noop-"),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        **faust_tuning_kwargs(settings),
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)

    learn = models.learn if river else None
    if len(argv) == 3:
        _consume(app, topic, learn)
    else:
        if river:
            for _, value in trade_messages(TRAINING_OUTCOMES, "outcomes"):
                models.learn(value)
        answer = models.answer if river else reply
        outcomes_name, predictions_name = argv[3:]
        outcomes = app.topic(outcomes_name, key_type=bytes, value_type=bytes)

        @app.agent(topic, name="floor")
        async def floor(stream: Any) -> None:
            producer = app.producer._ensure_producer()
            s = stream.noack()
            async for batch in micro_batches(s, settings.predict_batch_max):
                answers = []
                for event in batch:
                    msg = event.message
                    value = answer(msg.value, now_ms())
                    if value is not None:
                        answers.append((msg.partition, msg.key, value))
                await send_batches(producer, predictions_name, answers)
                for event in batch:
                    await s.ack(event)

        _consume(app, outcomes, learn)

    run_app(app, "WARNING")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
