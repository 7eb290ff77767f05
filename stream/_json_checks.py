"""The low-level checks of a JSON message that :mod:`stream.codec` decodes: parsing with the
fallback for what orjson refuses, duplicate keys (which both parsers drop silently), lone
surrogates in strings, and the JSON type names used in messages.

>>> load_json(b'{"a": NaN}')
({'a': nan}, True)
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from stream.errors import ContractViolation

__all__ = ["check_unicode", "check_unique_keys", "json_type", "load_json"]

_CONTAINERS = frozenset({dict, list})
# JSON's strings (escapes included) and structural characters; the rest (numbers, literals,
# commas, blanks) is skipped. Possessive, so a long string is matched without backtracking.
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[{}\[\]:]')


def load_json(raw: bytes) -> tuple[Any, bool]:
    """The parsed document, and whether its strings may hold lone surrogates (see check_unicode)."""
    try:
        return orjson.loads(raw), False
    except orjson.JSONDecodeError as exc:
        # Python's parser also accepts NaN, Infinity and numbers beyond double range; the
        # contract counts those as missing feature values, not as invalid JSON. The bytes are
        # decoded strictly first: given bytes, Python's parser would also take UTF-16, a BOM,
        # and surrogates encoded as UTF-8, none of which is UTF-8 JSON.
        try:
            return json.loads(raw.decode("utf-8")), True
        except (ValueError, UnicodeDecodeError):
            raise ContractViolation("invalid_json", f"not valid UTF-8 JSON: {exc}") from None
        except RecursionError:
            raise ContractViolation("invalid_json", f"nested too deeply: {exc}") from None
    except UnicodeDecodeError as exc:  # pragma: no cover - orjson reports this as JSONDecodeError
        raise ContractViolation("invalid_json", f"not valid UTF-8: {exc}") from None


def _members(raw: bytes, doc: dict[str, Any]) -> int:
    """The number of members of every object in ``doc`` (parsed from ``raw``), at any depth."""
    n, objects = len(doc), 1
    for v in doc.values():
        if type(v) is dict:
            n += len(v)
            objects += 1
    # Usually the objects are the message and its features: when the text has no more braces
    # than that and no bracket, there is no other object (a brace in a string only adds one).
    if raw.count(b"{") == objects and b"[" not in raw:
        return n
    n = 0
    stack: list[Any] = [doc]  # iteratively: a document may nest a thousand levels deep
    while stack:
        v = stack.pop()
        if type(v) is dict:
            n += len(v)
            v = v.values()
        if not _CONTAINERS.isdisjoint(map(type, v)):
            stack.extend(x for x in v if type(x) is dict or type(x) is list)
    return n


def _string_colons(doc: Any) -> int:
    """The colons in every string of ``doc`` (keys and values), at any depth."""
    n = 0
    stack = [doc]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            n += sum(k.count(":") for k in v)
            v = v.values()
        for x in v:
            if type(x) is str:
                n += x.count(":")
            elif type(x) is dict or type(x) is list:
                stack.append(x)
    return n


def check_unique_keys(raw: bytes, doc: dict[str, Any]) -> None:
    """Raise ``schema`` when an object in the JSON text ``raw`` (parsed as ``doc``) names a key
    twice. Both parsers keep the last value silently.

    Each member of an object has one colon outside strings, so ``raw`` has at least as many
    colons as members; when it has exactly as many as ``doc`` (after the colons of ``doc``'s
    strings, if there is no ``\\u`` escape that could spell one), no member was dropped. Only
    when the counts differ is the text scanned for the key, in a pass of a regular expression.

    >>> check_unique_keys(b'{"a": {"b": 1, "c": "1:2"}}', {"a": {"b": 1, "c": "1:2"}})
    >>> check_unique_keys(b'{"a": [{"b": 1, "b": 2}]}', {"a": [{"b": 2}]})
    Traceback (most recent call last):
    ...
    stream.errors.ContractViolation: schema: duplicate key 'b' in a JSON object
    """
    colons = raw.count(b":")
    members = _members(raw, doc)
    if colons == members:
        return
    if b"\\u" not in raw:
        # Counting the colons of only some strings is enough: equality still proves it. The
        # message's own strings first, where a time such as "2024-01-01T00:00:00Z" has them.
        top = sum(v.count(":") for v in doc.values() if type(v) is str)
        if colons == members + top or colons == members + _string_colons(doc):
            return
    objects: list[set[str] | None] = []  # the keys of each open object; None for an array
    last = ""
    for m in _TOKENS.finditer(raw.decode("utf-8", "surrogatepass")):
        tok = m.group()
        c = tok[0]
        if c == '"':
            last = tok
            continue
        if c == ":":
            keys = objects[-1]
            key = json.loads(last)
            if keys is not None:
                if key in keys:
                    raise ContractViolation(
                        "schema", f"duplicate key {key[:64]!r} in a JSON object"
                    )
                keys.add(key)
        elif c == "{":
            objects.append(set())
        elif c == "[":
            objects.append(None)
        else:
            objects.pop()


def check_unicode(v: str, what: str) -> str:
    """``v`` unless it holds a lone surrogate (a ``\\ud800`` escape), which no UTF-8 can carry.

    orjson refuses such strings; Python's parser, the fallback, lets them through, and they
    could not be encoded again (as a Kafka key, or in a reply).
    """
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ContractViolation(
            "schema", f"{what} is not valid Unicode (it holds a lone surrogate)"
        ) from None
    return v


def json_type(v: Any) -> str:
    """The JSON type name of a parsed value, for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"
