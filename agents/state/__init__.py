"""A learner partition's state, in separate rooms: the outcome join store (:mod:`.join`), the
partition state and its store (:mod:`.partitions`), the checkpoint format (:mod:`.checkpoints`)
and the checkpointer that writes checkpoints and acks what they cover (:mod:`.checkpointer`)."""

from __future__ import annotations

from agents.state.checkpointer import checkpoint, settle
from agents.state.join import JoinEntry, join_fields, join_ts, remember_signal
from agents.state.partitions import OnlineModel, PartitionState, PartitionStore

__all__ = [
    "JoinEntry",
    "OnlineModel",
    "PartitionState",
    "PartitionStore",
    "checkpoint",
    "join_fields",
    "join_ts",
    "remember_signal",
    "settle",
]
