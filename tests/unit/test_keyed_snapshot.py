"""KeyedOnline: the seen ids round-trip in order, old snapshots load, eviction, GC tracking."""

from __future__ import annotations

import gc

import pytest

from models import keyed
from models.errors import ModelError
from models.keyed import KeyedOnline


def _trained(ids: list[str]) -> KeyedOnline:
    k = KeyedOnline(max_seen_ids=1000)
    for i, oid in enumerate(ids):
        k.learn(oid, "BTC" if i % 2 else "ETH", {"f0": i / 10, "f1": -i / 7}, i % 3 == 0, 1.5)
    return k


def test_seen_ids_and_learners_round_trip_in_order() -> None:
    ids = [f"o{i}" for i in range(50)]
    k = _trained(ids)
    back = KeyedOnline.restore(k.snapshot())
    assert list(back.seen) == ids
    probes = [{"f0": x / 3, "f1": -x} for x in range(5)]
    for key in ("BTC", "ETH"):
        assert back.n_learned(key) == k.n_learned(key) == 25
        assert [back.predict(key, x) for x in probes] == [k.predict(key, x) for x in probes]
    assert not back.learn("o7", "ETH", {"f0": 1.0}, True, None).learned  # still a duplicate


def test_the_order_survives_evictions() -> None:
    k = KeyedOnline(max_seen_ids=10)
    for i in range(35):
        k.learn(f"o{i}", "BTC", {"f0": float(i)}, i % 2 == 0, None)
    back = KeyedOnline.restore(k.snapshot())
    assert list(back.seen) == [f"o{i}" for i in range(25, 35)]
    back.learn("o35", "BTC", {"f0": 1.0}, True, None)
    assert next(iter(back.seen)) == "o26"  # the oldest is forgotten first


def test_ids_orjson_cannot_write_fall_back_to_a_list() -> None:
    ids = ["plain", "lone \ud800 surrogate", "after"]
    back = KeyedOnline.restore(_trained(ids).snapshot())
    assert list(back.seen) == ids


def test_an_unknown_version_is_refused() -> None:
    data = bytearray(_trained(["a"]).snapshot())
    data[len(keyed._MAGIC)] = 99
    with pytest.raises(ModelError):
        KeyedOnline.restore(bytes(data))


def test_at_least_max_seen_ids_are_remembered_and_at_most_one_percent_more() -> None:
    k = KeyedOnline(max_seen_ids=1000)
    sizes = []
    for i in range(5000):
        k.learn(f"o{i}", "BTC", {"f0": float(i % 7)}, i % 2 == 0, None)
        sizes.append(len(k.seen))
    assert sizes[999] == 1000 and min(sizes[999:]) == 1000 and max(sizes) == 1010
    newest = [f"o{i}" for i in range(5000 - len(k.seen), 5000)]
    assert list(k.seen) == newest  # the oldest were forgotten, the order kept
    assert not k.learn(newest[0], "BTC", {"f0": 1.0}, True, None).learned
    assert k.learn("o0", "BTC", {"f0": 1.0}, True, None).learned  # forgotten long ago


def test_the_seen_ids_are_never_tracked_by_the_garbage_collector() -> None:
    k = KeyedOnline(max_seen_ids=100)
    for i in range(300):
        k.learn(f"o{i}", "BTC", {"f0": 1.0}, True, None)
        assert not gc.is_tracked(k.seen)
    assert not gc.is_tracked(KeyedOnline.restore(k.snapshot()).seen)
