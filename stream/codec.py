"""Decoding raw Kafka bytes into contract records, and encoding records as plain JSON.

Decoding never raises anything but :class:`ContractViolation`, whose ``reason`` is one of the
dead-letter reason codes and whose ``detail`` names the offending field.

>>> req = decode_signal(b'{"signal_id":"s1","symbol":"BTCUSDT","features":{"a":1,"b":null}}')
>>> req.features, req.model_key
({'a': 1.0}, 'BTCUSDT')
>>> try:
...     decode_signal(b'{"symbol": "X", "features": {}}')
... except ContractViolation as e:
...     print(e.reason, "-", e.detail)
schema - missing required field 'signal_id'
"""

from __future__ import annotations

import base64
import math
import re
import time
from datetime import datetime
from typing import Any

import orjson

from stream._json_checks import check_unicode, check_unique_keys, json_type, load_json
from stream.errors import ContractViolation
from stream.records import DeadLetter, HardExample, Prediction, SignalRequest, TradeOutcome

__all__ = [
    "MAX_ID_BYTES",
    "ContractViolation",
    "Limits",
    "dead_letter",
    "decode_outcome",
    "decode_signal",
    "encode",
    "now_ms",
    "parse_ts",
]


class Limits:
    """Size limits that protect memory; anything over them is ``too_large``.

    >>> Limits(max_bytes=10).check_size(b"x" * 11)
    Traceback (most recent call last):
    ...
    stream.errors.ContractViolation: too_large: message is 11 bytes, limit 10
    """

    __slots__ = ("max_bytes", "max_features")

    def __init__(self, max_bytes: int = 64 * 1024, max_features: int = 512) -> None:
        if max_bytes < 1 or max_features < 1:
            raise ValueError("limits must be positive")
        self.max_bytes = max_bytes
        self.max_features = max_features

    def check_size(self, raw: bytes) -> None:
        """Raise ``too_large`` when ``raw`` is over the byte limit."""
        if len(raw) > self.max_bytes:
            raise ContractViolation(
                "too_large", f"message is {len(raw)} bytes, limit {self.max_bytes}"
            )


_DEFAULT_LIMITS = Limits()

_codec_core: Any
try:  # the common case compiled (stream/_codec_core.c); None for anything it leaves to Python
    from stream import _codec_core
except ImportError:  # installed without a C compiler
    _codec_core = None

_TS_MIN, _TS_MAX = -(2**63), 2**63 - 1
_PLAIN_RECORDS = (Prediction, DeadLetter, HardExample)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
MAX_ID_BYTES = 256
"""Longest id (``signal_id``, ``outcome_id``, ``symbol``, ``model_key``) in UTF-8 bytes."""
_ID_FIELDS = frozenset({"signal_id", "outcome_id", "symbol", "model_key"})


def now_ms() -> int:
    """Current time as integer epoch milliseconds."""
    return time.time_ns() // 1_000_000


def encode(obj: Any) -> bytes:
    """Plain UTF-8 JSON bytes of a record (``to_dict``) or of a JSON-ready value.

    >>> encode({"a": 1})
    b'{"a":1}'
    """
    if type(obj) in _PLAIN_RECORDS:
        return orjson.dumps(obj)  # orjson writes these dataclasses' fields natively, in order
    to_dict = getattr(obj, "to_dict", None)
    return orjson.dumps(to_dict() if to_dict is not None else obj)


def parse_ts(value: Any, field_name: str = "ts") -> int | None:
    """Epoch milliseconds from an integer or an RFC 3339 string; None when absent.

    >>> parse_ts("2024-01-01T00:00:00Z")
    1704067200000
    >>> parse_ts(1704067200000)
    1704067200000
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ContractViolation("schema", f"field '{field_name}' must be epoch ms or RFC 3339")
    if isinstance(value, int):
        return _in_range(value, field_name)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return _in_range(int(value), field_name)
    if isinstance(value, str):
        if not _RFC3339.match(value):
            raise ContractViolation(
                "schema", f"field '{field_name}' is not an RFC 3339 time: {value[:64]!r}"
            )
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ContractViolation(
                "schema", f"field '{field_name}' is not an RFC 3339 time: {value[:64]!r}"
            ) from None
        return int(parsed.timestamp() * 1000)
    raise ContractViolation("schema", f"field '{field_name}' must be epoch ms or RFC 3339")


def _in_range(ms: int, field_name: str) -> int:
    if not _TS_MIN <= ms <= _TS_MAX:
        raise ContractViolation(
            "schema", f"field '{field_name}' is out of range for epoch ms (a signed 64-bit integer)"
        )
    return ms


def _object(raw: bytes | None, limits: Limits) -> tuple[dict[str, Any], bool]:
    if raw is None:
        raise ContractViolation("invalid_json", "the message has no value (a null, or tombstone)")
    limits.check_size(raw)
    doc, check = load_json(raw)
    if not isinstance(doc, dict):
        raise ContractViolation("schema", f"message must be a JSON object, not {json_type(doc)}")
    check_unique_keys(raw, doc)
    return doc, check


def _req_str(doc: dict[str, Any], name: str, check: bool) -> str:
    if name not in doc:
        raise ContractViolation("schema", f"missing required field '{name}'")
    return _str(doc[name], name, check)


def _opt_str(doc: dict[str, Any], name: str, check: bool) -> str | None:
    v = doc.get(name)
    return None if v is None else _str(v, name, check)


def _str(v: Any, name: str, check: bool) -> str:
    if not isinstance(v, str) or not v:
        raise ContractViolation("schema", f"field '{name}' must be a non-empty string")
    if check:
        check_unicode(v, f"field '{name}'")
    # Up to 64 characters are at most 256 bytes: only longer ids need encoding to be measured.
    if len(v) > MAX_ID_BYTES // 4 and name in _ID_FIELDS:
        size = len(v.encode("utf-8"))
        if size > MAX_ID_BYTES:
            raise ContractViolation(
                "schema", f"field '{name}' is {size} UTF-8 bytes, limit {MAX_ID_BYTES}"
            )
    return v


def _as_float(x: int | float) -> float:
    """``float(x)``, with integers beyond double range as infinities (counted as missing)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _features(v: Any, limits: Limits, check: bool, name: str = "features") -> dict[str, float]:
    if not isinstance(v, dict):
        raise ContractViolation("schema", f"field '{name}' must be an object, not {json_type(v)}")
    if len(v) > limits.max_features:
        raise ContractViolation(
            "too_large", f"'{name}' has {len(v)} entries, limit {limits.max_features}"
        )
    if check:
        for k in v:
            check_unicode(k, f"a feature name in '{name}'")
    elif all(type(x) is float for x in v.values()):
        # The common case, fast: every value a JSON number with a fraction or an exponent.
        # ``x - x`` is 0.0 for a finite x and NaN for an infinity or NaN.
        return {k: x for k, x in v.items() if x - x == 0.0}
    out: dict[str, float] = {}
    for k, x in v.items():
        if x is None:
            continue
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise ContractViolation(
                "bad_feature", f"feature '{k[:64]}' must be a number or null, not {json_type(x)}"
            )
        fx = _as_float(x)
        if math.isfinite(fx):
            out[k] = fx
    return out


def decode_signal(raw: bytes | None, limits: Limits = _DEFAULT_LIMITS) -> SignalRequest:
    """Decode a SignalRequest, or raise :class:`ContractViolation`."""
    if _codec_core is not None:
        req: SignalRequest | None = _codec_core.signal(
            raw, limits.max_bytes, limits.max_features, SignalRequest
        )
        if req is not None:
            return req
    doc, check = _object(raw, limits)
    signal_id = _req_str(doc, "signal_id", check)
    symbol = _req_str(doc, "symbol", check)
    if "features" not in doc:
        raise ContractViolation("schema", "missing required field 'features'")
    features = _features(doc["features"], limits, check)
    model_key = _opt_str(doc, "model_key", check) or symbol
    return SignalRequest(
        signal_id=signal_id,
        symbol=symbol,
        features=features,
        model_key=model_key,
        strategy=_opt_str(doc, "strategy", check),
        side=_opt_str(doc, "side", check),
        ts=parse_ts(doc.get("ts")),
    )


def _label(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    raise ContractViolation("schema", "field 'label' must be true/false or 0/1")


def decode_outcome(raw: bytes | None, limits: Limits = _DEFAULT_LIMITS) -> TradeOutcome:
    """Decode a TradeOutcome, or raise :class:`ContractViolation`.

    >>> decode_outcome(b'{"outcome_id":"o","signal_id":"s","symbol":"X","label":1}').label
    True
    """
    if _codec_core is not None:
        out: TradeOutcome | None = _codec_core.outcome(
            raw, limits.max_bytes, limits.max_features, TradeOutcome
        )
        if out is not None:
            return out
    doc, check = _object(raw, limits)
    outcome_id = _req_str(doc, "outcome_id", check)
    signal_id = _req_str(doc, "signal_id", check)
    symbol = _req_str(doc, "symbol", check)
    if "label" not in doc:
        raise ContractViolation("schema", "missing required field 'label'")
    label = _label(doc["label"])
    rr = doc.get("realized_rr")
    if rr is not None:
        if isinstance(rr, bool) or not isinstance(rr, int | float):
            raise ContractViolation("schema", "field 'realized_rr' must be a number")
        rr = _as_float(rr)
        rr = rr if math.isfinite(rr) else None
    feats = doc.get("features")
    if feats is not None:
        # An object with no usable feature carries none: the outcome is joined with its signal's.
        feats = _features(feats, limits, check) or None
    return TradeOutcome(
        outcome_id=outcome_id,
        signal_id=signal_id,
        symbol=symbol,
        label=label,
        model_key=_opt_str(doc, "model_key", check) or symbol,
        realized_rr=rr,
        features=feats,
        ts=parse_ts(doc.get("ts")),
    )


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode("ascii")


def dead_letter(
    reason: str,
    detail: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    value_max_bytes: int,
) -> DeadLetter:
    """Build the DeadLetter record for an unusable message (value cut at ``value_max_bytes``).

    >>> dl = dead_letter("schema", "x", topic="t", partition=0, offset=5, key=None, value=b"{}",
    ...                  value_max_bytes=100)
    >>> dl.value, dl.key
    ('e30=', None)
    """
    return DeadLetter(
        reason=reason,
        detail=detail[:1000].encode("utf-8", "backslashreplace").decode("utf-8"),
        topic=topic,
        partition=partition,
        offset=offset,
        key=_b64(key),
        value=_b64((value or b"")[:value_max_bytes]) or "",
        ts=now_ms(),
    )
