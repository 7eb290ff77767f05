"""Checks of an outcome before the online model learns it: clean features, a valid label and
weight, and no update that would make the model's state non-finite.

No outcome may make a model's state non-finite (two outcomes with a feature at 1e300 and -1e300
would overflow the scaler's variance, and the model would answer 0.5 for good). ``learn_one``
refuses such an outcome with :class:`NonFiniteUpdate` and leaves the model as it was. Copying
the model before each update would double the cost of learning, so the check is in two steps:

- A cheap proof on the inputs. The scaler's statistics can only overflow through
  ``(x - mean) ** 2``; while every feature and every scaler mean is within
  :data:`FEATURE_SAFE_ABS` (1e150), that square stays below 4e300. The scaler learns a row
  before it scales it, so a scaled value is at most ``sqrt(n)`` (the row is one of the ``n``
  the variance is taken over), and River clips the loss gradient: the weights stay finite too.
  The means are averages of the features, so they stay within the bound as long as the
  features do.
- Otherwise (a feature beyond the bound, or a mean already beyond it) the update runs with a
  copy of the pipeline kept aside, the touched statistics, weights and intercept are checked,
  and the copy is put back if any is not finite.

The Hoeffding trees cannot be rolled back cheaply; they refuse, conservatively, any feature
beyond :data:`TREE_FEATURE_MAX_ABS` (1e100), under which their statistics cannot overflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.errors import DataError

__all__ = [
    "FEATURE_SAFE_ABS",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "TREE_FEATURE_MAX_ABS",
    "NonFiniteUpdate",
    "check_tree_input",
    "clean_features",
    "label_of",
]

MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6
"""Sample weights outside these bounds (other than 0) make River's trees divide by ~0."""
FEATURE_SAFE_ABS = 1e150
"""Features and scaler means within this magnitude provably keep a linear model finite."""
TREE_FEATURE_MAX_ABS = 1e100
"""Largest feature magnitude a Hoeffding tree learns (its statistics cannot overflow under it)."""


class NonFiniteUpdate(DataError):
    """Learning this outcome would make the model's state non-finite; the model is unchanged.

    ``feature`` names the input that caused it (or ``"intercept"``).
    """

    def __init__(self, feature: str, value: float, what: str) -> None:
        super().__init__(
            f"feature '{feature[:64]}' = {value:g} would make the online model's {what} "
            "non-finite; the outcome was not learned"
        )
        self.feature = feature


def clean_features(x: Mapping[Any, Any]) -> dict[str, float]:
    """A new dict of ``x``'s finite numeric values, sorted by name; None and NaN are dropped.

    >>> clean_features({"b": 2, "a": None, "c": float("nan"), "d": 1.5})
    {'b': 2.0, 'd': 1.5}
    """
    out: dict[str, float] = {}
    try:
        for k in sorted(x):
            v = x[k]
            if v is None:
                continue
            f = float(v)
            if math.isfinite(f):
                out[k] = f
    except (TypeError, ValueError) as exc:
        raise DataError(f"features must map names to numbers or None: {exc}") from exc
    return out


def check_tree_input(xc: dict[str, float]) -> None:
    """Raise :class:`NonFiniteUpdate` for a feature a Hoeffding tree must not learn."""
    if xc and max(max(xc.values()), -min(xc.values())) > TREE_FEATURE_MAX_ABS:
        k, v = max(xc.items(), key=lambda kv: abs(kv[1]))
        raise NonFiniteUpdate(k, v, "tree statistics")


def label_of(y: object) -> bool:
    """``y`` as a bool: a bool or 0/1, else :class:`DataError`.

    >>> label_of(1), label_of(False)
    (True, False)
    """
    if isinstance(y, bool | np.bool_):
        return bool(y)
    if isinstance(y, int | np.integer) and y in (0, 1):
        return bool(y)
    raise DataError(f"label must be a bool or 0/1, got {y!r}")
