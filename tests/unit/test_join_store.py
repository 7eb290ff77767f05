"""The join store's entries stay out of Python's garbage collector (agents/_partitions.py)."""

from __future__ import annotations

import gc

import orjson

from agents._partitions import J_FEATURES, JoinEntry, remember_signal
from stream.codec import Limits, decode_signal


def test_entries_made_from_decoded_signals_are_not_tracked_after_a_collection() -> None:
    limits = Limits(1_000_000, 512)
    join: dict[str, JoinEntry] = {}
    for i in range(100):
        raw = orjson.dumps(
            {"signal_id": f"s{i}", "symbol": "BTC", "features": {"f0": 0.5 + i, "f1": -1.25}}
        )
        req = decode_signal(raw, limits)
        remember_signal(
            join,
            req.signal_id,
            req.features,
            1_700_000_000_000 + i,
            req.model_key,
            0.7,
            {"online": 0.7, "xgboost": 0.65},
        )
    # A collection untracks a tuple once the tuples in it are untracked: one level per pass at
    # worst. In a worker, young objects go through many passes before they reach the oldest
    # generation, whose collections are the long ones.
    for _ in range(3):
        gc.collect()
    tracked = [sid for sid, entry in join.items() if gc.is_tracked(entry)]
    assert tracked == []
    assert dict(join["s3"][J_FEATURES]) == {"f0": 3.5, "f1": -1.25}


def test_a_dict_inside_a_tuple_keeps_it_tracked() -> None:
    # Why the entries hold pairs: CPython never untracks a tuple that holds a dict, even a dict
    # of numbers that is itself untracked.
    features = {"f0": 1.0}
    entry = (features, 1, "BTC", None, None)
    gc.collect()
    assert not gc.is_tracked(features)
    assert gc.is_tracked(entry)
