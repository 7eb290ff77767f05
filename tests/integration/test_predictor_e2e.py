"""The pipe end to end through a real broker: plain JSON in, contract Prediction out.

Both sides use plain aiokafka clients; only the worker under test is project code.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import orjson
import pytest

from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import Worker, consume_until, produce

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).parents[2] / "stream" / "schemas"


def _schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


def _signal(sid: str, **extra: object) -> bytes:
    return orjson.dumps({"signal_id": sid, "symbol": "BTCUSDT", "features": {"f0": 1.5}, **extra})


@pytest.fixture
def worker(settings: Settings, settings_env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    asyncio.run(ensure_topics(settings))
    w = Worker(settings_env, tmp_path / "worker.log").start()
    try:
        probe = _signal("probe")
        asyncio.run(
            produce(settings.bootstrap_servers, settings.topic("signals"), [(b"BTCUSDT", probe)])
        )
        got = asyncio.run(
            consume_until(
                settings.bootstrap_servers,
                settings.topic("predictions"),
                lambda rs: not w.alive() or any(v["signal_id"] == "probe" for _, v in rs),
                timeout=120,
            )
        )
        assert any(v["signal_id"] == "probe" for _, v in got), w.log_tail()
        yield w
    finally:
        w.stop()


def test_plain_producer_gets_plain_json_prediction(settings: Settings, worker: Worker) -> None:
    ts = 1_704_067_200_000
    asyncio.run(
        produce(
            settings.bootstrap_servers,
            settings.topic("signals"),
            [
                (
                    b"ETH-1",
                    orjson.dumps(
                        {
                            "signal_id": "a1",
                            "symbol": "ETHUSDT",
                            "model_key": "ETH-1",
                            "features": {"x": 1, "y": None},
                            "ts": ts,
                            "mine": [1],
                        }
                    ),
                )
            ],
        )
    )
    recs = asyncio.run(
        consume_until(
            settings.bootstrap_servers,
            settings.topic("predictions"),
            lambda rs: any(v["signal_id"] == "a1" for _, v in rs),
        )
    )
    ((key, pred),) = [(k, v) for k, v in recs if v["signal_id"] == "a1"]
    jsonschema.validate(pred, _schema("prediction"))
    assert key == b"ETH-1"
    assert "__faust" not in pred
    assert pred["model_key"] == "ETH-1" and pred["symbol"] == "ETHUSDT"
    assert pred["ts"] == ts
    assert pred["score"] == pred["components"]["online"]
    assert pred["model_versions"]["online"] == 0
    assert abs(sum(pred["weights"].values()) - 1.0) < 1e-9


BAD = [
    ("not-json", b"BTCUSDT", b"{not json", "invalid_json"),
    ("not-object", b"BTCUSDT", b"[1, 2, 3]", "schema"),
    ("no-signal-id", b"BTCUSDT", b'{"symbol": "BTCUSDT", "features": {}}', "schema"),
    (
        "bad-feature",
        b"BTCUSDT",
        b'{"signal_id": "b4", "symbol": "X", "features": {"f": "high"}}',
        "bad_feature",
    ),
    (
        "features-not-object",
        b"BTCUSDT",
        b'{"signal_id": "b5", "symbol": "X", "features": [1]}',
        "schema",
    ),
    ("no-key-and-bad", None, b'{"signal_id": "b6", "symbol": "X"}', "schema"),
]


def test_bad_input_is_dead_lettered_and_valid_input_still_answered(
    settings: Settings, worker: Worker
) -> None:
    msgs = [(key, value) for _, key, value, _ in BAD]
    msgs.append((None, _signal("after-bad-nokey")))  # valid but keyless: answered per contract
    msgs.append((b"BTCUSDT", _signal("after-bad")))
    asyncio.run(produce(settings.bootstrap_servers, settings.topic("signals"), msgs))

    dead = asyncio.run(
        consume_until(
            settings.bootstrap_servers, settings.topic("deadletter"), lambda rs: len(rs) >= len(BAD)
        )
    )
    assert len(dead) == len(BAD), worker.log_tail()
    by_value = {base64.b64decode(v["value"]): (k, v) for k, v in dead}
    for name, key, value, reason in BAD:
        assert value in by_value, f"{name} was not dead-lettered"
        dkey, dl = by_value[value]
        jsonschema.validate(dl, _schema("dead_letter"))
        assert dl["reason"] == reason, (name, dl)
        assert dl["topic"] == settings.topic("signals")
        assert dl["key"] == (None if key is None else base64.b64encode(key).decode())
        assert dl["detail"]
        assert dkey == key

    preds = asyncio.run(
        consume_until(
            settings.bootstrap_servers,
            settings.topic("predictions"),
            lambda rs: {"after-bad", "after-bad-nokey"} <= {v["signal_id"] for _, v in rs},
        )
    )
    ids = [v["signal_id"] for _, v in preds]
    assert "after-bad" in ids and "after-bad-nokey" in ids
    assert not {"b4", "b5", "b6"} & set(ids)
    assert worker.alive()
