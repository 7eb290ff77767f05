"""A learner partition's state, in separate rooms: the outcome join store (:mod:`.join`), the
partition state and its store (:mod:`.partitions`), the outcomes waiting for their signal and the
partition's event time (:mod:`.waiting`), the checkpoint format (:mod:`.checkpoints`)
and the checkpointer that writes checkpoints and acks what they cover (:mod:`.checkpointer`)."""

from __future__ import annotations

from agents.state.checkpointer import checkpoint, settle
from agents.state.join import JoinEntry, join_fields, join_ts, remember_signal
from agents.state.partitions import OnlineModel, PartitionState, PartitionStore
from agents.state.waiting import WAITING_MAX_BYTES, HeldMessage, Waiting

__all__ = [
    "WAITING_MAX_BYTES",
    "HeldMessage",
    "JoinEntry",
    "OnlineModel",
    "PartitionState",
    "PartitionStore",
    "Waiting",
    "checkpoint",
    "join_fields",
    "join_ts",
    "remember_signal",
    "settle",
]
