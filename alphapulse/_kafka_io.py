"""Plain aiokafka producing and tailing for the CLI: rate-limited sends, JSON-line output."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import aclosing
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from alphapulse._rows import outcome_message, signal_message
from stream.codec import encode
from stream.kafka import client_kwargs
from stream.reader import PartitionReader
from stream.records import ModelEvent
from stream.settings import Settings
from stream.topics import ensure_topics

__all__ = ["KINDS", "produce_rows", "send_model_event", "tail"]

KINDS = ("signals", "outcomes", "trades")


class _Sender:
    """Sends without waiting for each ack; waits for all of them in bulk."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.futures: list[asyncio.Future[Any]] = []
        self.sent = 0

    async def send(self, topic: str, key: str, value: dict[str, Any]) -> None:
        fut = await self.producer.send(topic, orjson.dumps(value), key=key.encode())
        self.futures.append(fut)
        self.sent += 1
        if len(self.futures) >= 500:
            await self.drain()

    async def drain(self) -> None:
        futures, self.futures = self.futures, []
        if futures:
            await asyncio.gather(*futures)


async def _send_event(settings: Settings, event: ModelEvent) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    try:
        await producer.start()
        key = (event.role or event.model_key or "").encode()
        await producer.send_and_wait(settings.topic("model-events"), encode(event), key=key)
    finally:
        await producer.stop()


def send_model_event(settings: Settings, event: ModelEvent, timeout: float = 15.0) -> None:
    """Publish one ModelEvent on the model-events topic, as a worker would (blocking)."""
    asyncio.run(asyncio.wait_for(_send_event(settings, event), timeout))


async def produce_rows(
    settings: Settings,
    rows: Sequence[dict[str, Any]],
    kind: str,
    rate: float,
    keep_ts: bool = False,
    outcome_delay: float = 1.0,
    progress: Callable[[int], None] | None = None,
    connect_timeout: float | None = None,
) -> tuple[int, int]:
    """Send ``rows`` as ``kind`` messages at up to ``rate`` rows per second (0: no limit).

    ``kind`` is ``signals``, ``outcomes`` (carrying the row's features when it has them) or
    ``trades`` (each row's signal, then ``outcome_delay`` seconds later its outcome without
    features, for the worker to join). Messages are keyed by model key. The project's topics are
    created first when missing (a topic the producer auto-creates would get the broker's default
    partition count); ``connect_timeout`` bounds the wait for an unreachable broker. Returns the
    numbers of signals and outcomes sent.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    await ensure_topics(settings, connect_timeout=connect_timeout)
    signals_topic, outcomes_topic = settings.topic("signals"), settings.topic("outcomes")
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=5)
    await producer.start()
    sender = _Sender(producer)
    due: deque[tuple[float, str, dict[str, Any]]] = deque()
    n_signals = n_outcomes = 0
    try:
        t0 = time.monotonic()
        for i, row in enumerate(rows):
            if rate > 0:
                wait = t0 + i / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, key, msg = due.popleft()
                await sender.send(outcomes_topic, key, msg)
                n_outcomes += 1
            if kind in ("signals", "trades"):
                await sender.send(signals_topic, row["model_key"], signal_message(row, keep_ts))
                n_signals += 1
            if kind == "outcomes":
                msg = outcome_message(row, keep_ts, with_features=True)
                await sender.send(outcomes_topic, row["model_key"], msg)
                n_outcomes += 1
            elif kind == "trades" and "label" in row:
                msg = outcome_message(row, keep_ts, with_features=False)
                due.append((now + outcome_delay, row["model_key"], msg))
            if progress is not None:
                progress(i + 1)
        while due:
            wait = due[0][0] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            _, key, msg = due.popleft()
            await sender.send(outcomes_topic, key, msg)
            n_outcomes += 1
        await sender.drain()
    finally:
        await producer.stop()
    return n_signals, n_outcomes


async def tail(
    settings: Settings,
    topic: str,
    write: Callable[[bytes], None],
    from_beginning: bool = False,
    max_messages: int = 0,
    timeout: float = 0.0,
) -> int:
    """Write each message value of ``topic`` as one JSON line; returns how many were written.

    Stops after ``max_messages`` (0: no limit) or ``timeout`` seconds without a message
    (0: never). A value that is not JSON is written as a JSON string.
    """
    n = 0
    async with PartitionReader(settings) as reader:
        records = reader.follow(topic, from_beginning=from_beginning, idle_timeout=timeout)
        async with aclosing(records):
            async for rec in records:
                write(_json_line(rec.value))
                n += 1
                if max_messages and n >= max_messages:
                    break
    return n


def _json_line(value: bytes | None) -> bytes:
    if value is None:
        return b"null"
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        return orjson.dumps(value.decode("utf-8", errors="replace"))
