"""A learner partition's state, in separate rooms: the outcome join store (:mod:`.join`), the
partition state (:mod:`.partition_state`) and its store (:mod:`.partitions`),
the outcomes waiting for their signal and the partition's event time (:mod:`.waiting`), the
changelog format on the checkpoints topic (:mod:`.checkpoints`) and the transactional commit
(:mod:`.checkpointer`)."""

from __future__ import annotations

from agents.state.checkpointer import COMMIT_TICKS, OutputBuffer, commit, due_commits
from agents.state.checkpoints import Refusal
from agents.state.join import JoinEntry, join_fields, join_ts, remember_signal
from agents.state.partitions import OnlineModel, PartitionState, PartitionStore
from agents.state.waiting import WAITING_MAX_BYTES, HeldMessage, Waiting

__all__ = [
    "COMMIT_TICKS",
    "WAITING_MAX_BYTES",
    "HeldMessage",
    "JoinEntry",
    "OnlineModel",
    "OutputBuffer",
    "PartitionState",
    "PartitionStore",
    "Refusal",
    "Waiting",
    "commit",
    "due_commits",
    "join_fields",
    "join_ts",
    "remember_signal",
]
