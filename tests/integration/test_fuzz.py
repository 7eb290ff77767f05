"""Hostile input, fuzzed, through a real worker: random bytes, arbitrary JSON, near-valid messages.

Hypothesis draws batches of messages for the signals and outcomes topics: random bytes, null
values (tombstones), arbitrary JSON (NaN, infinities, deep nesting, lone surrogates) and valid
messages with one field broken, with right, missing or wrong Kafka keys, some sent twice. After
each batch every message must be accounted for, by the original message:

- a valid signal is answered by exactly one prediction with its ``signal_id``;
- a valid outcome is learned (``model_versions.online`` of its model key goes up by one), or
  dead-lettered as ``duplicate`` (a copy of one already learned) or ``unjoinable`` (its signal
  unknown, or older than the join window before the outcome's own time; outcomes do not wait for
  their signal here, ``ALPHAPULSE_JOIN_WAIT_MAX=0``: test_event_time.py covers the wait);
- anything else is dead-lettered once, with one of the reasons it earns, and its original bytes.

The expected fate of each message comes from an oracle that states what the contract accepts
(:mod:`tests.oracle`, which shares no code with the project's decoder) plus a model of the join
and of deduplication per partition. At the end the counts must add up exactly, and the agents
must still answer and learn.

Finite feature values are drawn within 1e150: beyond it, whether an outcome is learned or refused
as ``bad_feature`` depends on the model's state (see ``models.online``), which this model of the
worker does not follow; tests/unit/test_finite_state.py and test_learner.py cover that rule.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from stream.settings import Settings
from tests.oracle import judge
from tests.support import Collector, Sender, Worker, learned_counts, probe

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_BYTES = 2048
MAX_FEATURES = 16
FEATURE_MAX = 1e150
PARTITIONS = 4
KEYS = ("FZ-A", "FZ-B", "FZ-C")
DEAD_REASONS = {"invalid_json", "schema", "bad_feature", "too_large", "unjoinable", "duplicate"}


_plain = st.text(max_size=12)
_text = st.one_of(
    _plain, _plain, _plain, st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", " "])
)
_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _text
)
json_values = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _tame(v: Any) -> Any:
    """``v`` with every finite float beyond :data:`FEATURE_MAX` brought back to it."""
    if isinstance(v, float) and math.isfinite(v) and abs(v) > FEATURE_MAX:
        return math.copysign(FEATURE_MAX, v)
    if isinstance(v, dict):
        return {k: _tame(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_tame(x) for x in v]
    return v


feature_maps = st.dictionaries(
    st.text(max_size=6),
    st.floats(allow_nan=True, allow_infinity=True).map(_tame)
    | st.none()
    | st.integers(-(10**6), 10**6),
    max_size=6,
)
_odd_ts = st.sampled_from(
    [
        "2024-01-01T00:00:00Z",  # valid, but older than the join window
        "2024-13-01T00:00:00Z",
        1e300,
        2**70,
        -1,
        True,
        "yesterday",
    ]
)
timestamps = st.one_of(*[st.none()] * 5, st.just("now"), st.just("now"), _odd_ts)
"""``"now"`` is replaced by the current time when the message is built."""
_BREAKS = st.one_of(
    st.tuples(
        st.just("drop"), st.sampled_from(["signal_id", "symbol", "features", "outcome_id", "label"])
    ),
    st.tuples(
        st.just("set"),
        st.sampled_from(
            ["signal_id", "symbol", "features", "model_key", "outcome_id", "label", "realized_rr"]
        ),
        json_values,
    ),
    st.tuples(st.just("bad_feature"), json_values.filter(lambda v: not isinstance(v, int | float))),
    st.just(("many_features",)),
    st.tuples(st.just("twice"), st.sampled_from(["signal_id", "symbol", "features", "label"])),
    st.tuples(
        st.just("long_id"),
        st.sampled_from(["signal_id", "symbol", "model_key", "outcome_id"]),
        st.sampled_from(["\u00e9" * 128, "\u00e9" * 129, "a" * 257, "\U0001f600" * 65]),
    ),
    st.just(("big",)),
    st.just(("surrogate",)),
    st.just(("deep",)),
)
MUTATIONS = st.tuples(st.integers(0, 4), _BREAKS).map(lambda t: ("none",) if t[0] < 3 else t[1])
"""Two in five near-valid messages are broken in one way."""


@dataclass(frozen=True)
class Spec:
    """One message to send: what it is made of, its key and whether it is sent twice."""

    role: str  # "signals" or "outcomes"
    kind: str  # "bytes", "null", "json", "near"
    payload: Any
    key_mode: str  # "model", "none", "other"
    twice: bool


def _near(role: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "key": st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS), _plain.filter(bool)),
            "model_key": st.booleans(),
            "features": st.none() | feature_maps if role == "outcomes" else feature_maps,
            "label": st.sampled_from([True, False, 0, 1]),
            "rr": st.none() | st.floats(allow_nan=True, allow_infinity=True),
            "ts": timestamps,
            "ref": st.one_of(st.none(), st.integers(0, 10_000), st.integers(0, 10_000)),
            "extra": st.one_of(
                st.just({}),
                st.just({}),
                st.dictionaries(st.sampled_from(["strategy", "side", "mine"]), json_values),
            ),
            "mutation": MUTATIONS,
        }
    )


def _spec(role: str) -> st.SearchStrategy[Spec]:
    kinds: dict[str, st.SearchStrategy[Any]] = {
        "near": _near(role),
        "json": json_values,
        "bytes": st.binary(max_size=200),
        "null": st.none(),
    }
    payloads = st.sampled_from(["near"] * 7 + ["json", "bytes", "null"]).flatmap(
        lambda kind: st.tuples(st.just(kind), kinds[kind])
    )
    return st.builds(
        lambda kp, key_mode, twice: Spec(role, kp[0], kp[1], key_mode, twice),
        payloads,
        st.sampled_from(["model", "model", "model", "none", "other"]),
        st.sampled_from([False, False, False, False, True]),
    )


batches = st.lists(_spec("signals") | _spec("outcomes"), min_size=1, max_size=14)


def _near_payload(**over: Any) -> dict[str, Any]:
    base = {
        "key": "FZ-A",
        "model_key": False,
        "features": {"x": 1.0},
        "label": True,
        "rr": None,
        "ts": None,
        "ref": None,
        "extra": {},
        "mutation": ("none",),
    }
    return {**base, **over}


EXPLICIT = [  # hostile inputs that must be in every run, whatever Hypothesis draws
    Spec("signals", "bytes", b"[" * 1100 + b"]" * 1100, "model", False),  # nested too deep
    Spec("outcomes", "null", None, "model", False),  # a tombstone
    Spec("signals", "near", _near_payload(mutation=("surrogate",)), "model", False),
    Spec("signals", "near", _near_payload(ts=2**70), "model", False),
    Spec("outcomes", "near", _near_payload(ts=1e300), "model", False),
    Spec("signals", "near", _near_payload(features={"n": float("nan"), "i": 1e999}), "none", True),
    Spec("outcomes", "near", _near_payload(mutation=("twice", "label")), "model", False),
    Spec(
        "signals", "near", _near_payload(mutation=("long_id", "symbol", "a" * 257)), "model", False
    ),
    Spec("outcomes", "near", _near_payload(features={}, ref=0), "model", False),
]


_partitioner = DefaultPartitioner()


def _partition(model_key: str) -> int:
    return int(_partitioner(model_key.encode(), list(range(PARTITIONS)), list(range(PARTITIONS))))


@dataclass
class Ledger:
    """What the worker must have done so far, by original message."""

    predictions: Counter[str] = field(default_factory=Counter)
    dead: Counter[tuple[str, bytes]] = field(default_factory=Counter)
    dead_reason: dict[tuple[str, bytes], set[str]] = field(default_factory=dict)
    """The reasons each dead-lettered value may carry (a value may break several rules)."""
    learned: Counter[str] = field(default_factory=Counter)
    joinable: dict[tuple[int, str], int] = field(default_factory=dict)
    """(partition, signal id) -> signal time, of every answered signal."""
    seen: set[tuple[int, str]] = field(default_factory=set)
    """(partition, outcome id) of every outcome learned."""
    answered: list[tuple[str, str]] = field(default_factory=list)
    """(signal id, model key) of answered signals, for outcomes to refer to."""
    sent: Counter[str] = field(default_factory=Counter)
    fates: Counter[str] = field(default_factory=Counter)

    def expect_dead(self, topic: str, value: bytes, reasons: set[str] | frozenset[str]) -> None:
        """One dead letter of ``value``, with one of ``reasons``."""
        self.dead[(topic, value)] += 1
        self.dead_reason.setdefault((topic, value), set()).update(reasons)
        self.fates["deadletter"] += 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _build(
    spec: Spec, ledger: Ledger, ids: itertools.count[int]
) -> tuple[bytes | None, bytes | None]:
    """The Kafka key and value of ``spec`` (a near-valid message gets a fresh unique id)."""
    if spec.kind == "bytes":
        return (b"FZ-A" if spec.key_mode == "model" else None), bytes(spec.payload)
    if spec.kind == "null":
        return b"FZ-A", None
    if spec.kind == "json":
        return (b"FZ-A" if spec.key_mode == "model" else None), json.dumps(spec.payload).encode()
    p = spec.payload
    n = next(ids)
    doc: dict[str, Any] = dict(p["extra"])
    key = p["key"]
    if spec.role == "signals":
        doc.update(signal_id=f"fz-s-{n}", symbol=key, features=p["features"])
    else:
        sid = f"fz-unknown-{n}"
        if p["ref"] is not None and ledger.answered:
            sid, key = ledger.answered[p["ref"] % len(ledger.answered)]
        doc.update(outcome_id=f"fz-o-{n}", signal_id=sid, symbol=key, label=p["label"])
        if p["features"] is not None:
            doc["features"] = p["features"]
        if p["rr"] is not None:
            doc["realized_rr"] = p["rr"]
    if p["model_key"]:
        doc["model_key"] = key
    if p["ts"] is not None:
        doc["ts"] = _now_ms() if p["ts"] == "now" else p["ts"]
    _mutate(doc, p["mutation"])
    oid = doc.get("outcome_id")
    if isinstance(oid, str) and oid and not oid.startswith("fz-o-"):
        # A drawn id stays unique: two different outcomes sharing an id would make which one is
        # learned depend on the order the worker sees them in, which re-routing changes.
        doc["outcome_id"] = f"{oid}#{n}"
    value = json.dumps(doc).encode()
    if p["mutation"][0] == "deep":
        value = value[:-1] + b', "deep": ' + b"[" * 500 + b"]" * 500 + b"}"
    if p["mutation"][0] == "twice" and p["mutation"][1] in doc:  # the key again, last
        value = value[:-1] + b", " + json.dumps({p["mutation"][1]: "again"}).encode()[1:]
    kafka_key = {"model": key.encode(), "none": None, "other": b"\xff-not-the-key"}[spec.key_mode]
    return kafka_key, value


def _mutate(doc: dict[str, Any], mutation: tuple[Any, ...]) -> None:
    what = mutation[0]
    if what == "drop":
        doc.pop(mutation[1], None)
    elif what == "set":
        doc[mutation[1]] = _tame(mutation[2])
    elif what == "long_id":
        doc[mutation[1]] = mutation[2]
    elif what == "bad_feature":
        doc["features"] = {**(doc.get("features") or {}), "bad": mutation[1]}
    elif what == "many_features":
        doc["features"] = {f"m{i}": float(i) for i in range(MAX_FEATURES + 1)}
    elif what == "big":
        doc["strategy"] = "x" * (MAX_BYTES + 10)
    elif what == "surrogate":
        doc["symbol"] = "sur\ud800"


def _expect(
    role: str, topic: str, value: bytes | None, ledger: Ledger, settings_: Settings
) -> None:
    """Record in ``ledger`` what the worker must do with one message of ``role``."""
    raw = value if value is not None else b""
    verdict = judge(role, value, MAX_BYTES, MAX_FEATURES)
    if not verdict.accepted:
        ledger.expect_dead(topic, raw, verdict.reasons)
        return
    f = verdict.fields
    if role == "signals":
        ledger.predictions[f["signal_id"]] += 1
        ledger.fates["answered"] += 1
        ts = f["ts"] if f["ts"] is not None else _now_ms()
        ledger.joinable[(_partition(f["model_key"]), f["signal_id"])] = ts
        ledger.answered.append((f["signal_id"], f["model_key"]))
        return
    part = _partition(f["model_key"])
    if f["features"] is None:
        signal_ts = ledger.joinable.get((part, f["signal_id"]))
        if signal_ts is None and (part, f["outcome_id"]) in ledger.seen:
            ledger.expect_dead(topic, raw, {"duplicate"})
            return
        own_ts = f["ts"] if f["ts"] is not None else _now_ms()
        if signal_ts is None or own_ts - signal_ts > int(settings_.join_window_s * 1000):
            ledger.expect_dead(topic, raw, {"unjoinable"})
            return
    if (part, f["outcome_id"]) in ledger.seen:
        ledger.expect_dead(topic, raw, {"duplicate"})
        return
    ledger.seen.add((part, f["outcome_id"]))
    ledger.learned[f["model_key"]] += 1
    ledger.fates["learned"] += 1


def _observed(
    collector: Collector, s: Settings
) -> tuple[Counter[str], Counter[tuple[str, bytes]], dict[tuple[str, bytes], Counter[str]]]:
    preds = Counter(r.json()["signal_id"] for r in collector.records(s.topic("predictions")))
    dead: Counter[tuple[str, bytes]] = Counter()
    reasons: dict[tuple[str, bytes], Counter[str]] = {}
    for r in collector.records(s.topic("deadletter")):
        d = r.json()
        k = (d["topic"], base64.b64decode(d["value"]))
        dead[k] += 1
        reasons.setdefault(k, Counter())[d["reason"]] += 1
    return preds, dead, reasons


def _covered(ledger: Ledger, collector: Collector, s: Settings) -> bool:
    preds, dead, _ = _observed(collector, s)
    return all(preds[k] >= v for k, v in ledger.predictions.items()) and all(
        dead[k] >= v for k, v in ledger.dead.items()
    )


def _mismatch(ledger: Ledger, collector: Collector, s: Settings) -> list[str]:
    """Every difference between what the worker did and what it should have done."""
    preds, dead, reasons = _observed(collector, s)
    out = []
    for sid, n in ledger.predictions.items():
        if preds[sid] != n:
            out.append(f"signal {sid!r}: {preds[sid]} predictions, expected {n}")
    for sid, n in preds.items():
        if sid not in ledger.predictions and not sid.startswith("probe-"):
            out.append(f"signal {sid!r} answered {n}x but should have been dead-lettered")
    for k in ledger.dead + dead:
        want, got = ledger.dead[k], dead[k]
        if want != got:
            out.append(f"{k[0]} value {k[1][:80]!r}: {got} dead letters, expected {want}")
        elif want and not set(reasons[k]) <= ledger.dead_reason[k]:
            out.append(
                f"{k[0]} value {k[1][:80]!r}: reasons {dict(reasons[k])}, "
                f"expected one of {ledger.dead_reason[k]}"
            )
    return out


def test_hostile_input_is_answered_learned_or_deadlettered(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from stream.topics import ensure_topics

    env = {
        **settings_env,
        "ALPHAPULSE_MAX_MESSAGE_BYTES": str(MAX_BYTES),
        "ALPHAPULSE_MAX_FEATURES": str(MAX_FEATURES),
        "ALPHAPULSE_DEADLETTER_VALUE_MAX_BYTES": str(16 * 1024),
        "ALPHAPULSE_TOPIC_PARTITIONS": str(PARTITIONS),
        "ALPHAPULSE_RELOAD_INTERVAL_S": "0",
        "ALPHAPULSE_JOIN_WAIT_MAX": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # The Kafka clients of the Sender and Collector threads shuffle and pick with the global
    # random module while Hypothesis draws in this thread, and Hypothesis takes any change of the
    # global state during a draw for a strategy using it (a deprecation, maybe an error later).
    # Give those modules generators of their own: nothing in this process then touches it.
    for module in ("client", "conn", "partitioner", "consumer.fetcher"):
        monkeypatch.setattr(f"aiokafka.{module}.random", random.Random(len(module)))
    s = Settings()
    asyncio.run(ensure_topics(s))
    worker = Worker(env, tmp_path / "worker.log").start()
    ledger = Ledger()
    ids = itertools.count()
    topics = {role: s.topic(role) for role in ("signals", "outcomes")}
    started = time.monotonic()
    try:
        with (
            Sender(s.bootstrap_servers) as sender,
            Collector(
                s.bootstrap_servers, [s.topic("predictions"), s.topic("deadletter")]
            ) as collector,
        ):
            first = probe(
                sender, collector, topics["signals"], s.topic("predictions"), "FZ-A", timeout=120
            )
            assert first is not None, worker.log_tail()

            @settings(
                max_examples=60,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(batch=batches)
            @example(batch=EXPLICIT)
            def check(batch: list[Spec]) -> None:
                before = Counter(ledger.learned)
                # Signals first, so that an outcome may refer to a signal of its own batch.
                for role in ("signals", "outcomes"):
                    for spec in batch:
                        if spec.role != role:
                            continue
                        key, value = _build(spec, ledger, ids)
                        copies = 2 if spec.twice else 1
                        for _ in range(copies):
                            ledger.sent[role] += 1
                            _expect(role, topics[role], value, ledger, s)
                        sender.send(topics[role], [(key, value)] * copies)  # type: ignore[list-item]
                    ok = collector.wait(lambda c: _covered(ledger, c, s), 30)
                    assert ok and worker.alive(), (
                        f"not every message was accounted for: "
                        f"{_mismatch(ledger, collector, s)[:10]}\n{worker.log_tail(30)}"
                    )
                changed = {k: v for k, v in ledger.learned.items() if before[k] != v}
                if changed:
                    got = learned_counts(
                        sender, collector, topics["signals"], s.topic("predictions"), changed, 30
                    )
                    assert got == changed, (
                        f"learned {got}, expected {changed}\n{worker.log_tail(30)}"
                    )

            check()
            time.sleep(3)  # anything extra would arrive now
            problems = _mismatch(ledger, collector, s)
            assert not problems, problems[:20]
            final = learned_counts(
                sender,
                collector,
                topics["signals"],
                s.topic("predictions"),
                dict(ledger.learned),
                60,
            )
            assert final == dict(ledger.learned)
            # The agents still answer and learn.
            after = probe(sender, collector, topics["signals"], s.topic("predictions"), "FZ-after")
            assert after is not None and after["model_versions"]["online"] == 0
            _, dead, reasons = _observed(collector, s)
    finally:
        worker.stop()
    assert worker.proc is not None and worker.proc.returncode is not None
    log = worker.log_path.read_text(errors="replace")
    assert "crashed" not in log.lower(), worker.log_tail(60)
    by_reason: Counter[str] = Counter()
    for c in reasons.values():
        by_reason.update(c)
    assert set(by_reason) <= DEAD_REASONS, by_reason
    sent = sum(ledger.sent.values())
    assert sent == ledger.fates["answered"] + ledger.fates["learned"] + sum(dead.values())
    print(
        "\nFIGURES fuzz "
        + json.dumps(
            {
                "messages_sent": sent,
                "signals_sent": ledger.sent["signals"],
                "outcomes_sent": ledger.sent["outcomes"],
                "answered": ledger.fates["answered"],
                "learned": ledger.fates["learned"],
                "deadlettered": sum(dead.values()),
                "deadlettered_by_reason": dict(by_reason),
                "seconds": round(time.monotonic() - started, 1),
            },
            sort_keys=True,
        )
    )
