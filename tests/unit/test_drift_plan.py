"""A drift alarm plans weekly_quick jobs on the outcomes since it, as bench.quality measures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents import retrainer as retraining
from agents.retrainer import Retrainer
from stream.runtime import Runtime
from stream.settings import Settings


class _Recording(Retrainer):
    """A retrainer whose jobs are recorded, with the learned count at their start."""

    jobs: list[tuple[str, str, int | None, int]]

    async def run(
        self, cadence: str, reason: str, since_ms: int | None = None
    ) -> dict[str, object] | None:
        self.jobs.append((cadence, reason, since_ms, self.rt.counters["outcomes.learned"]))
        return None


def _retrainer(**settings: Any) -> _Recording:
    rt = Runtime(Settings(_env_file=None, **settings), topics={})  # type: ignore[call-arg]
    r = _Recording(rt)
    r.jobs = []
    return r


async def _learn(r: Retrainer, n: int) -> None:
    """Learn ``n`` outcomes, one per loop turn, giving the plan time to look."""
    for _ in range(n):
        r.rt.count("outcomes.learned")
        await asyncio.sleep(0.002)


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retraining, "DRIFT_POLL_S", 0.001)


def test_jobs_run_at_each_count_after_the_alarm_on_the_outcomes_since_it() -> None:
    r = _retrainer(retrain_drift_outcomes="10,20")

    async def scenario() -> None:
        await _learn(r, 5)
        await r.on_drift("BTCUSDT", 1_000)
        await _learn(r, 9)
        assert r.jobs == []
        await _learn(r, 30)

    asyncio.run(scenario())
    assert [(c, why, since) for c, why, since, _ in r.jobs] == [
        ("weekly_quick", "drift", 1_000),
        ("weekly_quick", "drift", 1_000),
    ]
    # Each ran once its count of outcomes after the alarm was learned, not before.
    assert [at - 5 for *_, at in r.jobs] == [10, 20]
    assert r.plan is None


def test_an_alarm_within_the_gap_is_ignored_and_a_later_one_starts_over() -> None:
    r = _retrainer(retrain_drift_outcomes="10,20", retrain_drift_min_gap_s=3600)

    async def scenario() -> None:
        await r.on_drift("A", 1_000)
        await _learn(r, 12)
        await r.on_drift("B", 2_000)  # within the gap: the plan goes on
        await _learn(r, 10)
        r.last_alarm -= 3600  # the gap has passed
        await r.on_drift("C", 3_000)
        await _learn(r, 25)

    asyncio.run(scenario())
    assert [(since, at) for *_, since, at in r.jobs] == [
        (1_000, 10),
        (1_000, 20),
        (3_000, 32),
        (3_000, 42),
    ]


def test_no_plan_when_drift_does_not_retrain() -> None:
    r = _retrainer(retrain_on_drift=False)
    asyncio.run(r.on_drift("A", 1_000))
    assert r.plan is None and r.follower is None


def test_the_setting_takes_increasing_counts_and_names_itself_otherwise() -> None:
    assert Settings(retrain_drift_outcomes=" 5, 50 ").drift_outcomes() == (5, 50)
    for bad in ("50,5", "0,5", "5,x", ""):
        with pytest.raises(ValueError, match="ALPHAPULSE_RETRAIN_DRIFT_OUTCOMES"):
            Settings(retrain_drift_outcomes=bad)
