"""The CLI's choices as enums, so that ``--help`` lists them; values are the accepted strings.

Each mirrors the one place its values are defined, which the doctest checks:

>>> from typing import get_args
>>> from alphapulse._kafka_io import KINDS
>>> from models.roles import CADENCES
>>> from stream.settings import TOPIC_ROLES, Settings
>>> literal = lambda name: get_args(Settings.model_fields[name].annotation)
>>> [tuple(e) for e in (ModelType, Cadence, Kind, TopicRole, EnsembleMethod)] == [
...     literal("retrain_model_type"), CADENCES, KINDS, TOPIC_ROLES, literal("ensemble_method")]
True
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Cadence", "EnsembleMethod", "Kind", "ModelType", "TopicRole"]


class ModelType(StrEnum):
    """Booster libraries (``ALPHAPULSE_RETRAIN_MODEL_TYPE``)."""

    xgboost = "xgboost"
    lightgbm = "lightgbm"
    catboost = "catboost"


class Cadence(StrEnum):
    """Training cadences (``models.roles.CADENCES``)."""

    nightly_incremental = "nightly_incremental"
    weekly_quick = "weekly_quick"
    monthly_full = "monthly_full"


class Kind(StrEnum):
    """What ``produce`` sends (``alphapulse._kafka_io.KINDS``)."""

    signals = "signals"
    outcomes = "outcomes"
    trades = "trades"


class TopicRole(StrEnum):
    """Topic roles (``stream.settings.TOPIC_ROLES``)."""

    signals = "signals"
    outcomes = "outcomes"
    predictions = "predictions"
    deadletter = "deadletter"
    retrain_queue = "retrain-queue"
    model_events = "model-events"


class EnsembleMethod(StrEnum):
    """Ensemble fit methods (``ALPHAPULSE_ENSEMBLE_METHOD``)."""

    weights = "weights"
    stacking = "stacking"
