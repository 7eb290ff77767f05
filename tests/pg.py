"""A real PostgreSQL server on loopback, from the machine's own PostgreSQL binaries.

Used by the test fixtures and by ``python -m bench.store``. The server runs ``initdb`` and
``pg_ctl`` from ``/usr/lib/postgresql/<version>/bin`` (Debian's ``postgresql`` package; the
Makefile installs it when missing and we are root) in a fresh temporary folder, listens on
127.0.0.1 only, and requires a password (SCRAM) for its one superuser. PostgreSQL refuses to run
as root, so as root every server command runs as the ``postgres`` user (``runuser``) on a data
folder that user owns.

>>> srv = PgServer(port=54321, password="pw")
>>> srv.dsn("db1")
'host=127.0.0.1 port=54321 user=alphapulse password=pw dbname=db1'
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PgServer", "PgServerError", "find_pg_bin"]

SEARCH = "/usr/lib/postgresql/*/bin"
SUPERUSER = "alphapulse"


class PgServerError(RuntimeError):
    """PostgreSQL cannot be found, started or stopped."""


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``postgres``, or None.

    A folder named by ``PATH``'s ``pg_ctl`` is used when no Debian layout exists.
    """
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        m = re.fullmatch(r"\d+", d.parent.name)
        if m and (d / "postgres").is_file() and (d / "initdb").is_file():
            found.append((int(d.parent.name), d))
    if found:
        return max(found)[1]
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _run_as() -> str | None:
    """The user server commands run as: None for the current user, ``postgres`` under root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PgServerError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PgServer:
    """One PostgreSQL server in its own temporary folder.

    Parameters
    ----------
    port
        TCP port on 127.0.0.1.
    password
        The superuser's password; random when None.
    durable
        False turns off ``fsync`` and synchronous commit (fast, for tests); True keeps the
        defaults (for benchmarks).
    """

    def __init__(self, port: int, password: str | None = None, durable: bool = False) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be in 1..65535, not {port}")
        self.port = port
        self.password = password or secrets.token_urlsafe(16)
        self.durable = durable
        self.user = SUPERUSER
        self.base: Path | None = None

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string for database ``dbname`` (holds the password)."""
        return (
            f"host=127.0.0.1 port={self.port} user={self.user} "
            f"password={self.password} dbname={dbname}"
        )

    @property
    def datadir(self) -> Path:
        """The cluster's data folder."""
        if self.base is None:
            raise PgServerError("the server was never initialised; call up() first")
        return self.base / "data"

    def _cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        user = _run_as()
        argv = list(args) if user is None else ["runuser", "-u", user, "--", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise PgServerError(
                f"{Path(args[0]).name} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc

    def _init(self, bindir: Path) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="alphapulse-pg-"))
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        user = _run_as()
        if user is not None:
            info = pwd.getpwnam(user)
            for p in (self.base, pwfile):
                os.chown(p, info.pw_uid, info.pw_gid)
        self._cmd(
            str(bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.base}'",
            "max_connections = 100",
            "shared_buffers = 128MB",
        ]
        if not self.durable:
            conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write("\n" + "\n".join(conf) + "\n")

    def up(self) -> None:
        """Create the cluster on first use, then start the server and wait until it accepts."""
        bindir = find_pg_bin()
        if bindir is None:
            raise PgServerError(
                "no PostgreSQL server binaries under /usr/lib/postgresql; "
                "install Debian's 'postgresql' package (make install does, as root)"
            )
        if self.base is None:
            self._init(bindir)
        log = self.base / "server.log" if self.base else None
        self._cmd(
            str(bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` or ``immediate``); the data folder stays for :meth:`up`."""
        bindir = find_pg_bin()
        if bindir is None or self.base is None or not (self.datadir / "postmaster.pid").exists():
            return
        self._cmd(str(bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def down(self) -> None:
        """Stop the server and remove its folder."""
        try:
            self.stop("immediate")
        finally:
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)
                self.base = None

    def log_tail(self, n: int = 30) -> str:
        """Last lines of the server log."""
        if self.base is None:
            return ""
        try:
            lines = (self.base / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    @contextmanager
    def running(self) -> Iterator[PgServer]:
        """Context manager: :meth:`up` on entry, :meth:`down` on exit."""
        self.up()
        try:
            yield self
        finally:
            self.down()
