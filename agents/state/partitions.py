"""Per-partition learner state, checkpointed to Kafka together with the input offset it covers.

For each partition ``p`` of the outcomes topic (and, co-partitioned, of the signals topic) a worker
holds a :class:`PartitionState`: the online learners of the model keys routed to ``p``, the ids of
the outcomes already learned, ``next_offset`` (the first outcomes offset the state does not yet
cover), and the join store of recent signals' features (:mod:`agents.state.join`).

Checkpoints (format: :mod:`agents.state.checkpoints`; writing: :mod:`agents.state.checkpointer`)
go to partition ``p`` of a compacted topic. The learner acknowledges outcome events only after a
checkpoint covering them has been written, so the committed offsets never run ahead of the saved
state. On (re)assignment the state of ``p`` is rebuilt from the newest checkpoint (read from the
end of the partition, with the full checkpoint it extends) and the signals topic (its records of
the last join window), and outcomes below ``next_offset`` are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agents.state.checkpoints import checkpoint_base, decode_checkpoint_state
from agents.state.join import JoinEntry, build_join_store, join_ts
from agents.state.waiting import Waiting, WaitingState, encode_waiting, watermark
from models.keyed import KeyedOnline
from models.online import OnlineConfig, OnlineLearner
from stream.codec import Limits
from stream.reader import PartitionReader
from stream.settings import Settings

__all__ = ["PRELOAD_CONCURRENCY", "OnlineModel", "PartitionState", "PartitionStore"]

log = logging.getLogger(__name__)

_TAIL = 8  # records read from the end of a checkpoints partition: the newest is a checkpoint


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
    waiting: dict[int, Waiting] = field(default_factory=dict)
    """Outcomes waiting for their signal, by offset, oldest first (:mod:`.waiting`)."""
    outcome_clock: int | None = None
    """The highest outcome time (its ``ts``, else its record's) seen in this partition."""
    signal_clock: int | None = None
    """The highest signal time seen in this partition's join store."""
    waiting_bytes: int = 0
    """The size of the waiting outcomes' records, which checkpoints carry."""

    def hold(self, w: Waiting) -> None:
        """Keep ``w`` waiting for its signal."""
        self.waiting[w.offset] = w
        self.waiting_bytes += len(w.value) + len(w.key or b"")

    def release(self, offset: int) -> Waiting:
        """Stop keeping the waiting outcome at ``offset`` (the oldest with ``next(iter(...))``)."""
        w = self.waiting.pop(offset)
        self.waiting_bytes -= len(w.value) + len(w.key or b"")
        return w

    def event_time(self) -> int | None:
        """The partition's event time (:func:`agents.state.waiting.watermark`), after taking the
        newest signal of the join store into the signal clock."""
        if self.join:
            newest = join_ts(next(reversed(self.join.values())))
            if self.signal_clock is None or newest > self.signal_clock:
                self.signal_clock = newest
        return watermark(self.outcome_clock, self.signal_clock)

    def waiting_section(self) -> bytes:
        """The waiting outcomes and clocks as a checkpoint keeps them; empty when none waits."""
        if not self.waiting:
            return b""
        return encode_waiting(self.waiting.values(), self.outcome_clock, self.signal_clock)


@dataclass(frozen=True)
class OnlineModel:
    """The online model of one model key, as :meth:`PartitionStore.online_models` lists it."""

    partition: int
    model_key: str
    learner: OnlineLearner


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

        Their first events then need not wait for the checkpoint and signals topics to be read,
        and the partitions load concurrently rather than one after another as their first events
        come, at most :data:`PRELOAD_CONCURRENCY` at a time. An event that arrives during a load
        waits for it; one for a partition still waiting its turn loads it at once.
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
            log.exception(
                "preloading the state of partition %d failed",
                partition,
                extra={"partition": partition},
            )

    def prune_joins(self, now_ms: int | None = None) -> int:
        """Forget joinable signals older than the join window, and the oldest beyond the cap.

        The window counts back from ``now_ms`` if given, else from each partition's event time
        (:meth:`PartitionState.event_time`; none is older than the window before it has one).

        Returns how many entries were removed. Entries are kept in arrival order, so the oldest
        come first: one pass over the front of each store finds them, and they are deleted after
        it (looking up the first entry again after each deletion would scan every slot deleted
        before it, until the dict is next resized).
        """
        window = int(self.settings.join_window_s * 1000)
        cap = self.settings.join_max_entries
        removed = 0
        for st in list(self.states.values()):
            now = now_ms if now_ms is not None else st.event_time()
            horizon = -(2**63) if now is None else now - window
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

    def online_models(self) -> Iterator[OnlineModel]:
        """The online model of every model key in the partitions this worker holds.

        >>> store = PartitionStore(Settings(_env_file=None))
        >>> keyed = KeyedOnline()
        >>> _ = keyed.learn("o1", "BTC", {"x": 1.0}, True, None)
        >>> store.states[3] = PartitionState(3, 1, keyed)
        >>> [(m.partition, m.model_key, m.learner.n_learned) for m in store.online_models()]
        [(3, 'BTC', 1)]
        """
        for st in list(self.states.values()):
            for key, learner in list(st.keyed.learners.items()):
                yield OnlineModel(st.partition, key, learner)

    def drop(self, partitions: set[int]) -> None:
        """Forget the state of partitions this worker no longer owns."""
        for p in partitions:
            self._drops[p] = self._drops.get(p, 0) + 1
            if self.states.pop(p, None) is not None:
                log.info("dropped learner state of partition %d", p, extra={"partition": p})

    async def _load(self, partition: int) -> PartitionState:
        t0 = time.monotonic()
        next_offset, keyed, waits = await self._read_checkpoint(partition)
        if keyed.config != self.online_config:
            # A checkpoint is replayed exactly only under its own configuration, so it keeps it.
            log.warning(
                "partition %d: its checkpoint's online models keep the configuration they were "
                "created with; the configured decay and drift detector apply to partitions "
                "without a checkpoint (checkpoint %s, configured %s)",
                partition,
                keyed.config,
                self.online_config,
                extra={"partition": partition},
            )
        window = int(self.settings.join_window_s * 1000)
        # The records of the last join window by their Kafka time (how far back to read); the
        # store keeps those within the window of the newest signal's own time.
        records = await self._read_partition(
            self.signals_topic, partition, since=int(time.time() * 1000) - window
        )
        # Decoding a join window of signals is CPU work: off the event loop, as for checkpoints.
        join = await asyncio.get_running_loop().run_in_executor(
            None, build_join_store, records, window, self.limits
        )
        log.info(
            "partition %d state loaded in %.2fs: next outcome offset %d, %d model keys, "
            "%d joinable signals, %d outcomes waiting for theirs",
            partition,
            time.monotonic() - t0,
            next_offset,
            len(keyed.learners),
            len(join),
            len(waits.waiting),
            extra={"partition": partition, "offset": next_offset},
        )
        st = PartitionState(partition, next_offset, keyed, join)
        for w in waits.waiting:
            st.hold(w)
        st.outcome_clock, st.signal_clock = waits.outcome_clock, waits.signal_clock
        return st

    async def _read_checkpoint(self, partition: int) -> tuple[int, KeyedOnline, WaitingState]:
        """The state of the newest checkpoint of ``partition`` (with its base), or a new one."""
        async with self._reader() as reader:
            # Compaction never removes the newest record of a partition, so the tail holds it.
            records = await reader.read(self.checkpoint_topic, [partition], last=_TAIL)
            data = records[-1].value if records else None
            if data is None:
                fresh = KeyedOnline(self.online_config, max_seen_ids=self.settings.max_seen_ids)
                return 0, fresh, WaitingState([], None, None)
            base_offset = checkpoint_base(data)
            base = None
            if base_offset is not None:
                found = await reader.read(
                    self.checkpoint_topic, [partition], offset=base_offset, limit=1
                )
                if found and found[0].offset == base_offset:
                    base = found[0].value
                else:
                    log.error(
                        "partition %d: the full checkpoint at offset %d that the newest delta "
                        "extends is gone; restoring with the ids of the delta only",
                        partition,
                        base_offset,
                        extra={"partition": partition, "offset": base_offset},
                    )
        return await asyncio.get_running_loop().run_in_executor(
            None, decode_checkpoint_state, data, base
        )

    async def _read_partition(self, topic: str, partition: int, since: int) -> list[Any]:
        """The records of a partition from ``since`` (epoch ms)."""
        async with self._reader() as reader:
            return await reader.read(topic, [partition], since=since)

    def _reader(self) -> PartitionReader:
        # Checkpoints run to megabytes: big fetches read one in a round trip or two.
        return PartitionReader(
            self.settings,
            max_partition_fetch_bytes=32 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
