"""The outcome join store: recent signals' features, kept so that an outcome can be learned
without features of its own.

The predictor keeps each answered signal (:func:`remember_signal`); the learner looks an outcome's
signal up (:func:`join_fields`, :func:`join_ts`); after a restart or a rebalance the store of a
partition is rebuilt from the signals topic itself (:func:`remember_records`,
:func:`forget_before`).

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
    "forget_before",
    "join_fields",
    "join_ts",
    "remember_records",
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


def remember_records(
    join: dict[str, JoinEntry], records: Iterable[Any], limits: Limits
) -> int | None:
    """Keep each usable signal of ``records`` (Kafka records with ``value`` and ``timestamp``) in
    ``join`` (:func:`remember_signal`, at its own ``ts``, else its record's time); returns the
    newest of those times (None: none usable). A partition's store is rebuilt from its signals
    a fetch at a time with this, then :func:`forget_before` the join window of the newest.

    >>> from types import SimpleNamespace
    >>> recs = [
    ...     SimpleNamespace(value=b'{"signal_id": "s1", "symbol": "BTC", "features": {}}',
    ...                     timestamp=5),
    ...     SimpleNamespace(value=b'{"signal_id": "s2", "symbol": "BTC", "features": {}}',
    ...                     timestamp=20),
    ...     SimpleNamespace(value=b"not json", timestamp=30),
    ...     SimpleNamespace(value=None, timestamp=40),
    ... ]
    >>> join: dict[str, JoinEntry] = {}
    >>> remember_records(join, recs, Limits()), list(join)
    (20, ['s1', 's2'])
    """
    newest: int | None = None
    for rec in records:
        if rec.value is None:
            continue
        try:
            req = decode_signal(rec.value, limits)
        except ContractViolation:
            continue
        ts = req.ts if req.ts is not None else rec.timestamp
        remember_signal(join, req.signal_id, req.features, ts, req.model_key)
        if newest is None or ts > newest:
            newest = ts
    return newest


def forget_before(join: dict[str, JoinEntry], horizon: int) -> int:
    """Forget the entries of ``join`` whose time is before ``horizon``; returns how many.

    >>> join: dict[str, JoinEntry] = {}
    >>> for sid, ts in (("a", 5), ("b", 1), ("c", 9)):
    ...     remember_signal(join, sid, {}, ts, "BTC")
    >>> forget_before(join, 5), list(join)
    (1, ['a', 'c'])
    """
    doomed = [sid for sid, entry in join.items() if join_ts(entry) < horizon]
    for sid in doomed:
        del join[sid]
    return len(doomed)
