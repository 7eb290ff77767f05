"""``bench.quality`` on a small stream: the records' shape and finite figures, not their values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import quality
from bench.quality import Scenario, measure, sweep
from models.online import OnlineConfig

SMALL = Scenario(
    history=300,
    before=300,
    after=600,
    seeds=(1,),
    window=100,
    retrain_at=(100, 200),
    n_estimators=10,
)
ONLINE = OnlineConfig(decay=True, decay_window=200, drift_detector="page_hinkley")


def test_measure_prints_three_finite_ratios_with_their_parts() -> None:
    records = measure(SMALL, ONLINE, 0.8, "weights")
    names = [r["name"] for r in records]
    assert names == [
        "blend_log_loss_vs_best_component",
        "recovery_samples_vs_static",
        "ensemble_log_loss_vs_fixed_blend",
    ]
    goals = {r["name"]: r["goal"] for r in records}
    assert goals == dict(zip(names, (1.0, 0.5, 1.0), strict=True))
    parts = (
        ("blend_log_loss", "best_component_log_loss"),
        ("full_samples", "static_samples"),
        ("ensemble_log_loss", "fixed_blend_log_loss"),
    )
    for rec, (num, den) in zip(records, parts, strict=True):
        assert rec["unit"] == "ratio" and isinstance(rec["met"], bool)
        assert all(math.isfinite(rec[k]) for k in ("value", num, den)), rec
    recovery = records[1]
    assert 0 < recovery["full_samples"] <= SMALL.after
    assert recovery["outcomes_after_change"] == SMALL.after


def test_sweep_rows_cover_settings_policies_and_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quality, "SWEEP_DECAY", ({"decay": False},))
    monkeypatch.setattr(quality, "SWEEP_DETECTORS", ({"drift_detector": "adwin"},))
    monkeypatch.setattr(quality, "SWEEP_BATCH_WEIGHTS", (0.4,))
    rows = sweep(SMALL, ONLINE, 0.8)
    assert [(r["policy"], r["batch_weight"]) for r in rows] == [
        ("since_alarm", 0.8),
        ("whole_window", 0.8),
        ("none", 0.8),
        ("since_alarm", 0.4),
    ]
    for row in rows:
        assert math.isfinite(row["recovery_vs_static"]) and math.isfinite(row["blend_log_loss"])


def test_recovery_counts_the_whole_remainder_when_accuracy_never_comes_back() -> None:
    hits = np.array([True] * 10 + [False] * 10)
    assert quality.recovery(hits, 10, 5, 0.02) == (10, 1.0)
