"""Feature and outcome store on PostgreSQL, with TimescaleDB hypertables when available.

The store keeps the history of signals (with their features), outcomes and predictions, and serves
training rows from it. It creates its own schema: tables ``signals``, ``outcomes`` and
``predictions`` (features as JSONB) and a view ``training_rows`` that joins each outcome to its
signal. When the ``timescaledb`` extension can be created, new tables become hypertables on
``ts``; otherwise they are plain tables.

Writes are idempotent and batched: one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO
NOTHING`` per table and batch, keyed by ``signal_id`` (signals, predictions) or ``outcome_id``.
On a hypertable the unique key must hold the time column, so there the key is ``(id, ts)`` and
the insert also skips ids already stored.

>>> schema_sql(hypertables=False)[0][:60]
'CREATE TABLE IF NOT EXISTS signals (signal_id text NOT NULL,'
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson
import pandas as pd

from models.errors import ConfigError, DataError
from stream._extras import require
from stream._reach import why_unreachable
from stream._store_sql import TABLES, insert_sql, schema_sql
from stream.codec import ContractViolation
from stream.errors import StoreError
from stream.settings import Settings

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = [
    "TABLES",
    "Batch",
    "Store",
    "check_store",
    "describe_dsn",
    "insert_sql",
    "read_training_rows",
    "schema_sql",
    "store_conninfo",
    "to_timestamp",
    "training_frame",
]

log = logging.getLogger(__name__)

TRAINING_COLUMNS = ("signal_id", "outcome_id", "symbol", "ts")
TARGET_COLUMNS = ("label", "realized_rr")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TS_RANGE = (-62_135_596_800_000, 253_402_300_799_999)  # years 1 to 9999
_SCHEMA_LOCK = 0x41_50_53_54  # advisory lock taken while creating the schema


def _pg() -> ModuleType:
    """psycopg, from the ``store`` extra: imported at first use, so installs without it run."""
    return require("psycopg", "store", "the PostgreSQL store")


def store_conninfo(settings: Settings) -> str:
    """The libpq connection string in force (the DSN plus the separate password, if any).

    The result holds the password: never log it; log :func:`describe_dsn` instead.
    """
    if settings.store_dsn is None:
        raise ConfigError(
            "ALPHAPULSE_STORE_DSN is not set; set it to a PostgreSQL DSN such as "
            "postgresql://alphapulse@db.example:5432/alphapulse"
        )
    dsn = settings.store_dsn.get_secret_value()
    pw = settings.store_password
    pg = _pg()
    try:
        pg.conninfo.conninfo_to_dict(dsn)
        if pw is None:
            return dsn
        return str(pg.conninfo.make_conninfo(dsn, password=pw.get_secret_value()))
    except pg.ProgrammingError:
        raise ConfigError(
            "ALPHAPULSE_STORE_DSN is not a valid PostgreSQL connection string (URI or "
            "key=value form); details are withheld because it may hold a password"
        ) from None


def check_store(settings: Settings, timeout: float) -> None:
    """Raise :class:`StoreError` when no host of ``ALPHAPULSE_STORE_DSN`` accepts a TCP
    connection within ``timeout`` seconds; a Unix socket is not asked.

    >>> check_store(Settings(_env_file=None, store_dsn="host=/run/postgresql"), timeout=1.0)
    """
    d = _pg().conninfo.conninfo_to_dict(store_conninfo(settings))
    hosts = str(d.get("hostaddr") or d.get("host") or "localhost").split(",")
    ports = str(d.get("port") or "5432").split(",")
    if any(h.startswith("/") or h.startswith("@") for h in hosts):
        return
    addresses = [(h, int(ports[i] if i < len(ports) else ports[-1])) for i, h in enumerate(hosts)]
    reason = why_unreachable(addresses, timeout)
    if reason is not None:
        raise StoreError(
            f"cannot reach the PostgreSQL store at {describe_dsn(store_conninfo(settings))} "
            f"({reason}); check ALPHAPULSE_STORE_DSN"
        )


def describe_dsn(conninfo: str) -> str:
    """``user@host:port/dbname`` of a connection string, without its password.

    >>> describe_dsn("postgresql://ap:secret@db:5433/hist")
    'ap@db:5433/hist'
    """
    pg = _pg()
    try:
        d = pg.conninfo.conninfo_to_dict(conninfo)
    except pg.ProgrammingError:
        return "<invalid DSN>"
    user = d.get("user", "")
    where = f"{d.get('host', '')}:{d.get('port', 5432)}/{d.get('dbname', '')}"
    return f"{user}@{where}" if user else where


def to_timestamp(ms: int, name: str = "ts") -> datetime:
    """Epoch milliseconds as an aware datetime, or ``ContractViolation`` when out of range.

    >>> to_timestamp(1_704_067_200_000).isoformat()
    '2024-01-01T00:00:00+00:00'
    """
    if not _TS_RANGE[0] <= ms <= _TS_RANGE[1]:
        raise ContractViolation("schema", f"field '{name}' is out of range: {ms}")
    return _EPOCH + timedelta(milliseconds=ms)


@dataclass
class Batch:
    """Rows to write in one transaction, by table.

    >>> b = Batch(); b.rows["signals"].append(("s1",)); len(b)
    1
    """

    rows: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {table: [] for table in TABLES}
    )

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


def _bound(value: int | str | datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        if isinstance(value, int):
            return to_timestamp(value, name)
        stamp = pd.Timestamp(value)
    except (ContractViolation, ValueError) as exc:
        raise ConfigError(f"{name} must be epoch ms, a date or an ISO 8601 time: {exc}") from None
    return (stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp).to_pydatetime()


def training_frame(records: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
    """Training table from ``(signal_id, outcome_id, symbol, ts_ms, features, label, rr)`` rows.

    Columns: the ids, ``ts`` (epoch ms), one float column per feature (sorted by name; NaN when a
    row lacks it), ``label`` (0/1) and ``realized_rr`` (NaN when unknown), as a training CSV has.

    >>> training_frame([("s1", "o1", "X", 5, '{"b": 2, "a": 1}', True, None)]).columns.tolist()
    ['signal_id', 'outcome_id', 'symbol', 'ts', 'a', 'b', 'label', 'realized_rr']
    """
    feats = [orjson.loads(r[4]) if isinstance(r[4], str | bytes) else r[4] for r in records]
    names = sorted({k for f in feats for k in f})
    clash = sorted(set(names) & {*TRAINING_COLUMNS, *TARGET_COLUMNS})
    if clash:
        raise DataError(f"feature name(s) {clash} collide with training columns; rename them")
    table = pd.DataFrame.from_records(feats, columns=names).astype("float64")
    head = pd.DataFrame(
        {
            "signal_id": pd.Series([r[0] for r in records], dtype="str"),
            "outcome_id": pd.Series([r[1] for r in records], dtype="str"),
            "symbol": pd.Series([r[2] for r in records], dtype="str"),
            "ts": pd.Series([r[3] for r in records], dtype="int64"),
        }
    )
    tail = pd.DataFrame(
        {
            "label": pd.Series([int(r[5]) for r in records], dtype="int64"),
            "realized_rr": pd.Series(
                [float("nan") if r[6] is None else r[6] for r in records], dtype="float64"
            ),
        }
    )
    return pd.concat([head, table, tail], axis=1)


class Store:
    """Connection pool, schema and batched idempotent writes of the store.

    Parameters
    ----------
    conninfo
        libpq connection string (URI or key=value), password included.
    pool_size
        Most connections the pool holds.
    timeout
        Seconds to wait for a connection before a write fails (and is retried by the caller).

    Examples
    --------
    >>> store = Store("host=db port=5433 user=ap password=secret dbname=hist", pool_size=2)
    >>> store.target
    'ap@db:5433/hist'
    """

    def __init__(self, conninfo: str, pool_size: int = 4, timeout: float = 10.0) -> None:
        if pool_size < 1:
            raise ConfigError(f"pool_size must be at least 1, not {pool_size}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, not {timeout}")
        self.target = describe_dsn(conninfo)
        self.pool_size = pool_size
        self.timeout = timeout
        pool_class = require("psycopg_pool", "store", "the PostgreSQL store").ConnectionPool
        self._pool: ConnectionPool[psycopg.Connection[Any]] = pool_class(
            conninfo,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout,
            check=pool_class.check_connection,
            kwargs={"connect_timeout": max(1, int(timeout))},
            name="alphapulse-store",
        )
        self._lock = threading.Lock()
        self.hypertables: bool | None = None  # known once the schema is in place

    @classmethod
    def from_settings(cls, settings: Settings, pool_size: int | None = None) -> Store:
        """A store configured by ``ALPHAPULSE_STORE_*``."""
        return cls(store_conninfo(settings), pool_size=pool_size or settings.store_pool_size)

    def open(self) -> Store:
        """Start the pool (connections are made in the background)."""
        self._pool.open(wait=False)
        return self

    def close(self) -> None:
        """Close the pool and its connections."""
        self._pool.close(timeout=5.0)

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_schema(self) -> bool:
        """Create what is missing of the schema; True when the tables are hypertables."""
        with self._lock:
            if self.hypertables is None:
                with self._pool.connection() as conn:
                    self.hypertables = _create_schema(conn)
                log.info(
                    "store %s ready (%s)",
                    self.target,
                    "TimescaleDB hypertables" if self.hypertables else "plain tables",
                )
            return self.hypertables

    def write(self, batch: Batch) -> dict[str, int]:
        """Write ``batch`` in one transaction; rows already stored are skipped.

        Returns the number of new rows per table. Raises :class:`psycopg.Error` when the database
        fails (callers retry the same batch). A row the database rejects as data (a value out of
        its range) is logged and left out, so one bad row cannot stall the writer.
        """
        hyper = self.ensure_schema()
        pg = _pg()
        rejected = (pg.DataError, pg.errors.ProgramLimitExceeded)
        try:
            with self._pool.connection() as conn, conn.transaction():
                return {t: _insert(conn, t, rows, hyper) for t, rows in batch.rows.items() if rows}
        except rejected as exc:
            log.warning("store batch rejected (%s); writing its rows one by one", exc)
        out: dict[str, int] = {}
        for table, rows in batch.rows.items():
            for row in rows:
                try:
                    with self._pool.connection() as conn, conn.transaction():
                        out[table] = out.get(table, 0) + _insert(conn, table, [row], hyper)
                except rejected as exc:
                    log.warning("store skipped %s row %r: %s", table, row[0], exc)
        return out

    def counts(self) -> dict[str, int]:
        """Row count of each table."""
        self.ensure_schema()
        with self._pool.connection() as conn:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]

    def training_rows(
        self, since: int | str | datetime | None = None, until: int | str | datetime | None = None
    ) -> pd.DataFrame:
        """Training rows with ``since <= ts < until`` (outcome time), ordered by ``ts``."""
        lo, hi = _bound(since, "since"), _bound(until, "until")
        sql = (
            "SELECT signal_id, outcome_id, symbol, (extract(epoch FROM ts) * 1000)::bigint, "
            "features::text, label, realized_rr FROM training_rows "
            "WHERE (%(lo)s::timestamptz IS NULL OR ts >= %(lo)s) "
            "AND (%(hi)s::timestamptz IS NULL OR ts < %(hi)s) ORDER BY ts, outcome_id"
        )
        try:
            with self._pool.connection() as conn:
                records = conn.execute(sql, {"lo": lo, "hi": hi}).fetchall()
        except _pg().errors.UndefinedTable:
            raise DataError(
                f"store {self.target} has no training_rows view yet; run a worker with "
                "ALPHAPULSE_STORE_ENABLED=true first"
            ) from None
        return training_frame(records)


def _create_schema(conn: psycopg.Connection[Any]) -> bool:
    timescale = True
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except _pg().Error as exc:
        if conn.broken:
            raise
        timescale = False
        detail = " ".join(str(exc).split())
        log.info("TimescaleDB is not available (%s); using plain tables", detail)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
        hyper = timescale
        if conn.execute("SELECT to_regclass('signals') IS NOT NULL").fetchone() == (True,):
            hyper = timescale and conn.execute(
                "SELECT count(*) > 0 FROM timescaledb_information.hypertables "
                "WHERE hypertable_name = 'signals'"
            ).fetchone() == (True,)
        for stmt in schema_sql(hyper):
            conn.execute(stmt)
    return hyper


def _insert(
    conn: psycopg.Connection[Any], table: str, rows: list[tuple[Any, ...]], hyper: bool
) -> int:
    columns = [list(col) for col in zip(*rows, strict=True)]
    return conn.execute(insert_sql(table, hyper), columns).rowcount


def read_training_rows(
    settings: Settings,
    since: int | str | datetime | None = None,
    until: int | str | datetime | None = None,
) -> pd.DataFrame:
    """Training rows from the store for ``since <= ts < until``, ordered by ``ts``.

    ``since`` and ``until`` are epoch ms, ISO 8601 dates or times (naive means UTC), or datetimes;
    None leaves that side open. ``ts`` is the outcome's time (when its label became known). The
    columns are those of a training CSV: ``signal_id``, ``outcome_id``, ``symbol``, ``ts`` (epoch
    ms), one column per feature (the outcome's own features when it carries them, else its
    signal's), ``label`` (0/1) and ``realized_rr``. Outcomes with no features and no stored
    signal are left out.
    """
    with Store.from_settings(settings, pool_size=1) as store:
        return store.training_rows(since, until)
