"""How much of the worker's latency tail is its CPU: the worker against burning echoes.

``python -m bench.cpu_budget --json`` runs, on one broker and in ``--rounds`` interleaved rounds,
the latency run of :mod:`bench.e2e` (``--rate`` signals/s plus as many outcomes/s for
``--duration`` s after ``--lead-in`` s) for the plain echo of :mod:`bench._echo`, for the same
echo burning CPU at each ``--burn S:O`` (S us per signal before answering it, O us per outcome, in
turns on its event loop, as the worker learns), and for the worker. Each answerer's CPU is read
from ``/proc`` over its run. It prints JSON lines (``name``, ``value``, ``unit``, ``low``,
``high``, ``rounds``), for each answerer A (``echo``, ``burn_S_O``, ``worker``):

- ``A_p50_ms`` and ``A_p99_ms``: signal to prediction;
- ``A_cpu_s``: the CPU seconds the answerer used in its run;
- ``A_p99_vs_echo`` (not for the echo): its p99 over the echo's in the same round;
- ``A_cpu_over_echo_s`` (not for the echo): its CPU seconds over the echo's in the same round.

An echo that burns as much CPU as the worker and answers with the worker's tail says that the
worker's tail is its CPU on a machine it shares, not the way it is built (docs/benchmarks.md).
Medians over the rounds, as in :mod:`bench.e2e`; it uses ``KAFKA_BOOTSTRAP_SERVERS`` when set,
else starts a local broker on free ports.
"""

from __future__ import annotations

import argparse
import uuid

import numpy as np

from bench._common import emit, work_dir
from bench._echo import parse_burn
from bench._runs import (
    Figures,
    answer_latencies,
    kafka_for,
    latency_arguments,
    progress,
    summarise,
)

__all__ = ["burn_name", "main", "round_figures"]


def burn_name(burn: str) -> str:
    """The figure prefix of the burning echo ``burn`` (``"S:O"``).

    >>> burn_name("40:100"), burn_name("0.5:10")
    ('burn_40_100', 'burn_0.5_10')
    """
    s, o = parse_burn(burn)
    return f"burn_{s:g}_{o:g}"


def round_figures(runs: dict[str, tuple[list[float], float | None]]) -> Figures:
    """One round's figures from each answerer's latencies (ms) and CPU seconds.

    >>> f = round_figures({"echo": ([1.0] * 100, 5.0), "worker": ([3.0] * 100, 7.5)})
    >>> f["worker_p99_ms"], f["worker_p99_vs_echo"], f["worker_cpu_over_echo_s"]
    (3.0, 3.0, 2.5)
    """
    figures: Figures = {}
    for name, (lat, cpu) in runs.items():
        figures[f"{name}_p50_ms"] = float(np.percentile(lat, 50))
        figures[f"{name}_p99_ms"] = float(np.percentile(lat, 99))
        if cpu is not None:
            figures[f"{name}_cpu_s"] = cpu
    echo_p99, echo_cpu = figures["echo_p99_ms"], figures.get("echo_cpu_s")
    for name in runs:
        if name == "echo":
            continue
        figures[f"{name}_p99_vs_echo"] = figures[f"{name}_p99_ms"] / echo_p99
        cpu = figures.get(f"{name}_cpu_s")
        if cpu is not None and echo_cpu is not None:
            figures[f"{name}_cpu_over_echo_s"] = cpu - echo_cpu
    return figures


def run(args: argparse.Namespace) -> None:
    """Run the rounds and print the figures."""
    answerers = [
        ("echo", "echo", ()),
        *((burn_name(b), "echo", ("--burn", b)) for b in args.burn),
        ("worker", "worker", ()),
    ]
    with work_dir("alphapulse-cpu-budget-", keep=args.keep) as work, kafka_for(work) as bootstrap:
        run_id = uuid.uuid4().hex[:6]
        rounds: list[Figures] = []
        for r in range(args.rounds):
            runs = {}
            for i, (name, kind, options) in enumerate(answerers):
                progress(f"round {r + 1} of {args.rounds}: {name}")
                prefix = f"cpu{run_id}r{r}a{i}."
                runs[name] = answer_latencies(bootstrap, args, work, prefix, name, kind, *options)
            rounds.append(round_figures(runs))
        for name, value, unit, extra in summarise(rounds):
            emit(name, value, unit, args.json, **extra)


def _burn(text: str) -> str:
    try:
        parse_burn(text)  # refused with its message before anything starts
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    latency_arguments(p)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; figures are medians")
    p.add_argument(
        "--burn",
        type=_burn,
        action="append",
        metavar="S:O",
        help="a burning echo: us of CPU per signal and per outcome (repeatable; "
        "default 40:100 and 100:250)",
    )
    p.add_argument("--keep", action="store_true", help="keep the logs of a good run too")
    args = p.parse_args()
    if args.burn is None:
        args.burn = ["40:100", "100:250"]
    run(args)


if __name__ == "__main__":  # pragma: no cover
    main()
