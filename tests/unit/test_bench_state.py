"""``bench.state`` run tiny: the records' names, shape and finite figures, not their values."""

from __future__ import annotations

import json
import math

import pytest

from bench import state


def test_a_tiny_run_prints_the_three_goals_and_the_raw_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    state.main(["--json", "--small", "120", "--big", "400", "--rounds", "2", "--live", "50"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {r["name"]: r for r in records}
    goals = {r["name"]: r["goal"] for r in records if "goal" in r}
    assert goals == {
        "checkpoint_100_touched_ms_100k_vs_10k": 2.0,
        "restore_s_100k_keys": 10.0,
        "state_bytes_per_model_key": 4096.0,
    }
    for name in (
        "checkpoint_100_touched_ms_10k",
        "checkpoint_100_touched_ms_100k",
        "record_bytes_per_model_key",
        "live_bytes_per_model_key",
        "cold_bytes_per_model_key",
    ):
        assert by_name[name]["value"] > 0, name
    for rec in records:
        assert math.isfinite(rec["value"]) and isinstance(rec["unit"], str)
        if "goal" in rec:
            assert rec["met"] == (rec["value"] <= rec["goal"])
    assert by_name["keys"]["value"] == 400 and by_name["max_live_keys"]["value"] == 50
    # A key kept as its record takes less memory than one kept as River's objects.
    cold, live = by_name["cold_bytes_per_model_key"], by_name["live_bytes_per_model_key"]
    assert cold["value"] < live["value"]
