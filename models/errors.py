"""The project's exception hierarchy.

Every error AlphaPulse raises on purpose derives from :class:`AlphaPulseError`, so callers can
catch the project's errors without catching everything. Messages say what to do next.

>>> issubclass(ConfigError, AlphaPulseError)
True
"""

from __future__ import annotations

__all__ = [
    "AlphaPulseError",
    "ConfigError",
    "DataError",
    "ModelError",
    "RegistryError",
]


class AlphaPulseError(Exception):
    """Root of every error raised on purpose by AlphaPulse."""


class ConfigError(AlphaPulseError, ValueError):
    """A setting or hyperparameter is invalid."""


class DataError(AlphaPulseError, ValueError):
    """Training or scoring data is unusable (empty, one class, NaN labels, ...)."""


class ModelError(AlphaPulseError):
    """A model cannot be trained, loaded or used."""


class RegistryError(AlphaPulseError):
    """The model registry (MLflow) refused or failed an operation."""
