"""Local Apache Kafka launcher (KRaft mode, loopback only).

The broker jars come from Maven Central through ``mvn dependency:copy-dependencies`` and are
cached in the user's cache directory (never in the repository). Each node runs as a JVM in its own
session, so it outlives the command that started it; its state lives under the data directory.

>>> cluster = LocalKafka(state_dir=Path("/tmp/x"), cache_dir=Path("/tmp/y"), nodes=3,
...                      host="127.0.0.1", base_port=29092)
>>> cluster.bootstrap_servers
'127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096'
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream._broker_files import LOG4J2_XML, server_properties
from stream._broker_procs import fetch_jars, find_java, format_storage, new_cluster_id, spawn_node
from stream._processes import kill_after, pid_alive, port_free, port_open, tail, wait_exit
from stream.errors import BrokerError
from stream.settings import Settings

# The launcher's defaults are the settings' defaults (ALPHAPULSE_BROKER_HOST / _PORT).
_DEFAULT_HOST: str = Settings.model_fields["broker_host"].default
_DEFAULT_PORT: int = Settings.model_fields["broker_port"].default

__all__ = ["LocalKafka", "NodeStatus", "local_kafka"]

_READY_MARK = "Kafka Server started"
_CLIENT_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT")
_SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_SCRAM_FORBIDDEN = frozenset(',[]="\\ \t\n')
_INTER_BROKER_USER = "alphapulse-inter-broker"


@dataclass(frozen=True)
class NodeStatus:
    """Whether one node of the local cluster runs, and where."""

    node_id: int
    port: int
    pid: int | None
    running: bool


class LocalKafka:
    """A local Kafka cluster of one or three KRaft nodes on loopback.

    Parameters
    ----------
    state_dir
        Folder for the nodes' configuration, data, logs and pid files.
    cache_dir
        Folder where the broker jars are cached, per Kafka version.
    nodes
        1 or 3. Three nodes use replication factor 3 and min ISR 2.
    host, base_port
        Node ``i`` (0-based) listens on ``base_port + 2 i`` and its controller on the next port.
    kafka_version, log4j_version
        Maven versions of ``org.apache.kafka:kafka_2.13`` and of the log4j2 binding.
    extra_properties
        Extra ``server.properties`` lines (for example SASL listeners), applied to every node.
        They override the lines the launcher writes itself.
    client_listener_protocol
        ``PLAINTEXT`` (default) or ``SASL_PLAINTEXT``. With ``SASL_PLAINTEXT`` the client port
        accepts only SCRAM-authenticated clients (``scram_mechanism``); brokers talk to each other
        on it as a SCRAM user of their own, and the controller port stays PLAINTEXT on loopback.
    scram_users
        SCRAM users (name to password) created when the storage is formatted
        (``StorageTool format --add-scram``).
    scram_mechanism
        ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``.
    """

    def __init__(
        self,
        state_dir: Path,
        cache_dir: Path,
        nodes: int = 1,
        host: str = _DEFAULT_HOST,
        base_port: int = _DEFAULT_PORT,
        kafka_version: str = "4.1.1",
        log4j_version: str = "2.24.3",
        extra_properties: dict[str, str] | None = None,
        heap: str = "512m",
        client_listener_protocol: str = "PLAINTEXT",
        scram_users: dict[str, str] | None = None,
        scram_mechanism: str = "SCRAM-SHA-256",
    ) -> None:
        if nodes not in (1, 3):
            raise BrokerError(f"--nodes must be 1 or 3, not {nodes}")
        if client_listener_protocol not in _CLIENT_PROTOCOLS:
            raise BrokerError(
                f"client listener protocol must be one of {_CLIENT_PROTOCOLS}, "
                f"not {client_listener_protocol!r}"
            )
        if scram_mechanism not in _SCRAM_MECHANISMS:
            raise BrokerError(
                f"SCRAM mechanism must be one of {_SCRAM_MECHANISMS}, not {scram_mechanism!r}"
            )
        for name, password in (scram_users or {}).items():
            if not name or not password or _SCRAM_FORBIDDEN & set(name + password):
                raise BrokerError(
                    f"SCRAM user {name!r}: name and password must be non-empty and free of "
                    f"{''.join(sorted(_SCRAM_FORBIDDEN))!r} and whitespace"
                )
        if not 1 <= base_port <= 65535 - 2 * nodes:
            raise BrokerError(f"base port {base_port} leaves no room for {nodes} node(s)")
        self.state_dir = Path(state_dir)
        self.cache_dir = Path(cache_dir)
        self.nodes = nodes
        self.host = host
        self.base_port = base_port
        self.kafka_version = kafka_version
        self.log4j_version = log4j_version
        self.extra_properties = dict(extra_properties or {})
        self.heap = heap
        self.client_listener_protocol = client_listener_protocol
        self.scram_users = dict(scram_users or {})
        self.scram_mechanism = scram_mechanism
        self._log_offsets: dict[int, int] = {}

    def port(self, node: int) -> int:
        """Client port of node ``node`` (0-based)."""
        return self.base_port + 2 * node

    def controller_port(self, node: int) -> int:
        """Controller port of node ``node`` (0-based)."""
        return self.base_port + 2 * node + 1

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated client addresses of every node."""
        return ",".join(f"{self.host}:{self.port(i)}" for i in range(self.nodes))

    def _node_dir(self, node: int) -> Path:
        return self.state_dir / f"node-{node}"

    def _pid_file(self, node: int) -> Path:
        return self._node_dir(node) / "kafka.pid"

    def log_file(self, node: int) -> Path:
        """The node's console log (stdout and stderr of the JVM)."""
        return self._node_dir(node) / "console.log"

    @property
    def _meta_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def lib_dir(self) -> Path:
        """Folder holding the resolved broker classpath."""
        return self.cache_dir / "kafka" / f"{self.kafka_version}-log4j{self.log4j_version}" / "libs"

    def ensure_jars(self, progress: Callable[[str], None] = print) -> Path:
        """Resolve the broker jars through Maven once; later calls reuse the cache."""
        marker = self.lib_dir / ".complete"
        if marker.exists():
            return self.lib_dir
        fetch_jars(self.lib_dir, self.kafka_version, self.log4j_version, progress)
        marker.write_text(self.kafka_version)
        return self.lib_dir

    def _read_pid(self, node: int) -> int | None:
        try:
            return int(self._pid_file(node).read_text().strip())
        except (OSError, ValueError):
            return None

    def status(self) -> list[NodeStatus]:
        """Status of every node this launcher manages."""
        out = []
        for i in range(self.nodes):
            pid = self._read_pid(i)
            alive = pid is not None and pid_alive(pid)
            out.append(NodeStatus(i, self.port(i), pid if alive else None, alive))
        return out

    def running(self) -> bool:
        """True when every node's JVM is alive."""
        return all(s.running for s in self.status())

    def _listener_properties(self, node: int, inter_broker_password: str) -> dict[str, str]:
        """``server.properties`` lines for a SASL client listener (empty for PLAINTEXT)."""
        if self.client_listener_protocol == "PLAINTEXT":
            return {}
        name = self.client_listener_protocol
        mech = self.scram_mechanism
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{_INTER_BROKER_USER}" password="{inter_broker_password}";'
        )
        return {
            "listeners": f"{name}://{self.host}:{self.port(node)},"
            f"CONTROLLER://{self.host}:{self.controller_port(node)}",
            "advertised.listeners": f"{name}://{self.host}:{self.port(node)}",
            "listener.security.protocol.map": f"{name}:{name},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": name,
            "sasl.enabled.mechanisms": mech,
            "sasl.mechanism.inter.broker.protocol": mech,
            f"listener.name.{name.lower()}.{mech.lower()}.sasl.jaas.config": jaas,
        }

    def _configure(self, cluster_id: str) -> None:
        voters = ",".join(
            f"{i + 1}@{self.host}:{self.controller_port(i)}" for i in range(self.nodes)
        )
        users = dict(self.scram_users)
        if self.client_listener_protocol != "PLAINTEXT":
            users[_INTER_BROKER_USER] = uuid.uuid4().hex
        for i in range(self.nodes):
            d = self._node_dir(i)
            (d / "data").mkdir(parents=True, exist_ok=True)
            props = server_properties(
                node_id=i + 1,
                host=self.host,
                port=self.port(i),
                controller_port=self.controller_port(i),
                voters=voters,
                log_dir=d / "data",
                nodes=self.nodes,
                extra={
                    **self._listener_properties(i, users.get(_INTER_BROKER_USER, "")),
                    **self.extra_properties,
                },
            )
            (d / "server.properties").write_text(props)
            (d / "log4j2.xml").write_text(LOG4J2_XML)
            format_storage(self.lib_dir, d, i, cluster_id, self.scram_mechanism, users)
        meta: dict[str, object] = {
            "cluster_id": cluster_id,
            "nodes": self.nodes,
            "base_port": self.base_port,
        }
        if self.client_listener_protocol != "PLAINTEXT":
            meta["client_listener_protocol"] = self.client_listener_protocol
        self._meta_file.write_text(json.dumps(meta))

    def _needs_format(self) -> bool:
        try:
            meta = json.loads(self._meta_file.read_text())
        except (OSError, ValueError):
            return True
        return bool(
            meta.get("nodes") != self.nodes
            or meta.get("base_port") != self.base_port
            or meta.get("client_listener_protocol", "PLAINTEXT") != self.client_listener_protocol
        )

    def start_node(self, node: int) -> None:
        """Start one node's JVM (storage must already be formatted)."""
        d = self._node_dir(node)
        for port in (self.port(node), self.controller_port(node)):
            if not port_free(self.host, port):
                raise BrokerError(
                    f"port {self.host}:{port} is taken by another process; stop it or choose "
                    "another port with ALPHAPULSE_BROKER_PORT"
                )
        log = self.log_file(node)
        pid = spawn_node(self.lib_dir, d, self.heap, log)
        self._pid_file(node).write_text(str(pid))
        self._log_offsets[node] = log.stat().st_size if log.exists() else 0

    def wait_ready(self, node: int, timeout: float = 120.0) -> None:
        """Wait until the node logs that it started and its port answers."""
        deadline = time.monotonic() + timeout
        log = self.log_file(node)
        start = self._log_offsets.get(node, 0)
        while time.monotonic() < deadline:
            pid = self._read_pid(node)
            if pid is None or not pid_alive(pid):
                raise BrokerError(
                    f"the Kafka JVM of node {node} exited during start; last log lines "
                    f"({log}):\n{tail(log)}"
                )
            try:
                with log.open("rb") as f:
                    f.seek(start)
                    started = _READY_MARK.encode() in f.read()
            except OSError:
                started = False
            if started and port_open(self.host, self.port(node)):
                return
            time.sleep(0.25)
        raise BrokerError(
            f"node {node} did not become ready in {timeout:.0f}s; last log lines:\n{tail(log)}"
        )

    def up(self, progress: Callable[[str], None] = print, timeout: float = 120.0) -> bool:
        """Start the cluster. Returns False when it was already running."""
        if self.running():
            return False
        find_java()
        self.ensure_jars(progress)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._needs_format():
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir.mkdir(parents=True)
            self._configure(new_cluster_id())
        progress(f"starting {self.nodes} Kafka node(s) on {self.bootstrap_servers}")
        try:
            for i, st in enumerate(self.status()):
                if not st.running:
                    self.start_node(i)
            for i in range(self.nodes):
                self.wait_ready(i, timeout)
        except BrokerError:
            self.down(progress=lambda _msg: None)
            raise
        return True

    def kill_node(self, node: int) -> None:
        """SIGKILL one node (fault injection)."""
        pid = self._read_pid(node)
        if pid is not None and pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
            wait_exit(pid, 10.0)

    def stop_node(self, node: int, timeout: float = 60.0) -> bool:
        """Stop one node cleanly (SIGTERM, then SIGKILL after ``timeout``)."""
        pid = self._read_pid(node)
        if pid is None or not pid_alive(pid):
            self._pid_file(node).unlink(missing_ok=True)
            return False
        os.killpg(pid, signal.SIGTERM)
        kill_after(pid, timeout)
        self._pid_file(node).unlink(missing_ok=True)
        return True

    def restart_node(self, node: int, timeout: float = 120.0) -> None:
        """Start a stopped node again and wait until it is ready."""
        self.start_node(node)
        self.wait_ready(node, timeout)

    def down(self, progress: Callable[[str], None] = print, timeout: float = 60.0) -> bool:
        """Stop every node (all at once, so no node waits for a quorum that is leaving).

        Returns False when nothing was running.
        """
        pids = {}
        for i in range(self.nodes):
            pid = self._read_pid(i)
            if pid is not None and pid_alive(pid):
                os.killpg(pid, signal.SIGTERM)
                pids[i] = pid
        deadline = time.monotonic() + timeout
        for pid in pids.values():
            kill_after(pid, max(0.0, deadline - time.monotonic()))
        for i in range(self.nodes):
            self._pid_file(i).unlink(missing_ok=True)
        progress("Kafka stopped" if pids else "Kafka is not running")
        return bool(pids)


def local_kafka(settings: Settings, nodes: int = 1) -> LocalKafka:
    """The local broker launcher configured from ``settings``.

    >>> k = local_kafka(Settings(_env_file=None, broker_port=19092))
    >>> k.bootstrap_servers, k.state_dir.name
    ('127.0.0.1:19092', 'broker')
    """
    return LocalKafka(
        state_dir=settings.data_dir / ("broker" if nodes == 1 else f"broker-{nodes}"),
        cache_dir=settings.cache_dir,
        nodes=nodes,
        host=settings.broker_host,
        base_port=settings.broker_port,
        kafka_version=settings.kafka_version,
        log4j_version=settings.log4j_version,
        heap=settings.broker_heap,
    )
