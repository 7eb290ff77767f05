"""Full and delta learner checkpoints restore exactly the state they were taken from."""

from __future__ import annotations

import random
import struct

import pytest

from agents.state.checkpoints import (
    checkpoint_base,
    decode_checkpoint,
    encode_checkpoint,
    encode_delta_checkpoint,
    full_checkpoint_due,
    take_checkpoint,
)
from models.keyed import KeyedOnline


def _learn(k: KeyedOnline, oid: str, rng: random.Random) -> None:
    x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}
    k.learn(oid, rng.choice(["BTC", "ETH"]), x, rng.random() < 0.5, rng.uniform(-2, 2))


def test_chain_of_fulls_and_deltas_restores_the_exact_state() -> None:
    # A small cap so ids are forgotten between checkpoints, and re-sent old ids learned again.
    rng = random.Random(3)
    live = KeyedOnline(max_seen_ids=300)
    base: bytes | None = None
    ids_at_base = 0
    kinds = []
    for step in range(60):
        for i in range(rng.randint(1, 40)):
            oid = f"o{rng.randint(0, 600)}" if rng.random() < 0.2 else f"n{step}-{i}"
            _learn(live, oid, rng)
        new_ids = live.ids_added - ids_at_base
        if base is None or full_checkpoint_due(new_ids, len(live.seen)):
            data = base = encode_checkpoint(step, live)
            ids_at_base = live.ids_added
            kinds.append("full")
        else:
            data = encode_delta_checkpoint(step, live, base_offset=step, new_ids=new_ids)
            kinds.append("delta")
        off, restored = decode_checkpoint(data, base=None if data is base else base)
        assert off == step
        assert list(restored.seen) == list(live.seen)
        probe = {"a": 0.3, "b": -1.2}
        for key in ("BTC", "ETH"):
            assert restored.predict(key, probe) == live.predict(key, probe)
    assert kinds.count("delta") > 10 and kinds.count("full") > 3


def test_an_id_learned_again_after_it_was_forgotten_is_the_newest() -> None:
    rng = random.Random(1)
    live = KeyedOnline(max_seen_ids=3)
    for oid in "abc":
        _learn(live, oid, rng)
    base = encode_checkpoint(0, live)
    for oid in "dea":  # "a" is forgotten once "d" comes, then learned again
        _learn(live, oid, rng)
    assert list(live.seen) == ["d", "e", "a"]
    _, restored = decode_checkpoint(encode_delta_checkpoint(1, live, 0, new_ids=3), base=base)
    assert list(restored.seen) == ["d", "e", "a"]


def test_a_delta_is_small_next_to_its_full_checkpoint() -> None:
    live = KeyedOnline(max_seen_ids=50_000)
    rng = random.Random(2)
    for i in range(50_000):
        live.seen[f"outcome-{i:012d}"] = None
    for i in range(100):
        _learn(live, f"new-{i}", rng)
    full = encode_checkpoint(0, live)
    delta = encode_delta_checkpoint(1, live, 0, new_ids=100)
    assert len(delta) * 50 < len(full)
    assert checkpoint_base(delta) == 0 and checkpoint_base(full) is None


def test_a_delta_without_its_base_keeps_its_own_ids() -> None:
    rng = random.Random(4)
    live = KeyedOnline()
    for oid in ("a", "b", "c"):
        _learn(live, oid, rng)
    _, restored = decode_checkpoint(encode_delta_checkpoint(5, live, 0, new_ids=1))
    assert list(restored.seen) == ["c"]
    assert restored.n_learned("BTC") + restored.n_learned("ETH") == 3


def test_bad_records_are_refused() -> None:
    live = KeyedOnline()
    delta = encode_delta_checkpoint(1, live, 0, new_ids=0)
    with pytest.raises(ValueError, match="not a learner checkpoint"):
        decode_checkpoint(b"junk")
    with pytest.raises(ValueError, match="not a full checkpoint"):
        decode_checkpoint(delta, base=delta)


def test_a_taken_checkpoint_encodes_the_state_it_was_taken_from() -> None:
    rng = random.Random(6)
    live = KeyedOnline(max_seen_ids=50)
    for i in range(40):
        _learn(live, f"a{i}", rng)
    expected = encode_checkpoint(9, live)
    taken = take_checkpoint(9, live)
    for i in range(40):  # learning goes on while the taken checkpoint waits to be encoded
        _learn(live, f"b{i}", rng)
    assert taken.encode() == expected
    _, restored = decode_checkpoint(taken.encode())
    assert list(restored.seen) == [f"a{i}" for i in range(40)]


def test_the_record_layout_is_the_one_written_before_the_shared_header() -> None:
    # Checkpoints already in the topic must still decode: magic, big-endian offsets, the state.
    rng = random.Random(7)
    live = KeyedOnline()
    for oid in ("a", "b", "c"):
        _learn(live, oid, rng)
    full = b"APCK" + struct.pack(">q", 42) + live.snapshot()
    delta = b"APCD" + struct.pack(">qq", 43, 120) + live.snapshot(newest_ids=1)
    assert encode_checkpoint(42, live) == full
    assert encode_delta_checkpoint(43, live, base_offset=120, new_ids=1) == delta
    assert checkpoint_base(delta) == 120 and checkpoint_base(full) is None
    off, restored = decode_checkpoint(delta, base=full)
    assert off == 43 and list(restored.seen) == ["a", "b", "c"]


def test_a_short_or_foreign_record_is_refused() -> None:
    with pytest.raises(ValueError, match="not a learner checkpoint"):
        decode_checkpoint(b"APCK\x00")
    assert checkpoint_base(b"APCD") is None
