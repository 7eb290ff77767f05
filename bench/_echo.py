"""The plainest Kafka answerer of ``bench.e2e``: one aiokafka consumer and producer, no Faust.

``python -m bench._echo BOOTSTRAP SIGNALS GROUP OUTCOMES PREDICTIONS [--burn S:O]`` consumes
SIGNALS and OUTCOMES in consumer group GROUP, answers each signal on PREDICTIONS with
:func:`bench._noop.reply` (its id and the time), on the partition number its signal came from, and
drops the outcomes. It runs in one thread and one event loop, with aiokafka's default fetch
settings and a producer that does not linger. Its latency is what this machine and broker give
any Python consumer that answers at once, with nothing of Faust's machinery; the Faust floor
agent of :mod:`bench._noop` measures what Faust adds to that, and the worker what it adds on top.

With ``--burn S:O`` it is a *burning echo* (:mod:`bench.cpu_budget`): it also spends S us of CPU
before answering each signal and O us per outcome, the outcomes in turns of
:data:`agents.turns.TURN_S` on its one event loop, as the worker learns. It then costs about the
CPU of a worker without running any of the worker's code.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.turns import TURN_S
from bench._noop import reply
from stream.codec import now_ms


def spin(seconds: float) -> None:
    """Use ``seconds`` of this thread's CPU time (timed by the CPU clock, so that a spin that is
    preempted still uses all of it).

    >>> t = time.thread_time(); spin(0.002); time.thread_time() - t >= 0.002
    True
    """
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class _Outcomes:
    """Outcomes waiting for their CPU, spent in turns on the event loop."""

    def __init__(self, per_outcome_s: float) -> None:
        self.per_outcome_s = per_outcome_s
        self.waiting = 0
        self.arrived = asyncio.Event()

    def add(self, n: int) -> None:
        self.waiting += n
        self.arrived.set()

    async def run(self) -> None:
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            until = time.perf_counter() + TURN_S
            while self.waiting:
                self.waiting -= 1
                spin(self.per_outcome_s)
                if time.perf_counter() > until:
                    await asyncio.sleep(0)
                    until = time.perf_counter() + TURN_S


async def echo(
    bootstrap: str,
    signals: str,
    group: str,
    outcomes: str,
    predictions: str,
    burn_us: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Answer every signal until cancelled; commits offsets automatically every 0.5 s.
    ``burn_us`` is the CPU to spend per signal and per outcome, in us."""
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
    per_signal_s = burn_us[0] / 1e6
    burning = _Outcomes(burn_us[1] / 1e6) if burn_us[1] > 0 else None
    spending = asyncio.ensure_future(burning.run()) if burning is not None else None
    try:
        while True:
            fetched = await consumer.getmany(timeout_ms=500)
            for tp, records in fetched.items():
                if tp.topic != signals:
                    if burning is not None:
                        burning.add(len(records))
                    continue
                for r in records:
                    if per_signal_s:
                        spin(per_signal_s)
                    answer = reply(r.value, now_ms())
                    if answer is not None:
                        await producer.send(predictions, answer, key=r.key, partition=tp.partition)
    finally:
        if spending is not None:
            spending.cancel()
        await producer.stop()
        await consumer.stop()


def parse_burn(text: str) -> tuple[float, float]:
    """``"S:O"`` as the us of CPU per signal and per outcome.

    >>> parse_burn("40:100")
    (40.0, 100.0)
    >>> parse_burn("40")
    Traceback (most recent call last):
    ...
    ValueError: a burn is SIGNAL_US:OUTCOME_US, two numbers >= 0, got '40'
    """
    parts = text.split(":")
    try:
        s, o = (float(p) for p in parts)
    except ValueError:
        s = o = -1.0
    if len(parts) != 2 or not (0 <= s < 1e6 and 0 <= o < 1e6):
        raise ValueError(f"a burn is SIGNAL_US:OUTCOME_US, two numbers >= 0, got {text!r}")
    return s, o


def main(argv: list[str]) -> None:
    """Run the echo until it is terminated."""
    burn = (0.0, 0.0)
    if len(argv) == 7 and argv[5] == "--burn":
        burn = parse_burn(argv[6])
        argv = argv[:5]
    if len(argv) != 5:
        raise SystemExit(__doc__)
    asyncio.run(echo(*argv, burn_us=burn))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
