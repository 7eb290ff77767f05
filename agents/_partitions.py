"""Per-partition learner state, checkpointed to Kafka together with the input offset it covers.

For each partition ``p`` of the outcomes topic (and, co-partitioned, of the signals topic) a worker
holds a :class:`PartitionState`: the online learners of the model keys routed to ``p``, the ids of
the outcomes already learned, ``next_offset`` (the first outcomes offset the state does not yet
cover), and the join store of recent signals' features.

Checkpoints go to partition ``p`` of a compacted topic. The learner acknowledges outcome events
only after a checkpoint covering them has been written, so the committed offsets never run ahead
of the saved state. On (re)assignment the state of ``p`` is rebuilt from the last checkpoint and
the join topic, and outcomes below ``next_offset`` are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.keyed import KeyedOnline
from models.online import OnlineConfig
from stream.kafka import client_kwargs
from stream.settings import Settings

__all__ = [
    "JoinEntry",
    "PartitionState",
    "PartitionStore",
    "decode_checkpoint",
    "encode_checkpoint",
]

log = logging.getLogger(__name__)

_CKPT_MAGIC = b"APCK"


def encode_checkpoint(next_offset: int, keyed: KeyedOnline) -> bytes:
    """Bytes of a checkpoint: magic, the covered offset, the keyed online state.

    >>> off, k = decode_checkpoint(encode_checkpoint(42, KeyedOnline()))
    >>> off, k.learners
    (42, {})
    """
    return _CKPT_MAGIC + struct.pack(">q", next_offset) + keyed.snapshot()


def decode_checkpoint(data: bytes) -> tuple[int, KeyedOnline]:
    """Inverse of :func:`encode_checkpoint`."""
    if not data.startswith(_CKPT_MAGIC):
        raise ValueError("not a learner checkpoint")
    (next_offset,) = struct.unpack(">q", data[4:12])
    return next_offset, KeyedOnline.restore(data[12:])


@dataclass
class JoinEntry:
    """What the outcome join needs from a signal: its features, time and prediction."""

    features: dict[str, float]
    ts: int
    model_key: str
    score: float | None = None
    components: dict[str, float] | None = None


@dataclass
class PartitionState:
    """Learner state of one partition, and the events it has processed but not yet acked."""

    partition: int
    next_offset: int
    keyed: KeyedOnline
    join: dict[str, JoinEntry] = field(default_factory=dict)
    pending: list[Any] = field(default_factory=list)
    dirty: bool = False
    last_checkpoint: float = field(default_factory=time.monotonic)


class PartitionStore:
    """Loads, holds and drops :class:`PartitionState` per partition for one worker."""

    def __init__(self, settings: Settings, online_config: OnlineConfig | None = None) -> None:
        self.settings = settings
        self.online_config = online_config or OnlineConfig()
        self.checkpoint_topic = settings.internal_topic("checkpoints")
        self.join_topic = settings.internal_topic("signal-features")
        self.states: dict[int, PartitionState] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def get(self, partition: int) -> PartitionState | None:
        """The loaded state of ``partition``, or None."""
        return self.states.get(partition)

    async def ensure(self, partition: int) -> PartitionState:
        """The state of ``partition``, loaded from Kafka on first use after (re)assignment."""
        st = self.states.get(partition)
        if st is not None:
            return st
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            st = self.states.get(partition)
            if st is None:
                st = await self._load(partition)
                self.states[partition] = st
        return st

    def drop(self, partitions: set[int]) -> None:
        """Forget the state of partitions this worker no longer owns."""
        for p in partitions:
            if self.states.pop(p, None) is not None:
                log.info("dropped learner state of partition %d", p)

    async def _load(self, partition: int) -> PartitionState:
        t0 = time.monotonic()
        last = await self._read_partition(self.checkpoint_topic, partition, keep_last=True)
        data = last[-1][1] if last else None
        if data is not None:
            next_offset, keyed = await asyncio.get_running_loop().run_in_executor(
                None, decode_checkpoint, data
            )
        else:
            next_offset, keyed = 0, KeyedOnline(self.online_config)
        horizon = int(time.time() * 1000 - self.settings.join_window_s * 1000)
        join: dict[str, JoinEntry] = {}
        for key, value in await self._read_partition(self.join_topic, partition):
            sid = key.decode()
            if value is None:
                join.pop(sid, None)
                continue
            doc = orjson.loads(value)
            if doc["ts"] >= horizon:
                join[sid] = JoinEntry(
                    doc["features"],
                    doc["ts"],
                    doc["model_key"],
                    doc.get("score"),
                    doc.get("components"),
                )
        log.info(
            "partition %d state loaded in %.2fs: next outcome offset %d, %d model keys, "
            "%d joinable signals",
            partition,
            time.monotonic() - t0,
            next_offset,
            len(keyed.learners),
            len(join),
        )
        return PartitionState(partition, next_offset, keyed, join)

    async def _read_partition(
        self, topic: str, partition: int, keep_last: bool = False
    ) -> list[tuple[bytes, bytes | None]]:
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=32 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        out: list[tuple[bytes, bytes | None]] = []
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            # An explicit seek: seek_to_beginning was seen to leave the position at the end.
            consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for rec in batch.get(tp, []):
                    if keep_last:
                        out[:] = [(rec.key or b"", rec.value)]
                    else:
                        out.append((rec.key or b"", rec.value))
        finally:
            await consumer.stop()
        return out
