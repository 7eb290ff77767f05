"""Runs shared by the exactly-once tests: outcomes streamed to a worker that is SIGKILLed and
restarted while it learns, and a probe signal to read its online model."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from alphapulse._rows import outcome_message
from models.synthetic import TradeGenerator, TradeRow
from stream.settings import Settings
from tests.support import Worker, consume_until, produce

N_OUTCOMES = 20_000
KEY = "BTCUSDT"
PROBE = {"f0": 0.3, "f1": -1.2, "f2": 0.7, "f3": 0.0, "f4": 2.0}


def trade_doc(r: TradeRow, key: str) -> dict[str, Any]:
    """The outcome of row ``r`` for model key ``key``, as the contract's JSON document."""
    row = {**dataclasses.asdict(r), "symbol": key, "label": bool(r.label)}
    return outcome_message(row, keep_ts=True, with_features=True)


def kill_and_restart(
    env: dict[str, str],
    log: Path,
    answers: Callable[[Worker, int], object],
    go_on: Callable[[int], bool],
    pause_s: tuple[float, float],
    seed: int,
) -> tuple[Worker, int]:
    """Start a worker; while ``go_on(kills)``, wait until it answers (``answers(worker, kills)``,
    which asserts it), let it learn for a random pause within ``pause_s``, SIGKILL it and start
    another. Returns the running worker and the number of kills; on a failure the running
    worker is stopped before the error goes on."""
    rng = random.Random(seed)
    worker = Worker(env, log).start()
    kills = 0
    try:
        while go_on(kills):
            # Kill only a worker that is consuming: wait until it answers, then let it learn.
            answers(worker, kills)
            time.sleep(rng.uniform(*pause_s))
            worker.kill()
            kills += 1
            worker = Worker(env, log).start()
    except BaseException:
        worker.stop()
        raise
    return worker, kills


def outcome_messages(n: int, seed: int) -> list[bytes]:
    """``n`` outcomes of :data:`KEY` as JSON, about 5 % of them sent twice (some much later)."""
    rows = TradeGenerator(n_features=5, n_informative=3, seed=seed).rows(n)
    rng = random.Random(seed)
    out = []
    for r in rows:
        doc = trade_doc(r, KEY)
        out.append(orjson.dumps(doc))
        if rng.random() < 0.05:  # re-sent duplicate, sometimes much later
            out.insert(rng.randrange(len(out)), orjson.dumps(doc))
    return out


async def probe_online(settings: Settings, n: int) -> dict:
    """The prediction a worker sends for a fresh signal of :data:`KEY` with :data:`PROBE`."""
    sid = f"probe-{n}-{time.monotonic_ns()}"
    await produce(
        settings.bootstrap_servers,
        settings.topic("signals"),
        [(KEY.encode(), orjson.dumps({"signal_id": sid, "symbol": KEY, "features": PROBE}))],
    )
    recs = await consume_until(
        settings.bootstrap_servers,
        settings.topic("predictions"),
        lambda rs: any(v["signal_id"] == sid for _, v in rs),
        timeout=120,
    )
    found = [v for _, v in recs if v["signal_id"] == sid]
    assert found, "probe signal was not answered"
    return found[0]


def learn_with_kills(
    settings: Settings, env: dict[str, str], tmp_path: Path, messages: list[bytes], wait_s: float
) -> tuple[dict, int]:
    """Stream ``messages`` to the outcomes topic while a worker is SIGKILLed at least 5 times
    and restarted; then wait up to ``wait_s`` for it to have learned every distinct outcome.
    Returns the last probe's prediction and the number of kills."""
    distinct = len({orjson.loads(m)["outcome_id"] for m in messages})

    def send_all() -> None:
        chunk = 500
        for i in range(0, len(messages), chunk):
            asyncio.run(
                produce(
                    settings.bootstrap_servers,
                    settings.topic("outcomes"),
                    [(KEY.encode(), m) for m in messages[i : i + chunk]],
                )
            )
            time.sleep(0.4)

    producer = threading.Thread(target=send_all)
    producer.start()
    worker: Worker | None = None
    try:
        worker, kills = kill_and_restart(
            env,
            tmp_path / "worker.log",
            lambda _, kills: asyncio.run(probe_online(settings, kills)),
            lambda kills: producer.is_alive() or kills < 5,
            (0.5, 4.0),
            seed=5,
        )
        producer.join()
        deadline = time.monotonic() + wait_s
        pred = asyncio.run(probe_online(settings, 100))
        while pred["model_versions"]["online"] < distinct and time.monotonic() < deadline:
            time.sleep(2)
            pred = asyncio.run(probe_online(settings, 101))
    finally:
        producer.join(300)
        if worker is not None:
            worker.stop()
    assert pred["model_versions"]["online"] == distinct, worker.log_tail()
    return pred, kills
