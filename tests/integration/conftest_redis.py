"""Fixtures for a real ``redis-server`` (Debian's ``redis-server`` package) on loopback.

Registered from ``tests/conftest.py`` through ``pytest_plugins``. Each test gets its own server on
a free port below the ephemeral range, so that a test can stop it and start it again on the same
port (see :func:`tests.support.free_port_block`). Tests fail, with the reason, when no
``redis-server`` is installed (``make install`` installs it as root).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port_block

__all__ = ["RedisServer", "redis_server"]

#: Entries per stream node: small, so that ``MAXLEN ~`` trims close to its figure in tests.
NODE_ENTRIES = 10


class RedisServer:
    """One ``redis-server`` process without persistence, in its own folder."""

    def __init__(self, binary: str, port: int, folder: Path) -> None:
        self.binary = binary
        self.port = port
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def up(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it answers PING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
            "--logfile", str(self.folder / "redis.log"),
            "--stream-node-max-entries", str(NODE_ENTRIES),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                self.down()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.05)

    def freeze(self) -> None:
        """SIGSTOP: the server accepts connections (the kernel does) but answers nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: the server answers again, the commands sent meanwhile first."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def down(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a frozen server would not see the SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port for this test, stopped after it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("no redis-server: install Debian's 'redis-server' package (make install does)")
    srv = RedisServer(binary, free_port_block(1), tmp_path / "redis")
    srv.up()
    try:
        yield srv
    finally:
        srv.down()
