"""Pure machine learning for AlphaPulse: dicts and arrays in, numbers out. No Kafka, no Faust."""

from __future__ import annotations

from models.errors import AlphaPulseError

__all__ = ["AlphaPulseError"]
