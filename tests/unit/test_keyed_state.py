"""KeyedOnline's state as data: per-key records round-trip bit for bit, dedupe survives, and
anything that is not a record (garbage, corruption, non-finite numbers, pickles, forged or
unsigned trees) is refused with the object unchanged."""

from __future__ import annotations

import hashlib
import math
import pickle
import random
from pathlib import Path
from typing import Any

import pytest

from models import _state_learner
from models._snapshot import SnapshotError
from models._state_keyed import decode_key_record, encode_key_record
from models._state_learner import AdwinState, LearnerState, encode_learner
from models.errors import ConfigError
from models.keyed import KeyedOnline
from models.online import CLASSIFIERS, DRIFT_DETECTORS, OnlineConfig, OnlineLearner
from models.synthetic import TradeGenerator

KEY = b"k" * 32
CONFIGS = {
    "logistic_regression-adwin": OnlineConfig(),
    "perceptron-adwin": OnlineConfig(classifier="perceptron"),
    "logistic_regression-page_hinkley-decay": OnlineConfig(
        drift_detector="page_hinkley", drift_threshold=5.0, decay=True, decay_window=50
    ),
    "perceptron-none-l2": OnlineConfig(classifier="perceptron", drift_detector="none", l2=0.01),
}
TREES = ("hoeffding_tree", "hoeffding_adaptive_tree")


def _outcomes(n: int, keys: int, seed: int) -> list[tuple[str, str, dict[str, Any], bool, float]]:
    rng = random.Random(seed)
    rows = TradeGenerator(n_features=10, seed=seed).rows(n)
    out = []
    for i, r in enumerate(rows):
        label = (r.features["f0"] > 0) == (i < n // 2)  # the rule flips half way: drift
        out.append((f"{seed}-o{i}", f"K{rng.randrange(keys)}", r.features, label, r.realized_rr))
    return out


def _fingerprint(k: KeyedOnline) -> tuple[Any, ...]:
    probe = {f"f{i}": 0.1 * i for i in range(10)}
    keys = sorted(k.learners)
    return (
        list(k.seen.items()),
        [(key, k.n_learned(key), k.learners[key].win_probability(probe)) for key in keys],
        sorted(k.touched),
    )


def _continue_identically(a: KeyedOnline, b: KeyedOnline, seed: int) -> None:
    """Feed both the same further outcomes; every result and prediction must be equal."""
    for oid, key, x, y, rr in _outcomes(400, 4, seed):
        assert a.learn(oid, key, x, y, rr) == b.learn(oid, key, x, y, rr)
        assert a.predict(key, x) == b.predict(key, x)
    assert list(a.seen.items()) == list(b.seen.items())


def _rebuilt(k: KeyedOnline, **kwargs: Any) -> KeyedOnline:
    fresh = KeyedOnline(k.config, k.max_seen_ids, **kwargs)
    for key, record in k.take_touched():
        fresh.load_key(key, record)
    return fresh


@pytest.mark.parametrize("name", list(CONFIGS))
def test_records_round_trip_bit_for_bit(name: str) -> None:
    live = KeyedOnline(CONFIGS[name], max_seen_ids=500)
    for oid, key, x, y, rr in _outcomes(900, 4, seed=1):
        live.learn(oid, key, x, y, rr)
    if "logistic" in name:  # the detector's state after it fired is part of the round trip
        assert sum(len(lr.drift_points) for lr in live.learners.values()) > 0
    back = _rebuilt(live)
    assert list(back.seen.items()) == list(live.seen.items())  # the order across keys too
    for key in live.learners:
        a, b = live.learners[key], back.learners[key]
        assert a.state() == b.state() and a.snapshot() == b.snapshot()
    _continue_identically(live, back, seed=2)


@pytest.mark.parametrize("classifier", TREES)
def test_a_signed_tree_round_trips_and_needs_its_key(classifier: str) -> None:
    config = OnlineConfig(classifier=classifier, drift_detector="page_hinkley")
    live = KeyedOnline(config, signing_key=KEY)
    for oid, key, x, y, rr in _outcomes(300, 2, seed=3):
        live.learn(oid, key, x, y, rr)
    records = dict(live.take_touched())
    back = KeyedOnline(config, signing_key=KEY)
    for key, record in records.items():
        back.load_key(key, record)
    _continue_identically(live, back, seed=4)

    for reader in (KeyedOnline(config), KeyedOnline(config, signing_key=b"other-key" * 4)):
        for key, record in records.items():
            with pytest.raises(SnapshotError, match="ALPHAPULSE_STATE_SIGNING_KEY"):
                reader.load_key(key, record)
        assert len(reader.learners) == 0 and not reader.seen
    unsigned = KeyedOnline(config)
    unsigned.learn("o1", "K", {"x": 1.0}, True, None)
    with pytest.raises(ConfigError, match="ALPHAPULSE_STATE_SIGNING_KEY"):
        unsigned.take_touched()
    with pytest.raises(ConfigError, match="ALPHAPULSE_STATE_SIGNING_KEY"):
        unsigned.snapshot()  # nor a partition snapshot no other process could read


@pytest.mark.parametrize("classifier", TREES)
def test_a_partition_snapshot_of_trees_is_signed(classifier: str) -> None:
    config = OnlineConfig(classifier=classifier)
    live = KeyedOnline(config, signing_key=KEY, max_live_keys=1)  # the other key kept signed
    for oid, key, x, y, rr in _outcomes(200, 2, seed=14):
        live.learn(oid, key, x, y, rr)
    data = live.snapshot()
    for key in (None, b"other-key" * 4):
        with pytest.raises(SnapshotError, match="ALPHAPULSE_STATE_SIGNING_KEY"):
            KeyedOnline.restore(data, signing_key=key)
    back = KeyedOnline.restore(data, signing_key=KEY)
    _continue_identically(live, back, seed=15)


def test_a_tree_blob_with_a_forged_signature_is_not_unpickled(tmp_path: Path) -> None:
    # A learner record that claims to be a signed tree, signed with a key the reader lacks.
    target = tmp_path / "pwned"
    lr = OnlineLearner(OnlineConfig(classifier="hoeffding_tree"))
    lr.learn_one({"x": 1.0}, True)
    state = lr.state()
    state.blob = pickle.dumps(_Exploit(target))
    forged = encode_learner(state, signing_key=b"attacker-key-1234")
    for key in (KEY, None):
        k = KeyedOnline(signing_key=key)
        record = encode_key_record(forged, ["o1"], [0], signing_key=key)
        with pytest.raises(SnapshotError):
            k.load_key("K", record)
        assert not target.exists() and not k.seen


class _Exploit:
    """Unpickling this creates ``path``: the proof that a payload was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_pickles_are_refused_and_never_loaded(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(target))
    k = KeyedOnline()
    k.learn("o1", "K", {"x": 1.0}, True, None)
    before = _fingerprint(k)
    attempts = [
        payload,
        b"APKO\x01" + payload,  # the old pickled partition snapshots, versions 1 and 2
        b"APKO\x02" + payload,
        b"APKR\x01" + payload,
        b"ALPHAPULSE-ONLINE\n\x00\x01" + payload,  # the old pickled learner snapshot
        encode_key_record(payload, ["o2"], [5]),  # well sealed, but its learner is a pickle
    ]
    for data in attempts:
        with pytest.raises(SnapshotError):
            k.load_key("K", data)
        with pytest.raises(SnapshotError):
            KeyedOnline.restore(data)
        with pytest.raises(SnapshotError):
            OnlineLearner.restore(data)
    assert not target.exists()
    assert _fingerprint(k) == before


def _valid_record() -> tuple[KeyedOnline, bytes]:
    k = KeyedOnline()
    for oid, key, x, y, rr in _outcomes(60, 1, seed=5):
        k.learn(oid, key, x, y, rr)
    ((_, record),) = k.take_touched()
    return k, record


def _refused_unchanged(data: bytes) -> None:
    target = KeyedOnline()
    target.learn("o-keep", "K0", {"f0": 1.0}, True, None)
    target.learn("o-other", "OTHER", {"f0": 2.0}, False, None)
    before = _fingerprint(target)
    with pytest.raises(SnapshotError):
        target.load_key("K0", data)
    assert _fingerprint(target) == before


def test_truncated_extended_and_flipped_records_are_refused() -> None:
    _, record = _valid_record()
    for n in range(len(record)):
        _refused_unchanged(record[:n])
    _refused_unchanged(record + b"\x00")
    rng = random.Random(6)
    for i in [*range(40), *rng.sample(range(len(record)), 200)]:
        flipped = bytearray(record)
        flipped[i] ^= 1 << rng.randrange(8)
        _refused_unchanged(bytes(flipped))


def test_random_bytes_are_refused() -> None:
    rng = random.Random(7)
    for n in [0, 1, 4, 5, 37, 38, 100, 1000] * 5:
        data = bytes(rng.randrange(256) for _ in range(n))
        _refused_unchanged(data)
        _refused_unchanged(b"APKR\x01" + data)


def _trained_state(detector: str) -> tuple[OnlineLearner, LearnerState]:
    lr = OnlineLearner(OnlineConfig(drift_detector=detector))
    for _, _, x, y, _ in _outcomes(100, 1, seed=5):
        lr.learn_one(x, y)
    return lr, lr.state()


def _set(state: LearnerState, where: str, value: float) -> None:
    lin, det = state.linear, state.detector
    assert lin is not None and det is not None
    if where == "weight":
        lin.weights[0] = (lin.weights[0][0], value)
    elif where == "mean":
        lin.means[3] = (lin.means[3][0], value)
    elif where == "variance":
        lin.variances[-1] = (lin.variances[-1][0], value)
    elif where == "intercept":
        lin.intercept = value
    elif where == "prediction":
        state.recent[-1] = (state.recent[-1][0], value)
    elif where == "detector":
        if isinstance(det, AdwinState):
            det.buckets[0][1][0] = value
        else:
            det.sum_increase = value


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
@pytest.mark.parametrize(
    "where", ["weight", "mean", "variance", "intercept", "prediction", "detector"]
)
def test_non_finite_numbers_are_refused_even_well_sealed(detector: str, where: str) -> None:
    lr, state = _trained_state(detector)
    assert OnlineLearner.restore(encode_learner(state)).snapshot() == lr.snapshot()
    for bad in (math.nan, math.inf, -math.inf):
        _, state = _trained_state(detector)
        _set(state, where, bad)
        learner = encode_learner(state)  # the writer does not check; the reader must
        with pytest.raises(SnapshotError):
            OnlineLearner.restore(learner)
        _refused_unchanged(encode_key_record(learner, ["x1"], [0]))


def test_huge_lengths_and_counts_are_refused_without_allocating() -> None:
    _, record = _valid_record()
    learner, ids, seqs = decode_key_record(record)
    body = bytearray(encode_key_record(learner, ids, seqs)[:-33])
    # The learner blob's length, then the ids' count, set to 2**32 - 1.
    for at in (5, 5 + 4 + len(learner)):
        huge = bytearray(body)
        huge[at : at + 4] = b"\xff\xff\xff\xff"
        data = bytes(huge)
        _refused_unchanged(data + b"\x00" + hashlib.sha256(data).digest())
    # Inside the learner record: the drift points' count (after the header, n_learned, the
    # kind, the configuration and the drift flag).
    at = len(b"ALPHAPULSE-ONLINE\n") + 2 + 8 + 1 + 59 + 1
    assert learner[at : at + 4] == (0).to_bytes(4, "big")
    inner = learner[:at] + b"\xff\xff\xff\xff" + learner[at + 4 :]
    _refused_unchanged(encode_key_record(inner, ids, seqs))


def test_out_of_range_values_are_refused_even_well_sealed() -> None:
    _, record = _valid_record()
    learner, ids, seqs = decode_key_record(record)
    cases = [
        encode_key_record(learner, ids, list(reversed(seqs))),  # numbers must rise
        encode_key_record(learner, [ids[0], ids[0]], [0, 1]),  # an id twice
        encode_key_record(learner[:-1], ids, seqs),  # a learner record cut short
        encode_key_record(learner + b"\x00", ids, seqs),  # bytes after the learner
        encode_key_record(b"", ids, seqs),
    ]
    for data in cases:
        _refused_unchanged(data)
    with pytest.raises(SnapshotError, match="not signed"):
        KeyedOnline(signing_key=KEY).load_key("K0", record)  # a key is set: digests refused


def test_an_adwin_window_that_disagrees_with_its_width_is_refused() -> None:
    # River's ADWIN runs in Rust: inconsistent buckets would panic there, not raise.
    lr = OnlineLearner()
    for oid, _, x, y, _ in _outcomes(100, 1, seed=8):
        del oid
        lr.learn_one(x, y)
    state = lr.state()
    assert state.detector is not None and hasattr(state.detector, "width")
    state.detector.width += 1.0  # type: ignore[union-attr]
    with pytest.raises(SnapshotError, match="width"):
        OnlineLearner.restore(encode_learner(state))


def test_touched_and_take_touched() -> None:
    k = KeyedOnline(max_seen_ids=4)  # evictions forget the oldest ids, of whatever key
    assert k.touched == set() and k.take_touched() == []
    k.learn("a", "A", {"x": 1.0}, True, None)
    k.learn("b", "B", {"x": 1.0}, False, None)
    assert k.touched == {"A", "B"}
    assert [key for key, _ in k.take_touched()] == ["A", "B"] and k.touched == set()
    assert not k.learn("a", "A", {"x": 1.0}, True, None).learned
    assert k.touched == set()  # a duplicate changes nothing
    with pytest.raises(ValueError):
        k.learn("c", "A", {"x": 1e300}, True, None)  # refused as non-finite: nothing changed
    assert k.touched == set()
    k.learn("c", "C", {"x": 1.0}, True, None)
    k.learn("d", "C", {"x": 1.0}, True, None)
    assert k.touched == {"C"} and list(k.seen) == ["a", "b", "c", "d"]
    k.take_touched()
    k.learn("e", "C", {"x": 1.0}, True, None)
    assert list(k.seen) == ["b", "c", "d", "e"]
    assert k.touched == {"A", "C"}  # "a" forgotten: A's remembered ids changed
    records = dict(k.take_touched())
    assert decode_key_record(records["A"])[1] == []
    assert decode_key_record(records["C"])[1] == ["c", "d", "e"]
    fresh = KeyedOnline(max_seen_ids=4)
    fresh.load_key("C", records["C"])
    assert fresh.touched == set()  # loading is not a change to write back
    assert list(fresh.seen) == ["c", "d", "e"] and fresh.n_learned("C") == 3


def test_duplicates_are_refused_after_a_restore_from_records() -> None:
    live = KeyedOnline(max_seen_ids=300)
    outcomes = _outcomes(800, 50, seed=9)
    for oid, key, x, y, rr in outcomes:
        live.learn(oid, key, x, y, rr)
    back = _rebuilt(live)
    remembered = list(live.seen)
    assert 300 <= len(remembered) <= 303
    counts = {key: back.n_learned(key) for key in back.learners}
    for oid, key, x, y, rr in outcomes:
        if oid in live.seen:
            assert not back.learn(oid, key, x, y, rr).learned
    assert {key: back.n_learned(key) for key in back.learners} == counts
    # Forgotten ids are learned again, and push the oldest remembered out, as live would.
    for oid, key, x, y, rr in outcomes[:50]:
        assert back.learn(oid, key, x, y, rr) == live.learn(oid, key, x, y, rr)
    assert list(back.seen.items()) == list(live.seen.items())


def test_cold_keys_are_rebuilt_bit_for_bit() -> None:
    # Two live learners at most: the others are kept as records and rebuilt on use.
    small = KeyedOnline(max_live_keys=2)
    big = KeyedOnline()
    for oid, key, x, y, rr in _outcomes(600, 12, seed=10):
        assert small.learn(oid, key, x, y, rr) == big.learn(oid, key, x, y, rr)
        assert small.predict(key, x) == big.predict(key, x)
    assert len(small._live) == 2 and len(small._cold) == 10
    assert sorted(small.learners) == sorted(big.learners)
    assert [small.n_learned(k) for k in sorted(big.learners)] == [
        big.n_learned(k) for k in sorted(big.learners)
    ]
    assert dict(small.take_touched()) == dict(big.take_touched())


def test_partition_snapshots_still_round_trip_without_pickle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle used")

    for name in ("dumps", "loads", "dump", "load"):
        monkeypatch.setattr(pickle, name, forbidden)
    live = KeyedOnline(max_seen_ids=200, max_live_keys=3)  # cold keys too
    for oid, key, x, y, rr in _outcomes(500, 7, seed=11):
        live.learn(oid, key, x, y, rr)
    data = live.snapshot()
    assert len(_rebuilt(live).learners) == 7  # per-key records, no pickle either
    back = KeyedOnline.restore(data)
    assert list(back.seen.items()) == list(live.seen.items())
    assert KeyedOnline.snapshot_ids(data) == list(live.seen)
    _continue_identically(live, back, seed=12)
    for n in range(0, len(data), 97):
        with pytest.raises(SnapshotError):
            KeyedOnline.restore(data[:n])


def test_the_format_codes_cover_every_configuration() -> None:
    assert set(CLASSIFIERS) == set(_state_learner._CLASSIFIERS)
    assert set(DRIFT_DETECTORS) == set(_state_learner._DETECTORS)


def test_record_size_and_live_size_per_key() -> None:
    k = KeyedOnline()
    for oid, key, x, y, rr in _outcomes(500, 100, seed=13):
        k.learn(oid, key, x, y, rr)
    sizes = [len(r) for _, r in k.take_touched()]
    assert max(sizes) < 2048, sizes  # 10 features, about 5 outcomes a key
    with pytest.raises(KeyError):
        k.encode_key("never-learned")
