"""Limits that protect memory, and hostile input the decoder must refuse with a reason.

Every input, however malformed, must come out of the decoder as a record or as a
:class:`ContractViolation` whose reason is a dead-letter code; anything else would escape the
agents' error handling.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stream.codec import ContractViolation, Limits, dead_letter, decode_outcome, decode_signal
from stream.settings import Settings

REASONS = {"invalid_json", "schema", "bad_feature", "too_large"}


def _reason(raw: bytes | None, limits: Limits, fn=decode_signal) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ContractViolation) as info:
        fn(raw, limits)
    assert info.value.detail
    return info.value.reason


def _signal(n_features: int, pad: int = 0) -> bytes:
    doc = {
        "signal_id": "s",
        "symbol": "X",
        "features": {f"f{i}": 1.0 for i in range(n_features)},
        "strategy": "p" * max(pad, 1),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        Limits(max_bytes=0)
    with pytest.raises(ValueError, match="positive"):
        Limits(max_features=0)


def test_limit_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPULSE_MAX_MESSAGE_BYTES", "100")
    with pytest.raises(ValidationError, match="max_message_bytes"):
        Settings()
    monkeypatch.setenv("ALPHAPULSE_MAX_MESSAGE_BYTES", "4096")
    monkeypatch.setenv("ALPHAPULSE_MAX_FEATURES", "0")
    with pytest.raises(ValidationError, match="max_features"):
        Settings()


def test_message_size_limit_is_exact() -> None:
    raw = _signal(2, pad=200)
    at = Limits(max_bytes=len(raw), max_features=8)
    assert decode_signal(raw, at).signal_id == "s"
    under = Limits(max_bytes=len(raw) - 1, max_features=8)
    with pytest.raises(ContractViolation) as info:
        decode_signal(raw, under)
    assert info.value.reason == "too_large"
    assert info.value.detail == f"message is {len(raw)} bytes, limit {len(raw) - 1}"


def test_feature_count_limit_is_exact_for_signals_and_outcomes() -> None:
    limits = Limits(max_bytes=64 * 1024, max_features=8)
    assert len(decode_signal(_signal(8), limits).features) == 8
    assert _reason(_signal(9), limits) == "too_large"
    outcome = {"outcome_id": "o", "signal_id": "s", "symbol": "X", "label": 1}
    at = json.dumps({**outcome, "features": {f"f{i}": 0 for i in range(8)}}).encode()
    over = json.dumps({**outcome, "features": {f"f{i}": 0 for i in range(9)}}).encode()
    assert decode_outcome(at, limits).features is not None
    assert _reason(over, limits, decode_outcome) == "too_large"


def test_size_is_checked_before_parsing() -> None:
    # Over the limit and not JSON at all: refused for its size, without being parsed.
    assert _reason(b"{" * 300, Limits(max_bytes=256)) == "too_large"


def test_dead_letter_keeps_only_a_prefix_of_the_value() -> None:
    dl = dead_letter(
        "too_large",
        "x" * 5000,
        topic="t",
        partition=0,
        offset=1,
        key=b"k",
        value=b"v" * 100_000,
        value_max_bytes=300,
    )
    assert base64.b64decode(dl.value) == b"v" * 300
    assert len(dl.detail) == 1000


HOSTILE = [
    (None, "invalid_json"),  # a tombstone (null value)
    (b"", "invalid_json"),
    (b"[" * 30_000 + b"]" * 30_000, "invalid_json"),  # nested too deep for any parser
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, "invalid_json"),
    (b'{"signal_id":"s","symbol":"X","features":{},"x":"\xed\xa0\x80"}', "invalid_json"),  # CESU-8
    (b"\xef\xbb\xbf{}", "invalid_json"),  # a byte-order mark
    ('{"signal_id":"s","symbol":"X","features":{}}'.encode("utf-16"), "invalid_json"),
    (b'{"signal_id":"s","symbol":"sur\\ud800","features":{}}', "schema"),  # lone surrogates
    (b'{"signal_id":"\\udfff","symbol":"X","features":{}}', "schema"),
    (b'{"signal_id":"s","symbol":"X","features":{"\\ud800":1}}', "schema"),
    (b'{"signal_id":"s","symbol":"X","features":{"\\ud800":"high"}}', "schema"),
    (b'{"signal_id":"s","symbol":"X","features":{},"side":"\\ud800","n":NaN}', "schema"),
    (b'{"signal_id":"s","symbol":"X","features":{},"ts":1e300}', "schema"),
    (b'{"signal_id":"s","symbol":"X","features":{},"ts":' + b"9" * 40 + b"}", "schema"),
    (b'{"signal_id":"s","symbol":"X","features":{},"ts":-18446744073709551616}', "schema"),
    (b'{"signal_id":"s","symbol":"X","features":{"a":' + b"1" * 5000 + b"}}", "invalid_json"),
]


@pytest.mark.parametrize(("raw", "reason"), HOSTILE)
def test_hostile_input_is_refused_with_a_reason(raw: bytes | None, reason: str) -> None:
    assert _reason(raw, Limits()) == reason
    assert _reason(raw, Limits(), decode_outcome) in {reason, "schema"}


def test_lone_surrogates_in_fields_the_contract_ignores_are_ignored() -> None:
    req = decode_signal(b'{"signal_id":"s","symbol":"X","features":{"a":null,"b":1},"x":"\\ud800"}')
    assert req.features == {"b": 1.0}


def test_dead_letter_details_are_always_valid_unicode() -> None:
    import orjson

    dl = dead_letter(
        "schema",
        "bad \ud800",
        topic="t",
        partition=0,
        offset=0,
        key=None,
        value=b"",
        value_max_bytes=10,
    )
    assert orjson.loads(orjson.dumps(dl.to_dict()))["detail"] == "bad \\ud800"


def test_numbers_beyond_double_range_count_as_missing() -> None:
    big = b"1" + b"0" * 400
    req = decode_signal(b'{"signal_id":"s","symbol":"X","features":{"a":' + big + b',"b":2}}')
    assert req.features == {"b": 2.0}
    out = decode_outcome(
        b'{"outcome_id":"o","signal_id":"s","symbol":"X","label":1,"realized_rr":-' + big + b"}"
    )
    assert out.realized_rr is None


def test_timestamps_at_the_edges_of_64_bits_are_kept() -> None:
    for ts in (-(2**63), 2**63 - 1, 0):
        raw = json.dumps({"signal_id": "s", "symbol": "X", "features": {}, "ts": ts}).encode()
        assert decode_signal(raw).ts == ts


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=900) | st.none())
def test_any_bytes_are_a_record_or_a_reason_and_size_decides_too_large(raw: bytes | None) -> None:
    limits = Limits(max_bytes=300, max_features=4)
    for fn in (decode_signal, decode_outcome):
        try:
            fn(raw, limits)
        except ContractViolation as exc:
            assert exc.reason in REASONS
            if raw is not None and len(raw) > 300:
                assert exc.reason == "too_large"


_any_text = st.text() | st.text(st.sampled_from(["\ud800", "\udfff", "a"]), min_size=1)
"""Text, sometimes with lone surrogates (which JSON can carry as ``\\ud800`` escapes)."""
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=20,
)
_name = _any_text.filter(bool) | _json


@settings(max_examples=400, deadline=None)
@given(
    doc=st.fixed_dictionaries(
        {
            "signal_id": _name,
            "outcome_id": _name,
            "symbol": _name,
            "label": st.sampled_from([True, 0]) | _json,
            "features": st.dictionaries(_any_text, st.integers() | st.floats() | st.none()) | _json,
        },
        optional={"ts": st.integers() | st.floats() | _json, "model_key": _name},
    )
)
def test_decoded_records_always_encode_again(doc: dict[str, object]) -> None:
    """Whatever the decoder accepts can be written back: as a Kafka key and as JSON."""
    import orjson

    raw = json.dumps(doc).encode()
    for fn in (decode_signal, decode_outcome):
        try:
            rec = fn(raw, Limits())
        except ContractViolation as exc:
            assert exc.reason in REASONS
            continue
        rec.model_key.encode()
        orjson.dumps({k: getattr(rec, k) for k in ("signal_id", "symbol", "model_key", "ts")})
        orjson.dumps(rec.features)
