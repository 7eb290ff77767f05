"""Two workers sharing four partitions: state follows the partitions across rebalances."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import orjson
import pytest

from models.synthetic import TradeGenerator
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, consume_until, free_port, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = [f"KEY{i}" for i in range(8)]


def _stream(settings: Settings, n: int) -> tuple[dict[str, int], list[str]]:
    """Send n signals and n outcomes (with features) over 8 model keys, with some duplicates."""
    rows = TradeGenerator(n_features=4, n_informative=3, seed=21).rows(n)
    per_key: dict[str, set[str]] = {k: set() for k in KEYS}
    signal_ids: list[str] = []
    for i in range(0, n, 100):
        sigs, outs = [], []
        for j, r in enumerate(rows[i : i + 100]):
            key = KEYS[(i + j) % len(KEYS)]
            sigs.append(
                (
                    key.encode(),
                    orjson.dumps({"signal_id": r.signal_id, "symbol": key, "features": r.features}),
                )
            )
            signal_ids.append(r.signal_id)
            doc = orjson.dumps(
                {
                    "outcome_id": r.outcome_id,
                    "signal_id": r.signal_id,
                    "symbol": key,
                    "label": r.label,
                    "features": r.features,
                }
            )
            outs.append((key.encode(), doc))
            if j % 10 == 0:
                outs.append((key.encode(), doc))  # duplicate
            per_key[key].add(r.outcome_id)
        asyncio.run(produce(settings.bootstrap_servers, settings.topic("signals"), sigs))
        asyncio.run(produce(settings.bootstrap_servers, settings.topic("outcomes"), outs))
        time.sleep(0.3)
    return {k: len(v) for k, v in per_key.items()}, signal_ids


async def _probe(settings: Settings, tag: str) -> dict[str, int]:
    ids = {k: f"probe-{tag}-{k}" for k in KEYS}
    await produce(
        settings.bootstrap_servers,
        settings.topic("signals"),
        [
            (k.encode(), orjson.dumps({"signal_id": sid, "symbol": k, "features": {"f0": 1.0}}))
            for k, sid in ids.items()
        ],
    )
    recs = await consume_until(
        settings.bootstrap_servers,
        settings.topic("predictions"),
        lambda rs: set(ids.values()) <= {v["signal_id"] for _, v in rs},
        timeout=90,
    )
    by_id = {v["signal_id"]: v for _, v in recs}
    return {k: by_id[sid]["model_versions"]["online"] for k, sid in ids.items() if sid in by_id}


def test_two_workers_share_partitions_and_learn_once(
    settings: Settings, settings_env: dict[str, str], tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    env_b = {
        **settings_env,
        "ALPHAPULSE_WEB_PORT": str(free_port()),
        "ALPHAPULSE_DATA_DIR": str(tmp_path / "data-b"),
    }
    a = Worker(settings_env, tmp_path / "a.log").start()
    b = Worker(env_b, tmp_path / "b.log")
    result: dict[str, object] = {}
    sender = threading.Thread(
        target=lambda: result.update(zip(("counts", "ids"), _stream(settings, 2400), strict=True))
    )
    try:
        sender.start()
        time.sleep(4)
        b.start()  # rebalance: some partitions move from a to b
        time.sleep(8)
        a.stop()  # rebalance: all partitions move to b
        sender.join()
        counts = result["counts"]
        assert isinstance(counts, dict)
        deadline = time.monotonic() + 180
        seen = asyncio.run(_probe(settings, "0"))
        while seen != counts and time.monotonic() < deadline:
            time.sleep(3)
            seen = asyncio.run(_probe(settings, str(time.monotonic_ns())))
        assert seen == counts, (seen, counts, b.log_tail())
        ids = result["ids"]
        assert isinstance(ids, list)
        preds = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("predictions"),
                lambda rs: set(ids) <= {v["signal_id"] for _, v in rs},
                timeout=60,
            )
        )
        assert set(ids) <= {v["signal_id"] for _, v in preds}, "a request went unanswered"
    finally:
        a.stop()
        b.stop()
