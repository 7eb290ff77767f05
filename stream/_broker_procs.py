"""The processes behind the local broker: Maven for the jars and the JVM commands that format (with
a new cluster id) and run a node. The checks on ports and pids are in :mod:`stream._processes`."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from stream._broker_files import pom_xml
from stream.errors import BrokerError

__all__ = [
    "fetch_jars",
    "find_java",
    "format_storage",
    "new_cluster_id",
    "spawn_node",
]


def find_java() -> str:
    """The ``java`` on PATH, or :class:`BrokerError` saying how to get one."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "Java is not on PATH; Kafka needs a Java 17+ runtime. Install one "
            "(apt-get install openjdk-17-jre-headless) or set KAFKA_BOOTSTRAP_SERVERS."
        )
    return java


def fetch_jars(
    lib_dir: Path, kafka_version: str, log4j_version: str, progress: Callable[[str], None]
) -> None:
    """Copy the broker's runtime classpath into ``lib_dir`` with Maven (its POM beside it)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (mvn) is not on PATH; it is needed once to fetch the Kafka jars. "
            "Install it (apt-get install maven) or set KAFKA_BOOTSTRAP_SERVERS to use an "
            "existing cluster."
        )
    work = lib_dir.parent
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(pom_xml(kafka_version, log4j_version))
    progress(f"resolving Kafka {kafka_version} jars from Maven Central into {work}")
    proc = subprocess.run(
        [
            mvn,
            "-B",
            "-q",
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={lib_dir}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not any(lib_dir.glob("kafka_2.13-*.jar")):
        last = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise BrokerError(f"Maven could not resolve the Kafka jars:\n{last}")


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A random cluster id: 16 bytes in URL-safe base64, never starting with ``-``.

    Kafka's own ``Uuid.randomUuid`` draws again in that case, and so do we: ``kafka-storage
    format -t ID`` reads an id that starts with ``-`` as an option and fails (1 start in 64).

    >>> draws = iter([bytes([0xF8]) + bytes(15), bytes(16)])  # the first encodes as "-AAA..."
    >>> new_cluster_id(lambda: next(draws))
    'AAAAAAAAAAAAAAAAAAAAAA'
    """
    while True:
        cid = base64.urlsafe_b64encode(random_bytes()).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def format_storage(
    lib_dir: Path,
    node_dir: Path,
    node: int,
    cluster_id: str,
    scram_mechanism: str,
    scram_users: dict[str, str],
) -> None:
    """Format the storage of node ``node`` (``StorageTool format``), adding its SCRAM users."""
    scram: list[str] = []
    for name, password in scram_users.items():
        scram += ["--add-scram", f"{scram_mechanism}=[name={name},password={password}]"]
    proc = subprocess.run(
        [
            find_java(),
            "-cp",
            f"{lib_dir}/*",
            f"-Dlog4j2.configurationFile={node_dir}/log4j2.xml",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(node_dir / "server.properties"),
            "--ignore-formatted",
            *scram,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BrokerError(
            f"formatting storage of node {node} failed:\n{(proc.stdout + proc.stderr)[-2000:]}"
        )


def spawn_node(lib_dir: Path, node_dir: Path, heap: str, log: Path) -> int:
    """Start a node's JVM in its own session, its output appended to ``log``; return its pid."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                find_java(),
                "-Xms128m",
                f"-Xmx{heap}",
                "-XX:+UseG1GC",
                # C1 only: a local broker lives minutes to hours, and on a small machine the
                # C2 compiler's CPU shows up as the worker's latency (docs/benchmarks.md).
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={node_dir}/log4j2.xml",
                f"-Dkafka.logs.dir={node_dir}",
                "-cp",
                f"{lib_dir}/*",
                "kafka.Kafka",
                str(node_dir / "server.properties"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc.pid
