"""The learner's partitions as they leave or are refused: the last commit of a partition this
worker gives up, and the announcement of a partition state it refuses."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agents.state import PartitionState, PartitionStore, Refusal, commit
from stream.codec import encode, now_ms
from stream.records import ModelEvent
from stream.runtime import Runtime

__all__ = ["LEAVE_COMMIT_S", "announce_refusal", "commit_leaving"]

log = logging.getLogger(__name__)

LEAVE_COMMIT_S = 5.0
"""Longest a revocation or a shutdown waits for the commit of the partitions it gives up."""


async def commit_leaving(
    rt: Runtime, store: PartitionStore, partitions: set[int], timeout_s: float = LEAVE_COMMIT_S
) -> None:
    """Commit what ``partitions`` learned since their last commit before this worker gives them
    up (revoked, or the worker stops), so that their next owner need not learn it again. Each
    commit is made even with nothing new (the meta record and the offset again): a worker paused
    past its session timeout finds here that it was fenced, and logs it. The partitions commit at
    once, each with its own producer; a commit that does not finish within ``timeout_s`` leaves
    the work to the next owner."""

    async def one(st: PartitionState) -> None:
        st.dirty = True
        try:
            await asyncio.wait_for(commit(rt, store, st), timeout_s)
        except TimeoutError:
            log.warning(
                "the commit of partition %d, which this worker gives up, did not finish within "
                "%.0f s; its next owner learns the outcomes since the last commit again",
                st.partition,
                timeout_s,
                extra={"partition": st.partition},
            )

    leaving = [store.get(p) for p in sorted(partitions)]
    await asyncio.gather(*(one(st) for st in leaving if st is not None and st.learns))


def announce_refusal(rt: Runtime, why: Refusal) -> Any:
    """Count a refused partition state and announce it on the model-events topic as a
    ``state_refused`` ModelEvent; returns the task that sends it."""
    rt.count(f"state_refused.{why.reason}")
    where = "" if why.offset is None else f" at offset {why.offset}"
    event = ModelEvent(
        "state_refused",
        now_ms(),
        detail=(
            f"partition {why.partition} of {rt.settings.internal_topic('checkpoints')}{where}: "
            f"{why.reason}: {why.detail}"
        ),
    )
    return asyncio.ensure_future(rt.send("model-events", None, encode(event)))
