"""River's own conformance suite (``river.checks``) run on the online learner, one test per check.

Every classifier and drift detector of :class:`models.online.OnlineConfig` is checked, so that
the learner stays a River ``base.Classifier`` whatever its configuration.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from river import checks

from models.online import CLASSIFIERS, DRIFT_DETECTORS, OnlineConfig, OnlineLearner

CONFIGS = {
    **{c: OnlineConfig(classifier=c) for c in CLASSIFIERS},
    **{f"detector={d}": OnlineConfig(drift_detector=d) for d in DRIFT_DETECTORS if d != "adwin"},
    "decay": OnlineConfig(decay=True),
}


def _cases() -> Iterator[Any]:
    # River binds each dataset check to a one-shot stream, so every check object runs once.
    for name, config in CONFIGS.items():
        model = OnlineLearner(config)
        skips = model._unit_test_skips()
        seen: Counter[str] = Counter()
        for check in checks.yield_checks(model):
            if check.__name__ in skips:
                continue
            label = check.__name__
            if "dataset" in getattr(check, "keywords", {}):
                label += f"[data{seen[check.__name__]}]"
                seen[check.__name__] += 1
            yield pytest.param(model, check, id=f"{name}-{label}")


@pytest.mark.parametrize(("model", "check"), list(_cases()))
def test_river_check(model: OnlineLearner, check: Callable[[OnlineLearner], None]) -> None:
    check(model.clone())


def test_check_estimator_passes_on_the_default_learner() -> None:
    checks.check_estimator(OnlineLearner())
