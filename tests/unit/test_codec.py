"""Decoding raw bytes into contract records: reasons, details, and agreement with the schemas."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.codec import ContractViolation, Limits, decode_outcome, decode_signal, parse_ts
from tests.oracle import judge

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


# ----- bad input (issue 25): duplicate keys, long ids, empty features ---------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"signal_id":"s","signal_id":"t","symbol":"X","features":{}}', "signal_id"),
        (b'{"signal_id":"s","symbol":"X","features":{"a":1,"a":1}}', "a"),
        (b'{"signal_id":"s","symbol":"X","features":{},"mine":[{"b":[{"c":1,"c":2}]}]}', "c"),
        (b'{"signal_id":"s","symbol":"X","features":{"a":1,"\\u0061":2}}', "a"),
        (b'{"signal_id":"s","symbol":"X","features":{"a":NaN,"a":1}}', "a"),  # Python's parser
        (b'{"signal_id":"s","symbol":"X","features":{},"k":":","k":":"}', "k"),
        (b'{"signal_id":"s","symbol":"X","features":{},"q\\"":1,"q\\"":{}}', 'q"'),
        (
            b'{"signal_id":"s","symbol":"X","features":{},"d":'
            + b"[" * 900
            + b'{"z":0,"z":1}'
            + b"]" * 900
            + b"}",
            "z",
        ),
    ],
)
def test_a_key_named_twice_is_schema_naming_it(raw: bytes, key: str) -> None:
    reason, detail = _reason(raw)
    assert reason == "schema"
    assert f"duplicate key {key!r}" in detail


@pytest.mark.parametrize(
    "raw",
    [
        # Colons, braces and brackets inside strings, and escapes, but no key named twice.
        b'{"signal_id":"a:b","symbol":"X","features":{"f:1":1.5},"ts":"2024-01-01T00:00:00+01:00"}',
        b'{"signal_id":"{[","symbol":"X","features":{"a":1},"n":{"a":"\\u003a","b":[":",{}]}}',
        b'{"signal_id":"s","symbol":"X","features":{"\\u0061":1,"b":2},"x":{"a":{"a":{"a":1}}}}',
    ],
)
def test_colons_and_escapes_in_strings_are_not_taken_for_repeated_keys(raw: bytes) -> None:
    assert decode_signal(raw).signal_id


@pytest.mark.parametrize("field", ["signal_id", "symbol", "model_key"])
@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a" * 256, True),
        ("a" * 257, False),
        ("\u00e9" * 128, True),
        ("\u00e9" * 129, False),
        ("\U0001f600" * 64, True),
        ("\U0001f600" * 65, False),
    ],
)
def test_ids_are_at_most_256_utf8_bytes(field: str, value: str, ok: bool) -> None:
    doc = {"signal_id": "s", "symbol": "X", "features": {}, field: value}
    raw = orjson.dumps(doc)
    if ok:
        assert getattr(decode_signal(raw), field) == value
    else:
        reason, detail = _reason(raw)
        assert (reason, field) == ("schema", detail.split("'")[1])
        assert "limit 256" in detail


def test_an_outcome_id_over_256_bytes_is_schema() -> None:
    raw = orjson.dumps({"outcome_id": "o" * 257, "signal_id": "s", "symbol": "X", "label": 1})
    assert _reason(raw, decode_outcome) == (
        "schema",
        "field 'outcome_id' is 257 UTF-8 bytes, limit 256",
    )


@pytest.mark.parametrize("features", [{}, {"a": None}, {"a": float("nan")}])
def test_an_outcome_without_usable_features_is_joined(features: dict[str, float | None]) -> None:
    doc = {"outcome_id": "o", "signal_id": "s", "symbol": "X", "label": 1, "features": features}
    raw = json.dumps(doc).encode()
    assert decode_outcome(raw).features is None


def test_the_schemas_bound_ids_as_far_as_json_schema_can() -> None:
    for name, ids in (
        ("signal_request", ("signal_id", "symbol", "model_key")),
        ("trade_outcome", ("outcome_id", "signal_id", "symbol", "model_key")),
    ):
        props = json.loads((SCHEMAS / f"{name}.json").read_text())["properties"]
        assert all(props[f]["maxLength"] == 256 for f in ids)


# ----- the decoders against an oracle that states the contract (tests/oracle.py) ----------------


@dataclass(frozen=True)
class Obj:
    """A JSON object as its members in order, so that a key may be named twice."""

    pairs: tuple[tuple[str, object], ...]


def _text(v: object, ascii_only: bool) -> str:
    if isinstance(v, Obj):
        inner = ",".join(
            f"{json.dumps(k, ensure_ascii=ascii_only)}:{_text(x, ascii_only)}" for k, x in v.pairs
        )
        return "{" + inner + "}"
    if isinstance(v, list):
        return "[" + ",".join(_text(x, ascii_only) for x in v) + "]"
    return json.dumps(v, ensure_ascii=ascii_only)  # NaN and Infinity as Python writes them


_strings = st.text(max_size=4) | st.sampled_from([":", "a:b", "\ud800", "{", "[", '"', "\\"])
_leaves = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _strings
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(st.tuples(_strings, inner), max_size=3).map(lambda ps: Obj(tuple(ps)))
    ),
    max_leaves=8,
)
_ids = st.one_of(
    st.text(min_size=1, max_size=3),
    st.text(min_size=1, max_size=3),
    st.sampled_from(
        [
            "a" * 256,
            "a" * 257,
            "\u00e9" * 128,
            "\u00e9" * 129,
            "\U0001f600" * 64,
            "\U0001f600" * 65,
            "x:y",
            "\ud800",
        ]
    ),
    _values,
)
_features_obj = st.lists(
    st.tuples(st.text(max_size=2), st.floats() | st.none() | st.integers(-99, 99) | _values),
    max_size=4,
).map(lambda ps: Obj(tuple(ps)))
_times = (
    st.integers(-(2**64), 2**64)
    | st.floats()
    | st.sampled_from(
        [
            "2024-01-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01t00:00:00.5+02:00",
            "2024-01-01T00:00:60Z",
            "2024-01-01T00:00:00+24:00",
            "0000-01-01T00:00:00Z",
            "soon",
        ]
    )
    | _values
)


def _message(role: str) -> st.SearchStrategy[Obj]:
    required = (
        ("signal_id", "symbol", "features")
        if role == "signals"
        else ("outcome_id", "signal_id", "symbol", "label")
    )
    fields: dict[str, st.SearchStrategy[object]] = {
        "signal_id": _ids,
        "symbol": _ids,
        "outcome_id": _ids,
        "model_key": st.none() | _ids,
        "features": _features_obj | st.none() | _values,
        "label": st.sampled_from([True, False, 0, 1, 1.0, 2, "1"]) | _values,
        "realized_rr": st.floats() | st.none() | _values,
        "ts": _times,
        "strategy": _ids,
        "other": _values,
    }
    optional = [
        f
        for f in fields
        if f not in required
        and (role == "signals") != (f in ("outcome_id", "label", "realized_rr"))
    ]

    @st.composite
    def build(draw: st.DrawFn) -> Obj:
        names = list(required) + draw(st.lists(st.sampled_from(optional), unique=True))
        names = [n for n in names if draw(st.integers(0, 19)) > 0]  # one in twenty dropped
        pairs = [(n, draw(fields[n])) for n in names]
        if pairs and draw(st.integers(0, 3)) == 0:  # a key named twice, at the top
            k, _ = pairs[draw(st.integers(0, len(pairs) - 1))]
            pairs.insert(draw(st.integers(0, len(pairs))), (k, draw(fields[k])))
        return Obj(tuple(pairs))

    return build()


def _compare(role: str, raw: bytes, limits: Limits) -> None:
    verdict = judge(role, raw, limits.max_bytes, limits.max_features)
    decode = decode_signal if role == "signals" else decode_outcome
    try:
        rec = decode(raw, limits)
    except ContractViolation as exc:
        assert exc.reason in verdict.reasons, (exc, verdict, raw[:300])
        return
    assert verdict.accepted, (verdict, rec, raw[:300])
    got = {k: getattr(rec, k) for k in verdict.fields}
    want = dict(verdict.fields)
    if want["ts"] is not None and got["ts"] is not None:
        assert abs(got.pop("ts") - want.pop("ts")) <= 1  # float rounding of a fraction of a ms
    assert got == want, raw[:300]


@settings(max_examples=1500, deadline=None)
@given(role=st.sampled_from(["signals", "outcomes"]), data=st.data(), ascii_only=st.booleans())
def test_decoders_decide_as_the_contract_does(
    role: str, data: st.DataObject, ascii_only: bool
) -> None:
    raw = _text(data.draw(_message(role)), ascii_only).encode("utf-8", "surrogatepass")
    _compare(role, raw, Limits(max_bytes=4096, max_features=3))


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(["signals", "outcomes"]),
    raw=st.binary(max_size=64) | st.builds(lambda v: _text(v, True).encode(), _values),
)
def test_decoders_decide_arbitrary_bytes_as_the_contract_does(role: str, raw: bytes) -> None:
    _compare(role, raw, Limits())
