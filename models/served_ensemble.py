"""A fitted ensemble as it serves: plain data, checked when read, blending one request at a time.

The registry keeps a fitted :class:`models.ensembler.Ensemble` as a JSON document
(:func:`ensemble_document`): its method, component names, weights or the stacker's coefficients
and intercept, and the component versions it was fitted on. Numbers only, never code, so that
loading a document runs nothing it holds. :meth:`ServedEnsemble.from_document` reads one back and
refuses it (:class:`models.errors.ModelError`) unless its names are roles of the wire contract,
its numbers are finite, its weights sum to 1 and it answers a probability in [0, 1] on a probe.

:meth:`ServedEnsemble.blend` combines the components of one request. It answers only when the
components present are exactly those the ensemble was fitted on; otherwise it returns None and the
caller applies the fixed blend (:func:`models.blend.blend`). The weights it reports sum to 1: a
weighted ensemble's own weights, and for a stacked one each component's share of the logit
(``|coef_i * logit(p_i)|`` over their sum), what its coefficients amount to for that request.

Examples
--------
>>> from models.ensembler import Ensemble
>>> doc = ensemble_document(Ensemble.fixed({"weekly_quick": 3.0, "online": 1.0}),
...                         {"weekly_quick": "4"})
>>> served = ServedEnsemble.from_document(doc, version=2)
>>> r = served.blend({"weekly_quick": 0.8, "online": 0.4})
>>> round(r.score, 6), r.weights_applied, r.degraded
(0.7, {'weekly_quick': 0.75, 'online': 0.25}, False)
>>> served.blend({"online": 0.4}) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.blend import BlendResult
from models.ensembler import Ensemble
from models.errors import ModelError
from models.roles import ROLES

__all__ = ["DOCUMENT_FORMAT", "ServedEnsemble", "ensemble_document"]

DOCUMENT_FORMAT = 1
_CLIP = 1e-6  # as models.ensembler clips before taking logits, so both give the same score
_METHODS = ("fixed", "optimised", "stacked")


def ensemble_document(ensemble: Ensemble, fitted_on: Mapping[str, str | int]) -> dict[str, Any]:
    """The JSON-ready document the registry keeps for ``ensemble``.

    ``fitted_on`` holds the registry version of each batch component it was fitted on.

    >>> ensemble_document(Ensemble.fixed({"online": 1.0}), {})["weights"]
    [1.0]
    """
    return {
        "format": DOCUMENT_FORMAT,
        "method": ensemble.method,
        "names": list(ensemble.names),
        "weights": None if ensemble.weights is None else list(ensemble.weights),
        "coef": None if ensemble.coef is None else list(ensemble.coef),
        "intercept": ensemble.intercept,
        "C": ensemble.C,
        "fitted_on": {str(k): str(v) for k, v in fitted_on.items()},
    }


def _numbers(doc: Mapping[str, Any], key: str, n: int) -> tuple[float, ...] | None:
    raw = doc.get(key)
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != n:
        raise ModelError(f"ensemble {key} must be a list of {n} numbers, got {raw!r}")
    out = []
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ModelError(f"ensemble {key} must be finite numbers, got {raw!r}")
        out.append(float(v))
    return tuple(out)


def _read(doc: Mapping[str, Any]) -> Ensemble:
    if doc.get("format") != DOCUMENT_FORMAT:
        raise ModelError(f"unknown ensemble document format {doc.get('format')!r}")
    method = doc.get("method")
    if method not in _METHODS:
        raise ModelError(f"unknown ensemble method {method!r}; expected one of {_METHODS}")
    names = doc.get("names")
    if (
        not isinstance(names, list)
        or not names
        or len(set(map(str, names))) != len(names)
        or any(not isinstance(n, str) or n not in ROLES for n in names)
    ):
        raise ModelError(f"ensemble names must be distinct roles among {ROLES}, got {names!r}")
    weights = _numbers(doc, "weights", len(names))
    coef = _numbers(doc, "coef", len(names))
    if method == "stacked":
        intercept = doc.get("intercept")
        if coef is None or not isinstance(intercept, int | float) or not math.isfinite(intercept):
            raise ModelError("a stacked ensemble needs finite coef and intercept")
        return Ensemble(method, tuple(names), coef=coef, intercept=float(intercept))
    if weights is None or min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
        raise ModelError(f"ensemble weights must be >= 0 and sum to 1, got {weights!r}")
    return Ensemble(method, tuple(names), weights=weights)


@dataclass(frozen=True, eq=False)
class ServedEnsemble:
    """A validated ensemble, its registry version and the component versions it was fitted on.

    Build it with :meth:`from_document`.
    """

    version: int
    ensemble: Ensemble
    fitted_on: dict[str, str]
    # Derived once, as plain tuples: blend runs once per request.
    _names: frozenset[str] = field(init=False, repr=False)
    _coef: tuple[float, ...] = field(init=False, repr=False)
    _intercept: float = field(init=False, repr=False)
    _stacked: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ens = self.ensemble
        stacked = ens.method == "stacked"
        coef = ens.coef if stacked else ens.weights
        if coef is None or len(coef) != len(ens.names):
            raise ModelError(f"ensemble {ens.method!r} has no coefficient per component")
        object.__setattr__(self, "_names", frozenset(ens.names))
        object.__setattr__(self, "_coef", tuple(coef))
        object.__setattr__(self, "_intercept", float(ens.intercept or 0.0))
        object.__setattr__(self, "_stacked", stacked)

    @classmethod
    def from_document(cls, doc: Any, version: int | str) -> ServedEnsemble:
        """Read and check a document from :func:`ensemble_document` (see the module text).

        >>> ServedEnsemble.from_document({"format": 1, "method": "optimised", "names": ["x"],
        ...                               "weights": [1.0]}, 3)
        Traceback (most recent call last):
        ...
        models.errors.ModelError: ensemble names must be distinct roles among ('monthly_full', \
'weekly_quick', 'online'), got ['x']
        """
        if not isinstance(doc, Mapping):
            raise ModelError(
                f"an ensemble document must be a JSON object, not {type(doc).__name__}"
            )
        if not str(version).isdigit():
            raise ModelError(f"ensemble version must be a number, got {version!r}")
        fitted_on = doc.get("fitted_on") or {}
        if not isinstance(fitted_on, Mapping):
            raise ModelError("ensemble fitted_on must be an object")
        served = cls(int(version), _read(doc), {str(k): str(v) for k, v in fitted_on.items()})
        served._probe()
        return served

    def _probe(self, rows: int = 64) -> None:
        """Refuse the ensemble unless it answers a probability in [0, 1] on probe rows."""
        names = self.ensemble.names
        probe = np.random.default_rng(0).uniform(0.0, 1.0, (rows, len(names)))
        probe[0], probe[1] = 0.0, 1.0  # the edges as well
        for row in probe.tolist():
            r = self.blend(dict(zip(names, row, strict=True)))
            if r is None or not 0.0 <= r.score <= 1.0:
                raise ModelError(f"ensemble gives {r} on a probe row, not a probability")
            if not all(0.0 <= w <= 1.0 for w in r.weights_applied.values()):
                raise ModelError(f"ensemble weights outside [0, 1] on a probe row: {r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The components it combines, in order."""
        return self.ensemble.names

    def blend(self, components: Mapping[str, float | None]) -> BlendResult | None:
        """The ensemble's score of one request, or None unless exactly its components answered.

        ``components`` holds probabilities by role, as :func:`models.blend.blend` takes them.
        """
        names = self.ensemble.names
        if len(components) != len(names) or components.keys() != self._names:
            return None
        ps: list[float] = []
        for n in names:
            p = components[n]
            if p is None or not 0.0 <= p <= 1.0:  # also false for NaN
                return None
            ps.append(float(p))
        coef = self._coef
        if not self._stacked:
            score = sum([w * p for w, p in zip(coef, ps, strict=True)])
            return BlendResult(
                min(max(score, 0.0), 1.0), dict(zip(names, coef, strict=True)), False
            )
        terms = []
        for c, p in zip(coef, ps, strict=True):
            q = min(max(p, _CLIP), 1.0 - _CLIP)
            terms.append(c * (math.log(q) - math.log1p(-q)))
        z = self._intercept + sum(terms)
        score = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        shares = [abs(t) for t in terms]
        if sum(shares) <= 0.0:  # every term is 0: report the coefficients' sizes instead
            shares = [abs(c) for c in coef] if any(coef) else [1.0] * len(coef)
        total = sum(shares)
        return BlendResult(score, {n: s / total for n, s in zip(names, shares, strict=True)}, False)
