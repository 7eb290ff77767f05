"""Drift reaches retraining through the learner's typed hook, wired by the composition root."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from agents.retrainer import Retrainer
from alphapulse import app as composition
from models.roles import CADENCES
from stream.runtime import Runtime
from stream.settings import Settings


class _App:
    """What _schedule_retraining needs of a Faust app: timers, recorded by name."""

    def __init__(self) -> None:
        self.timers: list[str] = []
        self.tasks: list[str] = []

    def task(self, fn: Any) -> Any:
        self.tasks.append(fn.__name__)
        return fn

    def timer(self, interval: float, **kwargs: Any) -> Callable[[Any], Any]:
        self.timers.append(kwargs["name"])
        return lambda fn: fn


class _Retrainer:
    def __init__(self, rt: Runtime, **options: Any) -> None:
        self.drifts = 0
        self.schedules = Retrainer(rt).schedules

    async def on_drift(self, model_key: str, ts: int) -> None:
        self.drifts += 1


def _schedule(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> tuple[_App, Any, list[Any]]:
    made: list[_Retrainer] = []

    def retrainer(rt: Runtime, **options: Any) -> _Retrainer:
        made.append(_Retrainer(rt, **options))
        return made[-1]

    monkeypatch.setattr(composition, "Retrainer", retrainer)
    app = _App()
    rt = Runtime(Settings(_env_file=None, **settings), topics={})  # type: ignore[call-arg]
    hook = composition._schedule_retraining(app, rt)  # type: ignore[arg-type]
    return app, hook, made


def test_no_hook_when_drift_does_not_retrain(monkeypatch: pytest.MonkeyPatch) -> None:
    app, hook, _ = _schedule(monkeypatch, retrain_on_drift=False)
    assert hook is None
    assert app.timers == ["retrain-schedule"]
    assert app.tasks == ["_warm_registry"]  # MLflow opened at start, not at the first tick


def test_no_timer_when_every_schedule_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    off = {f"retrain_{c}_at": "off" for c in CADENCES}
    app, hook, _ = _schedule(monkeypatch, **off)
    assert app.timers == [] and app.tasks == [] and hook is not None


def test_the_hook_starts_a_drift_retraining(monkeypatch: pytest.MonkeyPatch) -> None:
    _, hook, made = _schedule(monkeypatch, retrain_on_drift=True)

    async def drift() -> None:
        hook("BTCUSDT", 1_000)
        await asyncio.sleep(0)

    asyncio.run(drift())
    assert made[0].drifts == 1
