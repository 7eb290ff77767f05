"""Model reloader: the side worker that hot-swaps batch models and the ensemble from MLflow.

Every poll, for each batch role and the fitted ensemble (``ensemble``), it resolves the
``champion`` alias to a version and, when that version is new, loads exactly
``models:/<role>/<version>`` in a thread, validates it (a batch model with
:func:`validate_model`, the ensemble with
:meth:`models.served_ensemble.ServedEnsemble.from_document`), builds a new scorer in a thread
when a batch model changed, and swaps the whole serving state into the runtime in one assignment.
The event loop never waits on MLflow. A model that fails validation is rejected with a ModelEvent
and the old one keeps serving; when MLflow is unreachable the loaded models keep serving and polls
back off.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.state import PartitionStore
from models.errors import AlphaPulseError, ModelError, RegistryError
from models.roles import BATCH_ROLES, ENSEMBLE
from models.scoring import BatchScorer
from models.served_ensemble import ServedEnsemble
from stream.codec import encode, now_ms
from stream.records import ModelEvent
from stream.runtime import Runtime, Serving

__all__ = ["BATCH_ROLES", "Reloader", "validate_model"]

log = logging.getLogger(__name__)


def validate_model(model: Any, expected_features: list[str] | None, probe_rows: int = 64) -> None:
    """Raise :class:`ModelError` unless ``model`` is fit to serve.

    Its feature names must be non-empty, unique and (when ``expected_features`` is given) equal to
    them; on a seeded probe batch (with some missing values) it must return one probability in
    [0, 1] per row and no NaN.

    >>> class Good:
    ...     feature_names = ["a", "b"]
    ...     def predict_proba(self, X):
    ...         return np.full(len(X), 0.3)
    >>> validate_model(Good(), ["a", "b"])
    >>> try:
    ...     validate_model(Good(), ["a", "c"])
    ... except ModelError as e:
    ...     print(e)
    feature names differ from the serving model's: missing ['c'], extra ['b']
    """
    names = list(getattr(model, "feature_names", []) or [])
    if not names or len(set(names)) != len(names):
        raise ModelError("model has no feature names, or repeated ones")
    if expected_features is not None and names != list(expected_features):
        missing = sorted(set(expected_features) - set(names))
        extra = sorted(set(names) - set(expected_features))
        raise ModelError(
            f"feature names differ from the serving model's: missing {missing}, extra {extra}"
        )
    rng = np.random.default_rng(0)
    X = rng.standard_normal((probe_rows, len(names)))
    X[rng.random(X.shape) < 0.05] = np.nan
    p = np.asarray(model.predict_proba(X), dtype=float).reshape(-1)
    if p.shape[0] != probe_rows:
        raise ModelError(f"probe batch of {probe_rows} rows gave {p.shape[0]} outputs")
    if np.isnan(p).any():
        raise ModelError("model returns NaN on the probe batch")
    if (p < 0).any() or (p > 1).any():
        raise ModelError(f"model outputs outside [0, 1] on the probe batch: {p.min()}..{p.max()}")


@dataclass
class Reloader:
    """Polls the registry and swaps validated champions into ``rt.serving``; logs the online
    models of ``store`` (the worker's learner state) to MLflow."""

    rt: Runtime
    registry_factory: Any
    roles: tuple[str, ...] = (*BATCH_ROLES, ENSEMBLE)
    store: PartitionStore | None = None
    rejected: set[tuple[str, str]] = field(default_factory=set)
    models: dict[str, tuple[str, Any]] = field(default_factory=dict)
    failures: int = 0
    _registry: Any = None

    def _get_registry(self) -> Any:
        if self._registry is None:
            self._registry = self.registry_factory()
        return self._registry

    def _resolve(self) -> dict[str, str | None]:
        reg = self._get_registry()
        out: dict[str, str | None] = {}
        for role in self.roles:
            try:
                out[role] = str(reg.resolve_alias(role, "champion"))
            except AlphaPulseError as exc:
                code = getattr(exc.__cause__, "error_code", "")
                if code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise  # MLflow unreachable or failing: back off, keep serving
                out[role] = None  # no such model or alias yet
        return out

    async def poll_once(self) -> list[ModelEvent]:
        """One poll: load and swap any new champion; returns the events it published."""
        async with self.rt.champion_lock:  # a promotion is announced before its swap
            return await self._poll()

    async def _poll(self) -> list[ModelEvent]:
        loop = asyncio.get_running_loop()
        champions = await loop.run_in_executor(None, self._resolve)
        events: list[ModelEvent] = []
        changed = False
        for role, version in champions.items():
            if version is None or (role, version) in self.rejected:
                continue
            current = self.models.get(role)
            if current is not None and current[0] == version:
                continue
            if not (version.isascii() and version.isdigit()):
                self.rejected.add((role, version))
                detail = f"champion resolves to {version!r}, not an exact numeric version"
                events.append(
                    ModelEvent("rejected", now_ms(), role=role, version=version, detail=detail)
                )
                log.warning(
                    "rejected %s version %r: not an exact numeric version",
                    role,
                    version,
                    extra={"role": role, "version": version},
                )
                continue
            try:
                model = await loop.run_in_executor(None, self._load, role, version, current)
            except RegistryError:
                raise  # MLflow unreachable or failing: back off and try this version again later
            except Exception as exc:  # trust boundary: whatever a bad artifact raises rejects it
                self.rejected.add((role, version))
                events.append(
                    ModelEvent(
                        "rejected", now_ms(), role=role, version=version, detail=str(exc)[:500]
                    )
                )
                log.warning(
                    "rejected %s version %s: %s",
                    role,
                    version,
                    exc,
                    extra={"role": role, "version": version},
                )
                continue
            self.models[role] = (version, model)
            changed = True
            events.append(
                ModelEvent(
                    "loaded",
                    now_ms(),
                    role=role,
                    version=version,
                    detail=f"models:/{role}/{version}",
                )
            )
            log.info(
                "loaded %s version %s", role, version, extra={"role": role, "version": version}
            )
        if changed:
            batch = {role: m for role, (_, m) in self.models.items() if role != ENSEMBLE}
            scorer = self.rt.serving.scorer
            if any(e.event == "loaded" and e.role != ENSEMBLE for e in events):
                scorer = await loop.run_in_executor(None, lambda: BatchScorer(batch))
            versions = {role: _as_int(v) for role, (v, _) in self.models.items()}
            ensemble = self.models.get(ENSEMBLE, (None, None))[1]
            self.rt.serving = Serving(scorer, versions, ensemble)  # one assignment
        for ev in events:
            await self.rt.topics["model-events"].send(
                key=(ev.role or "").encode(), value=encode(ev)
            )
        return events

    def _load(self, role: str, version: str, current: tuple[str, Any] | None) -> Any:
        """Load ``models:/<role>/<version>`` and validate it (blocking: run it in a thread)."""
        registry = self._get_registry()
        if role == ENSEMBLE:
            return ServedEnsemble.from_document(registry.load_document(role, version), version)
        model = registry.load_version(role, version)
        validate_model(model, list(current[1].feature_names) if current is not None else None)
        return model

    def online_exports(self) -> dict[str, dict[str, Any]]:
        """Compact weights and metrics of every online model this worker holds, by model key."""
        if self.store is None:
            return {}
        return {om.model_key: om.learner.export() for om in self.store.online_models()}

    async def log_online(self) -> str | None:
        """Log the online models to MLflow (in a thread); returns the run id, None if no model."""
        exports = self.online_exports()
        if not exports:
            return None
        metrics: dict[str, float] = {}
        for key, exp in exports.items():
            metrics[f"{key}.n_learned"] = float(exp["n_learned"])
            for name, value in exp.get("metrics", {}).items():
                metrics[f"{key}.{name}"] = float(value)
        params = {"model_keys": ",".join(sorted(exports)), "app_id": self.rt.settings.app_id}
        loop = asyncio.get_running_loop()
        run_id: str = await loop.run_in_executor(
            None,
            lambda: self._get_registry().log_summary(
                "online-models",
                params,
                metrics,
                {"models": exports},
                {"alphapulse.role": "online"},
            ),
        )
        log.info("logged %d online models to MLflow run %s", len(exports), run_id)
        return run_id

    async def run_forever(self, interval: float, max_backoff: float = 60.0) -> None:
        """Poll every ``interval`` seconds; on MLflow errors keep serving and back off.

        Every ``online_log_interval_s`` it also logs the online models to MLflow.
        """
        log_every = self.rt.settings.online_log_interval_s
        last_log = asyncio.get_running_loop().time()
        while True:
            try:
                await self.poll_once()
                now = asyncio.get_running_loop().time()
                if log_every > 0 and now - last_log >= log_every:
                    last_log = now
                    await self.log_online()
                self.failures = 0
                delay = interval
            except Exception as exc:  # a side worker must never take the app down with it
                # e.g. MLflow unreachable, or a local SQLite store left half-created by a killed
                # worker (sqlalchemy OperationalError): keep serving the loaded models.
                self.failures += 1
                self._registry = None
                delay = min(max_backoff, interval * math.pow(2, min(self.failures, 6)))
                log.warning(
                    "model registry unavailable (%s); keeping the loaded models, next try in %.1fs",
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)


def _as_int(v: str) -> int:
    try:
        return int(v)
    except ValueError:
        return 0
