"""Per-partition learner state, checkpointed to Kafka together with the input offset it covers.

For each partition ``p`` of the outcomes topic (and, co-partitioned, of the signals topic) a worker
holds a :class:`PartitionState`: the online learners of the model keys routed to ``p``, the ids of
the outcomes already learned, ``next_offset`` (the first outcomes offset the state does not yet
cover), and the join store of recent signals' features.

Checkpoints (:mod:`agents.state.checkpoints`) go to partition ``p`` of a compacted topic. The
learner acknowledges outcome events only after a checkpoint covering them has been written, so the
committed offsets never run ahead of the saved state. On (re)assignment the state of ``p`` is
rebuilt from the newest checkpoint (read from the end of the partition, with the full checkpoint
it extends) and the signals topic (its records of the last join window), and outcomes below
``next_offset`` are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.state.checkpoints import checkpoint_base, decode_checkpoint
from models.keyed import KeyedOnline
from models.online import OnlineConfig
from stream.codec import ContractViolation, Limits, decode_signal
from stream.kafka import client_kwargs
from stream.settings import Settings

__all__ = [
    "Features",
    "JoinEntry",
    "PartitionState",
    "PartitionStore",
    "join_fields",
    "join_ts",
    "remember_signal",
]

log = logging.getLogger(__name__)

#: What the outcome join keeps of a signal, as bytes: its ``ts`` (8 bytes, big-endian) and then
#: one orjson array ``[features, model_key, score, components]`` (a pickle when orjson cannot
#: write it). Written by :func:`remember_signal`, read by :func:`join_ts` and :func:`join_fields`.
#: Bytes because a dict of strings to bytes is never tracked by Python's garbage collector: a dict
#: holding tuples is, and each full collection visited every entry of it: about 25 ms per
#: collection at 100,000 signals per partition on 4 partitions, 100 ms at the default cap of
#: 500,000, with full collections every few seconds under load. Bytes also take a quarter of the
#: memory: about 400 bytes per signal of 10 features, where the tuples took 1,800.
JoinEntry = bytes
Features = dict[str, float]


def join_ts(entry: JoinEntry) -> int:
    """The signal's ``ts`` (epoch ms) in ``entry``, without unpacking the rest."""
    return int(_TS.unpack_from(entry)[0])


def join_fields(entry: JoinEntry) -> tuple[Features, str, float | None, Features | None]:
    """``(features, model_key, score, components)`` of ``entry``."""
    body = memoryview(entry)[_TS.size :]
    fields = pickle.loads(body) if body[:1] == _PICKLE else orjson.loads(body)
    features, model_key, score, components = fields
    return features, model_key, score, components


_TS = struct.Struct(">q")
_TAIL = 8  # records read from the end of a checkpoints partition: the newest is a checkpoint
_PICKLE = b"\x80"  # how a pickle of protocol 2 or later starts; an orjson array starts with "["


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
    base_offset: int | None = None
    """Offset in the checkpoints topic of the newest full checkpoint this worker has delivered;
    None before the first, and after the newest one sent was not delivered."""
    checkpointing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a checkpoint is written: a delta must name the newest full checkpoint."""
    ids_at_base: int = 0
    """``keyed.ids_added`` when the newest full checkpoint (delivered or not) was taken."""
    full_in_flight: asyncio.Future[None] | None = None
    """The delivery task of the newest full checkpoint while it is not delivered yet."""
    acking: set[asyncio.Future[None]] = field(default_factory=set)
    """Tasks that ack the events of a checkpoint once it is delivered."""


def remember_signal(
    join: dict[str, JoinEntry],
    signal_id: str,
    features: Features,
    ts: int,
    model_key: str,
    score: float | None = None,
    components: Features | None = None,
) -> None:
    """Keep a signal for the outcome join, as the newest entry (the store is in arrival order).

    >>> join: dict[str, JoinEntry] = {}
    >>> remember_signal(join, "s1", {"f0": 1.0}, 10, "BTC")
    >>> remember_signal(join, "s2", {"f0": 2.0}, 11, "BTC")
    >>> remember_signal(join, "s1", {"f0": 1.5}, 12, "BTC", 0.6, {"online": 0.6})
    >>> list(join), join_ts(join["s1"]), join_fields(join["s1"])
    (['s2', 's1'], 12, ({'f0': 1.5}, 'BTC', 0.6, {'online': 0.6}))
    """
    fields = [features, model_key, score, components]
    try:
        payload = orjson.dumps(fields)
    except orjson.JSONEncodeError:  # text orjson cannot write, such as a lone surrogate
        payload = pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)
    join.pop(signal_id, None)
    join[signal_id] = _TS.pack(ts) + payload


def _join_store(records: list[Any], horizon: int, limits: Limits) -> dict[str, JoinEntry]:
    """The join store of a partition from its signals records (unusable ones and those older than
    ``horizon`` left out)."""
    join: dict[str, JoinEntry] = {}
    for rec in records:
        if rec.value is None:
            continue
        try:
            req = decode_signal(rec.value, limits)
        except ContractViolation:
            continue
        entry_ts = req.ts if req.ts is not None else rec.timestamp
        if entry_ts >= horizon:
            remember_signal(join, req.signal_id, req.features, entry_ts, req.model_key)
    return join


PRELOAD_CONCURRENCY = 4
"""Most partition states :meth:`PartitionStore.preload` reads at once."""


class PartitionStore:
    """Loads, holds and drops :class:`PartitionState` per partition for one worker."""

    def __init__(self, settings: Settings, online_config: OnlineConfig | None = None) -> None:
        self.settings = settings
        self.online_config = online_config or OnlineConfig()
        self.checkpoint_topic = settings.internal_topic("checkpoints")
        self.signals_topic = settings.topic("signals")
        self.limits = Limits(settings.max_message_bytes, settings.max_features)
        self.states: dict[int, PartitionState] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._drops: dict[int, int] = {}  # times each partition was dropped
        self._preloads: set[asyncio.Task[Any]] = set()
        self._preload_slots = asyncio.Semaphore(PRELOAD_CONCURRENCY)  # binds to a loop on use

    def get(self, partition: int) -> PartitionState | None:
        """The loaded state of ``partition``, or None."""
        return self.states.get(partition)

    async def ensure(self, partition: int) -> PartitionState:
        """The state of ``partition``, loaded from Kafka on first use after (re)assignment."""
        st = self.states.get(partition)
        if st is not None:
            return st
        return await self._load_once(partition, self._drops.get(partition, 0))

    async def _load_once(self, partition: int, drops: int) -> PartitionState:
        """Load ``partition`` unless another caller did meanwhile; keep the state only if the
        partition was not dropped since the caller saw it dropped ``drops`` times. (A revoked
        partition's event may still finish with the state, but a later assignment must start
        from the newest checkpoint, not from it.)"""
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            st = self.states.get(partition)
            if st is None:
                st = await self._load(partition)
                if self._drops.get(partition, 0) == drops:
                    self.states[partition] = st
        return st

    def preload(self, partitions: set[int]) -> None:
        """Start loading the state of newly assigned ``partitions`` in the background.

        Their first events then need not wait for the checkpoint and signals topics to be read
        (0.1 to 0.6 s per partition), and the partitions load concurrently rather than one after
        another as their first events come, at most :data:`PRELOAD_CONCURRENCY` at a time. An
        event that arrives during a load waits for it; one for a partition still waiting its turn
        loads it at once.
        """
        for p in sorted(partitions):
            if p in self.states:
                continue
            task = asyncio.ensure_future(self._preload(p, self._drops.get(p, 0)))
            self._preloads.add(task)
            task.add_done_callback(self._preloads.discard)

    async def _preload(self, partition: int, drops: int) -> None:
        try:
            async with self._preload_slots:
                if self._drops.get(partition, 0) != drops:
                    return  # revoked before its turn came
                await self._load_once(partition, drops)
        except Exception:  # the first event of the partition tries again and reports it
            log.exception("preloading the state of partition %d failed", partition)

    def prune_joins(self, now_ms: int) -> int:
        """Forget joinable signals older than the join window, and the oldest beyond the cap.

        Returns how many entries were removed. Entries are kept in arrival order, so the oldest
        come first: one pass over the front of each store finds them, and they are deleted after
        it. (Looking up the first entry again after each deletion costs a scan over every slot
        deleted before it, until the dict is next resized: about 8 ms per partition per call in
        a full store at 250 signals/s, against 0.1 ms for the single pass.)
        """
        horizon = now_ms - int(self.settings.join_window_s * 1000)
        cap = self.settings.join_max_entries
        removed = 0
        for st in list(self.states.values()):
            join = st.join
            excess = len(join) - cap
            doomed: list[str] = []
            for sid, entry in join.items():
                if len(doomed) >= excess and join_ts(entry) >= horizon:
                    break
                doomed.append(sid)
            for sid in doomed:
                del join[sid]
            removed += len(doomed)
        return removed

    def drop(self, partitions: set[int]) -> None:
        """Forget the state of partitions this worker no longer owns."""
        for p in partitions:
            self._drops[p] = self._drops.get(p, 0) + 1
            if self.states.pop(p, None) is not None:
                log.info("dropped learner state of partition %d", p)

    async def _load(self, partition: int) -> PartitionState:
        t0 = time.monotonic()
        next_offset, keyed = await self._read_checkpoint(partition)
        horizon = int(time.time() * 1000 - self.settings.join_window_s * 1000)
        records = await self._read_partition(self.signals_topic, partition, since=horizon)
        # Decoding a join window of signals is CPU work: off the event loop, as for checkpoints.
        join = await asyncio.get_running_loop().run_in_executor(
            None, _join_store, records, horizon, self.limits
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

    async def _read_checkpoint(self, partition: int) -> tuple[int, KeyedOnline]:
        """The state of the newest checkpoint of ``partition`` (with its base), or a new one."""
        # Compaction never removes the newest record of a partition, so the tail holds it.
        records = await self._read_partition(self.checkpoint_topic, partition, tail=_TAIL)
        data = records[-1].value if records else None
        if data is None:
            return 0, KeyedOnline(self.online_config, max_seen_ids=self.settings.max_seen_ids)
        base_offset = checkpoint_base(data)
        base = None
        if base_offset is not None:
            found = await self._read_partition(self.checkpoint_topic, partition, first=base_offset)
            if found and found[0].offset == base_offset:
                base = found[0].value
            else:
                log.error(
                    "partition %d: the full checkpoint at offset %d that the newest delta extends "
                    "is gone; restoring with the ids of the delta only",
                    partition,
                    base_offset,
                )
        return await asyncio.get_running_loop().run_in_executor(None, decode_checkpoint, data, base)

    async def _read_partition(
        self,
        topic: str,
        partition: int,
        since: int | None = None,
        tail: int | None = None,
        first: int | None = None,
    ) -> list[Any]:
        """Records of a partition: all of them, those from ``since`` (epoch ms), the last
        ``tail`` offsets, or the one record at offset ``first`` (or the next one after it)."""
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings),
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=32 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        await consumer.start()
        out: list[Any] = []
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            # Explicit seeks: seek_to_beginning was seen to leave the position at the end.
            start = (await consumer.beginning_offsets([tp]))[tp]
            if since is not None:
                found = (await consumer.offsets_for_times({tp: max(0, since)})).get(tp)
                start = found.offset if found is not None else end
            elif tail is not None:
                start = max(start, end - tail)
            elif first is not None:
                start = max(start, first)
            consumer.seek(tp, start)
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                out.extend(rec for rec in batch.get(tp, []) if rec.offset < end)
                if first is not None and out:
                    return out[:1]
        finally:
            await consumer.stop()
        return out
