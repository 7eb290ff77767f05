"""Reading topic partitions directly: an assigned consumer with no group and no commits.

The learner's state (a partition's changelog, a time window of signals), the
training history (every outcome) and the CLI's ``consume`` all read partitions this way, each
read bounded by the end offsets seen when it starts (:meth:`PartitionReader.read`), or following
the partitions as records come (:meth:`PartitionReader.follow`).

Reads are ``read_committed`` unless asked otherwise: the learner's state and side outputs are
written in Kafka transactions, and only committed ones count.

>>> from stream.settings import Settings
>>> PartitionReader(Settings(_env_file=None)).isolation_level
'read_committed'
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Iterable
from types import TracebackType
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from stream.errors import BrokerError
from stream.kafka import client_kwargs
from stream.settings import Settings

__all__ = ["IsolationLevel", "PartitionReader"]

IsolationLevel = Literal["read_uncommitted", "read_committed"]

_POLL_MS = 500


class PartitionReader:
    """Reads partitions of topics with one assigned consumer; an async context manager.

    Parameters
    ----------
    settings
        Where the brokers are and how to reach them (:func:`stream.kafka.client_kwargs`).
    isolation_level
        ``read_committed`` (the default: records of committed transactions and records written
        outside transactions, up to the last stable offset) or ``read_uncommitted`` (records of
        open and aborted transactions too).
    max_partition_fetch_bytes, fetch_max_bytes
        Fetch sizes per partition and per request (aiokafka's defaults); raise them to read big
        records in fewer round trips.

    Examples
    --------
    Read the last record of every partition, then the outcomes since a time::

        async with PartitionReader(settings) as reader:
            newest = await reader.read("alphapulse.outcomes", [2], last=1)
            recent = await reader.read("alphapulse.outcomes", since=1_700_000_000_000)
    """

    def __init__(
        self,
        settings: Settings,
        *,
        isolation_level: IsolationLevel = "read_committed",
        max_partition_fetch_bytes: int = 1024 * 1024,
        fetch_max_bytes: int = 50 * 1024 * 1024,
    ) -> None:
        if isolation_level not in ("read_uncommitted", "read_committed"):
            raise ValueError(
                f"isolation_level must be read_uncommitted or read_committed, "
                f"not {isolation_level!r}"
            )
        self.settings = settings
        self.isolation_level = isolation_level
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> PartitionReader:
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            group_id=None,
            enable_auto_commit=False,
            isolation_level=self.isolation_level,
            max_partition_fetch_bytes=self.max_partition_fetch_bytes,
            fetch_max_bytes=self.fetch_max_bytes,
        )
        try:
            await consumer.start()
        except BaseException as exc:
            await consumer.stop()  # a consumer that failed to start is closed too, not leaked
            if isinstance(exc, KafkaError):
                raise BrokerError(
                    f"cannot reach Kafka at {self.settings.bootstrap_servers}: {exc}. Start the "
                    "local broker with 'alphapulse broker up' or set KAFKA_BOOTSTRAP_SERVERS."
                ) from None
            raise
        self._consumer = consumer
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("use the PartitionReader in 'async with' before reading")
        return self._consumer

    async def partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic``, sorted; none when the topic does not exist."""
        # Listed before it is described: a metadata request that names a missing topic makes a
        # broker that auto-creates topics create it, with its default partition count.
        admin = AIOKafkaAdminClient(**client_kwargs(self.settings))
        await admin.start()
        try:
            if topic not in await admin.list_topics():
                return []
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return sorted(
            p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"]
        )

    async def read(
        self,
        topic: str,
        partitions: Iterable[int] | None = None,
        *,
        since: int | None = None,
        offset: int | None = None,
        last: int | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """The records of ``partitions`` of ``topic`` (all when None) up to the end offsets seen
        at the start, as aiokafka ``ConsumerRecord`` objects, in fetch order.

        Each partition is read from its first record at or after ``since`` (epoch ms), from
        ``offset`` (or its first record, if that offset is gone), from its ``last`` offsets, or
        else from its beginning; with both ``since`` and ``last``, from the later of the two.
        With ``limit``, reading stops after that many records.
        """
        out: list[Any] = []
        chunks = self.chunks(topic, partitions, since=since, offset=offset, last=last)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                out.extend(chunk)
                if limit is not None and len(out) >= limit:
                    return out[:limit]
        return out

    async def chunks(
        self,
        topic: str,
        partitions: Iterable[int] | None = None,
        *,
        since: int | None = None,
        offset: int | None = None,
        last: int | None = None,
    ) -> AsyncGenerator[list[Any], None]:
        """The records :meth:`read` returns, one fetch's worth at a time, for a reader that
        need not hold them all at once."""
        if offset is not None and (since is not None or last is not None):
            raise ValueError("give offset alone: not with since or last")
        parts = sorted(partitions) if partitions is not None else await self.partitions(topic)
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return
        consumer = self._started()
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await self._starts(tps, ends, since, offset, last)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        remaining = {tp for tp in tps if starts[tp] < ends[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            chunk = [
                rec for tp, records in batch.items() for rec in records if rec.offset < ends[tp]
            ]
            if chunk:
                yield chunk
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}

    async def _starts(
        self,
        tps: list[TopicPartition],
        ends: dict[TopicPartition, int],
        since: int | None,
        offset: int | None,
        last: int | None,
    ) -> dict[TopicPartition, int]:
        consumer = self._started()
        # Explicit offsets to seek to: seek_to_beginning was seen to leave the position at the end.
        begins: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
        if offset is not None:
            return {tp: max(begins[tp], offset) for tp in tps}
        starts = begins
        if since is not None:
            found = await consumer.offsets_for_times({tp: max(0, since) for tp in tps})
            starts = {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in tps}
        if last is not None:
            starts = {tp: max(starts[tp], ends[tp] - last) for tp in tps}
        return starts

    async def follow(
        self, topic: str, *, from_beginning: bool = False, idle_timeout: float = 0.0
    ) -> AsyncGenerator[Any, None]:
        """Yield the records of every partition of ``topic`` as they come, without end.

        Reading starts at the beginning of each partition with ``from_beginning``, else at its
        end. A topic that does not exist yet is waited for, and then read from its beginning.
        Partitions added to the topic while it is followed are not read. The iteration ends after
        ``idle_timeout`` seconds without a record (0: never).
        """
        consumer = self._started()
        first_look = True
        tps: list[TopicPartition] = []
        last_record = time.monotonic()
        while True:
            if not tps:
                tps = [TopicPartition(topic, p) for p in await self.partitions(topic)]
                if tps:
                    consumer.assign(tps)
                    if from_beginning or not first_look:
                        starts = await consumer.beginning_offsets(tps)
                    else:
                        starts = await consumer.end_offsets(tps)
                    for tp in tps:
                        consumer.seek(tp, starts[tp])
                first_look = False
            if tps:
                batch = await consumer.getmany(timeout_ms=_POLL_MS)
            else:
                batch = {}
                await asyncio.sleep(_POLL_MS / 1000)
            for records in batch.values():
                for rec in records:
                    yield rec
            if any(batch.values()):
                last_record = time.monotonic()
            elif idle_timeout and time.monotonic() - last_record >= idle_timeout:
                return
