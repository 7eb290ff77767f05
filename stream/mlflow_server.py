"""A real ``mlflow server`` process on loopback, for shared use and for tests.

The embedded default needs no server (a SQLite store under the data directory); this launcher is
for ``alphapulse mlflow up`` and for the test harness.

>>> srv = MlflowServer(state_dir=Path("/tmp/m"), port=5000)
>>> srv.uri
'http://127.0.0.1:5000'
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from models.errors import AlphaPulseError
from stream._processes import kill_after, pid_alive, tail

__all__ = ["MlflowServer", "MlflowServerError"]


class MlflowServerError(AlphaPulseError):
    """The local MLflow server cannot be started or stopped."""


class MlflowServer:
    """An ``mlflow server`` with a SQLite backend and a local artifact folder.

    Parameters
    ----------
    state_dir
        Folder for the database, the artifacts, the log and the pid file.
    host, port
        Where the server listens (loopback by default).
    """

    def __init__(self, state_dir: Path, port: int = 5000, host: str = "127.0.0.1") -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be in 1..65535, not {port}")
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port

    @property
    def uri(self) -> str:
        """Tracking URI of the server."""
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        """The server's console log."""
        return self.state_dir / "server.log"

    @property
    def _pid_file(self) -> Path:
        return self.state_dir / "server.pid"

    def pid(self) -> int | None:
        """PID of the running server, or None."""
        try:
            pid = int(self._pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def healthy(self) -> bool:
        """True when the server answers its health check."""
        try:
            with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def up(self, timeout: float = 120.0) -> bool:
        """Start the server and wait until it answers. False when it was already running."""
        if self.pid() is not None and self.healthy():
            return False
        self.state_dir.mkdir(parents=True, exist_ok=True)
        mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
        if not Path(mlflow).exists():
            raise MlflowServerError("the mlflow command is not installed in this environment")
        db = self.state_dir / "mlflow.db"
        artifacts = self.state_dir / "artifacts"
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                [
                    mlflow,
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{db}",
                    "--artifacts-destination",
                    str(artifacts),
                    "--serve-artifacts",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise MlflowServerError(
                    f"mlflow server exited on start:\n{tail(self.log_file, 20)}"
                )
            if self.healthy():
                return True
            time.sleep(0.5)
        self.down()
        raise MlflowServerError(f"mlflow server did not answer on {self.uri} in {timeout:.0f}s")

    def down(self, timeout: float = 20.0) -> bool:
        """Stop the server. False when it was not running."""
        pid = self.pid()
        if pid is None:
            self._pid_file.unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        kill_after(pid, timeout)
        self._pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the server (fault injection)."""
        pid = self.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
