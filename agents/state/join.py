"""The outcome join store: recent signals' features, kept so that an outcome can be learned
without features of its own.

The predictor keeps each answered signal (:func:`remember_signal`); the learner looks an outcome's
signal up (:func:`join_fields`, :func:`join_ts`); after a restart or a rebalance the store of a
partition is rebuilt from the signals topic itself (:func:`build_join_store`).

Each entry is bytes: the signal's ``ts`` (8 bytes, big-endian) and then one orjson array
``[features, model_key, score, components]`` (a pickle when orjson cannot write it). A dict of
strings to bytes is never tracked by Python's garbage collector, where a dict holding tuples is
and every full collection would visit each entry; bytes also take a fraction of the memory.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterable
from typing import Any

import orjson

from stream.codec import ContractViolation, Limits, decode_signal

__all__ = [
    "Features",
    "JoinEntry",
    "build_join_store",
    "join_fields",
    "join_ts",
    "remember_signal",
]

JoinEntry = bytes
Features = dict[str, float]

_TS = struct.Struct(">q")
_PICKLE = b"\x80"  # how a pickle of protocol 2 or later starts; an orjson array starts with "["


def join_ts(entry: JoinEntry) -> int:
    """The signal's ``ts`` (epoch ms) in ``entry``, without unpacking the rest."""
    return int(_TS.unpack_from(entry)[0])


def join_fields(entry: JoinEntry) -> tuple[Features, str, float | None, Features | None]:
    """``(features, model_key, score, components)`` of ``entry``."""
    body = memoryview(entry)[_TS.size :]
    fields = pickle.loads(body) if body[:1] == _PICKLE else orjson.loads(body)
    features, model_key, score, components = fields
    return features, model_key, score, components


def remember_signal(
    join: dict[str, JoinEntry],
    signal_id: str,
    features: Features,
    ts: int,
    model_key: str,
    score: float | None = None,
    components: Features | None = None,
) -> None:
    """Keep a signal for the outcome join, as the newest entry (the store is in arrival order).

    >>> join: dict[str, JoinEntry] = {}
    >>> remember_signal(join, "s1", {"f0": 1.0}, 10, "BTC")
    >>> remember_signal(join, "s2", {"f0": 2.0}, 11, "BTC")
    >>> remember_signal(join, "s1", {"f0": 1.5}, 12, "BTC", 0.6, {"online": 0.6})
    >>> list(join), join_ts(join["s1"]), join_fields(join["s1"])
    (['s2', 's1'], 12, ({'f0': 1.5}, 'BTC', 0.6, {'online': 0.6}))
    """
    fields = [features, model_key, score, components]
    try:
        payload = orjson.dumps(fields)
    except orjson.JSONEncodeError:  # text orjson cannot write, such as a lone surrogate
        payload = pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)
    join.pop(signal_id, None)
    join[signal_id] = _TS.pack(ts) + payload


def build_join_store(
    records: Iterable[Any], window_ms: int, limits: Limits
) -> dict[str, JoinEntry]:
    """The join store of a partition from its signals records (Kafka records with ``value`` and
    ``timestamp``); unusable ones are left out, and so are those more than ``window_ms`` older
    (in their own time) than the newest signal: the join window counts in event time.

    >>> from types import SimpleNamespace
    >>> recs = [
    ...     SimpleNamespace(value=b'{"signal_id": "s1", "symbol": "BTC", "features": {}}',
    ...                     timestamp=5),
    ...     SimpleNamespace(value=b'{"signal_id": "s2", "symbol": "BTC", "features": {}}',
    ...                     timestamp=20),
    ...     SimpleNamespace(value=b"not json", timestamp=30),
    ...     SimpleNamespace(value=None, timestamp=40),
    ... ]
    >>> list(build_join_store(recs, window_ms=10, limits=Limits()))
    ['s2']
    """
    usable: list[tuple[Any, int]] = []
    for rec in records:
        if rec.value is None:
            continue
        try:
            req = decode_signal(rec.value, limits)
        except ContractViolation:
            continue
        usable.append((req, req.ts if req.ts is not None else rec.timestamp))
    join: dict[str, JoinEntry] = {}
    if not usable:
        return join
    horizon = max(ts for _, ts in usable) - window_ms
    for req, entry_ts in usable:
        if entry_ts >= horizon:
            remember_signal(join, req.signal_id, req.features, entry_ts, req.model_key)
    return join
