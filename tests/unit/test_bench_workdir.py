"""Benchmarks remove their working directory after a good run and keep it after a failed one."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._common import work_dir


def test_a_good_run_leaves_nothing_behind() -> None:
    with work_dir("unit-bench-") as path:
        (path / "worker.log").write_text("ok")
    assert not path.exists()


def test_keep_leaves_a_good_run_in_place(capsys: pytest.CaptureFixture[str]) -> None:
    with work_dir("unit-bench-", keep=True) as path:
        (path / "worker.log").write_text("ok")
    try:
        assert (path / "worker.log").read_text() == "ok"
        assert str(path) in capsys.readouterr().err
    finally:
        (path / "worker.log").unlink()
        path.rmdir()


@pytest.mark.parametrize("failure", [RuntimeError("broker down"), SystemExit(1)])
def test_a_failed_run_is_kept_and_its_path_printed(
    failure: BaseException, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Path] = []
    with pytest.raises(type(failure)), work_dir("unit-bench-") as path:
        seen.append(path)
        (path / "worker.log").write_text("why")
        raise failure
    kept = seen[0]
    try:
        assert (kept / "worker.log").read_text() == "why"
        assert f"kept in {kept}" in capsys.readouterr().err
    finally:
        (kept / "worker.log").unlink()
        kept.rmdir()


def test_exit_status_zero_counts_as_good() -> None:
    seen: list[Path] = []
    with pytest.raises(SystemExit), work_dir("unit-bench-") as path:
        seen.append(path)
        raise SystemExit(0)
    assert not seen[0].exists()
