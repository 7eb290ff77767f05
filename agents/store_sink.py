"""Store sink: signals, outcomes and predictions written to PostgreSQL, each exactly once.

The sink runs inside the worker when ``ALPHAPULSE_STORE_ENABLED`` is true. It reads the three
topics with its own Kafka consumer group (``<app id>-store``, manual commits) rather than as Faust
agents: Faust agents share the predictor's consumer, so a sink waiting on a down database would
hold back the signal offsets the predictor commits and, once its buffer is full, stall the
predictor itself; and Faust's ``take()`` acknowledges its buffered events when the agent is
cancelled, before they are written. With its own group the sink can lag behind without touching
the predictor.

The loop: fetch up to ``ALPHAPULSE_STORE_BATCH_SIZE`` messages (waiting at most
``ALPHAPULSE_STORE_FLUSH_INTERVAL_MS`` to fill a batch), turn them into rows with
:func:`collect`, write the batch in one transaction in an executor thread, and only then commit the
offsets. When the database fails, the same batch is retried forever with capped exponential
back-off and one log line per failure; nothing is skipped. A replay after a crash rewrites rows
the store already holds, which the idempotent upsert ignores. Messages that break the contract are
counted and skipped here: the predictor and the learner dead-letter them already.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from stream.codec import ContractViolation, Limits, decode_outcome, decode_signal
from stream.kafka import client_kwargs
from stream.records import SignalRequest, TradeOutcome
from stream.runtime import Runtime
from stream.store import Batch, Store, to_timestamp

__all__ = [
    "ROLES",
    "Item",
    "StoreSink",
    "collect",
    "outcome_row",
    "prediction_row",
    "register",
    "signal_row",
]

log = logging.getLogger(__name__)

ROLES = ("signals", "outcomes", "predictions")
GROUP_SUFFIX = "-store"
_MAX_KEY_BYTES = 1024  # ids are indexed; a btree entry must stay well under 2.7 kB


def _text(value: str | None, name: str, limit: int | None = None) -> str | None:
    if value is None:
        return None
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ContractViolation("schema", f"field '{name}' is not valid Unicode") from None
    if "\x00" in value:
        raise ContractViolation("schema", f"field '{name}' contains a NUL character")
    if limit is not None and size > limit:
        raise ContractViolation("too_large", f"field '{name}' is {size} bytes, limit {limit}")
    return value


def _json(value: Any, name: str) -> str:
    try:
        text = orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        raise ContractViolation("schema", f"field '{name}' is not valid JSON") from None
    if "\\u0000" in text:
        raise ContractViolation("schema", f"field '{name}' contains a NUL character")
    return text


def signal_row(req: SignalRequest, record_ts: int) -> tuple[Any, ...]:
    """Row of ``signals`` for a decoded request (``record_ts``: the Kafka time, epoch ms)."""
    return (
        _text(req.signal_id, "signal_id", _MAX_KEY_BYTES),
        to_timestamp(req.ts if req.ts is not None else record_ts),
        _text(req.symbol, "symbol", _MAX_KEY_BYTES),
        _text(req.model_key, "model_key", _MAX_KEY_BYTES),
        _text(req.strategy, "strategy"),
        _text(req.side, "side"),
        _json(req.features, "features"),
    )


def outcome_row(out: TradeOutcome, record_ts: int) -> tuple[Any, ...]:
    """Row of ``outcomes`` for a decoded outcome.

    >>> from stream.codec import decode_outcome
    >>> o = decode_outcome(b'{"outcome_id":"o1","signal_id":"s1","symbol":"X","label":0}')
    >>> outcome_row(o, 0)[5:]
    (False, None, None)
    """
    return (
        _text(out.outcome_id, "outcome_id", _MAX_KEY_BYTES),
        to_timestamp(out.ts if out.ts is not None else record_ts),
        _text(out.signal_id, "signal_id", _MAX_KEY_BYTES),
        _text(out.symbol, "symbol", _MAX_KEY_BYTES),
        _text(out.model_key, "model_key", _MAX_KEY_BYTES),
        out.label,
        out.realized_rr,
        None if out.features is None else _json(out.features, "features"),
    )


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    v = doc.get(name)
    if (isinstance(v, bool) and kind is not bool) or not isinstance(v, kind):
        raise ContractViolation("schema", f"field '{name}' is missing or has the wrong type")
    return v


def prediction_row(raw: bytes) -> tuple[Any, ...]:
    """Row of ``predictions`` from a Prediction message, or :class:`ContractViolation`.

    >>> raw = (b'{"signal_id":"s1","symbol":"X","model_key":"X","score":0.5,"components":{},'
    ...        b'"weights":{},"model_versions":{},"degraded":true,"ts":1,"predicted_at":2}')
    >>> prediction_row(raw)[4:9]
    (0.5, '{}', '{}', '{}', True)

    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ContractViolation("invalid_json", "prediction is not valid UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise ContractViolation("schema", "prediction must be a JSON object")
    return (
        _text(_field(doc, "signal_id", str), "signal_id", _MAX_KEY_BYTES),
        to_timestamp(_field(doc, "ts", int)),
        _text(_field(doc, "symbol", str), "symbol", _MAX_KEY_BYTES),
        _text(_field(doc, "model_key", str), "model_key", _MAX_KEY_BYTES),
        float(_field(doc, "score", (int, float))),
        _json(_field(doc, "components", dict), "components"),
        _json(_field(doc, "weights", dict), "weights"),
        _json(_field(doc, "model_versions", dict), "model_versions"),
        _field(doc, "degraded", bool),
        to_timestamp(_field(doc, "predicted_at", int), "predicted_at"),
    )


@dataclass(frozen=True, slots=True)
class Item:
    """One Kafka message for the sink: its role, value, timestamp (epoch ms) and position."""

    role: str
    value: bytes | None
    timestamp: int
    topic: str = ""
    partition: int = 0
    offset: int = 0


def _row(item: Item, limits: Limits) -> tuple[Any, ...]:
    if item.value is None:
        raise ContractViolation("schema", "message has no value")
    if item.role == "signals":
        return signal_row(decode_signal(item.value, limits), item.timestamp)
    if item.role == "outcomes":
        return outcome_row(decode_outcome(item.value, limits), item.timestamp)
    limits.check_size(item.value)
    return prediction_row(item.value)


def collect(items: Iterable[Item], limits: Limits) -> tuple[Batch, Counter[str]]:
    """Rows for the store from raw messages, and the count of skipped messages by role.

    >>> ok = Item("signals", b'{"signal_id":"s1","symbol":"X","features":{}}', 0)
    >>> bad = Item("outcomes", b'{"outcome_id":"o1"}', 0)
    >>> batch, skipped = collect([ok, bad], Limits())
    >>> len(batch.rows["signals"]), dict(skipped)
    (1, {'outcomes': 1})
    """
    batch = Batch()
    skipped: Counter[str] = Counter()
    for item in items:
        try:
            batch.rows[item.role].append(_row(item, limits))
        except ContractViolation as exc:
            skipped[item.role] += 1
            log.debug(
                "store sink skipped %s[%d]@%d: %s (%s)",
                item.topic,
                item.partition,
                item.offset,
                exc.reason,
                exc.detail,
            )
    return batch, skipped


class StoreSink:
    """The sink's consume, write, commit loop for one worker process.

    Parameters
    ----------
    rt
        The worker's runtime (settings, limits, counters).
    store
        Where rows go; opened by :meth:`run` and closed when it ends.
    """

    def __init__(self, rt: Runtime, store: Store) -> None:
        s = rt.settings
        self.rt = rt
        self.store = store
        self.batch_size = s.store_batch_size
        self.flush_interval = s.store_flush_interval_ms / 1000
        self.retry_max = s.store_retry_max_ms / 1000
        self.roles = {s.topic(role): role for role in ROLES}
        self.group_id = s.app_id + GROUP_SUFFIX

    async def run(self) -> None:
        """Consume, write and commit until cancelled."""
        consumer = AIOKafkaConsumer(
            *self.roles,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
            # Outcomes re-routed by the learner are written in its transactions: one it aborts
            # never happened, and is written again by the transaction that replaces it.
            isolation_level="read_committed",
            **client_kwargs(self.rt.settings),
        )
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alphapulse-store")
        loop = asyncio.get_running_loop()
        self.store.open()
        try:
            await consumer.start()
            log.info("store sink writing %s to %s", ", ".join(self.roles), self.store.target)
            while True:
                records = await self._next_batch(consumer)
                items = [
                    Item(self.roles[r.topic], r.value, r.timestamp, r.topic, r.partition, r.offset)
                    for r in records
                ]
                # decoding a batch takes milliseconds: off the event loop, like the write
                batch, skipped = await loop.run_in_executor(
                    executor, collect, items, self.rt.limits
                )
                if skipped:
                    log.warning("store sink skipped %d invalid message(s)", sum(skipped.values()))
                    for role, n in skipped.items():
                        self.rt.count(f"store.skipped.{role}", n)
                if len(batch):
                    written = await self._write(executor, batch)
                    for table, n in written.items():
                        self.rt.count(f"store.rows.{table}", n)
                await self._commit(consumer, records)
        finally:
            await consumer.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(self.store.close)

    async def _next_batch(self, consumer: AIOKafkaConsumer) -> list[Any]:
        """Up to ``batch_size`` records, waiting at most the flush interval after the first."""
        out: list[Any] = []
        deadline: float | None = None
        while len(out) < self.batch_size:
            wait = self.flush_interval if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            got = await consumer.getmany(
                timeout_ms=int(wait * 1000), max_records=self.batch_size - len(out)
            )
            for records in got.values():
                out.extend(records)
            if out and deadline is None:
                deadline = time.monotonic() + self.flush_interval
        return out

    async def _write(self, executor: ThreadPoolExecutor, batch: Batch) -> dict[str, int]:
        """Write ``batch``, retrying the same batch until the database takes it."""
        # The store extra's driver: the Store this sink holds could not exist without it.
        import psycopg

        loop = asyncio.get_running_loop()
        delay = min(0.25, self.retry_max)
        attempt = 0
        while True:
            try:
                return await loop.run_in_executor(executor, self.store.write, batch)
            except psycopg.Error as exc:
                attempt += 1
                self.rt.count("store.write_failures")
                log.warning(
                    "store write of %d rows to %s failed (attempt %d, %s: %s); retrying in %.1f s",
                    len(batch),
                    self.store.target,
                    attempt,
                    type(exc).__name__,
                    " ".join(str(exc).split())[:300],
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)

    async def _commit(self, consumer: AIOKafkaConsumer, records: list[Any]) -> None:
        """Commit the offsets after ``records`` (all written or skipped)."""
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # The rows are stored; after the rebalance that caused this the new owner reads these
            # messages again and the idempotent upsert ignores them.
            log.warning(
                "store sink commit failed (%s: %s); messages will be re-read",
                type(exc).__name__,
                exc,
            )


def register(app: Any, rt: Runtime) -> Any:
    """Declare the store sink on ``app`` when ``ALPHAPULSE_STORE_ENABLED``; else do nothing.

    Returns the Faust task, or None when the sink is disabled. A missing or malformed DSN raises
    :class:`~models.errors.ConfigError` here, when the app is built.
    """
    if not rt.settings.store_enabled:
        return None
    store = Store.from_settings(rt.settings)

    async def store_sink() -> None:
        await StoreSink(rt, store).run()

    return app.task(store_sink)
