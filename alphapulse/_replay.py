"""Offline replay: history through the predictor's and the learner's model code, in time order.

Each row is handled as the worker handles its messages: a row with features is a signal request,
scored like the predictor does (batch components from
:meth:`models.scoring.BatchScorer.components_many`, the online model of its key from a
:class:`models.keyed.KeyedOnline`, blended by :func:`models.blend.blend`); a row with a label is
an outcome, joined to its signal's features and prediction and learned like the learner does
(``KeyedOnline.learn``, deduplicated by outcome id).
A row with both is a signal followed at once by its outcome. Rows are processed in ``ts`` order
(file order when a row has no ``ts``), so every prediction only uses outcomes that came before it:
a prequential evaluation.

>>> rows = [
...     {"signal_id": "a", "symbol": "X", "model_key": "X", "features": {"f": 1.0},
...      "label": True, "outcome_id": "a", "realized_rr": 2.0, "ts": 1},
...     {"signal_id": "b", "symbol": "X", "model_key": "X", "features": {"f": -1.0},
...      "label": False, "outcome_id": "b", "realized_rr": -1.0, "ts": 2},
... ]
>>> res = replay(rows)
>>> [round(s.score, 3) for s in res.steps], res.n_outcomes, res.keyed.n_learned("X")
([0.5, 0.504], 2, 2)

``on_outcome`` sees every learned outcome and may put other batch models and a fitted ensemble
into service for the signals after it (a :class:`Swap`), as the reloader swaps in a retrained
model (``bench.quality`` retrains on drift this way):

>>> seen = []
>>> res = replay(rows, on_outcome=lambda step, result: seen.append(step.index))
>>> seen
[0, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.blend import BlendWeights, blend
from models.keyed import KeyedOnline
from models.online import OnlineConfig
from models.roles import ONLINE
from models.scoring import BatchScorer
from models.served_ensemble import ServedEnsemble

__all__ = ["OutcomeHook", "ReplayResult", "ReplayStep", "Swap", "replay"]


@dataclass(frozen=True)
class ReplayStep:
    """One learned outcome: what was predicted for its signal, and what happened."""

    index: int
    ts: int | None
    model_key: str
    label: bool
    realized_rr: float | None
    score: float
    components: dict[str, float]
    drift: bool
    regime: int | None


@dataclass
class ReplayResult:
    """Every learned outcome in order, the final online state and the counts."""

    steps: list[ReplayStep]
    keyed: KeyedOnline
    batch_models: dict[str, Any] = field(default_factory=dict)
    """Batch models by role, scored beside the online model when given."""
    n_rows: int = 0
    n_signals: int = 0
    unjoinable: int = 0
    duplicates: int = 0

    @property
    def n_outcomes(self) -> int:
        """Outcomes learned, one per step."""
        return len(self.steps)

    @property
    def drift_steps(self) -> list[int]:
        """Indices of the steps at which an online model signalled drift."""
        return [s.index for s in self.steps if s.drift]

    @property
    def regime_changes(self) -> list[int]:
        """Indices of the steps where the (known, synthetic) regime changed."""
        out, last = [], None
        for s in self.steps:
            if s.regime is not None and last is not None and s.regime != last:
                out.append(s.index)
            last = s.regime if s.regime is not None else last
        return out


@dataclass(frozen=True)
class Swap:
    """What serves the signals after an outcome: batch models by role and a fitted ensemble.

    As in the predictor, the ensemble blends when exactly its components answered; otherwise the
    fixed weights do.
    """

    batch_models: Mapping[str, Any]
    ensemble: ServedEnsemble | None = None


OutcomeHook = Callable[[ReplayStep, ReplayResult], Swap | None]
"""Called after each learned outcome; what it returns serves the signals that follow."""


def _ordered(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if all(r.get("ts") is not None for r in rows):
        return sorted(rows, key=lambda r: r["ts"])  # stable: ties keep file order
    return list(rows)


def replay(
    rows: Sequence[Mapping[str, Any]],
    batch_models: Mapping[str, Any] | None = None,
    weights: Mapping[str, float] | None = None,
    online_config: OnlineConfig | None = None,
    on_outcome: OutcomeHook | None = None,
) -> ReplayResult:
    """Replay ``rows`` (see :mod:`alphapulse._rows`) and return what happened at each outcome.

    Parameters
    ----------
    rows
        Normalised rows, in any order.
    batch_models
        Batch models by role (e.g. ``monthly_full``), scored like the predictor scores them.
    weights
        Blend weights; default :class:`models.blend.BlendWeights()`, as in the predictor.
    online_config
        Configuration of the online models; default ``OnlineConfig()``.
    on_outcome
        Called with each step and the result so far, after the outcome is learned; when it
        returns a :class:`Swap`, that serves from the next signal on.
    """
    w = weights if isinstance(weights, BlendWeights) else BlendWeights(weights)
    scorer = BatchScorer(dict(batch_models), weights=w) if batch_models else None
    keyed = KeyedOnline(online_config)
    ensemble: ServedEnsemble | None = None
    result = ReplayResult(steps=[], keyed=keyed, batch_models=dict(batch_models or {}))
    pending: dict[str, tuple[dict[str, Any], float, dict[str, float]]] = {}
    for row in _ordered(rows):
        result.n_rows += 1
        sid, key, feats = row["signal_id"], row["model_key"], row.get("features")
        if feats is not None and sid not in pending:
            batch = scorer.components_many([feats])[0] if scorer is not None else {}
            online, _ = keyed.predict(key, feats)
            components = {**batch, ONLINE: online}
            fitted = ensemble.blend(components) if ensemble is not None else None
            pending[sid] = (feats, (fitted or blend(components, w)).score, components)
            result.n_signals += 1
        if "label" not in row:
            continue
        entry = pending.pop(sid, None)
        if entry is None:
            result.unjoinable += 1
            continue
        learn_feats = feats if feats is not None else entry[0]
        res = keyed.learn(row["outcome_id"], key, learn_feats, row["label"], row.get("realized_rr"))
        if not res.learned:
            result.duplicates += 1
            continue
        result.steps.append(
            ReplayStep(
                index=len(result.steps),
                ts=row.get("ts"),
                model_key=key,
                label=bool(row["label"]),
                realized_rr=row.get("realized_rr"),
                score=entry[1],
                components=entry[2],
                drift=res.drift,
                regime=row.get("regime"),
            )
        )
        if on_outcome is not None:
            swap = on_outcome(result.steps[-1], result)
            if swap is not None:
                result.batch_models = dict(swap.batch_models)
                scorer = BatchScorer(result.batch_models, weights=w) if swap.batch_models else None
                ensemble = swap.ensemble
    return result
