"""Benchmark of the store sink's write path against a plain ``COPY`` of the same rows.

Starts its own PostgreSQL (the test launcher :mod:`tests.pg`, durable settings: fsync on) on a
free loopback port. Builds N signal rows (20 features each) from wire messages with the sink's own
:func:`agents.store_sink.collect`, then times

- the sink: :meth:`stream.store.Store.write` in batches of ``--batch`` rows, one transaction each,
  as the running sink writes them (idempotent ``INSERT ... SELECT FROM unnest ... ON CONFLICT DO
  NOTHING`` into ``signals``);
- the baseline: one ``COPY ... FROM STDIN`` of the same row tuples, in one transaction, into a
  fresh table ``LIKE signals INCLUDING ALL`` (same columns, primary key and index).

Run from the repository root: ``python -m bench.store --json`` prints JSON lines
``{"name", "value", "unit"[, "baseline"]}``; ``store_sink_vs_copy`` is sink rows/s divided by
COPY rows/s (goal: at least 0.5).
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import orjson
import psycopg

from agents.store_sink import Item, collect
from bench._common import print_records
from stream.codec import Limits
from stream.store import TABLES, Batch, Store
from tests.pg import PgServer
from tests.support import free_port

__all__ = ["main", "run"]

COLUMNS = ", ".join(c for c, _ in TABLES["signals"][1])


def _items(n: int, seed: int, prefix: str) -> list[Item]:
    rng = random.Random(seed)
    t0 = 1_704_067_200_000
    return [
        Item(
            "signals",
            orjson.dumps(
                {
                    "signal_id": f"{prefix}{i}",
                    "symbol": "BTCUSDT" if i % 2 else "ETHUSDT",
                    "features": {f"f{j}": rng.gauss(0, 1) for j in range(20)},
                    "ts": t0 + i,
                    "side": "long",
                }
            ),
            t0 + i,
        )
        for i in range(n)
    ]


def _batches(rows: list[tuple[Any, ...]], size: int) -> list[Batch]:
    out = []
    for i in range(0, len(rows), size):
        b = Batch()
        b.rows["signals"] = rows[i : i + size]
        out.append(b)
    return out


def _sink(store: Store, batches: list[Batch]) -> float:
    t0 = time.perf_counter()
    for b in batches:
        store.write(b)
    return time.perf_counter() - t0


def _copy(dsn: str, table: str, rows: list[tuple[Any, ...]]) -> float:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE {table} (LIKE signals INCLUDING ALL)")
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - t0


def run(n_rows: int = 100_000, batch: int = 1000) -> list[dict[str, Any]]:
    """Start PostgreSQL, time both paths and return the result records."""
    srv = PgServer(port=free_port(), durable=True)
    with srv.running():
        dsn = srv.dsn()
        with Store(dsn, pool_size=1) as store:
            store.ensure_schema()
            warm, _ = collect(_items(5000, 1, "w"), Limits())
            _sink(store, _batches(warm.rows["signals"], batch))
            _copy(dsn, "copy_warm", warm.rows["signals"])

            items = _items(n_rows, 2, "s")
            t0 = time.perf_counter()
            built, skipped = collect(items, Limits())
            decode_s = time.perf_counter() - t0
            if skipped:
                raise RuntimeError(f"benchmark messages were rejected: {dict(skipped)}")
            rows = built.rows["signals"]
            sink_s = _sink(store, _batches(rows, batch))
            copy_s = _copy(dsn, "copy_target", rows)
            if store.counts()["signals"] != n_rows + 5000:
                raise RuntimeError("the sink did not store every row")
    sink, copy = n_rows / sink_s, n_rows / copy_s
    return [
        {"name": "store_sink_rows_per_s", "value": round(sink, 1), "unit": "rows/s"},
        {"name": "store_copy_rows_per_s", "value": round(copy, 1), "unit": "rows/s"},
        {
            "name": "store_sink_vs_copy",
            "value": round(sink / copy, 3),
            "unit": "ratio",
            "baseline": round(copy, 1),
        },
        {
            "name": "store_sink_with_decode_rows_per_s",
            "value": round(n_rows / (sink_s + decode_s), 1),
            "unit": "rows/s",
        },
    ]


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--rows", type=int, default=100_000, help="rows per path")
    p.add_argument("--batch", type=int, default=1000, help="rows per sink transaction")
    args = p.parse_args(argv)
    print_records(run(args.rows, args.batch), args.json)


if __name__ == "__main__":
    main()
