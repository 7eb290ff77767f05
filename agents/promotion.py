"""Promote a job's winner and announce it, so that no reloader swaps it in before the news.

A training or ensemble job decides on promotion in its child process but leaves the ``champion``
alias alone (``move_alias=False``); the worker then moves the alias and publishes the
``promoted`` ModelEvent while it holds :attr:`stream.runtime.Runtime.champion_lock`, which the
reloader holds for each poll. A ``loaded`` event of that version therefore always follows its
``promoted`` on the model-events topic.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from models.errors import AlphaPulseError
from stream.codec import encode, now_ms
from stream.records import ModelEvent
from stream.registry import open_registry
from stream.runtime import Runtime
from stream.settings import Settings

__all__ = ["promote_and_announce"]

log = logging.getLogger(__name__)


def _promote(settings: Settings, role: str, version: str) -> None:
    open_registry(settings).promote(role, version)


async def promote_and_announce(
    rt: Runtime, role: str, version: int | str, detail: str, **extra: Any
) -> bool:
    """Make ``version`` the champion of ``role`` and publish ``promoted``; False if MLflow failed.

    ``extra`` goes into the event's extra fields (``cause``, for instance).
    """
    loop = asyncio.get_running_loop()
    async with rt.champion_lock:
        try:
            await loop.run_in_executor(None, _promote, rt.settings, role, str(version))
        except AlphaPulseError as exc:  # MLflow down: the version stays a challenger
            log.warning("promoting %s version %s failed: %s", role, version, exc)
            return False
        event = ModelEvent(
            "promoted", now_ms(), role=role, version=version, detail=detail, extra=extra
        )
        await rt.topics["model-events"].send(key=role.encode(), value=encode(event))
    return True
