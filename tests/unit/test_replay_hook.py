"""Replay's outcome hook swaps batch models in, as the reloader does in the worker."""

from __future__ import annotations

import numpy as np
import pytest

from alphapulse._replay import Swap, replay
from alphapulse._rows import trade_rows
from models.ensembler import Ensemble
from models.served_ensemble import ServedEnsemble, ensemble_document
from models.synthetic import TradeGenerator
from models.trainer import TrainingConfig, train


def test_replay_swaps_in_the_batch_models_a_hook_returns() -> None:
    gen = TradeGenerator(n_features=3, n_informative=2, seed=4)
    frame = gen.frame(200)
    names = ["f0", "f1", "f2"]
    model = train(
        TrainingConfig(model_type="lightgbm", n_estimators=5),
        frame[names].to_numpy(),
        frame["label"].to_numpy(),
        feature_names=names,
    ).model
    rows = trade_rows(gen, 20)
    res = replay(
        rows, on_outcome=lambda step, _: Swap({"monthly_full": model}) if step.index == 9 else None
    )
    assert all(set(s.components) == {"online"} for s in res.steps[:10])
    assert all("monthly_full" in s.components for s in res.steps[10:])
    expected = model.predict_proba(np.array([[rows[15]["features"][n] for n in names]]))[0]
    assert res.steps[15].components["monthly_full"] == pytest.approx(expected)
    assert res.batch_models == {"monthly_full": model}


def test_a_swapped_in_ensemble_blends_the_signals_after_it() -> None:
    gen = TradeGenerator(n_features=3, n_informative=2, seed=5)
    rows = trade_rows(gen, 12)
    # The fixed blend without batch models is the online score; a stacked one is not.
    stacked = Ensemble("stacked", ("online",), coef=(2.0,), intercept=0.5)
    served = ServedEnsemble.from_document(ensemble_document(stacked, {}), version=2)
    res = replay(rows, on_outcome=lambda step, _: Swap({}, served) if step.index == 5 else None)
    for s in res.steps[:6]:
        assert s.score == s.components["online"]
    for s in res.steps[6:]:
        fitted = served.blend(s.components)
        assert fitted is not None and s.score == fitted.score != s.components["online"]
