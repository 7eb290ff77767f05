"""The project's topics: names, partition counts and retention from the settings, created up front.

Topics are created before any agent subscribes, with the configured partition count, because a
topic a producer auto-creates gets the broker's default count and Faust tables then fail with
``PartitionsMismatch``. ``signals`` and ``outcomes`` always get the same count (co-partitioned).

>>> from stream.settings import Settings
>>> [t.name for t in topic_specs(Settings(_env_file=None))][:2]
['alphapulse.signals', 'alphapulse.outcomes']
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

from stream.errors import BrokerError
from stream.kafka import client_kwargs
from stream.settings import TOPIC_ROLES, Settings

__all__ = [
    "TopicSpec",
    "changelog_problem",
    "describe_topics",
    "ensure_topics",
    "internal_topic_specs",
    "topic_config",
    "topic_specs",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """What one of the project's topics should look like."""

    role: str
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Specs for every topic of the contract, in contract order."""
    specs = []
    for role in TOPIC_ROLES:
        retention = (
            settings.outcomes_retention_ms if role == "outcomes" else settings.topic_retention_ms
        )
        config = {"retention.ms": str(retention), "cleanup.policy": "delete"}
        if settings.topic_replication > 1:
            config["min.insync.replicas"] = str(min(2, settings.topic_replication))
        specs.append(
            TopicSpec(
                role=role,
                name=settings.topic(role),
                partitions=settings.topic_partitions,
                replication=settings.topic_replication,
                config=config,
            )
        )
    return specs


def internal_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The worker group's own topic: the learner's state changelog (compacted, never deleted by
    retention: a worker refuses a partition's state otherwise)."""
    common = {"max.message.bytes": str(32 * 1024 * 1024)}
    if settings.topic_replication > 1:
        common["min.insync.replicas"] = str(min(2, settings.topic_replication))
    return [
        TopicSpec(
            role="checkpoints",
            name=settings.internal_topic("checkpoints"),
            partitions=settings.topic_partitions,
            replication=settings.topic_replication,
            config={**common, "cleanup.policy": "compact"},
        ),
    ]


async def _auth_failure(settings: Settings) -> str | None:
    """Why the brokers refuse this client's SASL credentials, or None when they do not.

    aiokafka logs an authentication failure during bootstrap and then reports only that it could
    not bootstrap; this asks one broker directly so that the error can say what is wrong.
    """
    if not settings.kafka_security_protocol.startswith("SASL"):
        return None
    kw = client_kwargs(settings)
    kw.pop("bootstrap_servers")
    for hostport in settings.bootstrap_servers.split(","):
        host, _, port = hostport.strip().rpartition(":")
        if not host or not port.isdigit():
            continue
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=10_000, **kw)
        except (
            SaslAuthenticationFailed,
            AuthenticationFailedError,
            UnsupportedSaslMechanismError,
        ) as exc:
            return str(exc)
        except (OSError, KafkaError):
            continue  # this broker is unreachable; try the next one
        conn.close()
        return None
    return None


async def _admin(
    settings: Settings, timeout: float, connect_timeout: float | None = None
) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=int(timeout * 1000))
    wait = timeout if connect_timeout is None else connect_timeout
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            await admin.start()
            return admin
        except KafkaConnectionError as exc:
            refused = await _auth_failure(settings)
            if refused is not None:
                await admin.close()
                raise BrokerError(
                    f"Kafka at {settings.bootstrap_servers} refused the SASL credentials of user "
                    f"{settings.kafka_sasl_username!r} ({settings.kafka_security_protocol}, "
                    f"{settings.kafka_sasl_mechanism or 'PLAIN'}): {refused}. Check "
                    "ALPHAPULSE_KAFKA_SASL_USERNAME, ALPHAPULSE_KAFKA_SASL_PASSWORD and "
                    "ALPHAPULSE_KAFKA_SASL_MECHANISM."
                ) from None
            if asyncio.get_running_loop().time() > deadline:
                await admin.close()
                raise BrokerError(
                    f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}. Start the local "
                    "broker with 'alphapulse broker up' or set KAFKA_BOOTSTRAP_SERVERS."
                ) from None
            await asyncio.sleep(0.5)


async def ensure_topics(
    settings: Settings,
    extra: list[TopicSpec] | None = None,
    timeout: float = 30.0,
    connect_timeout: float | None = None,
) -> list[str]:
    """Create the project's missing topics. Returns the names it created.

    ``connect_timeout`` (default ``timeout``) bounds how long an unreachable broker is retried
    before :class:`BrokerError`.
    """
    specs = topic_specs(settings) + internal_topic_specs(settings) + list(extra or [])
    admin = await _admin(settings, timeout, connect_timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        for spec in missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            spec.name, spec.partitions, spec.replication, topic_configs=spec.config
                        )
                    ]
                )
                created.append(spec.name)
                log.info("created topic %s (%d partitions)", spec.name, spec.partitions)
            except TopicAlreadyExistsError:
                pass
            except KafkaError as exc:
                raise BrokerError(f"cannot create topic {spec.name}: {exc}") from None
        await _check_copartitioned(admin, settings)
        if created:
            await _wait_for_leaders(admin, created, timeout)
        return created
    finally:
        await admin.close()


async def _check_copartitioned(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    names = [settings.topic("signals"), settings.topic("outcomes")]
    counts = await _partition_counts(admin, names)
    if len(set(counts.values())) > 1:
        raise BrokerError(
            f"topics {names} must have the same partition count (co-partitioned), found {counts}; "
            "add partitions to the smaller one with kafka-topics --alter"
        )


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout: float) -> None:
    """Wait until every partition of ``names`` has a leader, so first clients see no errors."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        described = await admin.describe_topics(names)
        if all(
            d.get("partitions") and all(p["leader"] >= 0 for p in d["partitions"])
            for d in described
        ):
            return
        await asyncio.sleep(0.1)
    log.warning("topics %s still have partitions without a leader after %.0fs", names, timeout)


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    for _ in range(50):
        described = await admin.describe_topics(names)
        counts = {d["topic"]: len(d["partitions"]) for d in described if d.get("partitions")}
        if len(counts) == len(names):
            return counts
        await asyncio.sleep(0.1)
    return counts


async def describe_topics(
    settings: Settings, timeout: float = 30.0, connect_timeout: float | None = None
) -> dict[str, int | None]:
    """Partition count of each of the project's topics (None when missing)."""
    admin = await _admin(settings, timeout, connect_timeout)
    try:
        names = [s.name for s in topic_specs(settings)]
        existing = set(await admin.list_topics())
        counts = await _partition_counts(admin, [n for n in names if n in existing])
        return {n: counts.get(n) for n in names}
    finally:
        await admin.close()


async def topic_config(settings: Settings, name: str, timeout: float = 30.0) -> dict[str, str]:
    """The configuration of topic ``name`` as the brokers report it (defaults included)."""
    admin = await _admin(settings, timeout)
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    config: dict[str, str] = {}
    for response in responses:
        for error_code, error_message, _type, _name, entries in response.resources:
            if error_code:
                raise BrokerError(f"cannot read the configuration of topic {name}: {error_message}")
            for entry in entries:
                config[entry[0]] = entry[1]
    return config


def changelog_problem(config: dict[str, str]) -> str | None:
    """What makes a topic with ``config`` unfit to keep state, or None: it must be compacted,
    and anything it deletes by retention must be unlimited.

    >>> changelog_problem({"cleanup.policy": "compact"})
    >>> changelog_problem({"cleanup.policy": "delete", "retention.ms": "604800000"})
    "cleanup.policy is 'delete', not compact"
    >>> changelog_problem({"cleanup.policy": "compact,delete", "retention.ms": "3600000"})
    'cleanup.policy deletes by retention and retention.ms is 3600000, not -1'
    """
    policy = {p.strip() for p in config.get("cleanup.policy", "delete").split(",")}
    if "compact" not in policy:
        return f"cleanup.policy is {config.get('cleanup.policy', 'delete')!r}, not compact"
    if "delete" in policy:
        for limit in ("retention.ms", "retention.bytes"):
            value = config.get(limit, "-1")
            if value != "-1":
                return f"cleanup.policy deletes by retention and {limit} is {value}, not -1"
    return None
