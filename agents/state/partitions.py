"""Per-partition learner state, restored from its changelog after its transactional producer
has fenced the partition's previous owner.

For each partition ``p`` of the outcomes topic (and, co-partitioned, of the signals topic) a worker
holds a :class:`PartitionState`: the online learners of the model keys routed to ``p`` with the ids
each learned (:class:`models.keyed.KeyedOnline`), ``next_offset`` (the first outcomes
offset the state does not yet cover), the outcomes waiting for their signal, the side outputs not
yet committed, and the join store of recent signals' features (:mod:`agents.state.join`).

A partition is owned from its assignment (:meth:`PartitionStore.preload`) to its revocation
(:meth:`PartitionStore.drop`) or until its producer is fenced (:meth:`PartitionStore.fence`). Its
state is loaded only while it is owned: first its transactional producer starts
(:class:`stream.transactions.PartitionTransactions`), which fences the old owner and aborts its
open transaction; then partition ``p`` of the checkpoints topic is read to its end, committed
records only (:func:`agents.state.checkpoints.restore_partition`), and the signals topic for the
last join window. A state that cannot be read, or a checkpoints topic configured to lose records,
refuses the partition (``PartitionState.refused``): it is logged, counted and announced, and the
partition is not learned in this worker until it is assigned again; its model keys answer from
their last good state (the newest record of each that can be read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agents.state.checkpoints import Refusal, Restored, restore_partition
from agents.state.join import JoinEntry, forget_before, join_ts, remember_records
from agents.state.partition_state import PartitionState
from models.keyed import KeyedOnline
from models.online import OnlineConfig, OnlineLearner
from stream.codec import Limits
from stream.reader import PartitionReader
from stream.settings import Settings
from stream.topics import changelog_problem, topic_config
from stream.transactions import PartitionTransactions

__all__ = [
    "PRELOAD_CONCURRENCY",
    "OnlineModel",
    "PartitionState",
    "PartitionStore",
    "RefusalHook",
    "signing_key",
]

log = logging.getLogger(__name__)

RefusalHook = Callable[[Refusal], None]
"""Called with each partition state refused (the learner announces it as a ModelEvent)."""


def signing_key(settings: Settings) -> bytes | None:
    """The key of the HMAC that signs state records (``ALPHAPULSE_STATE_SIGNING_KEY``), or None.

    >>> signing_key(Settings(_env_file=None, state_signing_key="sixteen bytes ok"))
    b'sixteen bytes ok'
    >>> signing_key(Settings(_env_file=None)) is None
    True
    """
    secret = settings.state_signing_key
    return None if secret is None else secret.get_secret_value().encode()


@dataclass(frozen=True)
class OnlineModel:
    """The online model of one model key, as :meth:`PartitionStore.online_models` lists it."""

    partition: int
    model_key: str
    learner: OnlineLearner


PRELOAD_CONCURRENCY = 4
"""Most partition states :meth:`PartitionStore.preload` reads at once."""


class PartitionStore:
    """Loads, holds and drops :class:`PartitionState` per partition for one worker.

    Parameters
    ----------
    settings
        The worker's settings.
    online_config
        Configuration of the online learners of model keys without state.
    transactions
        Makes the transactional producer of a partition (tests give a stand-in).
    on_refused
        Called with each refused partition state, after it is logged and counted.
    """

    def __init__(
        self,
        settings: Settings,
        online_config: OnlineConfig | None = None,
        transactions: Callable[[Settings, int], PartitionTransactions] = PartitionTransactions,
        on_refused: RefusalHook | None = None,
    ) -> None:
        self.settings = settings
        self.online_config = online_config or OnlineConfig()
        self.checkpoint_topic = settings.internal_topic("checkpoints")
        self.signals_topic = settings.topic("signals")
        self.limits = Limits(settings.max_message_bytes, settings.max_features)
        self.transactions = transactions
        self.on_refused = on_refused
        self.states: dict[int, PartitionState] = {}
        self.assigned: set[int] = set()
        """Partitions this worker owns: assigned, and not revoked or fenced since."""
        self.refusals: list[Refusal] = []
        self._signing_key = signing_key(settings)
        self._topic_problem: str | None = None
        self._topic_checked = False
        self._locks: dict[int, asyncio.Lock] = {}
        self._drops: dict[int, int] = {}  # times each partition was dropped
        self._preloads: set[asyncio.Task[Any]] = set()
        self._stopping: set[asyncio.Task[Any]] = set()
        self._preload_slots = asyncio.Semaphore(PRELOAD_CONCURRENCY)  # binds to a loop on use

    def new_keyed(self) -> KeyedOnline:
        """Empty keyed state configured as this worker's."""
        return KeyedOnline(
            self.online_config,
            max_seen_ids=self.settings.max_seen_ids,
            signing_key=self._signing_key,
        )

    def get(self, partition: int) -> PartitionState | None:
        """The loaded state of ``partition``, or None."""
        return self.states.get(partition)

    async def ensure(self, partition: int) -> PartitionState:
        """The state of ``partition``, loaded from Kafka on first use after its assignment.

        A partition this worker does not own gets an empty placeholder that is not kept (an
        event of a revoked partition may still be in flight): loading it would fence its owner.
        """
        st = self.states.get(partition)
        if st is not None:
            return st
        if partition not in self.assigned:
            return PartitionState(partition, 0, self.new_keyed(), owned=False)
        return await self._load_once(partition, self._drops.get(partition, 0))

    async def _load_once(self, partition: int, drops: int) -> PartitionState:
        """Load ``partition`` unless another caller did meanwhile; keep the state only if the
        partition is still owned and was not dropped since the caller saw it dropped ``drops``
        times. A state not kept stops its producer and learns nothing; a partition revoked before
        its turn came gets a placeholder, and no producer that would fence its new owner."""
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            st = self.states.get(partition)
            if st is not None:
                return st
            if not self._owned(partition, drops):  # revoked while waiting: load nothing
                return PartitionState(partition, 0, self.new_keyed(), owned=False)
            st = await self._load(partition)
            if self._owned(partition, drops):
                self.states[partition] = st
            else:
                st.owned = False
                self._stop_later(st)
        return st

    def _owned(self, partition: int, drops: int) -> bool:
        """Whether ``partition`` is owned and not dropped since it had been ``drops`` times."""
        return self._drops.get(partition, 0) == drops and partition in self.assigned

    def preload(self, partitions: set[int]) -> None:
        """Take ``partitions`` as assigned, and start loading their state in the background.

        Their first events then need not wait for the checkpoint and signals topics to be read,
        and the partitions load concurrently rather than one after another as their first events
        come, at most :data:`PRELOAD_CONCURRENCY` at a time. An event that arrives during a load
        waits for it; one for a partition still waiting its turn loads it at once.
        """
        self.assigned |= partitions
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
        >>> keyed = store.new_keyed()
        >>> _ = keyed.learn("o1", "BTC", {"x": 1.0}, True, None)
        >>> store.states[3] = PartitionState(3, 1, keyed)
        >>> [(m.partition, m.model_key, m.learner.n_learned) for m in store.online_models()]
        [(3, 'BTC', 1)]
        """
        for st in list(self.states.values()):
            for key, learner in list(st.keyed.learners.items()):
                yield OnlineModel(st.partition, key, learner)

    def drop(self, partitions: set[int]) -> None:
        """Forget the state of partitions this worker no longer owns, and stop their producers
        (an open transaction of theirs is aborted by the new owner's producer)."""
        self.assigned -= partitions
        for p in partitions:
            self._drops[p] = self._drops.get(p, 0) + 1
            st = self.states.pop(p, None)
            if st is not None:
                st.owned = False
                self._stop_later(st)
                log.info("dropped learner state of partition %d", p, extra={"partition": p})

    def fence(self, st: PartitionState, why: str) -> None:
        """Give ``st``'s partition up: its producer was fenced (another worker owns it now) or
        failed fatally. Its state is dropped here, uncommitted, and it is not loaded again until
        it is assigned again."""
        if self.states.get(st.partition) is st:
            self.drop({st.partition})
        else:
            st.owned = False
            self._stop_later(st)
        log.error(
            "learner partition %d given up, its uncommitted work dropped: %s",
            st.partition,
            why,
            extra={"partition": st.partition},
        )

    def _stop_later(self, st: PartitionState) -> None:
        txn, st.txn = st.txn, None
        if txn is None:
            return
        task = asyncio.ensure_future(txn.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        """Stop every producer (the worker is stopping)."""
        self.drop(set(self.states) | self.assigned)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    async def _load(self, partition: int) -> PartitionState:
        t0 = time.monotonic()
        txn = self.transactions(self.settings, partition)
        await txn.start()  # fences the previous owner before its state is read
        try:
            restored = await self._restore(partition)
            join = await self._rebuild_join(partition)
        except BaseException:
            await txn.stop()
            raise
        if restored.refused is not None:
            self._refuse(restored.refused)
        st = PartitionState(
            partition, restored.next_offset, restored.keyed, join, txn=txn, refused=restored.refused
        )
        waits = restored.waiting
        for w in waits.waiting:
            st.hold(w)
        st.outcome_clock, st.signal_clock = waits.outcome_clock, waits.signal_clock
        log.info(
            "partition %d state loaded in %.2fs: next outcome offset %d, %d model keys, "
            "%d joinable signals, %d outcomes waiting for theirs",
            partition,
            time.monotonic() - t0,
            st.next_offset,
            len(st.keyed.learners),
            len(join),
            len(st.waiting),
            extra={"partition": partition, "offset": st.next_offset},
        )
        return st

    async def _rebuild_join(self, partition: int) -> dict[str, JoinEntry]:
        """The partition's join store from the signals of the last join window by their Kafka
        time (how far back to read), and no more than the store keeps: a long window at a high
        rate would otherwise be read whole at every assignment. It keeps those within the window
        of the newest signal's own time."""
        window = int(self.settings.join_window_s * 1000)
        join: dict[str, JoinEntry] = {}
        newest: int | None = None
        loop = asyncio.get_running_loop()
        # Small fetches, decoded as they come: the records read are not all held at once.
        reader = PartitionReader(self.settings, isolation_level="read_committed")
        async with reader:
            chunks = reader.chunks(
                self.signals_topic,
                [partition],
                since=int(time.time() * 1000) - window,
                last=self.settings.join_max_entries,
            )
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    # Decoding signals is CPU work: off the event loop.
                    ts = await loop.run_in_executor(
                        None, remember_records, join, chunk, self.limits
                    )
                    if ts is not None and (newest is None or ts > newest):
                        newest = ts
        if newest is not None:
            await loop.run_in_executor(None, forget_before, join, newest - window)
        return join

    async def _restore(self, partition: int) -> Restored:
        """The partition's state from its changelog, refused when the changelog's topic is
        configured to lose records or a record cannot be read (see :class:`Restored`)."""
        if not self._topic_checked:
            # Read once, at the first load: a topic that deletes records loses state silently.
            self._topic_problem = changelog_problem(
                await topic_config(self.settings, self.checkpoint_topic)
            )
            self._topic_checked = True
        records = await self._read_partition(self.checkpoint_topic, partition)
        restored: Restored = await asyncio.get_running_loop().run_in_executor(
            None, restore_partition, partition, records, self.new_keyed
        )
        if self._topic_problem is not None:
            restored.refused = Refusal(partition, None, "topic_config", self._topic_problem)
        return restored

    def _refuse(self, why: Refusal) -> None:
        where = "" if why.offset is None else f"@{why.offset}"
        log.error(
            "learner state refused, partition %d (%s): %s[%d]%s: %s; the partition is not "
            "learned until its state is repaired, and answers from its last good state",
            why.partition,
            why.reason,
            self.checkpoint_topic,
            why.partition,
            where,
            why.detail,
            extra={
                "topic": self.checkpoint_topic,
                "partition": why.partition,
                "offset": why.offset,
                "reason": why.reason,
            },
        )
        self.refusals.append(why)
        if self.on_refused is not None:
            self.on_refused(why)

    async def _read_partition(self, topic: str, partition: int) -> list[Any]:
        """The committed records of a partition."""
        async with self._reader() as reader:
            return await reader.read(topic, [partition])

    def _reader(self) -> PartitionReader:
        # State records can be large: big fetches read them in few round trips.
        return PartitionReader(
            self.settings,
            isolation_level="read_committed",
            max_partition_fetch_bytes=32 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
