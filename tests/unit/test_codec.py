"""Decoding raw bytes into contract records: reasons, details, and agreement with the schemas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.codec import ContractViolation, Limits, decode_outcome, decode_signal, parse_ts

SCHEMAS = Path(__file__).parents[2] / "stream" / "schemas"


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _reason(raw: bytes, fn=decode_signal, limits: Limits | None = None) -> tuple[str, str]:
    with pytest.raises(ContractViolation) as info:
        fn(raw, limits) if limits else fn(raw)
    return info.value.reason, info.value.detail


@pytest.mark.parametrize(
    ("raw", "reason", "names"),
    [
        (b"{not json", "invalid_json", ""),
        (b"\xff\xfe", "invalid_json", ""),
        (b"[1]", "schema", "JSON object"),
        (b'"text"', "schema", "JSON object"),
        (b'{"symbol": "X", "features": {}}', "schema", "signal_id"),
        (b'{"signal_id": 7, "symbol": "X", "features": {}}', "schema", "signal_id"),
        (b'{"signal_id": "s", "features": {}}', "schema", "symbol"),
        (b'{"signal_id": "s", "symbol": "X"}', "schema", "features"),
        (b'{"signal_id": "s", "symbol": "X", "features": [1]}', "schema", "features"),
        (b'{"signal_id": "s", "symbol": "X", "features": {"rsi": "high"}}', "bad_feature", "rsi"),
        (b'{"signal_id": "s", "symbol": "X", "features": {"b": true}}', "bad_feature", "'b'"),
        (b'{"signal_id": "s", "symbol": "X", "features": {}, "ts": "yesterday"}', "schema", "ts"),
        (
            b'{"signal_id": "s", "symbol": "X", "features": {}, "model_key": 3}',
            "schema",
            "model_key",
        ),
    ],
)
def test_signal_reasons_name_the_field(raw: bytes, reason: str, names: str) -> None:
    got_reason, detail = _reason(raw)
    assert got_reason == reason
    assert names in detail


def test_missing_and_non_finite_features_count_as_missing() -> None:
    raw = b'{"signal_id":"s","symbol":"X","features":{"a":null,"b":NaN,"c":1e400,"d":-2}}'
    assert decode_signal(raw).features == {"d": -2.0}


def test_size_limits_are_too_large() -> None:
    limits = Limits(max_bytes=100, max_features=2)
    assert _reason(b"{" + b" " * 200 + b"}", limits=limits)[0] == "too_large"
    many = orjson.dumps({"signal_id": "s", "symbol": "X", "features": {"a": 1, "b": 2, "c": 3}})
    assert _reason(many, limits=limits) == ("too_large", "'features' has 3 entries, limit 2")


def test_model_key_defaults_to_symbol_and_unknown_fields_are_ignored() -> None:
    req = decode_signal(b'{"signal_id":"s","symbol":"X","features":{},"extra":{"y":1}}')
    assert req.model_key == "X"
    req = decode_signal(b'{"signal_id":"s","symbol":"X","features":{},"model_key":"K"}')
    assert req.model_key == "K"


def test_timestamps() -> None:
    assert parse_ts("2024-01-01T00:00:00.250+01:00") == 1704063600250
    assert parse_ts(None) is None
    with pytest.raises(ContractViolation):
        parse_ts("2024-01-01T00:00:00")  # no offset: ambiguous
    with pytest.raises(ContractViolation):
        parse_ts(True)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"signal_id":"s","symbol":"X","label":1}', "schema"),
        (b'{"outcome_id":"o","signal_id":"s","symbol":"X"}', "schema"),
        (b'{"outcome_id":"o","signal_id":"s","symbol":"X","label":2}', "schema"),
        (b'{"outcome_id":"o","signal_id":"s","symbol":"X","label":"yes"}', "schema"),
        (b'{"outcome_id":"o","signal_id":"s","symbol":"X","label":1,"realized_rr":"2"}', "schema"),
        (
            b'{"outcome_id":"o","signal_id":"s","symbol":"X","label":1,"features":{"a":"x"}}',
            "bad_feature",
        ),
    ],
)
def test_outcome_reasons(raw: bytes, reason: str) -> None:
    assert _reason(raw, decode_outcome)[0] == reason


def test_outcome_fields() -> None:
    o = decode_outcome(
        b'{"outcome_id":"o","signal_id":"s","symbol":"X","label":false,"realized_rr":-1,'
        b'"ts":"2024-01-01T00:00:00Z"}'
    )
    assert (o.label, o.realized_rr, o.features, o.ts) == (False, -1.0, None, 1704067200000)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
good_str = st.text(min_size=1, max_size=3)
feature_maps = st.dictionaries(
    st.text(max_size=3),
    st.floats(allow_nan=False, allow_infinity=False) | st.none() | st.integers(-99, 99),
    max_size=4,
)
timestamps = st.integers(0, 2**40) | st.sampled_from(
    [
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.5+02:00",
        "2024-01-01t00:00:00z",
        "nope",
        "2024-01-01",
        "2024-01-01T00:00Z",
        "2024-01-01T00:00:00",
    ]
)


def _maybe_bad(good: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(good, good, good, json_values)


signal_like = st.fixed_dictionaries(
    {
        "signal_id": _maybe_bad(good_str),
        "symbol": _maybe_bad(good_str),
        "features": _maybe_bad(feature_maps),
    },
    optional={
        "model_key": _maybe_bad(good_str),
        "strategy": _maybe_bad(good_str),
        "ts": _maybe_bad(timestamps),
        "other": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(doc=signal_like | json_values)
def test_decoder_accepts_exactly_what_the_schema_accepts(doc: object) -> None:
    raw = json.dumps(doc).encode()
    schema_ok = _validator("signal_request").is_valid(doc)
    try:
        req = decode_signal(raw)
    except ContractViolation as exc:
        assert not schema_ok, f"decoder refused a schema-valid message: {exc}"
        assert exc.reason in {"schema", "bad_feature", "invalid_json"}
    else:
        assert schema_ok, "decoder accepted a message the schema refuses"
        assert all(math.isfinite(v) for v in req.features.values())


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_as_other_errors(raw: bytes) -> None:
    for fn in (decode_signal, decode_outcome):
        try:
            fn(raw)
        except ContractViolation as exc:
            assert exc.reason in {"invalid_json", "schema", "bad_feature", "too_large"}
