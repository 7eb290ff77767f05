"""End-to-end benchmark of the worker against a no-op Faust agent on the same broker.

``python -m bench.e2e --json`` prints JSON lines (``name``, ``value``, ``unit``, and for ratios
``baseline``) with these names:

- ``noop_events_per_s``, ``predictor_events_per_s``, ``learner_events_per_s``: consumption rates of
  a backlog of ``--messages`` events, produced before the agent starts, measured from the consumer
  group's committed offsets between its first commit and the commit of the last event;
- ``predictor_vs_noop_throughput`` and ``learner_vs_noop_throughput``: ratios (goal >= 0.7);
- ``floor_events_per_s``: the same backlog of signals consumed by the floor agent below, which
  answers each with only its id; ``floor_vs_noop_throughput`` and ``predictor_vs_floor_throughput``
  are ratios against the no-op and the floor (what answering alone costs, and what scoring costs
  on top);
- ``river_learn_floor_events_per_s`` and ``river_predict_floor_events_per_s``: the same backlogs of
  outcomes and signals consumed by the no-op and floor agents with ``--river``: one updates River's
  pipeline with each outcome, the other answers each signal with River's probability, and neither
  does anything else (:mod:`bench._river`). ``river_learn_floor_vs_noop_throughput`` and
  ``river_predict_floor_vs_noop_throughput`` are their ratios against the no-op: the most that
  agents using the online model can reach on this machine;
- ``signal_to_prediction_p50_ms`` and ``signal_to_prediction_p99_ms``: from producing a signal to
  consuming its prediction, at ``--rate`` signals/s with outcomes flowing at the same rate, for
  ``--duration`` s after an unmeasured ``--lead-in`` of the same load (each answerer is a fresh
  process: its first second answers from cold code paths, connections and metadata) (goal for
  the p99: <= 50 ms);
- ``floor_signal_to_prediction_p50_ms`` and ``floor_signal_to_prediction_p99_ms``: the same, in the
  same run, for the floor: a Faust agent with the worker's settings that answers each signal with
  only its id (:mod:`bench._noop`), so no worker can do better on this machine and broker;
  ``p99_vs_floor`` is the worker's p99 over the floor's;
- ``river_signal_to_prediction_p50_ms`` and ``river_signal_to_prediction_p99_ms``: the same for the
  floor agent with ``--river``, which answers each signal with River's probability and learns each
  outcome with River, and does nothing else: the least a worker with the online model does;
- ``echo_signal_to_prediction_p50_ms`` and ``echo_signal_to_prediction_p99_ms``: the same for one
  plain aiokafka consumer and producer that answer each signal with only its id, without Faust
  (:mod:`bench._echo`): what this machine and broker give any Python answerer.

- ``p99_vs_echo``: the worker's p99 over the echo's (goal <= 1.25);
- ``sustained_kept_up_ratio``, ``sustained_signal_to_prediction_p99_ms`` and
  ``sustained_offered_per_s``: the worker offered ``--sustained-rate`` signals/s plus as many
  outcomes/s for ``--sustained-duration`` s; records it processed by 2 s after the last send
  (predictions received, outcomes committed) over the records offered (goal >= 0.99), the p99 of
  the predictions received, and the rate the load generator really offered (both topics).

After an unmeasured warm-up (``--warmup`` events through the no-op and the worker), every figure
is measured in each of ``--rounds`` interleaved rounds (no-op, worker, the others; then again), and
printed as the median over the rounds with ``low``, ``high`` and ``rounds``; a ratio is taken within
each round, against that round's baseline, and ``baseline`` is the baseline's median.

It uses ``KAFKA_BOOTSTRAP_SERVERS`` when set, else starts a local broker on free ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from alphapulse._procs import stop_process_group
from bench._common import emit, trade_messages, work_dir
from bench._runs import (
    WORKER_CMD,
    Figures,
    answer_latencies,
    answerer_cmd,
    create_topics,
    fill,
    fresh_topics,
    kafka_for,
    latency_arguments,
    progress,
    receive_predictions,
    spawn,
    summarise,
)
from stream.settings import Settings


async def _committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except KafkaError:
        return 0  # the group does not exist yet
    return sum(max(0, m.offset) for tp, m in offsets.items() if tp.topic == topic)


async def _rate_from_commits_async(
    bootstrap: str, group: str, topic: str, n: int, timeout: float
) -> float:
    # One admin client for the whole measurement: a new client per poll cost the machine CPU
    # that the worker under test was using.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        first: tuple[float, int] | None = None
        while time.monotonic() < deadline:
            c = await _committed(admin, group, topic)
            now = time.monotonic()
            if first is None and c > 0:
                first = (now, c)
            if c >= n and first is not None:
                if c == first[1]:
                    raise RuntimeError(
                        "backlog consumed before two commits were seen; raise --messages"
                    )
                return (c - first[1]) / (now - first[0])
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    raise RuntimeError(f"group {group} did not consume {n} events from {topic} in {timeout}s")


def _rate_from_commits(bootstrap: str, group: str, topic: str, n: int, timeout: float) -> float:
    """Events/s between the first commit and the commit of the last of ``n`` events."""
    return asyncio.run(_rate_from_commits_async(bootstrap, group, topic, n, timeout))


def _backlog_rate(
    bootstrap: str,
    cmd: list[str],
    env: dict[str, str],
    log: Path,
    topic: str,
    group: str,
    msgs: list[tuple[bytes, bytes]],
    args: argparse.Namespace,
) -> float:
    """Fill ``topic`` with ``msgs``, then start ``cmd`` in ``group`` and measure its rate.

    The backlog is in place before the agent starts: a fill running while the agent consumes
    takes CPU from most of a fast agent's run and less of a slow one's, which skews the ratios.
    """
    asyncio.run(fill(bootstrap, topic, msgs))
    proc = spawn(cmd, env, log)
    try:
        return _rate_from_commits(bootstrap, group, topic, len(msgs), args.timeout)
    finally:
        stop_process_group(proc)


def run(args: argparse.Namespace) -> None:
    """Run the measurements and print their lines."""
    with work_dir("alphapulse-bench-", keep=args.keep) as work:
        _measure(args, work)


def _throughput_round(bootstrap: str, args: argparse.Namespace, work: Path, tag: str) -> Figures:
    """Backlog rates of the no-op, the worker, the floor and the River floors, in that order."""
    n = args.messages
    signals, outcomes = trade_messages(n, "signals"), trade_messages(n, "outcomes")
    env, s = fresh_topics(bootstrap, f"{tag}.", work)
    noop_topic = f"{tag}.noop"
    asyncio.run(create_topics(bootstrap, [noop_topic]))
    group = f"{tag}-noop"
    cmd = ["-m", "bench._noop", bootstrap, noop_topic, group]
    noop = _backlog_rate(bootstrap, cmd, env, work / "noop.log", noop_topic, group, signals, args)

    # One worker for the outcomes, then one (same group and state) for the signals of the same
    # trades: it restores the online models the first one learned, so it predicts with them,
    # and the signals it reads to restore the join window are those it then answers.
    cmd, group, log = WORKER_CMD, env["ALPHAPULSE_APP_ID"], work / "worker.log"
    learn = _backlog_rate(bootstrap, cmd, env, log, s.topic("outcomes"), group, outcomes, args)
    pred = _backlog_rate(bootstrap, cmd, env, log, s.topic("signals"), group, signals, args)

    fenv, fs = fresh_topics(bootstrap, f"{tag}floortp.", work)
    group, topic = fenv["ALPHAPULSE_APP_ID"], fs.topic("signals")
    cmd = answerer_cmd(bootstrap, fenv, fs, "floor")
    floor = _backlog_rate(bootstrap, cmd, fenv, work / "floor.log", topic, group, signals, args)

    renv, rs = fresh_topics(bootstrap, f"{tag}river.", work)
    group, log = renv["ALPHAPULSE_APP_ID"], work / "river.log"
    cmd = ["-m", "bench._noop", bootstrap, rs.topic("outcomes"), group, "--river"]
    river_learn = _backlog_rate(
        bootstrap, cmd, renv, log, rs.topic("outcomes"), group, outcomes, args
    )
    cmd = answerer_cmd(bootstrap, renv, rs, "river")
    river_predict = _backlog_rate(
        bootstrap, cmd, renv, log, rs.topic("signals"), group, signals, args
    )
    return {
        "noop_events_per_s": noop,
        "predictor_events_per_s": pred,
        "learner_events_per_s": learn,
        "predictor_vs_noop_throughput": pred / noop,
        "learner_vs_noop_throughput": learn / noop,
        "floor_events_per_s": floor,
        "floor_vs_noop_throughput": floor / noop,
        "predictor_vs_floor_throughput": pred / floor,
        "river_learn_floor_events_per_s": river_learn,
        "river_predict_floor_events_per_s": river_predict,
        "river_learn_floor_vs_noop_throughput": river_learn / noop,
        "river_predict_floor_vs_noop_throughput": river_predict / noop,
    }


def _latency_round(bootstrap: str, args: argparse.Namespace, work: Path, tag: str) -> Figures:
    """Latency percentiles of the echo, the worker, the floor and the River floor."""
    figures: Figures = {}
    for kind, prefix in (
        ("echo", "echo_"),
        ("worker", ""),
        ("floor", "floor_"),
        ("river", "river_"),
    ):
        lat, _ = answer_latencies(bootstrap, args, work, f"{tag}{kind}lat.", kind, kind)
        figures[f"{prefix}signal_to_prediction_p50_ms"] = float(np.percentile(lat, 50))
        figures[f"{prefix}signal_to_prediction_p99_ms"] = float(np.percentile(lat, 99))
        if kind == "worker":
            offered = int(args.rate * args.duration)
            figures["signal_to_prediction_answered"] = len(lat) / offered
    figures["p99_vs_floor"] = (
        figures["signal_to_prediction_p99_ms"] / figures["floor_signal_to_prediction_p99_ms"]
    )
    figures["p99_vs_echo"] = (
        figures["signal_to_prediction_p99_ms"] / figures["echo_signal_to_prediction_p99_ms"]
    )
    return figures


def _measure(args: argparse.Namespace, work: Path) -> None:
    with kafka_for(work) as bootstrap:
        run_id = uuid.uuid4().hex[:6]
        if args.warmup > 0:
            # Unmeasured: the broker's JIT, the page cache and the imports warm up here.
            progress(f"warm-up: {args.warmup} events through the no-op and the worker")
            warm = argparse.Namespace(**{**vars(args), "messages": args.warmup})
            with contextlib.suppress(RuntimeError):  # too short a backlog to rate: no matter
                _throughput_round(bootstrap, warm, work, f"bench{run_id}w")
        rounds: list[Figures] = []
        for r in range(args.rounds):
            # Interleaved: each round measures the no-op, then the worker, then the others, so
            # that a machine slowing down during the run weighs on baseline and worker alike.
            progress(f"round {r + 1} of {args.rounds}")
            tag = f"bench{run_id}r{r}"
            figures = _throughput_round(bootstrap, args, work, tag)
            figures |= _latency_round(bootstrap, args, work, tag)
            if args.sustained_duration > 0:
                figures |= _sustained(bootstrap, args, work, f"{tag}sus.")
            rounds.append(figures)
        for name, value, unit, extra in summarise(rounds):
            emit(name, value, unit, args.json, **extra)


async def _sustained_load(
    bootstrap: str, s: Settings, group: str, rate: int, duration: float
) -> Figures:
    """Offer ``rate`` signals/s and as many outcomes/s for ``duration`` s; count what the worker
    processed by 2 s after the last send: predictions received and outcomes committed."""
    n = int(rate * duration)
    sig, outs = trade_messages(n, "signals"), trade_messages(n, "outcomes")
    ids = [orjson.loads(v)["signal_id"] for _, v in sig]
    consumer = AIOKafkaConsumer(
        s.topic("predictions"), bootstrap_servers=bootstrap, auto_offset_reset="latest"
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    await producer.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    sent: dict[str, float] = {}
    lat: list[float] = []

    task = asyncio.create_task(receive_predictions(consumer, sent, lat))
    try:
        await asyncio.sleep(2.0)
        learned_before = await _committed(admin, group, s.topic("outcomes"))
        start = time.perf_counter()
        step = 100  # records per pacing step: one sleep per 100 signals keeps the sender cheap
        offered = 0
        for i in range(0, n, step):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.perf_counter()
            for j in range(i, min(i + step, n)):
                sent[ids[j]] = now
                await producer.send(s.topic("signals"), sig[j][1], key=sig[j][0])
                await producer.send(s.topic("outcomes"), outs[j][1], key=outs[j][0])
                offered += 1
        await producer.flush()
        offered_s = time.perf_counter() - start
        await asyncio.sleep(2.0)
        learned = await _committed(admin, group, s.topic("outcomes")) - learned_before
        answered = len(lat)
    finally:
        task.cancel()
        await producer.stop()
        await consumer.stop()
        await admin.close()
    return {
        "sustained_kept_up_ratio": (answered + learned) / (2 * offered),
        "sustained_signal_to_prediction_p99_ms": float(np.percentile(lat, 99)) if lat else 0.0,
        "sustained_offered_per_s": 2 * offered / offered_s,
    }


def _sustained(bootstrap: str, args: argparse.Namespace, work: Path, prefix: str) -> Figures:
    """The worker under ``--sustained-rate`` signals/s plus as many outcomes/s."""
    env, s = fresh_topics(bootstrap, prefix, work)
    proc = spawn(WORKER_CMD, env, work / "sustained.log")
    try:
        time.sleep(12)  # join the group before the clock starts
        return asyncio.run(
            _sustained_load(
                bootstrap, s, env["ALPHAPULSE_APP_ID"], args.sustained_rate, args.sustained_duration
            )
        )
    finally:
        stop_process_group(proc)


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    latency_arguments(p)
    p.add_argument("--messages", type=int, default=100_000, help="backlog per throughput run")
    p.add_argument("--timeout", type=float, default=300.0, help="limit per throughput run")
    p.add_argument("--keep", action="store_true", help="keep the logs and state of a good run too")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    p.add_argument("--warmup", type=int, default=10_000, help="unmeasured events first (0: none)")
    p.add_argument("--sustained-rate", type=int, default=5000, help="signals/s (and outcomes/s)")
    p.add_argument(
        "--sustained-duration", type=float, default=60.0, help="seconds offered (0: skip)"
    )
    run(p.parse_args())


if __name__ == "__main__":
    main()
