"""The online models' per-key figures: computed again only for keys that learned, cold keys left
cold, and the same figures as computing them afresh."""

from __future__ import annotations

import random

from agents.state import PartitionState, PartitionStore
from alphapulse._key_summaries import KeySummaries, summary
from models.keyed import KeyedOnline
from models.online import OnlineConfig
from stream.settings import Settings


def _store(keys: int, live: int) -> tuple[PartitionStore, KeyedOnline]:
    store = PartitionStore(Settings(_env_file=None))
    keyed = KeyedOnline(OnlineConfig(), max_live_keys=live)
    rng = random.Random(7)
    for k in range(keys):
        for i in range(4):
            x = {"a": rng.random(), "b": rng.random()}
            keyed.learn(f"o{k}-{i}", f"K{k}", x, rng.random() < 0.5, None)
    store.states[1] = PartitionState(1, 1, keyed)
    return store, keyed


def test_figures_are_reused_until_a_key_learns_and_cold_keys_stay_cold() -> None:
    store, keyed = _store(keys=30, live=10)
    live_before = list(keyed._live)
    sums = KeySummaries()
    first = sums.collect(store)
    assert sorted(first) == sorted(f"K{k}" for k in range(30))
    assert sums.computed == 30
    assert list(keyed._live) == live_before  # reading a cold key did not make it live
    for key, figures in first.items():
        assert figures == summary(1, keyed.learners[key])

    assert sums.collect(store) == first
    assert sums.computed == 30  # nothing learned: nothing computed

    keyed.learn("o-new", "K3", {"a": 0.1, "b": 0.9}, True, None)  # K3 was cold
    again = sums.collect(store)
    assert sums.computed == 31
    assert again["K3"]["n_learned"] == 5
    assert again["K3"] == summary(1, keyed.learners["K3"])
    assert {k: v for k, v in again.items() if k != "K3"} == {
        k: v for k, v in first.items() if k != "K3"
    }


def test_keys_of_a_dropped_partition_are_forgotten() -> None:
    store, _ = _store(keys=3, live=10)
    sums = KeySummaries()
    assert len(sums.collect(store)) == 3
    store.states.clear()
    assert sums.collect(store) == {}
    store2, _ = _store(keys=3, live=10)
    sums.collect(store2)
    assert sums.computed == 6  # computed afresh, not taken from a partition no longer held
