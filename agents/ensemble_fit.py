"""The ensemble job, the same for ``alphapulse ensemble fit`` and for the refit after a promotion.

:func:`run_ensemble_fit` loads the champion of each batch role from MLflow (its features, model
type and logged configuration), reads the most recent ``ALPHAPULSE_ENSEMBLE_HISTORY`` joined
outcomes from the outcomes topic, fits the ensemble of the champions and the online model on them
(:func:`models.ensemble_fit.fit_ensemble`: out of fold for the batch models, prequential for the
online one, in time order), and registers it as a version of the model ``ensemble``. The version
becomes ``champion`` only when its log loss on the later held-out rows is strictly lower than the
configured fixed blend's (``ALPHAPULSE_BLEND_BATCH_WEIGHT``) on the same rows. The version's tag
``alphapulse.fitted_on`` records the component versions it was fitted on. Nothing here prints.

:func:`refit_after_promotion` runs the job in a freshly spawned child process for the retrainer,
after a retraining job promoted a batch model; when the refit wins, the worker moves its alias
and publishes a ``promoted`` ModelEvent of role ``ensemble`` (:mod:`agents.promotion`).

>>> summary = {"version": 3, "method": "weights", "promoted": True, "weights": {"online": 1.0},
...            "log_loss": 0.61, "fixed_log_loss": 0.64}
>>> describe(summary)
'ensemble version 3 (weights): champion; held-out log loss 0.61000 vs fixed blend 0.64000'
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from agents.promotion import promote_and_announce
from models.blend import BlendWeights
from models.ensemble_fit import EnsembleFit, config_from_params, fit_ensemble
from models.ensembler import FIT_METHODS
from models.errors import AlphaPulseError, ConfigError, DataError, RegistryError
from models.registry import ModelRegistry
from models.roles import BATCH_ROLES, ENSEMBLE
from models.served_ensemble import ensemble_document
from models.trainer import TrainingConfig
from stream.history import read_outcome_history
from stream.registry import open_registry
from stream.runtime import Runtime
from stream.settings import Settings

__all__ = ["describe", "refit_after_promotion", "run_ensemble_fit"]

log = logging.getLogger(__name__)

_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
"""MLflow's error codes for a model or alias that does not exist (yet)."""


def _summary(fit: EnsembleFit, method: str, version: str, promoted: bool) -> dict[str, Any]:
    """The job's JSON-ready summary; keys starting with ``_`` are for people, not ``--json``."""
    ens, held = fit.held_out.ensemble, fit.held_out
    out: dict[str, Any] = {"version": int(version), "method": method, "promoted": promoted}
    if ens.coef is not None:
        out["coef"] = dict(zip(ens.names, ens.coef, strict=True))
        out["intercept"] = ens.intercept
    else:
        assert ens.weights is not None
        out["weights"] = dict(zip(ens.names, ens.weights, strict=True))
    assert held.fixed.weights is not None
    out.update(
        log_loss=held.log_loss,
        fixed_log_loss=held.fixed_log_loss,
        fixed_weights=dict(zip(held.fixed.names, held.fixed.weights, strict=True)),
        n_fit=held.n_fit,
        n_holdout=held.n_holdout,
    )
    return out


def describe(summary: dict[str, Any]) -> str:
    """One line saying what the job registered and how it compared with the fixed blend."""
    state = "champion" if summary["promoted"] else "not promoted"
    return (
        f"ensemble version {summary['version']} ({summary['method']}): {state}; held-out log loss "
        f"{summary['log_loss']:.5f} vs fixed blend {summary['fixed_log_loss']:.5f}"
    )


def _champion(registry: ModelRegistry, role: str) -> str | None:
    """The champion version of ``role``; None when it has none, an error when MLflow fails."""
    try:
        return registry.resolve_alias(role)
    except RegistryError as exc:
        if getattr(exc.__cause__, "error_code", "") in _NOT_FOUND:
            return None
        raise


def run_ensemble_fit(
    settings: Settings,
    method: str | None = None,
    move_alias: bool = True,
    since_ms: int | None = None,
) -> dict[str, Any]:
    """Fit, register and (when it beats the fixed blend) promote an ensemble; returns a summary.

    ``method`` is ``weights`` or ``stacking``; default ``ALPHAPULSE_ENSEMBLE_METHOD``. The summary
    holds ``version``, ``method``, ``promoted``, ``weights`` (or ``coef`` and ``intercept``),
    ``log_loss`` and ``fixed_log_loss`` on the held-out rows, ``fixed_weights``, ``fitted_on``
    (the component versions), ``n_fit`` and ``n_holdout``. With ``move_alias`` false,
    ``promoted`` is the decision and the caller moves the alias. ``since_ms`` leaves out the
    outcomes before that event time (a refit after drift retraining judges the new regime only).
    """
    method = method or settings.ensemble_method
    if method not in FIT_METHODS:
        raise ConfigError(f"unknown ensemble method {method!r}; expected one of {FIT_METHODS}")
    registry = open_registry(settings)
    configs: dict[str, TrainingConfig] = {}
    names: dict[str, list[str]] = {}
    fitted_on: dict[str, str] = {}
    for role in BATCH_ROLES:
        version = _champion(registry, role)
        if version is None:
            continue
        info = registry.get_version(role, version)
        model = registry.load_version(role, version)
        logged_cfg = registry.run_params(info.run_id) if info.run_id else {}
        configs[role] = config_from_params(logged_cfg, model.model_type, role)
        names[role] = list(model.feature_names)
        fitted_on[role] = info.version
    if not configs:
        raise DataError(
            "no batch model has a champion to blend with the online model; "
            "train weekly_quick or monthly_full first"
        )
    frame = read_outcome_history(settings, since=since_ms).tail(settings.ensemble_history)
    fixed = BlendWeights.from_split(batch=settings.blend_batch_weight)
    fit = fit_ensemble(frame, configs, names, method, fixed, online_config=settings.online_config())
    held = fit.held_out
    promote = held.beats_fixed
    verdict = "beats" if promote else "does not beat"
    reason = (
        f"{verdict} the fixed blend: held-out log loss {held.log_loss:.5f} vs "
        f"{held.fixed_log_loss:.5f} on {held.n_holdout} rows"
    )
    logged = held.ensemble.to_log_dict(fit.report)
    params: dict[str, Any] = {
        **logged["params"],
        "fit_method": method,
        "blend_batch_weight": settings.blend_batch_weight,
        "n_rows": fit.n_rows,
        "n_fit": held.n_fit,
        "n_holdout": held.n_holdout,
        **{f"fitted_on.{role}": v for role, v in fitted_on.items()},
    }
    metrics = {f"holdout_{k}": v for k, v in logged["metrics"].items()}
    registration = registry.register_document(
        ENSEMBLE,
        ensemble_document(held.ensemble, fitted_on),
        params=params,
        metrics=metrics,
        tags={"alphapulse.fitted_on": json.dumps(fitted_on), "alphapulse.method": method},
        promote=promote and move_alias,
        reason=reason,
    )
    summary = _summary(fit, method, registration.version, promote)
    summary["fitted_on"] = {role: int(v) for role, v in fitted_on.items()}
    summary["_reason"] = reason
    return summary


async def refit_after_promotion(
    rt: Runtime, cause: str, since_ms: int | None = None
) -> dict[str, Any] | None:
    """Refit the ensemble in a fresh child process; returns its summary, None if it failed.

    ``since_ms``: fit on the outcomes from that event time on (after drift retraining, the alarm's).

    Off when ``ALPHAPULSE_ENSEMBLE_REFIT`` is false. A failure is logged and the worker goes on.
    """
    settings = rt.settings
    if not settings.ensemble_refit:
        return None
    # spawn: the child starts afresh, with no copy of the worker's state or event loop
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        loop = asyncio.get_running_loop()
        summary: dict[str, Any] = await loop.run_in_executor(
            pool, run_ensemble_fit, settings, None, False, since_ms
        )
    except AlphaPulseError as exc:  # the job's own errors (too little history...): one line
        log.warning("refitting the ensemble after %s failed: %s", cause, exc)
        return None
    except BrokenProcessPool:  # e.g. the worker is stopping and its process group went down
        log.warning("refitting the ensemble after %s: its process ended abruptly", cause)
        return None
    except Exception:  # a failed side job must not stop the worker's agents
        log.exception("refitting the ensemble after %s failed", cause)
        return None
    finally:
        pool.shutdown(wait=False)
    log.info("refitted the ensemble after %s: %s", cause, describe(summary))
    if summary["promoted"]:
        detail = f"refit after {cause}: {summary['_reason']}"
        summary["promoted"] = await promote_and_announce(rt, ENSEMBLE, summary["version"], detail)
    return summary
