"""The SQL text of the PostgreSQL store (:mod:`stream.store`): its tables, the statements that
create its schema, and its batched idempotent insert.

>>> TABLES["outcomes"][0]
'outcome_id'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["TABLES", "insert_sql", "schema_sql"]

# table -> (key column, ((column, PostgreSQL type), ...)) in row order; JSONB travels as text.
TABLES: Mapping[str, tuple[str, tuple[tuple[str, str], ...]]] = MappingProxyType({
    "signals": (
        "signal_id",
        (("signal_id", "text"), ("ts", "timestamptz"), ("symbol", "text"),
         ("model_key", "text"), ("strategy", "text"), ("side", "text"), ("features", "jsonb")),
    ),
    "outcomes": (
        "outcome_id",
        (("outcome_id", "text"), ("ts", "timestamptz"), ("signal_id", "text"), ("symbol", "text"),
         ("model_key", "text"), ("label", "boolean"), ("realized_rr", "double precision"),
         ("features", "jsonb")),
    ),
    "predictions": (
        "signal_id",
        (("signal_id", "text"), ("ts", "timestamptz"), ("symbol", "text"), ("model_key", "text"),
         ("score", "double precision"), ("components", "jsonb"), ("weights", "jsonb"),
         ("model_versions", "jsonb"), ("degraded", "boolean"), ("predicted_at", "timestamptz")),
    ),
})  # fmt: skip
NULLABLE = frozenset({"strategy", "side", "realized_rr", "outcomes.features"})


def schema_sql(hypertables: bool) -> list[str]:
    """DDL statements that create the schema (idempotent), for plain tables or hypertables."""
    stmts = []
    for table, (key, cols) in TABLES.items():
        defs = [
            f"{c} {t}{'' if c in NULLABLE or f'{table}.{c}' in NULLABLE else ' NOT NULL'}"
            for c, t in cols
        ]
        pk = f"{key}, ts" if hypertables else key
        stmts.append(
            f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(defs)}, "
            f"stored_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY ({pk}))"
        )
        if hypertables:
            stmts.append(f"SELECT create_hypertable('{table}', 'ts', if_not_exists => TRUE)")
        else:
            stmts.append(f"CREATE INDEX IF NOT EXISTS {table}_ts_idx ON {table} (ts)")
    stmts.append("CREATE INDEX IF NOT EXISTS outcomes_signal_id_idx ON outcomes (signal_id)")
    stmts.append(
        "CREATE OR REPLACE VIEW training_rows AS "
        "SELECT o.signal_id, o.outcome_id, o.symbol, o.model_key, o.ts, s.ts AS signal_ts, "
        "COALESCE(o.features, s.features) AS features, o.label, o.realized_rr "
        "FROM outcomes o LEFT JOIN LATERAL (SELECT si.ts, si.features FROM signals si "
        "WHERE si.signal_id = o.signal_id ORDER BY si.ts LIMIT 1) s ON TRUE "
        "WHERE COALESCE(o.features, s.features) IS NOT NULL"
    )
    return stmts


def insert_sql(table: str, hypertable: bool) -> str:
    """The batched idempotent insert for ``table``; parameters are one array per column.

    >>> insert_sql("signals", False)[:60]
    'INSERT INTO signals (signal_id, ts, symbol, model_key, strat'
    """
    key, cols = TABLES[table]
    names = ", ".join(c for c, _ in cols)
    arrays = ", ".join(f"%b::{'text' if t == 'jsonb' else t}[]" for _, t in cols)
    select = ", ".join(f"u.{c}::jsonb" if t == "jsonb" else f"u.{c}" for c, t in cols)
    src = f"unnest({arrays}) AS u({names})"
    if not hypertable:
        return f"INSERT INTO {table} ({names}) SELECT {select} FROM {src} ON CONFLICT DO NOTHING"
    return (
        f"INSERT INTO {table} ({names}) SELECT DISTINCT ON (u.{key}) {select} FROM {src} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{key} = u.{key}) "
        "ON CONFLICT DO NOTHING"
    )
