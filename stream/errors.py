"""Errors of the Kafka layer: the wire contract and the broker.

They derive from :class:`models.errors.AlphaPulseError`, the project's one exception root.

>>> issubclass(ContractViolation, ValueError), ContractViolation("schema", "x").reason
(True, 'schema')
"""

from __future__ import annotations

from models.errors import AlphaPulseError

__all__ = ["BrokerError", "ContractViolation", "StoreError"]


class ContractViolation(AlphaPulseError, ValueError):
    """A message breaks the wire contract. ``reason`` is a dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(AlphaPulseError):
    """The local Kafka broker cannot be started, stopped or reached."""


class StoreError(AlphaPulseError):
    """The PostgreSQL store cannot be reached."""
