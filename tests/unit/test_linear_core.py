"""The compiled logistic regression (:mod:`models._linear_core`) against River's own objects.

Each test runs the same outcomes through a learner on the compiled step and one on River's
pipeline (``models.online.COMPILED`` off while it is made) and requires the same numbers, bit for
bit: every prediction, every refusal, the state in River's dict orders and the snapshot bytes.
"""

from __future__ import annotations

import copy
import math
import pickle
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import models.online as online
from models.online import NonFiniteUpdate, OnlineConfig, OnlineLearner, clean_features

CONFIGS = {
    "default": OnlineConfig(),
    "l2": OnlineConfig(l2=0.01, drift_detector="page_hinkley"),
    "decay": OnlineConfig(decay=True, learning_rate=0.05),
    "no-detector": OnlineConfig(drift_detector="none", learning_rate=0.2),
}
NAMES = [f"f{i}" for i in range(12)]


def _pair(
    cfg: OnlineConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[OnlineLearner, OnlineLearner]:
    compiled = OnlineLearner(cfg)
    with monkeypatch.context() as m:
        m.setattr(online, "COMPILED", False)
        river = OnlineLearner(cfg)
    assert compiled._core is not None and river._core is None
    return compiled, river


def _row(rng: random.Random, step: int) -> dict[str, Any]:
    """Features that come and go: a growing set of names in a shuffled order, some None, NaN or
    infinite, scales from 1e-3 to 1e6."""
    names = rng.sample(NAMES[: 3 + min(9, step // 40)], rng.randint(1, 3 + min(9, step // 40)))
    x: dict[str, Any] = {}
    for name in names:
        r = rng.random()
        if r < 0.05:
            x[name] = None
        elif r < 0.07:
            x[name] = rng.choice([math.nan, math.inf, -math.inf])
        else:
            x[name] = rng.gauss(0, 1) * 10 ** rng.randint(-3, 6)
    return x


def _same(a: OnlineLearner, b: OnlineLearner) -> None:
    assert a.state() == b.state()  # == on floats and on lists: bit for bit, in order
    assert a.snapshot() == b.snapshot()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_predictions_learning_and_state_equal_rivers_bit_for_bit(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled, river = _pair(CONFIGS[name], monkeypatch)
    rng = random.Random(name)
    for step in range(600):
        x = _row(rng, step)
        probe = _row(rng, step + 200)  # predicting unseen names adds River's 0.0 variances
        assert compiled.win_probability(probe) == river.win_probability(probe)
        w = rng.choice([1.0, 0.0, 0.5, 3.0, 1e-6])
        y = rng.random() < 0.4
        compiled.learn_one(x, y, w)
        river.learn_one(x, y, w)
        assert compiled.last_prediction == river.last_prediction
        assert compiled.drift_detected == river.drift_detected
        det = river.detector  # ADWIN's estimation, read past its property, is the property's
        assert online._estimation(det, -1.0) == getattr(det, "estimation", -1.0)
    assert compiled.n_learned == river.n_learned == 600
    _same(compiled, river)
    assert compiled.export() == river.export()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_refused_outcomes_are_refused_alike_and_change_nothing(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled, river = _pair(CONFIGS[name], monkeypatch)
    rng = random.Random(7)
    for step in range(200):
        x, y = _row(rng, step), rng.random() < 0.5
        compiled.learn_one(x, y)
        river.learn_one(x, y)
    bad = [
        {"f0": 1e300, "f1": 1.0},
        {"f1": 1.0, "f0": -1e300},
        {"intercept": 1e200, "zz": 3e305},  # a new name, and one that shares the intercept's
        {"f2": 1.7e308},
    ]
    for x in bad * 2:  # the second time the first ones are known features
        errors = []
        for learner in (compiled, river):
            before = learner.snapshot()
            try:
                learner.learn_one(x, True, 5.0)
                errors.append(None)
            except NonFiniteUpdate as exc:
                errors.append((exc.feature, str(exc)))
                assert learner.snapshot() == before
        assert errors[0] == errors[1]
    _same(compiled, river)


def test_a_snapshot_restores_into_either_and_they_go_on_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = CONFIGS["l2"]
    compiled, river = _pair(cfg, monkeypatch)
    rng = random.Random(3)
    for step in range(150):
        x, y = _row(rng, step), rng.random() < 0.5
        compiled.learn_one(x, y)
        river.learn_one(x, y)
    a = OnlineLearner.restore(river.snapshot())  # River's numbers into the compiled step
    with monkeypatch.context() as m:
        m.setattr(online, "COMPILED", False)
        b = OnlineLearner.restore(compiled.snapshot())
    assert a._core is not None and b._core is None
    for step in range(150, 300):
        x, y = _row(rng, step), rng.random() < 0.5
        for learner in (compiled, river, a, b):
            learner.learn_one(x, y)
    for other in (river, a, b):
        _same(compiled, other)


def test_a_state_only_rivers_objects_hold_is_left_to_them() -> None:
    learner = OnlineLearner()
    learner.learn_one({"a": 1.0, "b": 2.0}, True)
    state = learner.state()
    assert state.linear is not None
    state.linear.weights.reverse()  # a weights order River's learning cannot give
    restored = OnlineLearner.from_state(state)
    assert restored._core is None
    assert restored.state() == state


def test_pickle_and_deepcopy_keep_the_compiled_state() -> None:
    learner = OnlineLearner(CONFIGS["decay"])
    rng = random.Random(5)
    for step in range(100):
        learner.learn_one(_row(rng, step), rng.random() < 0.5)
    for make in (lambda lr: pickle.loads(pickle.dumps(lr)), copy.deepcopy):
        clone = make(learner)
        assert clone._core is not None and clone._core is not learner._core
        _same(clone, learner)
        x = _row(rng, 100)
        clone.learn_one(x, True)
        learner.learn_one(x, True)
        _same(clone, learner)


def test_the_pipeline_is_a_copy_of_the_compiled_numbers() -> None:
    learner = OnlineLearner()
    learner.learn_one({"a": 1.0, "b": -2.0}, True)
    learner.learn_one({"a": 3.0}, False)
    pipeline = learner.pipeline
    assert dict(pipeline[0].counts) == {"a": 2, "b": 1}
    probs = pipeline.predict_proba_one({"a": 2.0, "b": 0.5})
    assert learner.win_probability({"a": 2.0, "b": 0.5}) == probs[True]
    pipeline[-1].intercept = 100.0
    assert learner.win_probability({"a": 2.0, "b": 0.5}) == probs[True]


values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
    st.booleans(),
    st.text(max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), values, max_size=8))
def test_clean_matches_clean_features_or_leaves_it_to_python(x: dict[str, Any]) -> None:
    fast = online._linear_core.clean(x)
    plain = all(v is None or type(v) is float for v in x.values())
    if not plain:
        assert fast is None
        return
    expected = clean_features(x)
    assert fast == expected and list(fast) == list(expected)


def test_the_compiled_step_is_built() -> None:
    # CI has a C compiler: a missing module would silently cost every worker its speed.
    assert online.COMPILED
