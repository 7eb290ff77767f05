"""Benchmark of the online models' state as data: per-key records at 10,000 and 100,000 keys.

One partition (one :class:`models.keyed.KeyedOnline`) holds ``small`` and another ``big`` model
keys (default 10,000 and 100,000), each key having learned 5 outcomes of 10 features, built key
by key. Then, in interleaved rounds (small, big, small, big, ...) after a warm-up round, a batch
learns one outcome for each of 100 random keys (not timed) and the records of the keys it
touched are taken (``take_touched``, timed): ``checkpoint_100_touched_ms_100k_vs_10k`` is the
median at ``big`` over the median at ``small`` (goal <= 2.0). ``restore_s_100k_keys`` is the
median time to rebuild a KeyedOnline from the ``big`` partition's records (every key's
``load_key``, then the remembered ids put in order; goal <= 10 s).

Memory (tracemalloc): ``state_bytes_per_model_key`` is what the ``big`` partition holds per key
once rebuilt from its records with its ``max_live_keys`` most recent keys made live again (goal
<= 4,096); also printed: the bytes per key of a partition whose keys are all live River objects
(``live_bytes_per_model_key``), of one whose keys are all kept as records
(``cold_bytes_per_model_key``), and the mean record size (``record_bytes_per_model_key``).

Run ``python -m bench.state --json`` for JSON lines ``{"name", "value", "unit"[, "goal",
"met"]}``; ``--small``, ``--big``, ``--rounds`` and ``--live`` change the sizes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

from bench._common import print_records
from models.keyed import KeyedOnline

__all__ = ["main", "run"]

FEATURES = [f"f{i}" for i in range(10)]
OUTCOMES_PER_KEY = 5
TOUCHED = 100


def _record(name: str, value: float, unit: str, goal: float | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": name, "value": round(value, 4), "unit": unit}
    if goal is not None:
        rec.update(goal=goal, met=bool(value <= goal))
    return rec


def _row(rng: random.Random) -> dict[str, float]:
    return {f: rng.gauss(0.0, 1.0) for f in FEATURES}


def build(n_keys: int, live: int, seed: int = 0) -> KeyedOnline:
    """A partition of ``n_keys`` keys that learned ``OUTCOMES_PER_KEY`` outcomes each."""
    rng = random.Random(seed)
    k = KeyedOnline(max_live_keys=live, max_seen_ids=max(1_000_000, 2 * n_keys * 6))
    for i in range(n_keys):
        key = f"key-{i}"
        for j in range(OUTCOMES_PER_KEY):
            k.learn(f"{key}/o{j}", key, _row(rng), rng.random() < 0.5, rng.uniform(-2, 2))
    k.take_touched()
    return k


def _touch_batch(k: KeyedOnline, n_keys: int, rng: random.Random, batch: int) -> float:
    """Learn one outcome for each of ``TOUCHED`` random keys, then time taking their records."""
    for key in rng.sample(range(n_keys), TOUCHED):
        name = f"key-{key}"
        k.learn(f"{name}/b{batch}", name, _row(rng), rng.random() < 0.5, None)
    t0 = time.perf_counter()
    records = k.take_touched()
    elapsed = (time.perf_counter() - t0) * 1000
    if len(records) != TOUCHED:
        raise RuntimeError(f"expected {TOUCHED} records, got {len(records)}")
    return elapsed


def _restore(records: list[tuple[str, bytes]], live: int) -> KeyedOnline:
    k = KeyedOnline(max_live_keys=live, max_seen_ids=max(1_000_000, 2 * len(records) * 6))
    for key, data in records:
        k.load_key(key, data)
    _ = k.seen  # put the remembered ids back in order: part of a restore
    return k


def _traced_bytes(make: Any) -> tuple[int, Any]:
    """Bytes still allocated by ``make()`` when it returns, and what it returned."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = make()
        return tracemalloc.get_traced_memory()[0] - before, out
    finally:
        tracemalloc.stop()


def run(
    small: int = 10_000, big: int = 100_000, rounds: int = 5, live: int = 10_000
) -> list[dict[str, Any]]:
    """Build both partitions, time checkpoints and restores, measure memory; the records."""
    parts = {small: build(small, live, seed=1), big: build(big, live, seed=2)}
    rng = random.Random(3)
    times: dict[int, list[float]] = {small: [], big: []}
    for r in range(rounds + 1):  # round 0 warms up
        for n, k in parts.items():
            ms = _touch_batch(k, n, rng, r)
            if r:
                times[n].append(ms)
    records = [(key, parts[big].encode_key(key)) for key in parts[big].learners]
    del parts  # a restore starts from records, not beside two live partitions
    restore_s = []
    for _ in range(max(1, min(rounds, 3))):
        t0 = time.perf_counter()
        _restore(records, live)
        restore_s.append(time.perf_counter() - t0)

    def restored_with_live_keys() -> KeyedOnline:
        k = _restore(records, live)
        for key, _ in records[-live:]:
            k.learner(key)  # the most recently used keys are River objects again
        return k

    state_bytes, _ = _traced_bytes(restored_with_live_keys)
    sample = records[: min(len(records), 2_000)]
    live_bytes, _ = _traced_bytes(lambda: build(len(sample), len(sample), seed=4))
    cold_bytes, _ = _traced_bytes(lambda: _restore(sample, 1))
    ms_small, ms_big = statistics.median(times[small]), statistics.median(times[big])
    spread = {n: max(t) - min(t) for n, t in times.items()}
    return [
        _record("checkpoint_100_touched_ms_100k_vs_10k", ms_big / ms_small, "ratio", 2.0),
        _record("restore_s_100k_keys", statistics.median(restore_s), "s", 10.0),
        _record("state_bytes_per_model_key", state_bytes / big, "bytes", 4096.0),
        _record("checkpoint_100_touched_ms_10k", ms_small, "ms"),
        _record("checkpoint_100_touched_ms_100k", ms_big, "ms"),
        _record("checkpoint_100_touched_ms_spread_10k", spread[small], "ms"),
        _record("checkpoint_100_touched_ms_spread_100k", spread[big], "ms"),
        _record("restore_s_spread_100k_keys", max(restore_s) - min(restore_s), "s"),
        _record("record_bytes_per_model_key", statistics.mean(len(d) for _, d in records), "bytes"),
        _record("live_bytes_per_model_key", live_bytes / len(sample), "bytes"),
        _record("cold_bytes_per_model_key", cold_bytes / len(sample), "bytes"),
        _record("keys", big, "keys"),
        _record("max_live_keys", live, "keys"),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Keyed online state benchmark.")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--small", type=int, default=10_000, help="keys of the small partition")
    parser.add_argument("--big", type=int, default=100_000, help="keys of the big partition")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after the warm-up")
    parser.add_argument("--live", type=int, default=10_000, help="max_live_keys of both")
    args = parser.parse_args(argv)
    print_records(run(args.small, args.big, args.rounds, args.live), args.json)


if __name__ == "__main__":
    main()
