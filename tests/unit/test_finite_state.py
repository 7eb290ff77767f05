"""No outcome may make an online model's state non-finite (issue 25, part 5).

An update that would is refused with :class:`models.online.NonFiniteUpdate`, and the model then
answers exactly as before it: same predictions, same count, same snapshot.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.keyed import KeyedOnline
from models.online import CLASSIFIERS, LINEAR, NonFiniteUpdate, OnlineConfig, OnlineLearner

CONFIGS = [OnlineConfig(classifier=c) for c in CLASSIFIERS] + [
    OnlineConfig(decay=True),
    OnlineConfig(l2=0.01, drift_detector="page_hinkley"),
]
PROBES = [{"x": 0.5, "y": -1.0}, {"x": -2.0}, {"y": 3.0}, {}]


def _ids(cfg: OnlineConfig) -> str:
    return f"{cfg.classifier}{'-decay' if cfg.decay else ''}{'-l2' if cfg.l2 else ''}"


def _state_numbers(lr: OnlineLearner) -> list[float]:
    """Every number a linear pipeline keeps (scaler statistics, weights, intercept)."""
    scaler, clf = lr.pipeline[0], lr.pipeline[-1]
    out = [*scaler.means.values(), *scaler.vars.values()]
    if lr.config.classifier in LINEAR:
        out += [*clf.weights.values(), clf.intercept]
    return out


def _warm(cfg: OnlineConfig, n: int = 60) -> KeyedOnline:
    rng = random.Random(1)
    k = KeyedOnline(cfg)
    for i in range(n):
        x, y = rng.gauss(0, 1), rng.gauss(0, 1)
        k.learn(f"w{i}", "K", {"x": x, "y": y}, x + y > 0, rng.choice([None, 1.5, -1.0]))
    return k


@pytest.mark.parametrize("cfg", CONFIGS, ids=_ids)
def test_outcomes_at_1e300_and_minus_1e300_are_refused_and_change_nothing(
    cfg: OnlineConfig,
) -> None:
    k = _warm(cfg)
    lr = k.learners["K"]
    before = [k.predict("K", p) for p in PROBES]
    snap = lr.snapshot()
    for oid, v in (("big", 1e300), ("small", -1e300)):
        with pytest.raises(NonFiniteUpdate) as info:
            k.learn(oid, "K", {"x": v, "y": 0.0}, True, None)
        assert info.value.feature == "x"
        assert oid not in k.seen
    after = [k.predict("K", p) for p in PROBES]
    assert after == before
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p, _ in after)
    assert k.n_learned("K") == 60 and lr.snapshot() == snap
    k.learn("next", "K", {"x": 0.1, "y": 0.2}, True, None)  # and it goes on learning
    assert k.n_learned("K") == 61


def test_a_refused_first_outcome_leaves_no_model_behind() -> None:
    k = KeyedOnline(OnlineConfig(classifier="hoeffding_tree"))
    with pytest.raises(NonFiniteUpdate):
        k.learn("o1", "K", {"x": 1e300}, True, None)
    assert k.learners == {} and k.predict("K", {"x": 1.0}) == (0.5, 0)


_extreme = st.sampled_from([1e300, -1e300, 1.7976931348623157e308, -1e200, 1e155, 5e-324, 0.0])
_values = st.floats(allow_nan=True, allow_infinity=True) | _extreme | st.floats(-3, 3)
_rows = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(["x", "y", "z"]), _values, max_size=3), st.booleans()
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(rows=_rows, cfg=st.sampled_from(CONFIGS))
def test_no_sequence_of_inputs_makes_the_state_non_finite(
    rows: list[tuple[dict[str, float], bool]], cfg: OnlineConfig
) -> None:
    lr = OnlineLearner(cfg)
    for x, y in rows:
        before = [lr.win_probability(p) for p in PROBES]
        n = lr.n_learned
        try:
            lr.learn_one(x, y)
        except NonFiniteUpdate:
            assert [lr.win_probability(p) for p in PROBES] == before
            assert lr.n_learned == n
        else:
            assert lr.n_learned == n + 1
        numbers: list[Any] = _state_numbers(lr)
        assert all(math.isfinite(v) for v in numbers), numbers
        probs = [lr.win_probability(p) for p in [*PROBES, x]]
        assert all(0.0 <= p <= 1.0 for p in probs), probs
