"""Output records serialise to plain JSON that satisfies the shipped schemas."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from stream.codec import dead_letter, encode
from stream.records import DeadLetter, HardExample, ModelEvent, Prediction

SCHEMAS = Path(__file__).parents[2] / "stream" / "schemas"


def _check(name: str, record: object) -> dict:
    doc = orjson.loads(encode(record))
    jsonschema.validate(doc, json.loads((SCHEMAS / f"{name}.json").read_text()))
    assert "__faust" not in doc
    return doc


def test_prediction_matches_schema() -> None:
    p = Prediction(
        "s",
        "X",
        "X",
        0.7,
        {"monthly_full": 0.8, "online": 0.4},
        {"monthly_full": 0.8, "online": 0.2},
        {"monthly_full": 3, "online": 12},
        True,
        1,
        2,
    )
    assert set(_check("prediction", p)) == {
        "signal_id",
        "symbol",
        "model_key",
        "score",
        "components",
        "weights",
        "model_versions",
        "degraded",
        "ts",
        "predicted_at",
    }


def test_dead_letter_matches_schema_and_cuts_the_value() -> None:
    dl = dead_letter(
        "schema",
        "missing 'signal_id'",
        topic="t",
        partition=1,
        offset=9,
        key=b"k",
        value=b"x" * 50,
        value_max_bytes=10,
    )
    doc = _check("dead_letter", dl)
    assert doc["value"] == "eHh4eHh4eHh4eA=="  # base64 of ten bytes of x
    with pytest.raises(ValueError, match="unknown dead-letter reason"):
        DeadLetter("nope", "", "t", 0, 0, None, "", 0)


def test_hard_example_and_model_event_match_schemas() -> None:
    _check("hard_example", HardExample("o", "s", "X", "X", {"a": 1.0}, True, 1.5, 0.05, 3.0, 1))
    doc = _check(
        "model_event",
        ModelEvent("loaded", 1, role="monthly_full", version=4, extra={"run_id": "abc"}),
    )
    assert doc["run_id"] == "abc"
    with pytest.raises(ValueError, match="unknown model event"):
        ModelEvent("exploded", 1, role="x")
