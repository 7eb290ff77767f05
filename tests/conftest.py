"""Test harness: a real Kafka broker and a real MLflow server for the session.

Kafka comes from ``KAFKA_BOOTSTRAP_SERVERS`` when set, else from an ``apache/kafka`` container
(testcontainers, see tests/_containers.py) when a Docker engine answers, else from the project's
own launcher on free loopback ports. MLflow is a real ``mlflow server`` process on a free port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import LocalKafka
from stream.mlflow_server import MlflowServer
from stream.settings import Settings
from tests.support import free_port, free_port_block

pytest_plugins = ["tests.integration.conftest_pg", "tests.integration.conftest_redis"]

CACHE_DIR = Path(os.environ.get("ALPHAPULSE_CACHE_DIR") or Settings().cache_dir)


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker for the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if _docker_engine():
        # testcontainers (and docker) are imported only on machines with a Docker engine
        from tests._containers import bootstrap_server, kafka_container

        with kafka_container(free_port()) as kc:
            yield bootstrap_server(kc)
        return
    base = free_port_block(2)
    kafka = LocalKafka(
        state_dir=tmp_path_factory.mktemp("kafka"), cache_dir=CACHE_DIR, base_port=base
    )
    kafka.up(progress=lambda _m: None)
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.down(progress=lambda _m: None)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tracking URI of a real ``mlflow server`` running for the whole session."""
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow"), port=free_port())
    srv.up()
    try:
        yield srv.uri
    finally:
        srv.down()


@pytest.fixture
def own_kafka(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalKafka]:
    """A Kafka cluster of this test alone, to stop or kill at will; ``nodes`` from an indirect
    parameter (default 1)."""
    nodes: int = getattr(request, "param", 1)
    kafka = LocalKafka(
        state_dir=tmp_path / "kafka",
        cache_dir=CACHE_DIR,
        nodes=nodes,
        base_port=free_port_block(2 * nodes),
        heap="384m",
    )
    kafka.up(progress=lambda _m: None)
    try:
        yield kafka
    finally:
        kafka.down(progress=lambda _m: None, timeout=30)


@pytest.fixture
def fresh_mlflow_server(tmp_path: Path) -> Iterator[str]:
    """Tracking URI of a real ``mlflow server`` for this test alone: its registry starts empty.

    Registered model names are the roles, shared by every experiment on a server; a test whose
    first job must become champion cannot share the session's server with earlier champions.
    """
    srv = MlflowServer(tmp_path / "mlflow", port=free_port())
    srv.up()
    try:
        yield srv.uri
    finally:
        srv.down()


@pytest.fixture
def settings_env(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a worker isolated to this test: own topics, group, data dir, web port."""
    run = uuid.uuid4().hex[:10]
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ALPHAPULSE_TOPIC_PREFIX": f"t{run}.",
        "ALPHAPULSE_APP_ID": f"alphapulse-test-{run}",
        "ALPHAPULSE_DATA_DIR": str(tmp_path / "data"),
        "ALPHAPULSE_CACHE_DIR": str(CACHE_DIR),
        "ALPHAPULSE_WEB_PORT": str(free_port()),
        "ALPHAPULSE_TOPIC_PARTITIONS": "4",
        "ALPHAPULSE_RETRAIN_NIGHTLY_INCREMENTAL_AT": "off",
        "ALPHAPULSE_RETRAIN_WEEKLY_QUICK_AT": "off",
        "ALPHAPULSE_RETRAIN_MONTHLY_FULL_AT": "off",
        "ALPHAPULSE_RETRAIN_ON_DRIFT": "false",
    }


@pytest.fixture
def settings(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from :func:`settings_env`, exactly as a worker would read them."""
    for k, v in settings_env.items():
        monkeypatch.setenv(k, v)
    return Settings()


# CI runs a fixed, repeatable set of examples; local runs explore new ones each time.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")
