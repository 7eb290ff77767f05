"""Kafka transactions of the learner: one transactional producer per input partition.

The learner commits, per outcomes partition ``p``, its state records, its side outputs and the
outcomes offset they cover in one Kafka transaction (:meth:`PartitionTransactions.commit`). Its
producer's transactional id is :func:`transactional_id` (``<app id>-learner-<p>``): the same for
every worker of the group, so the worker that takes ``p`` over fences the one that held it before
when it starts its producer (``InitProducerId`` bumps the epoch and aborts the old owner's open
transaction), and whatever the old one sends afterwards fails with ``ProducerFenced``. The new
owner starts its producer before it reads the partition's state, so that state is final.

The offsets go to the worker's consumer group (the Faust app id) with
``send_offsets_to_transaction``: they are committed exactly when the state that covers them is.

>>> transactional_id("alphapulse", 3)
'alphapulse-learner-3'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, ProducerFenced

from stream.errors import BrokerError
from stream.kafka import client_kwargs
from stream.settings import Settings

__all__ = [
    "Outgoing",
    "PartitionTransactions",
    "TransactionFailed",
    "TransactionFenced",
    "read_committed",
    "transactional_id",
]

log = logging.getLogger(__name__)

_MAX_REQUEST = 32 * 1024 * 1024  # the checkpoints topic's max.message.bytes

STOP_S = 2.0
"""Longest :meth:`PartitionTransactions.stop` waits for a producer to deliver what it holds."""


def transactional_id(app_id: str, partition: int) -> str:
    """The transactional id of the learner of outcomes ``partition`` in the group ``app_id``."""
    return f"{app_id}-learner-{partition}"


class TransactionFailed(BrokerError):
    """A transaction was aborted (nothing of it is visible); the same records may be sent
    again in a new one."""


class TransactionFenced(BrokerError):
    """This producer was fenced (another worker owns the partition now) or failed fatally:
    nothing more may be written for its partition from this worker."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to send inside a transaction; ``partition`` None: by the key's hash."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None


class PartitionTransactions:
    """The transactional producer of one outcomes partition.

    Parameters
    ----------
    settings
        Where the brokers are, and the app id (the consumer group and the prefix of the
        transactional id).
    partition
        The outcomes partition this producer commits for.
    """

    def __init__(self, settings: Settings, partition: int) -> None:
        self.settings = settings
        self.partition = partition
        self.transactional_id = transactional_id(settings.app_id, partition)
        self.group_id = settings.app_id
        self.offsets_topic = settings.topic("outcomes")
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start the producer: fences the partition's previous owner and waits until its open
        transaction, if any, is aborted. Raises :class:`TransactionFenced` when it cannot."""
        producer = AIOKafkaProducer(
            **client_kwargs(self.settings),
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
            max_request_size=_MAX_REQUEST,
            linger_ms=0,
            # A transaction begun right after a commit waits for its markers (the broker answers
            # CONCURRENT_TRANSACTIONS): aiokafka's 100 ms back-off made the p99 about 130 ms here.
            retry_backoff_ms=20,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise TransactionFenced(
                f"transactional producer {self.transactional_id} did not start: {exc}"
            ) from exc
        self._producer = producer

    @property
    def started(self) -> bool:
        """Whether the producer is started and not stopped since."""
        return self._producer is not None

    async def stop(self, timeout_s: float = STOP_S) -> None:
        """Stop the producer; an open transaction is left to the broker to abort.

        aiokafka's stop waits until every record it holds is delivered, for ever when the
        broker cannot be reached; past ``timeout_s`` the producer is abandoned instead.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        _retrieve_failures(producer)
        try:
            await asyncio.wait_for(producer.stop(), timeout_s)
        except TimeoutError:
            log.warning(
                "transactional producer %s did not stop within %.0f s (is the broker reachable?);"
                " abandoned, its open transaction is left to the broker to abort",
                self.transactional_id,
                timeout_s,
                extra={"partition": self.partition},
            )
            await _close_abandoned(producer, timeout_s)

    async def commit(self, records: Iterable[Outgoing], next_offset: int) -> None:
        """Send ``records`` and commit the outcomes offset ``next_offset`` in one transaction.

        Raises :class:`TransactionFenced` when this worker may write nothing more for the
        partition (the producer is stopped then), :class:`TransactionFailed` when the
        transaction was aborted and may be tried again.
        """
        producer = self._producer
        if producer is None:
            raise TransactionFenced(f"transactional producer {self.transactional_id} is stopped")
        offsets = {TopicPartition(self.offsets_topic, self.partition): next_offset}
        futures: list[asyncio.Future[Any]] = []
        try:
            await producer.begin_transaction()
            for r in records:
                fut = await producer.send(r.topic, r.value, key=r.key, partition=r.partition)
                fut.add_done_callback(_retrieved)  # a failed transaction fails them all
                futures.append(fut)
            if futures:
                # Delivered before the offsets are added: the broker checks each produce with
                # the coordinator, which refuses it while it adds the offsets, and aiokafka
                # retries it only after its backoff (tests/integration/test_transactions.py).
                await asyncio.gather(*futures)
            await producer.send_offsets_to_transaction(offsets, self.group_id)
            await producer.commit_transaction()
        except ProducerFenced as exc:
            await self.stop()
            raise TransactionFenced(
                f"{self.transactional_id} was fenced: another worker owns partition "
                f"{self.partition} now"
            ) from exc
        except Exception as exc:  # any failure inside: abort, or give up the partition
            await self._abort(exc)
            raise TransactionFailed(
                f"transaction of {self.transactional_id} aborted: {type(exc).__name__}: {exc}"
            ) from exc

    async def _abort(self, cause: BaseException) -> None:
        producer = self._producer
        if producer is None:  # stopped meanwhile: the partition is given up here
            raise TransactionFenced(
                f"transaction of {self.transactional_id} failed ({type(cause).__name__}: "
                f"{cause}) after its producer was stopped"
            ) from cause
        try:
            await producer.abort_transaction()
        except Exception as exc:  # a fatal state aborts nothing: the partition is lost here
            await self.stop()
            raise TransactionFenced(
                f"transaction of {self.transactional_id} failed ({type(cause).__name__}: "
                f"{cause}) and could not be aborted ({type(exc).__name__}: {exc})"
            ) from cause


async def _close_abandoned(producer: AIOKafkaProducer, timeout_s: float = STOP_S) -> None:
    """Close a producer whose stop was given up: fail what it holds, cancel its sender and
    close its connections. Left alone, the sender and the metadata task retry for ever, and a
    commit waiting for one of its records waits for ever too."""
    gone = KafkaConnectionError("producer abandoned: its stop found no broker to deliver to")
    producer._message_accumulator.fail_all(gone)
    sender = producer._sender
    task = None if sender is None else sender.sender_task
    if task is not None:
        # Cancelled, the sender waits for its requests, which retry for ever; cancelling it
        # again cancels the request it waits for (asyncio.wait does not raise its cancellation).
        until = asyncio.get_running_loop().time() + timeout_s
        while not task.done() and asyncio.get_running_loop().time() < until:
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)
    try:
        await asyncio.wait_for(producer.client.close(), timeout_s)
    except TimeoutError:
        log.warning("connections of an abandoned producer did not close within %.0f s", timeout_s)
    _retrieve_failures(producer)


def _retrieve_failures(producer: AIOKafkaProducer) -> None:
    """Mark as seen the failures aiokafka leaves in futures nobody awaits once its sender has
    failed (fenced): the open transaction's waiter and each unsent batch's drain waiter. Else
    asyncio logs "Future exception was never retrieved" when they are collected; the failure
    itself was reported as :class:`TransactionFenced`."""
    txn = getattr(producer, "_txn_manager", None)
    futures = [getattr(txn, "_transaction_waiter", None)]
    acc = getattr(producer, "_message_accumulator", None)
    for batches in [*getattr(acc, "_batches", {}).values(), getattr(acc, "_pending_batches", ())]:
        futures.extend(getattr(b, "_drain_waiter", None) for b in batches)
    for fut in futures:
        if isinstance(fut, asyncio.Future) and fut.done():
            _retrieved(fut)


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """Mark a record's delivery failure as seen: the transaction's failure reports it."""
    if not fut.cancelled():
        fut.exception()


def read_committed(app: Any) -> None:
    """Make the Faust worker consumer of ``app`` read committed records only.

    Faust sets ``isolation_level=read_committed`` only with its own ``exactly_once`` guarantee,
    whose transactions this project does not use; aiokafka reads the attribute when the
    consumer starts, after it is created.
    """
    thread = app.consumer._thread
    create = thread._create_consumer

    def create_committed(loop: asyncio.AbstractEventLoop) -> Any:
        consumer = create(loop=loop)
        consumer._isolation_level = "read_committed"
        return consumer

    thread._create_consumer = create_committed
