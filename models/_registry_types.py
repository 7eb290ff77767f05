"""Plain records returned by the model registry (kept free of MLflow imports)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ModelVersionInfo",
    "RegisteredModelInfo",
    "Registration",
    "parse_history",
    "version_info",
]


@dataclass(frozen=True)
class Registration:
    """Outcome of registering one trained model.

    >>> r = Registration("weekly_quick", "3", "abc", False, "does not beat champion", "2", {})
    >>> r.promoted, r.champion_version
    (False, '2')
    """

    name: str
    version: str
    run_id: str
    promoted: bool
    """It beat the champion (or was forced); the alias moved unless the caller moves it."""
    reason: str
    champion_version: str | None
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version.

    >>> v = ModelVersionInfo("weekly_quick", "2", ("champion",), "xgboost", "abc", 0, {})
    >>> "champion" in v.aliases
    True
    """

    name: str
    version: str
    aliases: tuple[str, ...]
    model_type: str
    run_id: str
    created_ms: int
    tags: dict[str, str]


@dataclass(frozen=True)
class RegisteredModelInfo:
    """A registered model with its versions, aliases and champion history.

    >>> RegisteredModelInfo("monthly_full", {"champion": "4"}, (), ("1", "4")).aliases["champion"]
    '4'
    """

    name: str
    aliases: dict[str, str]
    versions: tuple[ModelVersionInfo, ...]
    champion_history: tuple[str, ...]


def parse_history(raw: str | None) -> list[str]:
    """Versions from the JSON list kept in the champion-history tag (``[]`` if unreadable).

    >>> parse_history('["1", 2]'), parse_history("not json")
    (['1', '2'], [])
    """
    try:
        values = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(v) for v in values] if isinstance(values, list) else []


def version_info(mv: Any, aliases: dict[str, str] | None = None) -> ModelVersionInfo:
    """Version details; ``aliases`` (alias -> version) fills in what version searches omit."""
    names = set(mv.aliases or ())
    names.update(a for a, v in (aliases or {}).items() if str(v) == str(mv.version))
    return ModelVersionInfo(
        name=str(mv.name),
        version=str(mv.version),
        aliases=tuple(sorted(names)),
        model_type=(mv.tags or {}).get("alphapulse.model_type", ""),
        run_id=mv.run_id or "",
        created_ms=int(mv.creation_timestamp or 0),
        tags=dict(mv.tags or {}),
    )
