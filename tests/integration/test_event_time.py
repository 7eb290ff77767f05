"""The join in event time through a real broker (issue 25, part 4).

- An outcome produced before its signal waits, and is learned once the signal arrives.
- An outcome whose signal never arrives is dead-lettered ``unjoinable`` once the partition's
  event time (its outcomes and its signals both) has passed the outcome's time plus the wait.
- A history replayed into a fresh worker long after it happened (every signal older than the join
  window by the clock) ends with the learned counts the live run had.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Collector, Sender, Worker, learned_counts, probe, worker_env

pytestmark = pytest.mark.integration

JOIN = {"ALPHAPULSE_JOIN_WINDOW_S": "20", "ALPHAPULSE_JOIN_WAIT_S": "5"}
KEYS = ("EV-A", "EV-B", "EV-C")
N = 45


def _now() -> int:
    return time.time_ns() // 1_000_000


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return Settings()


def _signal(sid: str, key: str, ts: int, x: float) -> tuple[str, bytes, bytes]:
    doc = {"signal_id": sid, "symbol": key, "features": {"x": x, "y": 1.0}, "ts": ts}
    return "signals", key.encode(), orjson.dumps(doc)


def _outcome(
    oid: str, sid: str, key: str, ts: int, label: bool, features: dict[str, float] | None = None
) -> tuple[str, bytes, bytes]:
    doc: dict[str, Any] = {"outcome_id": oid, "signal_id": sid, "symbol": key, "label": label}
    doc["ts"] = ts
    if features is not None:
        doc["features"] = features
    return "outcomes", key.encode(), orjson.dumps(doc)


def _dead(collector: Collector, s: Settings) -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["reason"], orjson.loads(base64.b64decode(d["value"])))
        for d in (r.json() for r in collector.records(s.topic("deadletter")))
    ]


def test_an_outcome_waits_for_its_signal_and_an_orphan_expires_in_event_time(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**settings_env, **JOIN}
    s = _settings(env, monkeypatch)
    asyncio.run(ensure_topics(s))
    worker = Worker(env, tmp_path / "worker.log").start()
    sig, out = s.topic("signals"), s.topic("outcomes")
    try:
        with (
            Sender(s.bootstrap_servers) as sender,
            Collector(s.bootstrap_servers, [s.topic("predictions"), s.topic("deadletter")]) as col,
        ):
            assert probe(sender, col, sig, s.topic("predictions"), "EV", timeout=120), (
                worker.log_tail()
            )
            t = _now()
            early = _outcome("early", "ev-late", "EV", t + 1_000, True)
            sender.send(out, [(early[1], early[2])])
            time.sleep(4)  # the learner has seen it by now: it waits, it is not dead-lettered
            assert _dead(col, s) == [], worker.log_tail()
            late = _signal("ev-late", "EV", t, 1.0)
            sender.send(sig, [(late[1], late[2])])
            got = learned_counts(sender, col, sig, s.topic("predictions"), {"EV": 1}, 60)
            assert got == {"EV": 1}, worker.log_tail()

            orphan = _outcome("orphan", "never-sent", "EV", t + 2_000, False)
            sender.send(out, [(orphan[1], orphan[2])])
            time.sleep(4)
            assert _dead(col, s) == [], "the orphan must wait for the bound"
            # Event time moves on in both streams of the partition, past the orphan's time + 5 s.
            later = t + 2_000 + 5_001
            s2 = _signal("ev-next", "EV", later, 2.0)
            o2 = _outcome("next", "ev-next", "EV", later, True, {"x": 2.0, "y": 1.0})
            sender.send(sig, [(s2[1], s2[2])])
            sender.send(out, [(o2[1], o2[2])])
            assert col.wait(lambda c: len(_dead(c, s)) >= 1, 60), worker.log_tail()
            dead = _dead(col, s)
            assert [(r, d["outcome_id"]) for r, d in dead] == [("unjoinable", "orphan")]
            got = learned_counts(sender, col, sig, s.topic("predictions"), {"EV": 2}, 60)
            assert got == {"EV": 2}, worker.log_tail()
    finally:
        worker.stop()


def _history(t0: int) -> tuple[list[tuple[int, tuple[str, bytes, bytes]]], dict[str, int], int]:
    """``(at, message)`` pairs in time order (``at`` ms after ``t0``), the outcomes each key must
    learn, and the number of orphans."""
    out: list[tuple[int, tuple[str, bytes, bytes]]] = []
    learned: Counter[str] = Counter()
    orphans = 0
    for i in range(N):
        key, at = KEYS[i % len(KEYS)], i * 250
        ts, x, label = t0 + at, float(i % 7) - 3.0, i % 7 >= 3
        sid, oid = f"h-s{i}", f"h-o{i}"
        kind = i % 5
        if kind == 0:  # carries its features
            out += [
                (at, _signal(sid, key, ts, x)),
                (at + 100, _outcome(oid, sid, key, ts + 500, label, {"x": x, "y": 1.0})),
            ]
        elif kind in (1, 4):  # joined with its signal
            out += [
                (at, _signal(sid, key, ts, x)),
                (at + 100, _outcome(oid, sid, key, ts + 500, label)),
            ]
        elif kind == 2:  # produced before its signal, which is stamped earlier
            out += [
                (at, _outcome(oid, sid, key, ts + 500, label)),
                (at + 100, _signal(sid, key, ts, x)),
            ]
        else:  # its signal never comes
            out.append((at, _outcome(oid, f"h-never-{i}", key, ts + 500, label)))
            orphans += 1
            continue
        learned[key] += 1
    end = N * 250 + 6_000  # past the last orphan's time + the wait, in both streams of each key
    for j, key in enumerate(KEYS):
        sid = f"h-tail-{key}"
        out += [
            (end, _signal(sid, key, t0 + end, float(j))),
            (end + 100, _outcome(f"h-tail-o-{key}", sid, key, t0 + end, True)),
        ]
        learned[key] += 1
    return out, dict(learned), orphans


def _run(
    env: dict[str, str],
    s: Settings,
    log: Path,
    timed: list[tuple[int, tuple[str, bytes, bytes]]],
    expected: dict[str, int],
    orphans: int,
    live_from: int | None,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Start a worker on ``env`` and send it the ``timed`` messages: each at its time after
    ``live_from`` (epoch ms), as they happen, or for a replay all at once before it starts."""
    worker = None
    try:
        with (
            Sender(s.bootstrap_servers) as sender,
            Collector(s.bootstrap_servers, [s.topic("predictions"), s.topic("deadletter")]) as col,
        ):
            if live_from is None:
                for _, (role, key, value) in timed:
                    sender.send(s.topic(role), [(key, value)])
                worker = Worker(env, log).start()
            else:
                worker = Worker(env, log).start()
                assert probe(
                    sender, col, s.topic("signals"), s.topic("predictions"), "EV-WARM", timeout=120
                ), worker.log_tail()
                for at, (role, key, value) in timed:
                    time.sleep(max(0.0, (live_from + at - _now()) / 1000))
                    sender.send(s.topic(role), [(key, value)])
            got = learned_counts(
                sender, col, s.topic("signals"), s.topic("predictions"), expected, 150
            )
            col.wait(lambda c: len(_dead(c, s)) >= orphans, 60)
            time.sleep(2)  # anything else would arrive now
            dead = sorted((r, d["outcome_id"]) for r, d in _dead(col, s))
            return got, dead
    finally:
        if worker is not None:
            worker.stop()


def test_a_history_replayed_into_a_fresh_worker_learns_what_the_live_run_learned(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live_env = worker_env(kafka_bootstrap, tmp_path, **JOIN)
    live = _settings(live_env, monkeypatch)
    asyncio.run(ensure_topics(live))
    t0 = _now() + 60_000  # room for the worker to start; the history is stamped from then on
    timed, expected, orphans = _history(t0)
    # The live run: each record sent at its own time, signals and outcomes as they happen.
    live_counts, live_dead = _run(
        live_env, live, tmp_path / "live.log", timed, expected, orphans, live_from=t0
    )
    assert live_counts == expected
    assert [r for r, _ in live_dead] == ["unjoinable"] * orphans

    # The replay: the same records into a fresh worker's topics, long after they happened, when
    # by the clock every signal is older than the join window.
    replay_env = worker_env(kafka_bootstrap, tmp_path, **JOIN)
    replay = _settings(replay_env, monkeypatch)
    asyncio.run(ensure_topics(replay))
    last = max(orjson.loads(v)["ts"] for _, (_, _, v) in timed)
    time.sleep(max(0.0, (last + 25_000 - _now()) / 1000))
    replay_counts, replay_dead = _run(
        replay_env, replay, tmp_path / "replay.log", timed, expected, orphans, live_from=None
    )
    assert replay_counts == live_counts
    assert replay_dead == live_dead
