"""The join store (agents/state/join.py): out of the garbage collector's sight, and pruning."""

from __future__ import annotations

import gc

import orjson

from agents.state import (
    JoinEntry,
    PartitionState,
    PartitionStore,
    join_fields,
    join_ts,
    remember_signal,
)
from models.keyed import KeyedOnline
from stream.codec import Limits, decode_signal
from stream.settings import Settings


def test_the_store_is_never_tracked_by_the_garbage_collector() -> None:
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
        # Untracked from the first entry on, not only after a collection: full collections never
        # visit the store's entries.
        assert not gc.is_tracked(join)
    assert join_fields(join["s3"])[0] == {"f0": 3.5, "f1": -1.25}


def test_a_dict_holding_a_new_tuple_is_tracked() -> None:
    # Why entries are bytes: the previous entries were tuples, and a dict holding a tuple that is
    # still tracked (every new one is) becomes tracked itself.
    d: dict[str, object] = {"a": b"x"}
    assert not gc.is_tracked(d)
    d["b"] = tuple(("f0", float(i)) for i in range(2))  # built at run time, as entries were
    assert gc.is_tracked(d)


def test_entries_round_trip_exactly() -> None:
    features = {"f0": 0.1 + 0.2, "tiny": 5e-324, "neg": -0.0, "big": 1.7976931348623157e308}
    features["caf\u00e9"] = 1 / 3
    join: dict[str, JoinEntry] = {}
    remember_signal(join, "s", features, -5, "ETH/USD", None, None)
    e = join["s"]
    assert join_ts(e) == -5
    back, key, score, components = join_fields(e)
    assert key == "ETH/USD" and score is None and components is None
    assert back == features and [repr(v) for v in back.values()] == [
        repr(v) for v in features.values()
    ]


def test_text_orjson_cannot_write_falls_back_to_a_pickle() -> None:
    join: dict[str, JoinEntry] = {}
    remember_signal(join, "s", {"lone \ud800": 1.0}, 7, "K", 0.25, {"online": 0.25})
    e = join["s"]
    assert join_ts(e) == 7
    assert join_fields(e) == ({"lone \ud800": 1.0}, "K", 0.25, {"online": 0.25})


def _store(window_s: float, cap: int) -> PartitionStore:
    settings = Settings(_env_file=None, join_window_s=window_s, join_max_entries=cap)  # type: ignore[call-arg]
    return PartitionStore(settings)


def _fill(store: PartitionStore, partition: int, ts: list[int]) -> None:
    st = PartitionState(partition, 0, KeyedOnline())
    for i, t in enumerate(ts):
        remember_signal(st.join, f"p{partition}-s{i}", {"f0": float(i)}, t, "BTC")
    store.states[partition] = st


def test_prune_forgets_the_signals_older_than_the_join_window() -> None:
    store = _store(window_s=10.0, cap=1000)
    _fill(store, 0, [1_000, 5_000, 10_000, 12_000, 20_000])
    _fill(store, 1, [19_999, 20_000])
    removed = store.prune_joins(now_ms=20_000)  # horizon 10,000: keeps ts >= 10,000
    assert removed == 2
    assert list(store.states[0].join) == ["p0-s2", "p0-s3", "p0-s4"]
    assert list(store.states[1].join) == ["p1-s0", "p1-s1"]
    assert store.prune_joins(now_ms=20_000) == 0


def test_prune_keeps_at_most_the_cap_newest_signals_per_partition() -> None:
    store = _store(window_s=3600.0, cap=3)
    _fill(store, 0, list(range(100_000, 100_010)))
    _fill(store, 1, [100_000, 100_001])
    assert store.prune_joins(now_ms=100_010) == 7
    assert list(store.states[0].join) == ["p0-s7", "p0-s8", "p0-s9"]
    assert len(store.states[1].join) == 2


def test_prune_stops_at_the_first_signal_inside_the_window() -> None:
    # The store is in arrival order; a late-stamped signal that arrived early shields the ones
    # behind it until it expires itself (pruning never scans the whole store).
    store = _store(window_s=10.0, cap=1000)
    _fill(store, 0, [1_000, 15_000, 2_000, 3_000])
    assert store.prune_joins(now_ms=20_000) == 1
    assert list(store.states[0].join) == ["p0-s1", "p0-s2", "p0-s3"]
    assert store.prune_joins(now_ms=30_000) == 3
    assert store.states[0].join == {}


def test_prune_after_many_rounds_of_arrivals_keeps_exactly_the_newest() -> None:
    store = _store(window_s=3600.0, cap=500)
    _fill(store, 0, [])
    join = store.states[0].join
    n = 0
    for _ in range(50):
        for _ in range(137):
            remember_signal(join, f"s{n}", {"f0": 1.0}, 1_000_000 + n, "BTC")
            n += 1
        store.prune_joins(now_ms=1_000_000 + n)
        assert len(join) == min(n, 500)
        assert next(iter(join)) == f"s{max(0, n - 500)}"
