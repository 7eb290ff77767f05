"""Committing a learner partition: its touched state, its side outputs and its offset, at once.

:func:`commit` takes, at one moment and without awaiting in between, the records of the model
keys touched since the last commit, the partition's meta record (the next outcomes offset, the
waiting outcomes, the model key count) and the side outputs buffered since; then it sends them
and the outcomes offset in one Kafka transaction of the partition's producer
(:class:`stream.transactions.PartitionTransactions`). Learning goes on meanwhile: whatever it
touches is taken by the next commit, so nothing learned during a commit can be left out of the
state that covers its offset.

If the transaction is aborted, what it held is put back for the next commit. If the producer was
fenced, another worker owns the partition now: its state is dropped here (see
:meth:`agents.state.partitions.PartitionStore.fence`), and nothing of it was committed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

from agents.state.checkpoints import META_KEY, encode_meta, record_key
from agents.state.partitions import PartitionState, PartitionStore
from stream.runtime import Runtime
from stream.transactions import Outgoing, TransactionFailed, TransactionFenced

__all__ = ["COMMIT_TICKS", "OutputBuffer", "commit", "due_commits", "take_commit"]

log = logging.getLogger(__name__)


class OutputBuffer:
    """Side outputs of one partition, kept for its next transaction: the ``send`` of
    :class:`stream.runtime.Runtime`, buffered.

    >>> import asyncio
    >>> from models.keyed import KeyedOnline
    >>> st = PartitionState(0, 0, KeyedOnline())
    >>> buffer = OutputBuffer(st, {"deadletter": "ap.deadletter"})
    >>> asyncio.run(buffer.send("deadletter", b"k", b"v"))
    >>> st.outputs
    [Outgoing(topic='ap.deadletter', key=b'k', value=b'v', partition=None)]
    """

    def __init__(self, st: PartitionState, topic_names: dict[str, str]) -> None:
        self.st = st
        self.topic_names = topic_names

    async def send(
        self, role: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        """Keep a record for the topic of ``role`` (partitioned by ``key`` when ``partition``
        is None)."""
        self.st.outputs.append(Outgoing(self.topic_names[role], key, value, partition))


def take_commit(st: PartitionState, checkpoints_topic: str) -> tuple[list[Outgoing], int, set[str]]:
    """What the next commit of ``st`` sends, taken now: the touched keys' records, the meta
    record and the side outputs; with the offset they cover and the keys taken."""
    touched = st.keyed.take_touched()
    p = st.partition
    records = [Outgoing(checkpoints_topic, record_key(k), data, p) for k, data in touched]
    meta = encode_meta(st.next_offset, len(st.keyed.learners), st.waiting_section())
    records.append(Outgoing(checkpoints_topic, META_KEY, meta, p))
    records.extend(st.outputs)
    st.outputs = []
    st.dirty, st.uncommitted = False, 0
    return records, st.next_offset, {k for k, _ in touched}


COMMIT_TICKS = 4
"""Timer ticks per ``ALPHAPULSE_CHECKPOINT_INTERVAL_S``, over which partitions' commits spread."""


def due_commits(
    last: Mapping[int, float], now: float, interval: float, ticks: int = COMMIT_TICKS
) -> list[int]:
    """The partitions to commit at a tick of a timer that runs ``ticks`` times per ``interval``:
    of those in ``last`` (partition: when it last committed) committed at least ``interval`` ago,
    the longest ago first, at most ``ceil(len(last) / ticks)``.

    Each commit takes its records on the event loop and costs the broker several requests, so
    partitions that would all be due at once commit on successive ticks instead.

    >>> due_commits({0: 0.0, 1: 0.0, 2: 0.1, 3: 0.9}, now=1.0, interval=1.0)
    [0]
    >>> due_commits({p: 0.0 for p in range(8)}, now=1.5, interval=1.0)
    [0, 1]
    >>> due_commits({0: 0.5}, now=1.0, interval=1.0)
    []
    """
    ready = sorted((t, p) for p, t in last.items() if now - t >= interval)
    return [p for _, p in ready[: math.ceil(len(last) / ticks)]]


async def commit(rt: Runtime, store: PartitionStore, st: PartitionState) -> bool:
    """Commit what ``st`` learned since its last commit (see the module's text); True when a
    transaction was committed. Nothing is done for a partition not learned here, or with
    nothing new."""
    async with st.committing:
        if not st.learns or store.get(st.partition) is not st:
            return False
        if not (st.dirty or st.outputs or st.keyed.touched):
            return False
        txn = st.txn
        assert txn is not None
        topic = store.checkpoint_topic
        n_outputs = len(st.outputs)
        records, next_offset, keys = take_commit(st, topic)
        t0 = time.perf_counter()
        try:
            await txn.commit(records, next_offset)
        except TransactionFenced as exc:
            rt.count("learner.fenced")
            store.fence(st, str(exc))
            return False
        except TransactionFailed as exc:
            log.warning(
                "learner commit of partition %d aborted, retried with the next one: %s",
                st.partition,
                exc,
                extra={"partition": st.partition},
            )
            rt.count("learner.commits_aborted")
            st.keyed.touched |= keys
            st.outputs[:0] = records[len(records) - n_outputs :]
            st.dirty = True
            return False
        st.last_commit = time.monotonic()
        rt.count("checkpoints")
        rt.observe("commit_latency_s", time.perf_counter() - t0)
        return True
