"""``alphapulse demo``: the whole loop on the embedded defaults, watched live.

1. Starts the local Kafka broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` is set) and creates the topics;
   MLflow is the local SQLite store under the data directory.
2. Trains the initial batch models, ``monthly_full`` (with a short hyperparameter search) and
   ``weekly_quick``, on the synthetic generator's history and makes them champions.
3. Starts a worker process, which loads the champions.
4. Streams live signals, and a second later each signal's outcome, through Kafka. Midway the
   generator's regime changes: the batch models become wrong and the online models drift.
5. Retrains ``weekly_quick`` on the new regime's outcomes and promotes it; the worker's reloader
   swaps it in.
6. Shows requests/s, prediction latency, rolling AUC per component and for the blend, drift alarms
   and model versions, read from the worker's ``/dashboard/data``; without a terminal it prints a
   progress line every few seconds instead. It ends after ``duration`` seconds (or on Ctrl-C) with
   a plain-text summary, and stops the worker and the broker it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from alphapulse._demo_live import get_json, stream_live
from alphapulse._demo_view import DemoState, summary_text
from alphapulse._procs import stop_process_group
from models.errors import AlphaPulseError
from models.roles import CADENCES
from models.synthetic import TradeGenerator
from stream.broker import local_kafka
from stream.errors import BrokerError
from stream.settings import Settings
from stream.topics import ensure_topics

__all__ = ["DemoPlan", "run_demo"]

MODEL_TYPE = "lightgbm"


@dataclass(frozen=True)
class DemoPlan:
    """How much the demo sends and when its regime changes and it retrains.

    >>> p = DemoPlan.make(duration=60.0, rate=40.0)
    >>> p.drift_after, p.retrain_after, p.live
    (1200, 1800, 2400)
    """

    rate: float
    duration: float | None
    live: int
    """Signals the live phase sends (``rate * duration``, or a cap when running until Ctrl-C)."""
    drift_after: int
    retrain_after: int
    history: int = 4000
    n_features: int = 8
    seed: int = 1
    """Seed of the generator; with 1 the online models raise drift alarms soon after the change."""
    outcome_delay_s: float = 1.0
    hpo_trials: int = 4

    @classmethod
    def make(cls, duration: float | None, rate: float) -> DemoPlan:
        """The plan for a run of ``duration`` seconds (None: until interrupted) at ``rate``/s."""
        if rate <= 0:
            raise ValueError("rate must be above 0")
        if duration is not None and duration <= 0:
            raise ValueError("duration must be above 0")
        if duration is None:
            return cls(rate, None, 200_000, int(rate * 60), int(rate * 90))
        n = int(rate * duration)
        return cls(rate, duration, n, n // 2, (3 * n) // 4)


def _say(console: Console) -> Callable[[str], None]:
    return lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True)


def _registry(settings: Settings) -> Any:
    # optuna and mlflow load in seconds: `alphapulse --help` and the other commands do not pay.
    import optuna

    from stream.registry import open_registry

    # The demo shows its own progress; the libraries' INFO lines would bury it.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return open_registry(settings)


def train_and_register(
    settings: Settings,
    frame: Any,
    role: str,
    overrides: dict[str, Any],
    on_trial: Callable[[Any], None] | None = None,
) -> str:
    """Train ``role`` on ``frame`` (generator rows), register it as champion; return its version."""
    # The boosters load in seconds: only the demo's training pays for them.
    from models.trainer import Trainer, TrainingConfig, TrainingData

    cfg = TrainingConfig.for_cadence(MODEL_TYPE, role, **overrides)
    data = TrainingData.from_frame(frame, exclude=["regime"])
    with _registry(settings).training_run(role, cfg) as run:

        def trial(report: Any) -> None:
            run.log_trial(report)
            if on_trial is not None:
                on_trial(report)

        result = Trainer(cfg).fit(data, on_trial=trial)
        return str(run.register(result, force=True).version)


def _initial_models(settings: Settings, plan: DemoPlan, frame: Any, console: Console) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    history = frame.iloc[: plan.history]
    say = _say(console)
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*cols, console=console, disable=not console.is_terminal) as progress:
        say(
            f"training monthly_full ({MODEL_TYPE}, {plan.hpo_trials}-trial search) "
            f"on {plan.history} historical trades"
        )
        task = progress.add_task("monthly_full search trials", total=plan.hpo_trials)

        def on_trial(report: Any) -> None:
            progress.advance(task)
            if not console.is_terminal:
                say(f"  trial {report.number + 1}/{plan.hpo_trials}: log loss {report.value:.4f}")

        v1 = train_and_register(
            settings,
            history,
            "monthly_full",
            {"n_estimators": 120, "hpo_trials": plan.hpo_trials, "hpo_timeout_s": 120.0},
            on_trial,
        )
        progress.update(task, completed=plan.hpo_trials)
        task = progress.add_task("weekly_quick", total=1)
        v2 = train_and_register(
            settings, history.iloc[-plan.history // 2 :], "weekly_quick", {"n_estimators": 80}
        )
        progress.update(task, completed=1)
    say(f"champions: monthly_full v{v1}, weekly_quick v{v2}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "ALPHAPULSE_MLFLOW_EXPERIMENT": settings.mlflow_experiment,
            "ALPHAPULSE_DATA_DIR": str(settings.data_dir),
            "ALPHAPULSE_TOPIC_PREFIX": settings.topic_prefix,
            "ALPHAPULSE_APP_ID": settings.app_id,
            "ALPHAPULSE_TOPIC_PARTITIONS": str(settings.topic_partitions),
            "ALPHAPULSE_WEB_HOST": settings.web_host,
            "ALPHAPULSE_WEB_PORT": str(settings.web_port),
            "ALPHAPULSE_RELOAD_INTERVAL_S": str(min(settings.reload_interval_s or 2.0, 2.0)),
        }
    )
    # The demo retrains by itself, visibly; a worker's own job (a missed scheduled slot, a drift)
    # would compete with it and register a version the demo does not expect.
    env.update({f"ALPHAPULSE_RETRAIN_{c.upper()}_AT": "off" for c in CADENCES})
    env["ALPHAPULSE_RETRAIN_ON_DRIFT"] = "false"
    return env


@contextlib.contextmanager
def _worker(settings: Settings, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alphapulse.cli", "worker"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_worker_env(settings),
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_process_group(proc, 15)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo as Ctrl-C does: the worker and the broker it started are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_ready(
    url: str, settings: Settings, proc: subprocess.Popen[bytes], log_path: Path, timeout: float
) -> None:
    signals = settings.topic("signals")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AlphaPulseError(
                f"the worker exited with status {proc.returncode}; see {log_path}"
            )
        data = get_json(url)
        assigned = data is not None and any(
            p["topic"] == signals for p in data["lag"]["partitions"]
        )
        if assigned and data and {"monthly_full", "weekly_quick"} <= set(data["versions"]):
            return
        time.sleep(0.5)
    raise AlphaPulseError(
        f"the worker did not take its partitions and load the models in {timeout:.0f} s; "
        f"see {log_path}"
    )


def _generator_frame(plan: DemoPlan) -> Any:
    gen = TradeGenerator(
        n_features=plan.n_features,
        n_informative=plan.n_features // 2,
        drift_points=(plan.history + plan.drift_after,),
        seed=plan.seed,
    )
    return gen.frame(plan.history + plan.live)


def run_demo(
    settings: Settings,
    console: Console,
    duration: float | None = None,
    rate: float = 40.0,
    keep_broker: bool = False,
    ready_timeout: float = 180.0,
) -> tuple[DemoState, str]:
    """Run the demo; returns its final state and the summary text.

    Raises :class:`AlphaPulseError` when the worker does not come up, or no prediction arrived.
    """
    plan = DemoPlan.make(duration, rate)
    url = f"http://{settings.web_host}:{settings.web_port}/dashboard/data"
    if not _port_free(settings.web_host, settings.web_port):
        raise BrokerError(
            f"port {settings.web_port} on {settings.web_host} is in use (another worker?); "
            "stop it or set ALPHAPULSE_WEB_PORT"
        )
    with _sigterm_as_interrupt():
        return _run(settings, console, plan, url, keep_broker, ready_timeout)


def _run(
    settings: Settings,
    console: Console,
    plan: DemoPlan,
    url: str,
    keep_broker: bool,
    ready_timeout: float,
) -> tuple[DemoState, str]:
    say = _say(console)
    kafka = None
    if settings.uses_local_broker:
        kafka = local_kafka(settings)
        if not kafka.up(progress=say):
            kafka = None  # it was already running: leave it running
    try:
        asyncio.run(ensure_topics(settings))
        frame = _generator_frame(plan)
        _initial_models(settings, plan, frame, console)
        log_path = settings.data_dir / "demo-worker.log"
        say(f"starting a worker (log: {log_path}, dashboard: {url.removesuffix('/data')})")
        with _worker(settings, log_path) as proc:
            _wait_ready(url, settings, proc, log_path, ready_timeout)
            state = DemoState(
                started=time.monotonic(),
                duration=plan.duration,
                rate=plan.rate,
                topic=settings.topic("predictions"),
            )
            run = uuid.uuid4().hex[:6]

            def retrain(first: int, last: int) -> str:
                rows = frame.iloc[plan.history + first : plan.history + last]
                return train_and_register(settings, rows, "weekly_quick", {"n_estimators": 80})

            try:
                asyncio.run(stream_live(settings, plan, frame, state, console, url, run, retrain))
            except KeyboardInterrupt:
                state.phase = "interrupted"
                state.ended = state.ended or time.monotonic()
                say("interrupted; stopping the worker")
            state.worker = get_json(url) or state.worker
        text = summary_text(state)
    finally:
        if kafka is not None and not keep_broker:
            kafka.down(progress=say)
    if state.predictions == 0:
        raise AlphaPulseError(f"no prediction arrived; see {log_path}\n{text}")
    return state, text
