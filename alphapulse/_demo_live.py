"""The demo's live phase: stream signals and outcomes, watch predictions, events and the worker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.live import Live

from alphapulse._demo_view import DemoState, progress_line, render_view
from stream.kafka import client_kwargs
from stream.settings import Settings

__all__ = ["get_json", "stream_live"]


def get_json(url: str) -> dict[str, Any] | None:
    """GET ``url`` and decode its JSON body; None when the worker does not answer."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            data: dict[str, Any] = orjson.loads(resp.read())
            return data
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError):
        return None


async def _consumer(settings: Settings, role: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        settings.topic(role), **client_kwargs(settings), group_id=None, auto_offset_reset="latest"
    )
    await consumer.start()
    for tp in consumer.assignment():
        await consumer.position(tp)  # take the current end now, before anything is sent
    return consumer


async def _count_predictions(consumer: AIOKafkaConsumer, state: DemoState, prefix: str) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            for rec in records:
                if orjson.loads(rec.value).get("signal_id", "").startswith(prefix):
                    state.predictions += 1


async def _watch_events(consumer: AIOKafkaConsumer, state: DemoState) -> None:
    while True:
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            for rec in records:
                ev = orjson.loads(rec.value)
                kind = ev.get("event")
                if kind == "checkpoint":
                    continue
                if kind == "drift":
                    state.drift_events += 1
                    state.event(
                        f"drift alarm on {ev.get('model_key')} after {ev.get('version')} outcomes"
                    )
                else:
                    who = ev.get("role") or ev.get("model_key") or ""
                    state.event(f"{kind} {who} v{ev.get('version', '?')}")


async def _poll_worker(url: str, state: DemoState) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await loop.run_in_executor(None, get_json, url)
        if data is not None:
            state.worker = data
        await asyncio.sleep(1.0)


async def _show(state: DemoState, console: Console, stop: asyncio.Event) -> None:
    if console.is_terminal:
        with Live(render_view(state), console=console, auto_refresh=False) as live:
            while not stop.is_set():
                live.update(render_view(state), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
            live.update(render_view(state), refresh=True)
        return
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)
        console.print(progress_line(state), markup=False, highlight=False, soft_wrap=True)


async def _send_rows(
    settings: Settings,
    plan: Any,
    frame: Any,
    state: DemoState,
    prefix: str,
    retrain: Callable[[int, int], str],
) -> None:
    names = [f"f{j}" for j in range(plan.n_features)]
    X = frame[names].to_numpy()[plan.history :]
    symbols = frame["symbol"].tolist()[plan.history :]
    labels = frame["label"].tolist()[plan.history :]
    rrs = frame["realized_rr"].tolist()[plan.history :]
    signals, outcomes = settings.topic("signals"), settings.topic("outcomes")
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=5)
    await producer.start()
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[Any]] = []
    due: deque[tuple[float, bytes, bytes]] = deque()
    retraining: asyncio.Future[str] | None = None

    async def send(topic: str, key: bytes, value: bytes) -> None:
        pending.append(await producer.send(topic, value, key=key))
        if len(pending) >= 100:
            await asyncio.gather(*pending)
            pending.clear()

    try:
        i = 0
        while i < plan.live:
            wait = state.started + i / plan.rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, key, value = due.popleft()
                await send(outcomes, key, value)
                state.outcomes_sent += 1
            sid = f"{prefix}{i}"
            key = symbols[i].encode()
            features = dict(zip(names, X[i].tolist(), strict=True))
            doc = {"signal_id": sid, "symbol": symbols[i], "features": features}
            await send(signals, key, orjson.dumps(doc))
            state.signals_sent += 1
            outcome = {
                "outcome_id": f"{sid}-o",
                "signal_id": sid,
                "symbol": symbols[i],
                "label": bool(labels[i]),
                "realized_rr": rrs[i],
            }
            due.append((now + plan.outcome_delay_s, key, orjson.dumps(outcome)))
            if i == plan.drift_after:
                state.drift_signal, state.drift_at_s = i, now - state.started
                state.phase = "regime 1 (changed)"
                state.event(f"regime change at signal {i}: the batch models are now wrong")
            if i == plan.retrain_after and retraining is None:
                first = plan.drift_after
                state.phase = "regime 1, retraining weekly_quick"
                state.event(f"retraining weekly_quick on {i - first} outcomes of the new regime")
                retraining = loop.run_in_executor(None, retrain, first, i)
                n_rows = i - first
                retraining.add_done_callback(functools.partial(_retrained, state, n=n_rows))
            i += 1
        while due:
            wait = due[0][0] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            _, key, value = due.popleft()
            await send(outcomes, key, value)
            state.outcomes_sent += 1
        await asyncio.gather(*pending)
        if retraining is not None:
            await asyncio.wait_for(asyncio.shield(retraining), 120)
    finally:
        await producer.stop()


def _retrained(state: DemoState, fut: asyncio.Future[str], *, n: int) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        state.retrained = f"failed: {exc}"
        state.event(f"retraining failed: {exc}")
        return
    state.retrained = f"weekly_quick v{fut.result()} on {n} outcomes of the new regime, promoted"
    state.phase = "regime 1, retrained"
    state.event(f"promoted weekly_quick v{fut.result()}")


async def stream_live(
    settings: Settings,
    plan: Any,
    frame: Any,
    state: DemoState,
    console: Console,
    url: str,
    run: str,
    retrain: Callable[[int, int], str],
) -> None:
    """Stream the live rows and keep ``state`` current until the plan's duration has passed."""
    prefix = f"demo-{run}-"
    preds = await _consumer(settings, "predictions")
    events = await _consumer(settings, "model-events")
    stop = asyncio.Event()
    state.phase = "regime 0"
    state.started = time.monotonic()
    tasks = [
        asyncio.create_task(_count_predictions(preds, state, prefix)),
        asyncio.create_task(_watch_events(events, state)),
        asyncio.create_task(_poll_worker(url, state)),
    ]
    view = asyncio.create_task(_show(state, console, stop))
    try:
        await _send_rows(settings, plan, frame, state, prefix, retrain)
        deadline = time.monotonic() + 10.0
        while state.predictions < state.signals_sent and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # the last predictions are still on their way
        data = await asyncio.get_running_loop().run_in_executor(None, get_json, url)
        state.worker = data or state.worker
        state.phase = "done"
        state.ended = time.monotonic()
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(view, return_exceptions=True)
        await preds.stop()
        await events.stop()
