"""Text of the files the local broker launcher writes: pom.xml, server.properties, log4j2.xml."""

from __future__ import annotations

from pathlib import Path

__all__ = ["LOG4J2_XML", "pom_xml", "server_properties"]

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


def pom_xml(kafka_version: str, log4j_version: str) -> str:
    """A throwaway POM whose runtime dependencies are the broker's classpath.

    >>> "kafka_2.13" in pom_xml("4.1.1", "2.24.3")
    True
    """
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>alphapulse.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka_version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""


def server_properties(
    *,
    node_id: int,
    host: str,
    port: int,
    controller_port: int,
    voters: str,
    log_dir: Path,
    nodes: int,
    extra: dict[str, str],
) -> str:
    """``server.properties`` for one combined broker/controller KRaft node.

    >>> text = server_properties(node_id=1, host="127.0.0.1", port=9092, controller_port=9093,
    ...     voters="1@127.0.0.1:9093", log_dir=Path("/tmp"), nodes=3, extra={})
    >>> "min.insync.replicas=2" in text
    True
    """
    rf = 3 if nodes == 3 else 1
    min_isr = 2 if nodes == 3 else 1
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "4",
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(rf),
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.check.interval.ms": "60000",
        "message.max.bytes": str(8 * 1024 * 1024),
    }
    props.update(extra)
    return "".join(f"{k}={v}\n" for k, v in props.items())
