"""The store's pure parts: SQL text, rows from messages, DSN handling, the training table."""

from __future__ import annotations

import math

import orjson
import pandas as pd
import pytest

from agents.store_sink import Item, collect, outcome_row, prediction_row, signal_row
from models.errors import ConfigError, DataError
from stream.codec import ContractViolation, Limits, decode_outcome, decode_signal
from stream.records import SignalRequest
from stream.settings import Settings
from stream.store import (
    TABLES,
    Store,
    describe_dsn,
    insert_sql,
    schema_sql,
    store_conninfo,
    to_timestamp,
    training_frame,
)

PRED = {
    "signal_id": "s1",
    "symbol": "X",
    "model_key": "X",
    "score": 0.25,
    "components": {"online": 0.25},
    "weights": {"online": 1.0},
    "model_versions": {"online": 3},
    "degraded": True,
    "ts": 1_704_067_200_000,
    "predicted_at": 1_704_067_200_005,
}


def test_plain_schema_keys_by_id_and_hypertables_key_by_id_and_time() -> None:
    plain = " ".join(schema_sql(hypertables=False))
    hyper = " ".join(schema_sql(hypertables=True))
    for table, (key, _) in TABLES.items():
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in plain
        assert f"PRIMARY KEY ({key}))" in plain and f"PRIMARY KEY ({key}, ts))" in hyper
        assert f"create_hypertable('{table}', 'ts'" in hyper
        assert f"create_hypertable('{table}'" not in plain
    assert "features jsonb NOT NULL" in plain  # signals always carry features
    assert "realized_rr double precision," in plain and "features jsonb," in plain  # outcomes
    assert "CREATE OR REPLACE VIEW training_rows" in plain
    assert "COALESCE(o.features, s.features)" in plain


def test_inserts_are_batched_and_idempotent() -> None:
    for table, (key, cols) in TABLES.items():
        plain, hyper = insert_sql(table, False), insert_sql(table, True)
        assert plain.count("%b") == len(cols) and "unnest(" in plain
        assert plain.endswith("ON CONFLICT DO NOTHING") and hyper.endswith("ON CONFLICT DO NOTHING")
        assert "NOT EXISTS" not in plain
        assert f"DISTINCT ON (u.{key})" in hyper and f"t.{key} = u.{key}" in hyper


def test_rows_follow_the_table_columns() -> None:
    req = decode_signal(b'{"signal_id":"s","symbol":"X","features":{"a":1,"b":null},"side":"long"}')
    out = decode_outcome(
        b'{"outcome_id":"o","signal_id":"s","symbol":"X","label":true,"realized_rr":-1,'
        b'"features":{"c":2},"ts":"2024-01-01T00:00:00Z"}'
    )
    rows = {
        "signals": signal_row(req, 1_704_067_200_000),
        "outcomes": outcome_row(out, 0),
        "predictions": prediction_row(orjson.dumps(PRED)),
    }
    for table, row in rows.items():
        assert len(row) == len(TABLES[table][1])
    assert rows["signals"][-1] == '{"a":1.0}' and rows["signals"][5] == "long"
    assert rows["signals"][1] == rows["outcomes"][1] == to_timestamp(1_704_067_200_000)
    assert rows["outcomes"][5:] == (True, -1.0, '{"c":2.0}')
    assert rows["predictions"][5] == '{"online":0.25}'


def test_timestamps_are_exact_to_the_millisecond() -> None:
    for ms in (0, 1, 1_704_067_200_123, -1, 253_402_300_799_999):
        dt = to_timestamp(ms)
        assert (dt - to_timestamp(0)).total_seconds() * 1000 == pytest.approx(ms, abs=0)
        assert dt.microsecond % 1000 == 0
    with pytest.raises(ContractViolation, match="out of range"):
        to_timestamp(10**18)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"signal_id":"a\\u0000b","symbol":"X","features":{}}', "schema"),
        (b'{"signal_id":"\\ud800","symbol":"X","features":{}}', "schema"),
        (b'{"signal_id":"s","symbol":"X","features":{"k\\u0000":1}}', "schema"),
        (b'{"signal_id":"s","symbol":"X","features":{},"ts":99999999999999999}', "schema"),
        # Ids over 256 bytes break the contract: the decoder refuses them before the store.
        (orjson.dumps({"signal_id": "x" * 2000, "symbol": "X", "features": {}}), "schema"),
    ],
)
def test_values_postgresql_would_refuse_are_rejected_before_the_write(
    raw: bytes, reason: str
) -> None:
    with pytest.raises(ContractViolation) as info:
        signal_row(decode_signal(raw), 0)
    assert info.value.reason == reason


def test_the_store_still_bounds_the_ids_it_indexes() -> None:
    with pytest.raises(ContractViolation) as info:
        signal_row(SignalRequest("x" * 2000, "X", {}, "X"), 0)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "change",
    [
        {"score": "high"},
        {"degraded": 1},
        {"ts": True},
        {"components": [1]},
        {"signal_id": None},
        {"predicted_at": 1.5},
    ],
)
def test_bad_predictions_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ContractViolation):
        prediction_row(orjson.dumps({**PRED, **change}))
    with pytest.raises(ContractViolation, match="invalid_json"):
        prediction_row(b"{nope")


def test_collect_skips_invalid_messages_and_keeps_the_rest() -> None:
    items = [
        Item("signals", b'{"signal_id":"s1","symbol":"X","features":{"a":1}}', 5),
        Item("signals", b"{not json", 5, "t.signals", 2, 17),
        Item("signals", None, 5),
        Item("outcomes", b'{"outcome_id":"o1","signal_id":"s1","symbol":"X","label":1}', 6),
        Item("predictions", orjson.dumps(PRED), 7),
        Item("predictions", b"[1]", 7),
        Item("predictions", b"x" * 300, 7),
    ]
    batch, skipped = collect(items, Limits(max_bytes=256))
    assert {t: len(r) for t, r in batch.rows.items()} == {
        "signals": 1,
        "outcomes": 1,
        "predictions": 1,
    }
    assert skipped == {"signals": 2, "predictions": 2}
    assert len(batch) == 3


def test_dsn_password_is_secret_and_merged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAPULSE_STORE_DSN", "postgresql://ap@db.example:5433/hist")
    monkeypatch.setenv("ALPHAPULSE_STORE_PASSWORD", "hunter2")
    s = Settings()
    assert not s.store_enabled
    assert "hunter2" not in repr(s) and "db.example" not in repr(s)
    conninfo = store_conninfo(s)
    assert "password=hunter2" in conninfo
    assert describe_dsn(conninfo) == "ap@db.example:5433/hist"
    assert "hunter2" not in Store(conninfo).target


def test_dsn_errors_say_what_to_do_and_never_echo_the_dsn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ALPHAPULSE_STORE_DSN", raising=False)
    with pytest.raises(ConfigError, match="ALPHAPULSE_STORE_DSN is not set"):
        store_conninfo(Settings())
    monkeypatch.setenv("ALPHAPULSE_STORE_DSN", "host=db password=hunter2 oops")
    with pytest.raises(ConfigError) as info:
        store_conninfo(Settings())
    assert "hunter2" not in str(info.value) and "oops" not in str(info.value)
    assert describe_dsn("host=db password=hunter2 oops") == "<invalid DSN>"
    with pytest.raises(ConfigError, match="pool_size"):
        Store("host=db", pool_size=0)


def test_training_frame_has_the_columns_of_a_training_csv() -> None:
    frame = training_frame(
        [
            ("s1", "o1", "X", 5, '{"b": 2, "a": 1}', True, None),
            ("s2", "o2", "Y", 6, {"a": 3.5}, False, -1.0),
        ]
    )
    assert frame.columns.tolist() == [
        "signal_id", "outcome_id", "symbol", "ts", "a", "b", "label", "realized_rr"
    ]  # fmt: skip
    assert frame["label"].tolist() == [1, 0] and frame["ts"].dtype == "int64"
    assert math.isnan(frame["realized_rr"][0]) and math.isnan(frame["b"][1])
    assert frame["a"].dtype == "float64"
    empty = training_frame([])
    assert len(empty) == 0 and "label" in empty.columns
    with pytest.raises(DataError, match="collide"):
        training_frame([("s1", "o1", "X", 5, '{"label": 1}', True, None)])


def test_time_bounds_accept_epoch_ms_dates_and_times() -> None:
    from stream.store import _bound

    assert _bound(None, "since") is None
    assert _bound(1_704_067_200_000, "since") == _bound("2024-01-01", "since")
    assert _bound("2024-01-01T01:00:00+01:00", "until") == _bound("2024-01-01", "until")
    assert _bound(pd.Timestamp("2024-01-01").to_pydatetime(), "since") == _bound(
        "2024-01-01T00:00:00Z", "since"
    )
    with pytest.raises(ConfigError, match="since"):
        _bound("yesterday-ish", "since")
