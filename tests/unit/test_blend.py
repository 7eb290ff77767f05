"""Tests of the blending rules (models/blend.py)."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.blend import BlendResult, BlendWeights, blend
from models.errors import ConfigError, DataError
from models.roles import ROLES


def test_default_weights_split_batch_and_online() -> None:
    w = BlendWeights()
    assert dict(w) == {"monthly_full": 0.4, "weekly_quick": 0.4, "online": 0.2}
    assert tuple(w) == ROLES
    assert BlendWeights.from_split() == w


def test_all_components_present_is_weighted_mean() -> None:
    r = blend({"monthly_full": 0.9, "weekly_quick": 0.5, "online": 0.1})
    assert r.score == pytest.approx(0.4 * 0.9 + 0.4 * 0.5 + 0.2 * 0.1)
    assert r.weights_applied == pytest.approx(
        {"monthly_full": 0.4, "weekly_quick": 0.4, "online": 0.2}
    )
    assert not r.degraded


@pytest.mark.parametrize("missing", [None, math.nan])
def test_missing_component_renormalises_and_degrades(missing: float | None) -> None:
    r = blend({"monthly_full": 0.9, "weekly_quick": missing, "online": 0.3})
    assert r.weights_applied == pytest.approx({"monthly_full": 2 / 3, "online": 1 / 3})
    assert r.score == pytest.approx(2 / 3 * 0.9 + 1 / 3 * 0.3)
    assert r.degraded


def test_online_alone_equals_online() -> None:
    r = blend({"online": 0.42})
    assert r == BlendResult(score=0.42, weights_applied={"online": 1.0}, degraded=True)


def test_only_zero_weight_components_share_equally() -> None:
    w = {"monthly_full": 1.0, "online": 0.0}
    r = blend({"online": 0.3}, w)
    assert r.score == 0.3 and r.weights_applied == {"online": 1.0} and r.degraded


def test_zero_weight_component_is_not_configured() -> None:
    w = {"monthly_full": 1.0, "weekly_quick": 0.0}
    r = blend({"monthly_full": 0.7}, w)
    assert r.score == 0.7 and not r.degraded


def test_custom_roles() -> None:
    r = blend({"xgb": 0.2, "lgb": 0.4}, {"xgb": 1.0, "lgb": 3.0})
    assert r.score == pytest.approx(0.35)


@pytest.mark.parametrize(
    "weights",
    [{"online": -0.1}, {"online": math.inf}, {"online": math.nan}, {"online": 0.0}, {"": 1.0}, {}],
)
def test_invalid_weights(weights: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BlendWeights(weights)


@pytest.mark.parametrize("batch, share", [(1.1, 0.5), (0.5, -0.1)])
def test_invalid_split(batch: float, share: float) -> None:
    with pytest.raises(ConfigError):
        BlendWeights.from_split(batch, share)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="no blend weight"):
        blend({"mystery": 0.5})
    with pytest.raises(DataError, match="outside"):
        blend({"online": 1.5})
    with pytest.raises(DataError, match="no component"):
        blend({"online": None})


def test_weights_are_immutable_and_pickle() -> None:
    w = BlendWeights({"online": 1.0})
    with pytest.raises(TypeError):
        w["online"] = 2.0  # type: ignore[index]
    assert pickle.loads(pickle.dumps(w)) == w
    assert w.configured() == ("online",)


probs = st.one_of(st.none(), st.floats(0.0, 1.0))


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries({r: probs for r in ROLES}),
    st.fixed_dictionaries({r: st.floats(0.0, 10.0) for r in ROLES}).filter(
        lambda w: sum(w.values()) > 0
    ),
)
def test_blend_properties(components: dict[str, float | None], weights: dict[str, float]) -> None:
    present = {r: p for r, p in components.items() if p is not None}
    if not present:
        with pytest.raises(DataError):
            blend(components, weights)
        return
    r = blend(components, weights)
    assert set(r.weights_applied) == set(present)
    assert sum(r.weights_applied.values()) == pytest.approx(1.0)
    assert min(present.values()) - 1e-12 <= r.score <= max(present.values()) + 1e-12
    configured_missing = any(weights[k] > 0 and k not in present for k in ROLES)
    assert r.degraded >= configured_missing
