"""The compiled decoding (:mod:`stream._codec_core`) against stream.codec's Python path.

For every message, valid or not, the decoders give the same record or the same
ContractViolation with the compiled step as without it; and the compiled step takes the common
case itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stream.codec as codec
from stream.codec import ContractViolation, Limits, decode_outcome, decode_signal
from stream.records import SignalRequest, TradeOutcome

ids = st.one_of(
    st.text(min_size=1, max_size=6),
    st.text(min_size=60, max_size=70),
    st.sampled_from(["", "a:b", "{x}", "é" * 70, "s[1]"]),
    st.integers(),
    st.none(),
)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.sampled_from([0.0, 1.0, -0.0, 0, 1, 2, 1e308]),
)
feature_maps = st.one_of(
    st.dictionaries(st.text(max_size=4), st.floats(allow_nan=False), max_size=6),
    st.dictionaries(st.text(max_size=4), numbers, max_size=4),
    st.none(),
    st.just({}),
    st.just([1.0]),
)
times = st.one_of(
    st.none(),
    st.integers(-(2**64), 2**64),
    st.sampled_from(["2024-01-01T00:00:00Z", "yesterday", 1.5e12, 1.7e12 + 0.5, True]),
)
FIELDS = {
    "signal_id": ids,
    "outcome_id": ids,
    "symbol": ids,
    "model_key": ids,
    "strategy": ids,
    "side": ids,
    "label": numbers,
    "realized_rr": numbers,
    "features": feature_maps,
    "ts": times,
    "extra": st.one_of(st.just({"nested": {"a": 1}}), st.just("x:y"), st.integers()),
}


short = st.text(st.characters(blacklist_characters=":{}[]"), min_size=1, max_size=8)
plain_features = st.dictionaries(
    short, st.one_of(st.floats(), st.none()), max_size=5
)  # NaN and infinities are written as NaN and Infinity: Python's parser takes those


@st.composite
def messages(draw: Any) -> bytes:
    """Mostly valid signals and outcomes, with up to two fields changed or dropped."""
    doc: dict[str, Any] = {"signal_id": draw(short), "symbol": draw(short)}
    doc["features"] = draw(plain_features)
    if draw(st.booleans()):
        doc["outcome_id"] = draw(short)
        doc["label"] = draw(st.sampled_from([True, False, 0, 1, 0.0, 1.0]))
        doc["realized_rr"] = draw(st.one_of(st.none(), st.floats()))
    for name, value in (("model_key", short), ("ts", st.integers(0, 2**50))):
        if draw(st.booleans()):
            doc[name] = draw(value)
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=2, unique=True)):
        if draw(st.booleans()):
            doc.pop(name, None)
        else:
            doc[name] = draw(FIELDS[name])
    raw = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # a key named twice in the text
        first = next(iter(doc))
        raw = raw[:-1] + b"," + json.dumps(first).encode() + b":1}"
    return raw


def _decode(fn: Any, raw: bytes, limits: Limits) -> Any:
    try:
        return fn(raw, limits)
    except ContractViolation as exc:
        return (exc.reason, exc.detail)


@settings(max_examples=1500, deadline=None)
@given(messages(), st.sampled_from([Limits(), Limits(max_bytes=60, max_features=2)]))
def test_the_compiled_step_decodes_as_the_python_path(raw: bytes, limits: Limits) -> None:
    for fn in (decode_signal, decode_outcome):
        fast = _decode(fn, raw, limits)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(codec, "_codec_core", None)
            plain = _decode(fn, raw, limits)
        assert fast == plain
        assert type(fast) is type(plain)


def test_the_common_case_is_decoded_by_the_compiled_step() -> None:
    core = codec._codec_core
    assert core is not None  # CI has a C compiler: without it every worker decodes slower
    signal = b'{"signal_id":"s1","symbol":"A","features":{"x":1.5,"y":-2e3,"z":null},"ts":5}'
    req = core.signal(signal, 1000, 10, SignalRequest)
    assert req == SignalRequest("s1", "A", {"x": 1.5, "y": -2000.0}, "A", None, None, 5)
    outcome = (
        b'{"outcome_id":"o1","signal_id":"s1","symbol":"A","label":1,"realized_rr":-1.0,'
        b'"features":{"x":1.5},"model_key":"k"}'
    )
    out = core.outcome(outcome, 1000, 10, TradeOutcome)
    assert out == TradeOutcome("o1", "s1", "A", True, "k", -1.0, {"x": 1.5}, None)
    for left in (
        signal.replace(b'"ts":5', b'"ts":"2024-01-01T00:00:00Z"'),  # a time string
        signal.replace(b"1.5", b"2"),  # an integer feature
        signal.replace(b'"A"', b'"a:b"'),  # a colon in a string
    ):
        assert core.signal(left, 1000, 10, SignalRequest) is None
