"""``alphapulse train`` without ``--from-file`` reads the outcome history from Kafka."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest

from models.synthetic import TradeGenerator
from stream.history import read_outcome_history
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.support import produce, train_json

pytestmark = pytest.mark.integration


def test_history_joins_dedupes_filters_and_trains(
    settings: Settings, settings_env: dict[str, str], mlflow_server: str
) -> None:
    asyncio.run(ensure_topics(settings))
    rows = TradeGenerator(n_features=4, n_informative=3, seed=4).rows(300)
    signals, outcomes = [], []
    for i, r in enumerate(rows):
        signals.append(
            (
                b"BTC",
                orjson.dumps(
                    {"signal_id": r.signal_id, "symbol": "BTC", "features": r.features, "ts": r.ts}
                ),
            )
        )
        doc = {
            "outcome_id": r.outcome_id,
            "signal_id": r.signal_id,
            "symbol": "BTC",
            "label": r.label,
            "realized_rr": r.realized_rr,
            "ts": r.ts + 1000,
        }
        if i % 2:
            doc["features"] = r.features  # half carry features, half are joined
        outcomes.append((b"BTC", orjson.dumps(doc)))
    outcomes.append(outcomes[0])  # a repeated outcome id
    outcomes.append((b"BTC", b"not json"))
    outcomes.append(
        (
            b"BTC",
            orjson.dumps(
                {"outcome_id": "lonely", "signal_id": "nope", "symbol": "BTC", "label": 1}
            ),
        )
    )
    asyncio.run(produce(settings.bootstrap_servers, settings.topic("signals"), signals))
    asyncio.run(produce(settings.bootstrap_servers, settings.topic("outcomes"), outcomes))

    frame = read_outcome_history(settings)
    assert len(frame) == 300 and frame["outcome_id"].is_unique
    assert list(frame["ts"]) == sorted(frame["ts"])
    assert set(frame.columns) >= {"f0", "f1", "f2", "f3", "label", "realized_rr"}
    first = rows[0]
    got = frame.set_index("outcome_id").loc[first.outcome_id]
    assert [got[f"f{i}"] for i in range(4)] == [first.features[f"f{i}"] for i in range(4)]
    since = rows[100].ts + 1000
    assert len(read_outcome_history(settings, since=since)) == 200

    env = {
        **os.environ,
        **settings_env,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "ALPHAPULSE_MLFLOW_EXPERIMENT": "history",
    }
    summary = train_json(env, "--model-type", "lightgbm", "--cadence", "weekly_quick")
    assert summary["n_train"] + summary["n_valid"] == 300
    assert summary["model_name"] == "weekly_quick"
