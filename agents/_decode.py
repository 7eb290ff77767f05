"""The one decode-or-dead-letter path of the agents.

:func:`decode_or_divert` decodes a message and returns the record only when this agent should
handle it: an unusable message goes to the dead-letter topic with its reason
(:func:`send_dead_letter`), and a message whose Kafka key is not its model key is sent on to the
partition of its model key, where the worker that holds that key's model handles it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from stream.codec import ContractViolation, Limits, dead_letter, encode
from stream.runtime import Runtime

__all__ = ["Keyed", "Sink", "decode_or_divert", "log_context", "send_dead_letter"]

log = logging.getLogger(__name__)


class Keyed(Protocol):
    """A decoded record routed by its model key."""

    @property
    def model_key(self) -> str:
        """The key whose partition holds the record's online model."""
        ...


R = TypeVar("R", bound=Keyed)


class Sink(Protocol):
    """Where a record for the topic of a role goes: :class:`stream.runtime.Runtime` sends it,
    :class:`agents.state.OutputBuffer` keeps it for the partition's next transaction."""

    async def send(
        self, role: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> Any:
        """Send (or keep) one record for the topic of ``role``."""
        ...


def log_context(message: Any, **more: Any) -> dict[str, Any]:
    """Where a Faust ``message`` came from, as the ``extra=`` of a log call (the JSON log
    format shows them as fields).

    >>> from types import SimpleNamespace
    >>> log_context(SimpleNamespace(topic="t", partition=1, offset=7), model_key="BTC")
    {'topic': 't', 'partition': 1, 'offset': 7, 'model_key': 'BTC'}
    """
    where = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
    return {**where, **more}


async def send_dead_letter(
    rt: Runtime, message: Any, reason: str, detail: str, out: Sink | None = None
) -> None:
    """Publish a DeadLetter for a Faust ``message`` (its topic, partition, offset, key, value)
    through ``out`` (default: ``rt``, at once)."""
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
            extra={"reason": reason},
        )
    if logged:
        log.warning(
            "dead-lettered %s[%d]@%d: %s (%s)",
            message.topic,
            message.partition,
            message.offset,
            reason,
            detail,
            extra=log_context(message, reason=reason),
        )
    rt.count(f"deadletter.{reason}")
    await (out or rt).send("deadletter", message.key, encode(dl))


async def decode_or_divert(
    rt: Runtime,
    message: Any,
    decode: Callable[[bytes, Limits], R],
    role: str,
    out: Sink | None = None,
) -> R | None:
    """The record of a Faust ``message`` of the ``role`` topic when this agent should handle it.

    Dead letters and re-routed records go through ``out`` (default: ``rt``, at once).

    Returns None when the message was dead-lettered (it breaks the contract; or re-routing it
    failed, as ``internal``) or re-routed to the partition of its model key (counted as
    ``<role>.rerouted``).

    Examples
    --------
    >>> sent = []
    >>> import asyncio
    >>> from types import SimpleNamespace
    >>> from stream.codec import decode_signal
    >>> from stream.settings import Settings
    >>> class Rt(Runtime):
    ...     async def send(self, role, key, value, partition=None):
    ...         sent.append((role, key))
    >>> rt = Rt(Settings(_env_file=None), topics={})
    >>> def msg(key, value):
    ...     return SimpleNamespace(topic="signals", partition=0, offset=1, key=key, value=value)
    >>> good = b'{"signal_id": "s1", "symbol": "BTC", "features": {"x": 1.0}}'
    >>> asyncio.run(decode_or_divert(rt, msg(b"BTC", good), decode_signal, "signals")).signal_id
    's1'
    >>> asyncio.run(decode_or_divert(rt, msg(b"ETH", good), decode_signal, "signals"))
    >>> asyncio.run(decode_or_divert(rt, msg(b"BTC", b"{"), decode_signal, "signals"))
    >>> sent, rt.counters["signals.rerouted"], rt.counters["deadletter.invalid_json"]
    ([('signals', b'BTC'), ('deadletter', b'BTC')], 1, 1)
    """
    try:
        record = decode(message.value, rt.limits)
    except ContractViolation as exc:
        await send_dead_letter(rt, message, exc.reason, exc.detail, out)
        return None
    key = record.model_key.encode()
    if message.key == key:
        return record
    # Wrong or missing key: send it on to the partition of its model key.
    try:
        await (out or rt).send(role, key, message.value)
    except Exception as exc:  # unknown failure: dead-letter as internal, keep going
        log.exception(
            "re-routing failed on %s[%d]@%d",
            message.topic,
            message.partition,
            message.offset,
            extra=log_context(message, model_key=record.model_key),
        )
        await send_dead_letter(rt, message, "internal", f"{type(exc).__name__}: {exc}", out)
        return None
    rt.count(f"{role}.rerouted")
    return None
