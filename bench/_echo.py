"""The plainest Kafka answerer of ``bench.e2e``: one aiokafka consumer and producer, no Faust.

``python -m bench._echo BOOTSTRAP SIGNALS GROUP OUTCOMES PREDICTIONS`` consumes SIGNALS and
OUTCOMES in consumer group GROUP, answers each signal on PREDICTIONS with
:func:`bench._noop.reply` (its id and the time), on the partition number its signal came from, and
drops the outcomes. It runs in one thread and one event loop, with aiokafka's default fetch
settings and a producer that does not linger. Its latency is what this machine and broker give
any Python consumer that answers at once, with nothing of Faust's machinery; the Faust floor
agent of :mod:`bench._noop` measures what Faust adds to that, and the worker what it adds on top.
"""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench._noop import reply
from stream.codec import now_ms


async def echo(bootstrap: str, signals: str, group: str, outcomes: str, predictions: str) -> None:
    """Answer every signal until cancelled; commits offsets automatically every 0.5 s."""
    consumer = AIOKafkaConsumer(
        signals,
        outcomes,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        auto_commit_interval_ms=500,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await consumer.start()
    await producer.start()
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=500)
            for tp, records in fetched.items():
                if tp.topic != signals:
                    continue
                for r in records:
                    answer = reply(r.value, now_ms())
                    if answer is not None:
                        await producer.send(predictions, answer, key=r.key, partition=tp.partition)
    finally:
        await producer.stop()
        await consumer.stop()


def main(argv: list[str]) -> None:
    """Run the echo until it is terminated."""
    if len(argv) != 5:
        raise SystemExit(__doc__)
    asyncio.run(echo(*argv))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
