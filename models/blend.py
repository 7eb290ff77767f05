"""Blend component probabilities into the final score of a prediction.

The final score is the weighted mean of the probabilities of the components present. The roles
of the wire contract (:data:`models.roles.ROLES`) are ``monthly_full`` and ``weekly_quick``
(batch models) and ``online``; by default the batch models share 0.8 equally and the online model
has 0.2. Any other role name may be configured too. A component is *configured* when its weight
is above zero; when a configured component is missing (absent, ``None`` or NaN), the weights of
the others are renormalised to sum to 1 and the result is flagged ``degraded``. When only
zero-weight components are present, they share the score equally (so an online model alone still
answers), also flagged ``degraded``.

Examples
--------
>>> r = blend({"monthly_full": 0.7, "weekly_quick": 0.6, "online": 0.4})
>>> round(r.score, 6), r.degraded
(0.6, False)
>>> r = blend({"monthly_full": 0.7, "online": 0.4})
>>> round(r.score, 6), {k: round(v, 3) for k, v in r.weights_applied.items()}, r.degraded
(0.6, {'monthly_full': 0.667, 'online': 0.333}, True)
>>> blend({"online": 0.3}).score
0.3
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import NamedTuple

from models.errors import ConfigError, DataError

__all__ = ["BlendResult", "BlendWeights", "blend"]


class BlendWeights(Mapping[str, float]):
    """Immutable weights by role; a read-only mapping.

    Parameters
    ----------
    weights : mapping of str to float, optional
        Non-negative finite weights, at least one above zero. They need not sum to 1: they are
        normalised over the components present at each blend. Defaults to
        ``{"monthly_full": 0.4, "weekly_quick": 0.4, "online": 0.2}``.

    Examples
    --------
    >>> dict(BlendWeights())
    {'monthly_full': 0.4, 'weekly_quick': 0.4, 'online': 0.2}
    >>> dict(BlendWeights.from_split(batch=0.5, monthly_share=0.75))
    {'monthly_full': 0.375, 'weekly_quick': 0.125, 'online': 0.5}
    >>> BlendWeights({"online": -1.0})
    Traceback (most recent call last):
    ...
    models.errors.ConfigError: weight of 'online' must be finite and >= 0, got -1.0
    """

    __slots__ = ("_configured", "_weights")

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        if weights is None:
            weights = {"monthly_full": 0.4, "weekly_quick": 0.4, "online": 0.2}
        clean: dict[str, float] = {}
        for role, w in weights.items():
            if not isinstance(role, str) or not role:
                raise ConfigError(f"roles must be non-empty strings, got {role!r}")
            if not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"weight of {role!r} must be finite and >= 0, got {w!r}")
            clean[role] = float(w)
        if not any(w > 0 for w in clean.values()):
            raise ConfigError("at least one blend weight must be above zero")
        self._weights = MappingProxyType(clean)
        self._configured = tuple(r for r, w in clean.items() if w > 0)

    @classmethod
    def from_split(cls, batch: float = 0.8, monthly_share: float = 0.5) -> BlendWeights:
        """Weights from the batch share and the monthly model's part of it."""
        if not 0.0 <= batch <= 1.0 or not 0.0 <= monthly_share <= 1.0:
            raise ConfigError(
                f"batch and monthly_share must be in [0, 1], got {batch} and {monthly_share}"
            )
        # rounded so that, e.g., 1 - 0.8 gives 0.2 and not 0.19999999999999996
        return cls(
            {
                "monthly_full": round(batch * monthly_share, 12),
                "weekly_quick": round(batch * (1.0 - monthly_share), 12),
                "online": round(1.0 - batch, 12),
            }
        )

    def __getitem__(self, role: str) -> float:
        return self._weights[role]

    def __contains__(self, role: object) -> bool:
        return role in self._weights

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)

    def __repr__(self) -> str:
        return f"BlendWeights({dict(self._weights)!r})"

    def __reduce__(self) -> tuple[type[BlendWeights], tuple[dict[str, float]]]:
        return (BlendWeights, (dict(self._weights),))

    def configured(self) -> tuple[str, ...]:
        """Roles whose weight is above zero."""
        return self._configured


class BlendResult(NamedTuple):
    """The blended score, the weights applied to the components present, and the degraded flag.

    A named tuple rather than a frozen dataclass: one is made per prediction, and a named tuple
    is cheaper to make.
    """

    score: float
    weights_applied: dict[str, float]
    degraded: bool


def blend(
    components: Mapping[str, float | None],
    weights: Mapping[str, float] | None = None,
) -> BlendResult:
    """Blend component probabilities; see the module docstring for the rules.

    Parameters
    ----------
    components : mapping of str to float or None
        Probability in [0, 1] by role; ``None`` or NaN means the component did not answer.
    weights : mapping of str to float, optional
        Weights by role (a :class:`BlendWeights` or a plain mapping); default
        :class:`BlendWeights()`.

    Returns
    -------
    BlendResult

    Raises
    ------
    ConfigError
        A component has a role without a weight.
    DataError
        No component answered, or a probability is outside [0, 1].
    """
    w = weights if isinstance(weights, BlendWeights) else BlendWeights(weights)
    wd = w._weights  # the plain mapping: this runs once per prediction
    present: dict[str, float] = {}
    total: float = 0  # summed as sum() would, from 0, in the order of the components
    for role, p in components.items():
        if role not in wd:
            raise ConfigError(f"component {role!r} has no blend weight; configure one")
        if p is None or p != p:
            continue
        if not 0.0 <= p <= 1.0:
            raise DataError(f"component {role!r} probability {p!r} is outside [0, 1]")
        present[role] = float(p)
        total += wd[role]
    if not present:
        raise DataError("no component answered; at least one probability is needed")
    degraded = any(role not in present for role in w._configured) or not total > 0
    applied: dict[str, float] = {}
    score: float = 0  # summed as sum() would, in the order of the components
    for role, p in present.items():
        a = applied[role] = wd[role] / total if total > 0 else 1.0 / len(present)
        score += a * p
    return BlendResult(score=min(max(score, 0.0), 1.0), weights_applied=applied, degraded=degraded)
