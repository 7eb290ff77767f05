"""Sending unusable messages to the dead-letter topic, with a reason, and counting them."""

from __future__ import annotations

import logging
from typing import Any

from stream.codec import dead_letter, encode
from stream.runtime import Runtime

__all__ = ["send_dead_letter"]

log = logging.getLogger(__name__)


async def send_dead_letter(rt: Runtime, message: Any, reason: str, detail: str) -> None:
    """Publish a DeadLetter for a Faust ``message`` (its topic, partition, offset, key, value)."""
    dl = dead_letter(
        reason,
        detail,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        value_max_bytes=rt.settings.deadletter_value_max_bytes,
    )
    logged, held = rt.log_throttle.allow(reason)
    if held:
        log.warning(
            "%d more messages were dead-lettered as %s within %.0f s and not logged one by one "
            "(the dead-letter topic has them all)",
            held,
            reason,
            rt.log_throttle.window_s,
        )
    if logged:
        log.warning(
            "dead-lettered %s[%d]@%d: %s (%s)",
            message.topic,
            message.partition,
            message.offset,
            reason,
            detail,
        )
    rt.count(f"deadletter.{reason}")
    await rt.send("deadletter", message.key, encode(dl))
