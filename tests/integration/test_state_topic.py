"""The learner's state topic: compacted under load, written to by strangers, misconfigured.

- Compaction: the exactly-once SIGKILL test (five kills, one partition, the model compared bit for
  bit with an offline run) while the broker's cleaner compacts the checkpoints topic every moment
  it can (a broker of this test alone, whose cleaner backs off 100 ms, not 15 s).
- Tampered state: records written to the checkpoints topic by a plain producer, under every key the
  partition's state uses and under the model key, each a pickle whose unpickling would create a
  marker file, are refused: nothing in them runs, a ``state_refused`` ModelEvent, a metric and a
  log line say so, and the model key keeps its last good state across a restart.
- A checkpoints topic created with ``cleanup.policy=delete`` is refused loudly.
"""

from __future__ import annotations

import asyncio
import pickle
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from models.keyed import KeyedOnline
from stream.broker import LocalKafka
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.conftest import CACHE_DIR
from tests.integration.kill_runs import (
    KEY,
    N_OUTCOMES,
    PROBE,
    learn_with_kills,
    outcome_messages,
)
from tests.support import (
    Collector,
    Sender,
    Worker,
    consume_until,
    free_port_block,
    metric_total,
    online_counts,
    produce,
    read_committed,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

AGGRESSIVE = {
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "100",
    "min.compaction.lag.ms": "0",
}
"""Topic settings under which every closed segment is soon cleaned (with a fast cleaner)."""
_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config source of a topic's own setting


@pytest.fixture
def cleaning_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker of this test alone whose log cleaner looks for work every 100 ms."""
    kafka = LocalKafka(
        state_dir=tmp_path / "kafka",
        cache_dir=CACHE_DIR,
        base_port=free_port_block(2),
        heap="384m",
        extra_properties={"log.cleaner.backoff.ms": "100"},
    )
    kafka.up(progress=lambda _m: None)
    try:
        yield kafka
    finally:
        kafka.down(progress=lambda _m: None)


async def _compact_aggressively(settings: Settings) -> dict[str, str]:
    """Add :data:`AGGRESSIVE` to the checkpoints topic's own settings; returns them all.

    AlterConfigs replaces a topic's settings as a whole, so the ones it has are sent again.
    """
    topic = settings.internal_topic("checkpoints")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic)
        (described,) = await admin.describe_configs([resource])
        own = {e[0]: e[1] for e in described.resources[0][4] if e[3] == _DYNAMIC_TOPIC_CONFIG}
        assert own.get("cleanup.policy") == "compact", own
        wanted = {**own, **AGGRESSIVE}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, wanted)])
        (described,) = await admin.describe_configs([resource])
        return {e[0]: e[1] for e in described.resources[0][4]}
    finally:
        await admin.close()


def _cleaned_up_to(state_dir: Path, topic: str) -> int:
    """How far the broker's cleaner has compacted partition 0 of ``topic`` (its
    ``cleaner-offset-checkpoint``); 0 when it never has."""
    best = 0
    for path in state_dir.rglob("cleaner-offset-checkpoint"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == topic and parts[1] == "0":
                best = max(best, int(parts[2]))
    return best


def test_kill9_exactly_once_while_the_state_topic_compacts(
    cleaning_kafka: LocalKafka, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = worker_env(
        cleaning_kafka.bootstrap_servers,
        tmp_path,
        ALPHAPULSE_TOPIC_PARTITIONS="1",
        ALPHAPULSE_CHECKPOINT_INTERVAL_S="0.5",
        ALPHAPULSE_CHECKPOINT_MAX_EVENTS="500",
        ALPHAPULSE_RELOAD_INTERVAL_S="0",
    )
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    asyncio.run(ensure_topics(settings))
    config = asyncio.run(_compact_aggressively(settings))
    assert {k: config[k] for k in AGGRESSIVE} == AGGRESSIVE
    assert config["cleanup.policy"] == "compact"
    messages = outcome_messages(N_OUTCOMES, seed=11)
    pred, _ = learn_with_kills(settings, env, tmp_path, messages, wait_s=180)

    recs = asyncio.run(
        consume_until(
            settings.bootstrap_servers,
            settings.topic("outcomes"),
            lambda rs: len(rs) >= len(messages),
            timeout=60,
        )
    )
    offline = KeyedOnline(settings.online_config())
    for _, doc in recs:
        offline.learn(doc["outcome_id"], KEY, doc["features"], doc["label"], doc["realized_rr"])
    expected, _ = offline.predict(KEY, PROBE)
    assert pred["components"]["online"] == expected  # bit-identical, not approximately

    # The cleaner did compact the state topic during the run ...
    topic = settings.internal_topic("checkpoints")
    assert _cleaned_up_to(cleaning_kafka.state_dir, topic) > 0, "the cleaner never ran"
    # ... and what it compacted is the changelog keyed by model key.
    keys = {r.key for r in asyncio.run(read_committed(settings.bootstrap_servers, topic, 1))}
    assert any(k is not None and KEY.encode() in k for k in keys), keys


# ----- tampered and misconfigured state ---------------------------------------------------------


class _Planted:
    """A pickle that creates ``marker`` when it is unpickled (``open(marker, "w")``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def _planted(marker: Path) -> list[bytes]:
    """Record values carrying the pickle: bare, and inside the envelope of the checkpoint format
    that workers before issue 25 read (magic ``APCK``, the covered offset, then a keyed snapshot:
    magic ``APKO`` and its version)."""
    payload = pickle.dumps(_Planted(marker), protocol=pickle.HIGHEST_PROTOCOL)
    return [payload, b"APCK" + struct.pack(">q", 0) + b"APKO" + bytes([2]) + payload]


def _outcome_docs(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = rng.gauss(0, 1)
        doc = {
            "outcome_id": f"o-{seed}-{i}",
            "signal_id": f"s-{seed}-{i}",
            "symbol": KEY,
            "label": x + 0.5 * rng.gauss(0, 1) > 0,
            "realized_rr": round(rng.uniform(-1, 2), 3),
            "features": {"f0": round(x, 6), "f1": round(rng.gauss(0, 1), 6)},
        }
        out.append((KEY.encode(), orjson.dumps(doc)))
    return out


def _refusals(c: Collector, topic: str) -> list[dict[str, Any]]:
    return [d for d in (r.json() for r in c.records(topic)) if d.get("event") == "state_refused"]


def _said_refused(worker: Worker) -> bool:
    return any("state refused" in line.lower() for line in worker.log_text().splitlines())


def _one_partition(
    settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], Settings]:
    """A worker environment with one partition, and the settings it makes."""
    env = {
        **settings_env,
        "ALPHAPULSE_TOPIC_PARTITIONS": "1",
        "ALPHAPULSE_CHECKPOINT_INTERVAL_S": "0.5",
        "ALPHAPULSE_RELOAD_INTERVAL_S": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env, Settings()


def test_tampered_state_is_refused_and_the_last_good_state_kept(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, settings = _one_partition(settings_env, monkeypatch)
    asyncio.run(ensure_topics(settings))
    bootstrap = settings.bootstrap_servers
    signals, predictions = settings.topic("signals"), settings.topic("predictions")
    events, state_topic = settings.topic("model-events"), settings.internal_topic("checkpoints")
    port = settings.web_port
    n = 300
    markers = [tmp_path / f"planted-{i}" for i in range(64)]

    with (
        Sender(bootstrap) as sender,
        Collector(bootstrap, [predictions, events], isolation_level="read_committed") as c,
    ):
        worker = Worker(env, tmp_path / "worker.log").start()
        try:
            sender.send(settings.topic("outcomes"), _outcome_docs(n, seed=1))
            learned = online_counts(sender, c, signals, predictions, {KEY: n}, 120)
            assert learned == {KEY: n}, worker.log_tail()
            # The state in the topic is good: a restarted worker restores it.
            worker.stop()
            worker = Worker(env, tmp_path / "worker.log").start()
            learned = online_counts(sender, c, signals, predictions, {KEY: n}, 120)
            assert learned == {KEY: n}, worker.log_tail()

            # A plain client writes a pickle under every key the state uses, and the model key.
            records = asyncio.run(read_committed(bootstrap, state_topic, 1))
            keys = {r.key for r in records if r.key is not None} | {KEY.encode()}
            planted: list[tuple[bytes | None, bytes]] = []
            marker_of = iter(markers)
            for kind in range(2):  # the bare pickles first, the enveloped ones last
                for key in sorted(keys):
                    planted.append((key, _planted(next(marker_of))[kind]))
            asyncio.run(produce(bootstrap, state_topic, planted))

            worker.stop()
            worker = Worker(env, tmp_path / "worker.log").start()
            refused = c.wait(lambda c: bool(_refusals(c, events)), timeout=90)
            executed = [m.name for m in markers if m.exists()]
            assert not executed, f"unpickled tampered state: {executed}\n{worker.log_tail()}"
            assert refused, ([r.json() for r in c.records(events)], worker.log_tail())
            total = metric_total(port, "alphapulse_state_refused_total")
            assert total is not None and total >= 1, total
            assert _said_refused(worker), worker.log_tail()
            # Not reset to nothing: the model key keeps the state it had before the tampering.
            learned = online_counts(sender, c, signals, predictions, {KEY: n}, 60)
            assert learned == {KEY: n}, worker.log_tail()
        finally:
            worker.stop()
    assert not [m.name for m in markers if m.exists()]


def test_a_state_topic_that_is_not_compacted_is_refused(
    settings_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, settings = _one_partition(settings_env, monkeypatch)
    state_topic = settings.internal_topic("checkpoints")

    async def create_deleting_topic() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        await admin.start()
        try:
            config = {"cleanup.policy": "delete", "max.message.bytes": str(32 * 1024 * 1024)}
            await admin.create_topics([NewTopic(state_topic, 1, 1, topic_configs=config)])
        finally:
            await admin.close()

    asyncio.run(create_deleting_topic())
    assert state_topic not in asyncio.run(ensure_topics(settings))  # it is left as it is
    bootstrap = settings.bootstrap_servers
    events = settings.topic("model-events")
    port = settings.web_port
    with (
        Sender(bootstrap) as sender,
        Collector(bootstrap, [events], isolation_level="read_committed") as c,
    ):
        worker = Worker(env, tmp_path / "worker.log").start()
        try:
            sender.send(settings.topic("outcomes"), _outcome_docs(50, seed=2))
            refused = c.wait(lambda c: bool(_refusals(c, events)), timeout=90)
            assert refused, ([r.json() for r in c.records(events)], worker.log_tail())
            total = metric_total(port, "alphapulse_state_refused_total")
            assert total is not None and total >= 1, total
            assert _said_refused(worker), worker.log_tail()
        finally:
            worker.stop()
