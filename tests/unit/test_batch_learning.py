"""A batch of outcomes, learned the way the learner agent learns a fetched batch, leaves each model
key's model bit for bit where River's own ``learn_one``, called outcome by outcome, leaves it."""

from __future__ import annotations

import asyncio
import random

import orjson
from river import compose, linear_model, optim, preprocessing

from agents.learner import _learn
from agents.state import PartitionState
from models.keyed import KeyedOnline
from models.online import OnlineConfig
from stream.codec import decode_outcome
from stream.fetched import Batch, Record
from stream.runtime import Runtime
from stream.settings import TOPIC_ROLES, Settings

KEYS = ("BTC", "ETH", "SOL")
LR = 0.01


def _batch(n: int, seed: int) -> Batch:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        features = {f"f{j}": rng.gauss(0.0, 1.0 + j) for j in range(6)}
        if rng.random() < 0.1:
            del features[f"f{rng.randrange(6)}"]  # a missing feature now and then
        doc = {
            "outcome_id": f"o{i}",
            "signal_id": f"s{i}",
            "symbol": rng.choice(KEYS),
            "label": features.get("f0", 0.0) + rng.gauss(0.0, 1.0) > 0,
            "features": features,
            "ts": 1_700_000_000_000 + i,
        }
        value = orjson.dumps(doc)
        records.append(Record("outcomes", 0, i, doc["symbol"].encode(), value, 1.7e9 + i))
    return Batch("outcomes", 0, records, generation=1)


def _river() -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(LR), intercept_lr=LR, l2=0.0
    )


def test_a_batch_learned_in_order_per_model_key_equals_river_learn_one_bit_for_bit() -> None:
    batch = _batch(3000, seed=7)
    config = OnlineConfig(learning_rate=LR, drift_detector="none")
    st = PartitionState(0, 0, KeyedOnline(config))
    settings = Settings(_env_file=None)
    names = {role: settings.topic(role) for role in TOPIC_ROLES}
    rt = Runtime(settings, topics={}, topic_names=names)

    async def learn_batch() -> None:  # the agent's loop over a batch, without Kafka
        for msg in batch.records:
            out = decode_outcome(msg.value)
            await _learn(rt, st, msg, out, None)

    asyncio.run(learn_batch())

    reference = {key: _river() for key in KEYS}
    for msg in batch.records:
        out = decode_outcome(msg.value)
        reference[out.model_key].learn_one(dict(sorted(out.features.items())), out.label)

    for key in KEYS:
        learner = st.keyed.learner(key)
        assert learner is not None
        ours, theirs = learner.pipeline, reference[key]
        assert ours[0].counts == theirs[0].counts
        assert ours[0].means == theirs[0].means  # == on floats: bit for bit
        assert ours[0].vars == theirs[0].vars
        assert ours[-1].weights == theirs[-1].weights
        assert ours[-1].intercept == theirs[-1].intercept
        assert learner.n_learned == sum(1 for _ in _keys(batch, key))
    assert st.outputs, "hard examples go to the partition's next transaction"


def _keys(batch: Batch, key: str) -> list[Record]:
    return [r for r in batch.records if r.key == key.encode()]
