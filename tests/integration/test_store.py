"""The store against a real PostgreSQL: writes, training rows, and the sink inside a real worker.

The worker tests drive the system only through its topics (plain aiokafka clients) and look at the
database with plain psycopg: rows land exactly once across a SIGKILL, and nothing is lost while
the database is down for 20 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from agents.store_sink import Item, collect
from stream.codec import Limits
from stream.settings import Settings
from stream.store import Store, read_training_rows
from stream.topics import ensure_topics
from tests.pg import PgServer
from tests.support import Worker, consume_until, produce, train_json

pytestmark = pytest.mark.integration

SYMBOLS = ("BTCUSDT", "ETHUSDT")
T0 = 1_704_067_200_000


def _signal(i: int) -> bytes:
    return orjson.dumps(
        {
            "signal_id": f"s{i}",
            "symbol": SYMBOLS[i % 2],
            "features": {"f0": i * 0.25, "f1": (i % 7) - 3.0, **({"f2": 1.5} if i % 3 else {})},
            "ts": T0 + i * 1000,
            "side": "long",
        }
    )


def _outcome(i: int, own_features: bool = False) -> bytes:
    doc: dict[str, Any] = {
        "outcome_id": f"o{i}",
        "signal_id": f"s{i}",
        "symbol": SYMBOLS[i % 2],
        "label": i % 2 == 0,
        "realized_rr": 1.5 if i % 2 == 0 else -1.0,
        "ts": T0 + i * 1000 + 500,
    }
    if own_features:
        doc["features"] = {"f0": -1.0, "f3": 2.0}
    return orjson.dumps(doc)


def _signals(ids: range) -> list[tuple[bytes, bytes]]:
    return [(SYMBOLS[i % 2].encode(), _signal(i)) for i in ids]


def _outcomes(ids: range) -> list[tuple[bytes, bytes]]:
    return [(SYMBOLS[i % 2].encode(), _outcome(i)) for i in ids]


def _counts(dsn: str) -> dict[str, int]:
    """Rows per table (zeros before the sink created them, or while the server is down)."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            return {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                for t in ("signals", "outcomes", "predictions")
            }
    except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
        return {"signals": 0, "outcomes": 0, "predictions": 0}


def _wait(
    cond: Callable[[], bool], timeout: float, what: str, worker: Worker, poll: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        assert worker.alive(), f"worker died while waiting for {what}:\n{worker.log_tail()}"
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}:\n{worker.log_tail()}")


@pytest.fixture
def store_env(settings_env: dict[str, str], pg_dsn: str) -> dict[str, str]:
    """Worker environment with the sink on; the password travels apart from the DSN."""
    parts = conninfo_to_dict(pg_dsn)
    password = str(parts.pop("password"))
    return {
        **settings_env,
        "ALPHAPULSE_STORE_ENABLED": "true",
        "ALPHAPULSE_STORE_DSN": make_conninfo("", **parts),
        "ALPHAPULSE_STORE_PASSWORD": password,
        "ALPHAPULSE_STORE_BATCH_SIZE": "200",
        "ALPHAPULSE_STORE_FLUSH_INTERVAL_MS": "200",
        "ALPHAPULSE_STORE_RETRY_MAX_MS": "2000",
    }


@pytest.fixture
def store(pg_dsn: str) -> Iterator[Store]:
    with Store(pg_dsn, pool_size=2) as s:
        yield s


def _items(role: str, values: list[tuple[bytes, bytes]]) -> list[Item]:
    return [Item(role, v, T0) for _, v in values]


def test_writes_are_idempotent_and_training_rows_round_trip_through_csv(
    store: Store, pg_dsn: str, tmp_path: Path
) -> None:
    items = _items("signals", _signals(range(50))) + _items("outcomes", _outcomes(range(40)))
    items.append(Item("outcomes", _outcome(99, own_features=True), T0))  # no signal, own features
    items.append(Item("outcomes", orjson.dumps({**orjson.loads(_outcome(98)), "ts": None}), 7))
    batch, skipped = collect(items, Limits())
    assert not skipped
    assert store.write(batch) == {"signals": 50, "outcomes": 42}
    assert store.write(batch) == {"signals": 0, "outcomes": 0}  # a replay writes nothing
    assert store.counts() == {"signals": 50, "outcomes": 42, "predictions": 0}
    assert store.hypertables is False  # Debian ships no TimescaleDB

    settings = Settings(_env_file=None, store_dsn=SecretStr(pg_dsn))  # type: ignore[call-arg]
    frame = read_training_rows(settings)
    # o98 has neither features nor a stored signal: left out of the training rows
    assert len(frame) == 41 and "o98" not in set(frame["outcome_id"])
    assert frame.columns.tolist() == [
        "signal_id", "outcome_id", "symbol", "ts", "f0", "f1", "f2", "f3", "label", "realized_rr"
    ]  # fmt: skip
    assert frame["ts"].is_monotonic_increasing
    first = frame.iloc[0]
    assert (first["outcome_id"], first["ts"], first["f0"], first["label"]) == ("o0", T0 + 500, 0, 1)
    assert pd.isna(first["f2"]) and first["f1"] == -3.0 and first["realized_rr"] == 1.5
    own = frame[frame["outcome_id"] == "o99"].iloc[0]
    assert own["f0"] == -1.0 and own["f3"] == 2.0 and pd.isna(own["f1"])

    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    pd.testing.assert_frame_equal(pd.read_csv(path), frame)

    part = read_training_rows(settings, since=T0 + 10_000, until="2024-01-01T00:00:20Z")
    assert part["outcome_id"].tolist() == [f"o{i}" for i in range(10, 20)]


def test_rows_the_database_rejects_are_isolated(store: Store) -> None:
    batch, _ = collect(_items("signals", _signals(range(3))), Limits())
    batch.rows["signals"].append(("bad-json", *batch.rows["signals"][0][1:6], '{"a": '))
    assert store.write(batch) == {"signals": 3}  # the row PostgreSQL refuses is left out
    assert store.counts()["signals"] == 3


def _start(env: dict[str, str], log: Path) -> Worker:
    return Worker(env, log).start()


def test_sink_lands_every_row_exactly_once_across_sigkill(
    store_env: dict[str, str], settings: Settings, pg_dsn: str, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    bootstrap, n = settings.bootstrap_servers, 600
    first = _signals(range(n // 2)) + _signals(range(0, n // 2, 10))
    asyncio.run(produce(bootstrap, settings.topic("signals"), first))
    asyncio.run(produce(bootstrap, settings.topic("outcomes"), _outcomes(range(n // 2))))
    worker = _start(store_env, tmp_path / "worker.log")
    try:
        _wait(lambda: _counts(pg_dsn)["signals"] > 0, 120, "the first rows", worker, 0.05)
        worker.kill()
        at_kill = _counts(pg_dsn)
        rest = _signals(range(n // 2, n)) + _signals(range(n // 2, n, 10))
        bad = [(b"X", b"{not json"), (b"X", b'{"signal_id": "b1", "symbol": "X"}')]
        asyncio.run(produce(bootstrap, settings.topic("signals"), rest + bad))
        more = _outcomes(range(n // 2, n)) + _outcomes(range(0, n, 10))
        asyncio.run(produce(bootstrap, settings.topic("outcomes"), more))
        worker = _start(store_env, tmp_path / "worker2.log")
        want = {"signals": n, "outcomes": n, "predictions": n}
        _wait(lambda: _counts(pg_dsn) == want, 150, f"{want}", worker)
        time.sleep(1.0)
        assert _counts(pg_dsn) == want  # nothing written twice afterwards either
    finally:
        worker.stop()
    assert min(at_kill.values()) < n // 2, f"killed too late to be mid-stream: {at_kill}"
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(
            "SELECT symbol, side, features, ts FROM signals WHERE signal_id = 's7'"
        ).fetchone()
        pred = conn.execute("SELECT score FROM predictions WHERE signal_id = 's7'").fetchone()
    assert row is not None and pred is not None
    assert row[:3] == ("ETHUSDT", "long", {"f0": 1.75, "f1": -3.0, "f2": 1.5})
    assert 0.0 <= pred[0] <= 1.0


async def _aborted_then_committed(settings: Settings, aborted: range, committed: range) -> None:
    """Signals and outcomes of ``aborted`` in a transaction that is aborted, then those of
    ``committed`` in one that commits."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, transactional_id="test-store-aborted"
    )
    await producer.start()
    try:
        for ids, commit in ((aborted, False), (committed, True)):
            await producer.begin_transaction()
            for role, messages in (("signals", _signals(ids)), ("outcomes", _outcomes(ids))):
                for key, value in messages:
                    await producer.send(settings.topic(role), value, key=key)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()


def test_sink_writes_nothing_of_an_aborted_transaction(
    store_env: dict[str, str], settings: Settings, pg_dsn: str, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(settings))
    asyncio.run(_aborted_then_committed(settings, range(100, 130), range(30)))
    worker = _start(store_env, tmp_path / "worker.log")
    try:
        want = {"signals": 30, "outcomes": 30, "predictions": 30}
        _wait(lambda: _counts(pg_dsn) == want, 120, f"{want}", worker)
        time.sleep(1.0)
        assert _counts(pg_dsn) == want
    finally:
        worker.stop()
    with psycopg.connect(pg_dsn) as conn:
        stored = {r[0] for r in conn.execute("SELECT outcome_id FROM outcomes").fetchall()}
    assert stored == {f"o{i}" for i in range(30)}


def test_sink_catches_up_after_a_20s_database_outage(
    store_env: dict[str, str],
    settings: Settings,
    pg_server: PgServer,
    pg_dsn: str,
    tmp_path: Path,
) -> None:
    asyncio.run(ensure_topics(settings))
    bootstrap = settings.bootstrap_servers
    worker = _start(store_env, tmp_path / "worker.log")
    try:
        asyncio.run(produce(bootstrap, settings.topic("signals"), _signals(range(100))))
        want = {"signals": 100, "outcomes": 0, "predictions": 100}
        _wait(lambda: _counts(pg_dsn) == want, 120, f"{want}", worker)

        pg_server.stop("fast")
        down_at = time.monotonic()
        try:
            ids = range(100, 300)
            asyncio.run(produce(bootstrap, settings.topic("signals"), _signals(ids)))
            asyncio.run(produce(bootstrap, settings.topic("outcomes"), _outcomes(range(300))))
            wanted = {f"s{i}" for i in ids}
            preds = asyncio.run(
                consume_until(
                    bootstrap,
                    settings.topic("predictions"),
                    lambda rs: wanted <= {v["signal_id"] for _, v in rs},
                    timeout=15,
                )
            )
            answered_in = time.monotonic() - down_at
            assert wanted <= {v["signal_id"] for _, v in preds}, worker.log_tail()
            assert answered_in < 20, "predictions waited for the database"
            time.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
            assert worker.alive(), worker.log_tail()
        finally:
            pg_server.up()
        want = {"signals": 300, "outcomes": 300, "predictions": 300}
        _wait(lambda: _counts(pg_dsn) == want, 60, f"{want} after the outage", worker)
    finally:
        worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "store write of" in log and "retrying in" in log
    assert store_env["ALPHAPULSE_STORE_PASSWORD"] not in log


def test_train_from_store_equals_train_from_the_same_rows_as_csv(
    store: Store, pg_dsn: str, mlflow_server: str, tmp_path: Path
) -> None:
    import os

    from models.registry import ModelRegistry
    from models.synthetic import TradeGenerator

    rows = TradeGenerator(n_features=4, n_informative=3, seed=8).rows(400)
    items = []
    for r in rows:
        items.append(
            Item(
                "signals",
                orjson.dumps(
                    {"signal_id": r.signal_id, "symbol": "BTC", "features": r.features, "ts": r.ts}
                ),
                r.ts,
            )
        )
        items.append(
            Item(
                "outcomes",
                orjson.dumps(
                    {
                        "outcome_id": r.outcome_id,
                        "signal_id": r.signal_id,
                        "symbol": "BTC",
                        "label": r.label,
                        "realized_rr": r.realized_rr,
                        "ts": r.ts + 1,
                    }
                ),
                r.ts + 1,
            )
        )
    batch, skipped = collect(items, Limits())
    assert not skipped
    store.write(batch)
    settings = Settings(_env_file=None, store_dsn=SecretStr(pg_dsn))  # type: ignore[call-arg]
    csv = tmp_path / "rows.csv"
    read_training_rows(settings).to_csv(csv, index=False)

    env = {
        **os.environ,
        "ALPHAPULSE_STORE_DSN": pg_dsn,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "ALPHAPULSE_MLFLOW_EXPERIMENT": "from-store",
        "ALPHAPULSE_DATA_DIR": str(tmp_path),
    }

    def train(*source: str) -> dict[str, Any]:
        args = ("--model-type", "xgboost", "--cadence", "weekly_quick", "--force", *source)
        return train_json(env, *args)

    a = train("--from-store")
    b = train("--from-file", str(csv))
    assert (a["n_train"], a["n_valid"], a["metrics"]) == (b["n_train"], b["n_valid"], b["metrics"])
    reg = ModelRegistry(mlflow_server, experiment="from-store")
    ma = reg.load_version(a["model_name"], a["version"])
    mb = reg.load_version(b["model_name"], b["version"])
    frame = pd.read_csv(csv)
    X = frame[[f"f{i}" for i in range(4)]].to_numpy()
    assert (ma.predict_proba(X) == mb.predict_proba(X)).all()
