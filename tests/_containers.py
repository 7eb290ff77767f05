"""A one-node Kafka broker (KRaft) in Docker from the ``apache/kafka`` image, for the tests.

testcontainers' ``KafkaContainer`` is made for Confluent's ``cp-kafka`` image: it starts the
broker through ``/etc/confluent/docker/configure`` and ``launch``, which ``apache/kafka`` does not
have, and its ``with_kraft()`` refuses any tag below Confluent Platform 7.0.0 (``4.1.1`` is
below it). The ``apache/kafka`` image configures itself instead: its ``/etc/kafka/docker/run``
turns each ``KAFKA_*`` variable into a broker property, formats the log directory with
``CLUSTER_ID`` (KRaft needs one) and starts the broker, which logs "Kafka Server started" when
it serves. So a generic container with those variables does it. The port that clients use must be
advertised before the broker starts, so the container port is bound to a host port chosen first.
"""

from __future__ import annotations

from typing import Any

from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

__all__ = ["KAFKA_IMAGE", "KAFKA_READY", "bootstrap_server", "kafka_container", "kafka_env"]

KAFKA_IMAGE = "apache/kafka:4.1.1"
"""The image, the same as docker-compose.yml's Kafka service."""
KAFKA_READY = "Kafka Server started"
"""The broker's log line once it serves clients."""
CLIENT_PORT = 9092
"""Container port of the listener that clients outside the container use."""
CLUSTER_ID = "5L6g3nShT-eMCtK--X86sw"  # any 22-character base64 UUID; the image needs one


def kafka_env(host: str, host_port: int) -> dict[str, str]:
    """The ``KAFKA_*`` variables of a combined broker and controller that clients reach at
    ``host:host_port``.

    The broker talks to itself on ``BROKER`` and to its controller on ``CONTROLLER``, both
    inside the container; ``PLAINTEXT`` is the one that clients reach through the bound port.

    >>> env = kafka_env("localhost", 29092)
    >>> env["KAFKA_ADVERTISED_LISTENERS"]
    'PLAINTEXT://localhost:29092,BROKER://localhost:9094'
    """
    return {
        "CLUSTER_ID": CLUSTER_ID,
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": (
            f"PLAINTEXT://0.0.0.0:{CLIENT_PORT},BROKER://0.0.0.0:9094,CONTROLLER://0.0.0.0:9093"
        ),
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{host_port},BROKER://localhost:9094",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
            "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
        "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


def kafka_container(
    host_port: int,
    host: str | None = None,
    image: str = KAFKA_IMAGE,
    startup_timeout: int = 120,
    docker_client_kw: dict[str, Any] | None = None,
) -> DockerContainer:
    """An unstarted ``apache/kafka`` container whose clients connect to ``host:host_port``.

    ``host`` defaults to the Docker host as testcontainers sees it (``localhost`` for a local
    engine). The image's own command starts the broker; start waits for :data:`KAFKA_READY`.
    """
    container = DockerContainer(image, docker_client_kw=docker_client_kw)
    if host is None:
        host = container.get_docker_client().host()
    container.with_envs(**kafka_env(host, host_port))
    container.with_bind_ports(CLIENT_PORT, host_port)
    container.waiting_for(LogMessageWaitStrategy(KAFKA_READY).with_startup_timeout(startup_timeout))
    return container


def bootstrap_server(container: DockerContainer) -> str:
    """``host:port`` that clients bootstrap from: the advertised ``PLAINTEXT`` listener."""
    listeners = container.env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    return next(a for a in listeners if a.startswith("PLAINTEXT://")).removeprefix("PLAINTEXT://")
