"""The learner state of one partition of the outcomes topic (:class:`PartitionState`); the
store that loads, owns and drops such states is :mod:`agents.state.partitions`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from agents.state.checkpoints import Refusal
from agents.state.join import JoinEntry, join_ts
from agents.state.waiting import Waiting, encode_waiting, watermark
from models.keyed import KeyedOnline
from stream.transactions import Outgoing, PartitionTransactions

__all__ = ["PartitionState"]


@dataclass
class PartitionState:
    """Learner state of one partition, and what it learned since its last commit.

    Examples
    --------
    >>> st = PartitionState(partition=0, next_offset=0, keyed=KeyedOnline())
    >>> st.learns  # no transactional producer: nothing is learned here
    False
    >>> st.waiting_section()  # no outcome waits and no clock has started
    b''
    """

    partition: int
    next_offset: int
    keyed: KeyedOnline
    join: dict[str, JoinEntry] = field(default_factory=dict)
    dirty: bool = False
    """Something changed since the last commit (the offset, the waiting outcomes)."""
    uncommitted: int = 0
    """Outcome records handled since the last commit."""
    outputs: list[Outgoing] = field(default_factory=list)
    """Side outputs (dead letters, hard examples, drift events, re-routed records) of the
    outcomes handled since the last commit; they go out in its transaction."""
    last_commit: float = field(default_factory=time.monotonic)
    committing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a transaction of this partition is open: one at a time."""
    txn: PartitionTransactions | None = None
    """The partition's transactional producer; None when the partition is not owned."""
    refused: Refusal | None = None
    """Why the partition's state was refused; None when it was read (or there was none)."""
    owned: bool = True
    """False for the placeholder state of a partition this worker does not own: it answers
    with the online prior and learns nothing."""
    waiting: dict[int, Waiting] = field(default_factory=dict)
    """Outcomes waiting for their signal, by offset, oldest first (:mod:`.waiting`)."""
    outcome_clock: int | None = None
    """The highest outcome time (its ``ts``, else its record's) seen in this partition."""
    signal_clock: int | None = None
    """The highest signal time seen in this partition's join store."""
    waiting_bytes: int = 0
    """The size of the waiting outcomes' records, which the meta record carries."""

    @property
    def learns(self) -> bool:
        """Whether outcomes of this partition are learned here (owned, not refused)."""
        return self.owned and self.refused is None and self.txn is not None

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
        """The waiting outcomes and clocks as the meta record keeps them; empty when no outcome
        waits and no clock has started."""
        if not self.waiting and self.outcome_clock is None and self.signal_clock is None:
            return b""
        return encode_waiting(self.waiting.values(), self.outcome_clock, self.signal_clock)
