"""Fast scoring: many feature dicts in, each row's batch components (and a blended score) out.

:class:`BatchScorer` builds one float matrix per distinct feature order (NaN for a missing,
``None`` or non-finite value) and asks each batch model for all rows in one call:
:meth:`BatchScorer.components_many` returns, for each row, the probability of every batch model
that answered it. :meth:`BatchScorer.score_many` adds the online model's probability (asked row
by row, as River is row-wise) and blends with :func:`models.blend.blend`, the one place the
blend rules live.

A batch model answers a row only when the row carries at least ``min_feature_share`` of the
model's features (default 1.0: all of them); otherwise it is left out of that row, whose
prediction is then ``degraded`` (see the wire contract's Prediction).

Compiled path
-------------
Small batches are dominated by the libraries' per-call overhead. When a batch model exposes its
native ``booster`` (XGBoost, LightGBM or CatBoost), the scorer also lays its trees out as numpy
arrays (:mod:`models._forest`) and scores batches of up to ``fast_max_rows`` rows for all such
models at once, which also spares calling the three libraries one after another (their thread
pools contend). A model joins this path only after its compiled form has matched
``predict_proba`` to within 1e-5 on probe rows placed on and next to every split threshold (and
with NaN); otherwise it is always scored natively. Larger batches always use the native
predictors. Construction compiles and checks the models, so build a new scorer off the event
loop and swap it in.

Examples
--------
>>> import numpy as np
>>> class Mean:
...     feature_names = ["a", "b"]
...     def predict_proba(self, X):
...         return np.clip(np.nanmean(X, axis=1), 0.0, 1.0)
>>> class Prior:
...     def predict_proba_one(self, x):
...         return {True: 0.5, False: 0.5}
>>> weights = {"monthly_full": 0.8, "online": 0.2}
>>> scorer = BatchScorer({"monthly_full": Mean()}, online=Prior(), weights=weights)
>>> scorer.components_many([{"a": 0.5, "b": 1.0}, {"a": 0.5, "b": None}])
[{'monthly_full': 0.75}, {}]
>>> rows = scorer.score_many([{"a": 0.5, "b": 1.0}, {"a": 0.5, "b": None}])
>>> round(rows[0].score, 6), rows[0].degraded
(0.7, False)
>>> rows[1]
ScoredRow(score=0.5, components={'online': 0.5}, weights={'online': 1.0}, degraded=True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from models._forest import PackedForests, UnsupportedModel, compile_forests, pack, probe_rows
from models.blend import BlendWeights, blend
from models.errors import ConfigError, DataError
from models.roles import ONLINE

__all__ = ["BatchModel", "BatchScorer", "OnlineModel", "ScoredRow"]

_TOLERANCE = 1e-5


class BatchModel(Protocol):
    """A batch model: its feature order and a batch predictor returning P(win) per row.

    A ``booster`` attribute holding the native XGBoost, LightGBM or CatBoost model is optional;
    it enables the compiled path.
    """

    @property
    def feature_names(self) -> Sequence[str]: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


class OnlineModel(Protocol):
    """The online model as the scorer sees it: a River binary classifier.

    :class:`models.online.OnlineLearner` is one. ``predict_proba_one`` returns probabilities by
    label; the scorer uses ``True``'s, and an empty dict means the model did not answer.
    """

    def predict_proba_one(self, x: Mapping[str, Any]) -> Mapping[Any, float]: ...


def _win_probability(probs: Mapping[Any, float]) -> float:
    """P(True) of a River ``predict_proba_one`` answer; NaN (no answer) when it is empty.

    >>> _win_probability({True: 0.7, False: 0.3}), _win_probability({False: 1.0})
    (0.7, 0.0)
    """
    return float(probs.get(True, 0.0)) if probs else math.nan


@dataclass(frozen=True, slots=True)
class ScoredRow:
    """One row's blended score, the components that answered, the weights applied, degraded.

    ``score`` is NaN only when no component answered (impossible with an online model).
    """

    score: float
    components: dict[str, float]
    weights: dict[str, float]
    degraded: bool


def _matrix(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> np.ndarray:
    nan = math.nan
    try:
        x = np.array([[r.get(f, nan) for f in names] for r in rows], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"feature values must be numbers or null: {exc}") from exc
    x = x.reshape(len(rows), len(names))
    x[np.isinf(x)] = nan
    return x


class BatchScorer:
    """Scores batches of feature dicts with batch models plus the online model, and blends.

    Parameters
    ----------
    batch_models : mapping of str to BatchModel
        Batch models by role (e.g. ``monthly_full``, ``weekly_quick``).
    online : OnlineModel, optional
        The online model; its role is ``online``.
    weights : mapping of str to float, optional
        Blend weights by role; default :class:`models.blend.BlendWeights()`. Every model's role
        needs a weight. A configured role with no model makes every row ``degraded``.
    min_feature_share : float
        Share of its features, in (0, 1], a row must carry for a batch model to answer it.
    fast_max_rows : int
        Largest batch scored on the compiled path; 0 turns the compiled path off.
    """

    def __init__(
        self,
        batch_models: Mapping[str, BatchModel],
        online: OnlineModel | None = None,
        weights: Mapping[str, float] | None = None,
        min_feature_share: float = 1.0,
        fast_max_rows: int = 128,
    ) -> None:
        self.weights = weights if isinstance(weights, BlendWeights) else BlendWeights(weights)
        roles = [*batch_models, *([ONLINE] if online is not None else [])]
        unknown = [r for r in roles if r not in self.weights]
        if unknown:
            raise ConfigError(f"no blend weight for role(s) {unknown}; add them to the weights")
        if ONLINE in batch_models:
            raise ConfigError(f"{ONLINE!r} is the online model's role; rename that batch model")
        if not 0.0 < min_feature_share <= 1.0:
            raise ConfigError(f"min_feature_share must be in (0, 1], got {min_feature_share}")
        if fast_max_rows < 0:
            raise ConfigError(f"fast_max_rows must be >= 0, got {fast_max_rows}")
        for role, model in batch_models.items():
            if len(model.feature_names) == 0:
                raise ConfigError(f"batch model {role!r} has no feature names")
        self.batch_models = dict(batch_models)
        self.online = online
        self.min_feature_share = min_feature_share
        self.fast_max_rows = fast_max_rows
        self.roles = tuple(roles)
        self._names = {r: list(m.feature_names) for r, m in self.batch_models.items()}
        self._fast: PackedForests | None = None
        self._fast_roles: tuple[str, ...] = ()
        self._fast_cols: list[np.ndarray | None] = []
        if fast_max_rows > 0:
            self._compile()

    @property
    def fast_roles(self) -> tuple[str, ...]:
        """Roles of the batch models on the compiled path."""
        return self._fast_roles

    def _compile(self) -> None:
        forests, roles = [], []
        for role, model in self.batch_models.items():
            native = getattr(model, "booster", None)
            if native is None:
                continue
            try:
                forest = compile_forests(native, self._names[role])
            except UnsupportedModel:
                continue
            probe = probe_rows([forest], self._names[role])
            got = pack([forest]).predict(probe)[:, 0]
            want = np.asarray(model.predict_proba(probe), dtype=np.float64)
            if want.shape == got.shape and np.max(np.abs(got - want)) <= _TOLERANCE:
                forests.append(forest)
                roles.append(role)
        if forests:
            self._fast = pack(forests)
            self._fast_roles = tuple(roles)
            union = self._fast.feature_names
            for role in roles:
                cols = [union.index(f) for f in self._names[role]]
                same = cols == list(range(len(union)))
                self._fast_cols.append(None if same else np.array(cols, dtype=np.int64))

    def _answers(self, missing: np.ndarray) -> np.ndarray | None:
        """Rows a model may answer, given its columns' missing mask; None when all may."""
        if not missing.any():
            return None
        share = 1.0 - np.count_nonzero(missing, axis=1) / missing.shape[1]
        ok: np.ndarray = share >= self.min_feature_share - 1e-12
        return None if ok.all() else ok

    def _batch_components(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        fast = self._fast if len(rows) <= self.fast_max_rows else None
        if fast is not None:
            xf = _matrix(rows, fast.feature_names)
            probs = fast.predict(xf)
            missing = np.isnan(xf)
            anything_missing = missing.any()
            for k, role in enumerate(self._fast_roles):
                cols = self._fast_cols[k]
                ok = None
                if anything_missing:
                    ok = self._answers(missing if cols is None else missing[:, cols])
                out[role] = (
                    probs[:, k] if ok is None else np.where(ok, probs[:, k], np.nan)
                ).tolist()
        matrices: dict[tuple[str, ...], np.ndarray] = {}
        for role, model in self.batch_models.items():
            if role in out:
                continue
            key = tuple(self._names[role])
            if key not in matrices:
                matrices[key] = _matrix(rows, key)
            x = matrices[key]
            ok = self._answers(np.isnan(x))
            if ok is None:
                out[role] = np.asarray(model.predict_proba(x), dtype=np.float64).tolist()
                continue
            p = np.full(len(rows), np.nan)
            if ok.any():
                p[ok] = model.predict_proba(np.ascontiguousarray(x[ok]))
            out[role] = p.tolist()
        return out

    def components_many(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
        """Each row's batch components that answered it, by role, in the order of ``rows``.

        A role is absent from a row when its model did not answer it (too few of its features).

        Raises
        ------
        DataError
            A feature value is not a number or null, or a model returned a probability outside
            [0, 1].
        """
        if not rows:
            return []
        comps = self._batch_components(rows)
        roles = list(comps)
        out = []
        for values in zip(*(comps[r] for r in roles), strict=True):
            present = {r: v for r, v in zip(roles, values, strict=True) if v == v}
            for r, v in present.items():
                if not 0.0 <= v <= 1.0:
                    raise DataError(f"model {r!r} returned probability {v!r} outside [0, 1]")
            out.append(present)
        return out if roles else [{} for _ in rows]

    def score_many(self, rows: Sequence[Mapping[str, Any]]) -> list[ScoredRow]:
        """Score every row, in the order of ``rows``.

        Each row's :meth:`components_many`, plus the online model's probability, blended by
        :func:`models.blend.blend` with this scorer's weights.
        """
        out = []
        online = self.online
        for row, present in zip(rows, self.components_many(rows), strict=True):
            if online is not None:
                p = _win_probability(online.predict_proba_one(row))
                if p == p:
                    present[ONLINE] = p
            if not present:
                out.append(ScoredRow(math.nan, {}, {}, True))
                continue
            result = blend(present, self.weights)
            out.append(ScoredRow(result.score, present, result.weights_applied, result.degraded))
        return out

    def score_one(self, row: Mapping[str, Any]) -> ScoredRow:
        """Score a single row (the same rules and path as :meth:`score_many`)."""
        return self.score_many([row])[0]
