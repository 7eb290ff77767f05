"""What the wire contract accepts, stated from CONTRACT.md alone: the fuzz tests' oracle.

It shares no code with :mod:`stream.codec`. Python's ``json`` parses the text (keeping every
member of an object, so that a key named twice is seen), and each rule of CONTRACT.md
("Encoding", "SignalRequest", "TradeOutcome") is checked in turn. :func:`judge` gives every
dead-letter reason the message earns (a message may break several rules; the decoder reports
one of them) or, when it earns none, its fields as the contract reads them.

Rules the contract leaves to the implementation, written down here:

- a value over the configured byte limit is ``too_large`` before it is parsed, and a features
  object with more entries than the configured limit is ``too_large``;
- besides strict JSON, the literals ``NaN``, ``Infinity`` and ``-Infinity`` and numbers beyond
  double range parse (the contract counts non-finite feature values as missing);
- nesting deeper than 1024 levels is ``invalid_json``; between 513 and 1024 levels the answer
  depends on the parser's stack (:class:`Undetermined`), and the fuzz never draws it;
- a leap second (``:60``) is not a valid time: epoch milliseconds have no place for it.

>>> judge("signals", b'{"signal_id": "s", "symbol": "X", "features": {"a": 1, "a": 2}}').reasons
frozenset({'schema'})
>>> judge("outcomes", b'{"outcome_id": "o", "signal_id": "s", "symbol": "X", "label": 1, '
...       b'"features": {}, "ts": "2024-01-01T00:00:01.5Z"}').fields
{'outcome_id': 'o', 'signal_id': 's', 'model_key': 'X', 'label': True, 'realized_rr': None, \
'features': None, 'ts': 1704067201500}
"""

from __future__ import annotations

import calendar
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["MAX_ID_BYTES", "Undetermined", "Verdict", "judge"]

MAX_ID_BYTES = 256
MAX_DEPTH = 1024
SURE_DEPTH = 512
ID_FIELDS = ("signal_id", "outcome_id", "symbol", "model_key")
INT64 = (-(2**63), 2**63 - 1)

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class Undetermined(Exception):
    """The contract does not decide this message (see the module's text)."""


@dataclass(frozen=True)
class Verdict:
    """The reasons a message earns (empty when the contract accepts it) and, if accepted, its
    fields: ``signal_id``, ``model_key``, ``features``, ``ts`` for a signal; ``outcome_id``,
    ``signal_id``, ``model_key``, ``label``, ``realized_rr``, ``features`` (None when it carries
    none) and ``ts`` for an outcome."""

    reasons: frozenset[str]
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return not self.reasons


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its members, in order, repeats included."""


def _depth(text: str) -> int:
    depth = deepest = 0
    for m in _BRACKETS.finditer(text):
        c = m.group()[0]
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def _has_repeated_key(v: Any) -> str | None:
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, _Pairs):
            keys = [k for k, _ in x]
            for k in keys:
                if keys.count(k) > 1:
                    return k
            stack.extend(val for _, val in x)
        elif isinstance(x, list):
            stack.extend(x)
    return None


def _plain(v: Any) -> Any:
    """``v`` with objects as dicts (a repeated key keeps its last value)."""
    if isinstance(v, _Pairs):
        return {k: _plain(x) for k, x in v}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _valid_text(s: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in s)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _string(doc: dict[str, Any], name: str, required: bool, reasons: set[str]) -> str | None:
    if name not in doc or doc[name] is None:
        if required:
            reasons.add("schema")
        return None
    v = doc[name]
    if not isinstance(v, str) or v == "" or not _valid_text(v):
        reasons.add("schema")
        return None
    if name in ID_FIELDS and len(v.encode("utf-8")) > MAX_ID_BYTES:
        reasons.add("schema")
    return v


def _features(v: Any, max_features: int, reasons: set[str]) -> dict[str, float]:
    if not isinstance(v, dict):
        reasons.add("schema")
        return {}
    if len(v) > max_features:
        reasons.add("too_large")
    out: dict[str, float] = {}
    for k, x in v.items():
        if not _valid_text(k):
            reasons.add("schema")
        if x is None:
            continue
        if not _is_number(x):
            reasons.add("bad_feature")
            continue
        try:
            f = float(x)
        except OverflowError:  # an integer beyond double range: not finite, so missing
            continue
        if math.isfinite(f):
            out[k] = f
    return out


def _ts(v: Any, reasons: set[str]) -> int | None:
    if v is None:
        return None
    if _is_number(v):
        if isinstance(v, float) and not (math.isfinite(v) and v == int(v)):
            reasons.add("schema")
            return None
        ms = int(v)
        if not INT64[0] <= ms <= INT64[1]:
            reasons.add("schema")
            return None
        return ms
    m = _RFC3339.fullmatch(v) if isinstance(v, str) else None
    if m is None:
        reasons.add("schema")
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, zulu, sign, off_h, off_m = m.groups()[6:]
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        reasons.add("schema")
        return None
    offset = 0
    if not zulu:
        if int(off_h) > 23 or int(off_m) > 59:
            reasons.add("schema")
            return None
        offset = (int(off_h) * 60 + int(off_m)) * 60 * (1 if sign == "+" else -1)
    seconds = calendar.timegm((year, month, day, hour, minute, second)) - offset
    millis = int((frac or ".0")[1:4].ljust(3, "0"))
    return seconds * 1000 + millis


def judge(
    role: str, raw: bytes | None, max_bytes: int = 64 * 1024, max_features: int = 512
) -> Verdict:
    """The contract's verdict on the value ``raw`` of a message of ``role`` (``"signals"`` or
    ``"outcomes"``)."""
    if raw is None:
        return Verdict(frozenset({"invalid_json"}))
    if len(raw) > max_bytes:
        return Verdict(frozenset({"too_large"}))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Verdict(frozenset({"invalid_json"}))
    depth = _depth(text)
    if depth > MAX_DEPTH:
        return Verdict(frozenset({"invalid_json"}))
    if depth > SURE_DEPTH:
        raise Undetermined(f"nesting {depth} levels deep")
    try:
        parsed = json.loads(text, object_pairs_hook=_Pairs)
    except ValueError:
        return Verdict(frozenset({"invalid_json"}))
    if not isinstance(parsed, _Pairs):
        return Verdict(frozenset({"schema"}))
    reasons: set[str] = set()
    if _has_repeated_key(parsed) is not None:
        reasons.add("schema")
    doc = _plain(parsed)
    if role == "signals":
        return _signal(doc, max_features, reasons)
    return _outcome(doc, max_features, reasons)


def _signal(doc: dict[str, Any], max_features: int, reasons: set[str]) -> Verdict:
    signal_id = _string(doc, "signal_id", True, reasons)
    symbol = _string(doc, "symbol", True, reasons)
    model_key = _string(doc, "model_key", False, reasons)
    for name in ("strategy", "side"):
        _string(doc, name, False, reasons)
    if "features" not in doc:
        reasons.add("schema")
    features = _features(doc.get("features"), max_features, reasons)
    ts = _ts(doc.get("ts"), reasons)
    if reasons:
        return Verdict(frozenset(reasons))
    fields = {
        "signal_id": signal_id,
        "model_key": model_key or symbol,
        "features": features,
        "ts": ts,
    }
    return Verdict(frozenset(), fields)


def _outcome(doc: dict[str, Any], max_features: int, reasons: set[str]) -> Verdict:
    outcome_id = _string(doc, "outcome_id", True, reasons)
    signal_id = _string(doc, "signal_id", True, reasons)
    symbol = _string(doc, "symbol", True, reasons)
    model_key = _string(doc, "model_key", False, reasons)
    label = doc.get("label")
    if not (isinstance(label, bool) or (_is_number(label) and label in (0, 1))):
        reasons.add("schema")
    rr = doc.get("realized_rr")
    if rr is not None and not _is_number(rr):
        reasons.add("schema")
    features = None
    if doc.get("features") is not None:
        features = _features(doc["features"], max_features, reasons) or None
    ts = _ts(doc.get("ts"), reasons)
    if reasons:
        return Verdict(frozenset(reasons))
    try:
        rr_value = None if rr is None else float(rr)
    except OverflowError:
        rr_value = None
    fields = {
        "outcome_id": outcome_id,
        "signal_id": signal_id,
        "model_key": model_key or symbol,
        "label": bool(label),
        "realized_rr": rr_value if rr_value is not None and math.isfinite(rr_value) else None,
        "features": features,
        "ts": ts,
    }
    return Verdict(frozenset(), fields)
