"""The CPU-budget benchmark's arguments and the burning echo's CPU spin."""

from __future__ import annotations

import sys
import time

import pytest

from bench import cpu_budget
from bench._echo import main as echo_main
from bench._echo import spin


@pytest.mark.parametrize("burn", ["40", "a:b", "1:2:3", "-1:5"])
def test_a_bad_burn_is_refused_before_anything_starts(
    burn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["cpu_budget", f"--burn={burn}"])
    monkeypatch.setattr(cpu_budget, "run", lambda args: pytest.fail("ran with a bad burn"))
    with pytest.raises(SystemExit) as exc:
        cpu_budget.main()
    assert exc.value.code == 2
    assert "SIGNAL_US:OUTCOME_US" in capsys.readouterr().err


def test_the_default_burns_are_two_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(sys, "argv", ["cpu_budget"])
    monkeypatch.setattr(cpu_budget, "run", lambda args: seen.append(args.burn))
    cpu_budget.main()
    assert seen == [["40:100", "100:250"]]


def test_the_echo_refuses_a_bad_burn_and_wrong_arguments() -> None:
    with pytest.raises(ValueError, match="SIGNAL_US:OUTCOME_US"):
        echo_main(["b", "s", "g", "o", "p", "--burn", "x"])
    with pytest.raises(SystemExit):
        echo_main(["b", "s", "g", "o"])


def test_a_spin_uses_cpu_time_not_just_clock_time() -> None:
    cpu, wall = time.thread_time(), time.perf_counter()
    spin(0.02)
    assert time.thread_time() - cpu >= 0.02
    assert time.perf_counter() - wall >= 0.02
