"""The one vocabulary of model roles and training cadences.

A *role* names a component of a Prediction (``components``, ``weights``, ``model_versions``); a
*cadence* names a training job. The batch roles are cadences whose models serve; a
``nightly_incremental`` job continues one of them and registers under its role.

>>> BATCH_ROLES, ONLINE
(('monthly_full', 'weekly_quick'), 'online')
>>> ROLES
('monthly_full', 'weekly_quick', 'online')
>>> [c for c in CADENCES if c not in BATCH_ROLES]
['nightly_incremental']
"""

from __future__ import annotations

__all__ = ["BATCH_ROLES", "BLEND", "CADENCES", "ENSEMBLE", "ONLINE", "ROLES", "WARM_START_ROLES"]

BATCH_ROLES: tuple[str, ...] = ("monthly_full", "weekly_quick")
"""Roles of the batch models, each registered in MLflow under its own name."""

ONLINE = "online"
"""Role of the online model of a request's model key."""

ROLES: tuple[str, ...] = (*BATCH_ROLES, ONLINE)
"""Every component role of the wire contract's Prediction."""

ENSEMBLE = "ensemble"
"""Registered-model name of the fitted ensemble, and its key in a Prediction's ``model_versions``.
It is no component: it combines them."""

BLEND = "blend"
"""Name of the blended score where components are compared with it (metrics, reports)."""

CADENCES: tuple[str, ...] = ("nightly_incremental", "weekly_quick", "monthly_full")
"""Training cadences, from the most frequent to the least."""

WARM_START_ROLES: tuple[str, ...] = ("weekly_quick", "monthly_full")
"""Roles a ``nightly_incremental`` job may continue, in order of preference."""
