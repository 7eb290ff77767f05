"""Fixtures for a real PostgreSQL server: one per session, a fresh database per test.

Registered from ``tests/conftest.py`` with ``pytest_plugins = ["tests.integration.conftest_pg"]``.
Tests fail, with the reason, when no PostgreSQL server binaries are installed (``make
install`` installs Debian's ``postgresql`` package when run as root).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.pg import PgServer, find_pg_bin
from tests.support import free_port

__all__ = ["pg_dsn", "pg_server"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL server on a free loopback port for the whole session."""
    if find_pg_bin() is None:
        pytest.fail(
            "no PostgreSQL server binaries: install Debian's 'postgresql' package (make test does)"
        )
    srv = PgServer(port=free_port())
    srv.up()
    try:
        yield srv
    finally:
        srv.down()


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """DSN of a fresh, empty database on the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield pg_server.dsn(name)
    finally:
        try:
            with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except psycopg.OperationalError:
            pass  # the server is down (a test stopped it); the session teardown removes it all
