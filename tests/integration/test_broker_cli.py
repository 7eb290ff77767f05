"""``alphapulse broker up | down | status`` against real JVMs, on ports of the test's own."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.conftest import CACHE_DIR
from tests.support import free_port_block

pytestmark = pytest.mark.integration


def _cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alphapulse.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _env(tmp_path: Path, base_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        ALPHAPULSE_DATA_DIR=str(tmp_path / "data"),
        ALPHAPULSE_CACHE_DIR=str(CACHE_DIR),
        ALPHAPULSE_BROKER_PORT=str(base_port),
    )
    env.update(extra)
    return env


def _no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stderr + res.stdout, res.stderr


def test_up_twice_then_down_twice(tmp_path: Path) -> None:
    env = _env(tmp_path, free_port_block(2))
    try:
        first = _cli(env, "broker", "up")
        assert first.returncode == 0, first.stderr
        assert "Kafka is running on" in first.stderr
        second = _cli(env, "broker", "up")
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stderr
        status = _cli(env, "broker", "status")
        assert status.returncode == 0 and "running (pid" in status.stdout
    finally:
        down = _cli(env, "broker", "down")
    assert down.returncode == 0 and "Kafka stopped" in down.stderr
    again = _cli(env, "broker", "down")
    assert again.returncode == 0 and "not running" in again.stderr
    _no_traceback(again)
    assert _cli(env, "broker", "status").returncode == 3


def test_port_taken_is_a_clear_error(tmp_path: Path) -> None:
    base = free_port_block(2)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", base))
        blocker.listen()
        res = _cli(_env(tmp_path, base), "broker", "up")
    assert res.returncode == 1
    assert f"port 127.0.0.1:{base} is taken" in res.stderr
    _no_traceback(res)


def test_jvm_dying_on_start_shows_its_log(tmp_path: Path) -> None:
    res = _cli(_env(tmp_path, free_port_block(2), ALPHAPULSE_BROKER_HEAP="16k"), "broker", "up")
    assert res.returncode == 1
    assert "exited during start" in res.stderr
    assert "heap" in res.stderr.lower()  # the JVM's own complaint, from the log tail
    _no_traceback(res)


def test_missing_java_and_missing_maven(tmp_path: Path) -> None:
    empty = tmp_path / "bin-empty"
    empty.mkdir()
    res = _cli(_env(tmp_path, free_port_block(2), PATH=str(empty)), "broker", "up")
    assert res.returncode == 1 and "Java is not on PATH" in res.stderr
    _no_traceback(res)

    java_only = tmp_path / "bin-java"
    java_only.mkdir()
    java = subprocess.run(["bash", "-c", "command -v java"], capture_output=True, text=True)
    (java_only / "java").symlink_to(os.path.realpath(java.stdout.strip()))
    env = _env(
        tmp_path,
        free_port_block(2),
        PATH=str(java_only),
        ALPHAPULSE_CACHE_DIR=str(tmp_path / "empty-cache"),
    )
    res = _cli(env, "broker", "up")
    assert res.returncode == 1 and "Maven (mvn) is not on PATH" in res.stderr
    _no_traceback(res)


def test_external_cluster_starts_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path, free_port_block(2), KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    res = _cli(env, "broker", "up")
    assert res.returncode == 0 and "using that cluster" in res.stderr
    assert not (tmp_path / "data" / "broker").exists()


async def _replicated_topic(bootstrap: str) -> tuple[list[dict], str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("replicated", 3, 3)])
        for _ in range(100):
            (desc,) = await admin.describe_topics(["replicated"])
            parts = desc["partitions"]
            if len(parts) == 3 and all(len(p["isr"]) == 3 for p in parts):
                break
            await asyncio.sleep(0.2)
        (cfg,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "replicated")]
        )
        entries = {e[0]: e[1] for e in cfg.resources[0][4]}
        return parts, entries["min.insync.replicas"]
    finally:
        await admin.close()


@pytest.mark.slow
def test_three_node_cluster(tmp_path: Path) -> None:
    base = free_port_block(6)
    env = _env(tmp_path, base, ALPHAPULSE_BROKER_HEAP="384m")
    try:
        up = _cli(env, "broker", "up", "--nodes", "3")
        assert up.returncode == 0, up.stderr
        status = _cli(env, "broker", "status", "--nodes", "3")
        assert status.returncode == 0 and status.stdout.count("running (pid") == 3
        bootstrap = ",".join(f"127.0.0.1:{base + 2 * i}" for i in range(3))
        parts, min_isr = asyncio.run(_replicated_topic(bootstrap))
        assert len(parts) == 3
        assert all(len(p["replicas"]) == 3 and len(p["isr"]) == 3 for p in parts)
        assert min_isr == "2"
    finally:
        down = _cli(env, "broker", "down", "--nodes", "3")
    assert down.returncode == 0 and "Kafka stopped" in down.stderr
    status = _cli(env, "broker", "status", "--nodes", "3")
    assert status.returncode == 3 and status.stdout.count("stopped") == 3
    for i in range(3):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", base + 2 * i)) != 0
