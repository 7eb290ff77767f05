"""Exactly-once learning: the worker is SIGKILLed repeatedly mid-stream and restarted.

At the end the online model has learned each distinct outcome id once, and (one partition) it is
bit-identical to a model trained offline on the same sequence read back from the topic.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from models.keyed import KeyedOnline
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.integration.kill_runs import (
    KEY,
    N_OUTCOMES,
    PROBE,
    learn_with_kills,
    outcome_messages,
)
from tests.support import consume_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_kill9_repeatedly_learns_each_outcome_exactly_once(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **settings_env,
        "ALPHAPULSE_TOPIC_PARTITIONS": "1",
        "ALPHAPULSE_CHECKPOINT_INTERVAL_S": "0.5",
        "ALPHAPULSE_CHECKPOINT_MAX_EVENTS": "500",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    messages = outcome_messages(N_OUTCOMES, seed=11)
    distinct = len({orjson.loads(m)["outcome_id"] for m in messages})
    pred, kills = learn_with_kills(settings, env, tmp_path, messages, wait_s=300)
    assert kills >= 5

    # Offline: the same sequence, as the topic holds it, learned by the same pure code.
    recs = asyncio.run(
        consume_until(
            settings.bootstrap_servers,
            settings.topic("outcomes"),
            lambda rs: len(rs) >= len(messages),
            timeout=60,
            decode=True,
        )
    )
    offline = KeyedOnline(settings.online_config())  # as the worker configures it
    for _, doc in recs:
        offline.learn(doc["outcome_id"], KEY, doc["features"], doc["label"], doc["realized_rr"])
    assert offline.n_learned(KEY) == distinct
    expected, _ = offline.predict(KEY, PROBE)
    assert pred["components"]["online"] == expected  # bit-identical, not approximately
