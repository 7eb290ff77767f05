"""The built wheel, installed alone into a fresh virtualenv, works as a user gets it.

The wheel is built from this checkout, installed with the pins of constraints.txt (pip's cache is
reused; no system site-packages), and run from outside the checkout so that nothing is imported
from the source tree. Without extras there is no PostgreSQL driver, Redis client or jsonschema;
the CLI still answers, the wire contract still round-trips, and a store command says which extra
to install. Installing the wheel with ``[store,redis]``, as the Dockerfile does, brings them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).parents[2]

# Runs in the fresh virtualenv: a signal and an outcome as a trading system sends them, decoded,
# encoded and decoded again; a prediction encoded and read back; where the packaged files are.
ROUND_TRIP = r"""
import importlib.resources, importlib.util, json, sys
import orjson
import stream
from stream.codec import decode_outcome, decode_signal, encode
from stream.records import Prediction

signal = {"signal_id": "s-1", "symbol": "BTCUSDT", "features": {"rsi": 61.5, "atr": 0.8},
          "strategy": "breakout", "side": "long", "ts": 1704067200000}
outcome = {"outcome_id": "o-1", "signal_id": "s-1", "symbol": "BTCUSDT", "label": True,
           "realized_rr": 1.7, "features": {"rsi": 61.5, "atr": 0.8}, "ts": 1704067260000}
sig = decode_signal(orjson.dumps(signal))
assert decode_signal(encode(sig)) == sig, sig
out = decode_outcome(orjson.dumps(outcome))
assert decode_outcome(encode(out)) == out, out
pred = Prediction("s-1", "BTCUSDT", "BTCUSDT", 0.64, {"monthly_full": 0.7, "online": 0.5},
                  {"monthly_full": 0.8, "online": 0.2}, {"monthly_full": 3, "online": 41},
                  False, 1704067200000, 1704067200004)
pred_doc = orjson.loads(encode(pred))
assert pred_doc == pred.to_dict(), pred_doc
print(json.dumps({
    "docs": {"signal_request": signal, "trade_outcome": outcome, "prediction": pred_doc},
    "decoded": {"signal_features": sig.features, "outcome_label": out.label},
    "stream_file": stream.__file__,
    "schemas": str(importlib.resources.files("stream") / "schemas"),
    "dashboard": str(importlib.resources.files("alphapulse") / "dashboard.html"),
    "present": {m: importlib.util.find_spec(m) is not None
                for m in ("bench", "psycopg", "psycopg_pool", "redis", "jsonschema", "tests")},
}))
"""


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> Any:
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built as the Dockerfile builds it."""
    out = tmp_path_factory.mktemp("wheel")
    res = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        env=dict(os.environ),
        cwd=out,
    )
    assert res.returncode == 0, res.stderr
    (built,) = out.glob("alphapulse-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> tuple[Path, dict[str, str]]:
    """A new virtualenv with the wheel installed from the constraints; its bin dir and env."""
    home = tmp_path_factory.mktemp("fresh")
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(home / "venv")
    bin_dir = home / "venv" / "bin"
    drop = ("PYTHON", "VIRTUAL_ENV", "ALPHAPULSE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        ALPHAPULSE_DATA_DIR=str(home / "data"),
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
    )
    constraints = str(ROOT / "constraints.txt")
    res = _run(
        [str(bin_dir / "pip"), "install", "-q", "-c", constraints, str(wheel)],
        env=env,
        cwd=home,
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr
    return bin_dir, env


def test_the_wheel_ships_the_packages_and_their_files_not_bench(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("alphapulse-")}
    assert tops == {"alphapulse", "agents", "stream", "models"}, tops
    assert "alphapulse/dashboard.html" in names
    for schema in ("signal_request", "trade_outcome", "prediction", "model_event"):
        assert f"stream/schemas/{schema}.json" in names, schema


def test_cli_help_and_version(fresh: tuple[Path, dict[str, str]]) -> None:
    bin_dir, env = fresh
    helped = _run([str(bin_dir / "alphapulse"), "--help"], env=env, cwd=bin_dir)
    assert helped.returncode == 0, helped.stderr
    for command in ("worker", "demo", "train", "config"):
        assert command in helped.stdout, command
    version = _run([str(bin_dir / "alphapulse"), "--version"], env=env, cwd=bin_dir)
    assert version.returncode == 0, version.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version.stdout.split() == ["alphapulse", project["version"]]


def test_contract_round_trip_with_the_packaged_schemas(fresh: tuple[Path, dict[str, str]]) -> None:
    bin_dir, env = fresh
    res = _run([str(bin_dir / "python"), "-c", ROUND_TRIP], env=env, cwd=bin_dir)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    venv_dir = bin_dir.parent
    assert Path(found["stream_file"]).is_relative_to(venv_dir), "imported from the checkout"
    assert found["decoded"] == {"signal_features": {"rsi": 61.5, "atr": 0.8}, "outcome_label": True}
    schemas = Path(found["schemas"])
    assert schemas.is_relative_to(venv_dir)
    for name, doc in found["docs"].items():
        # jsonschema is a dev package: the test's own copy checks the installed schema files.
        jsonschema.validate(doc, json.loads((schemas / f"{name}.json").read_text()))
    page = Path(found["dashboard"])
    assert page.is_relative_to(venv_dir) and "<html" in page.read_text().lower()
    assert found["present"] == {
        "bench": False,
        "tests": False,
        "psycopg": False,
        "psycopg_pool": False,
        "redis": False,
        "jsonschema": False,
    }


def test_a_store_command_names_the_missing_extra(fresh: tuple[Path, dict[str, str]]) -> None:
    bin_dir, env = fresh
    env = {**env, "ALPHAPULSE_STORE_DSN": "postgresql://alphapulse@127.0.0.1:9/alphapulse"}
    args = ["train", "--from-store", "--model-type", "xgboost", "--cadence", "nightly_incremental"]
    res = _run([str(bin_dir / "alphapulse"), *args], env=env, cwd=bin_dir)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "pip install 'alphapulse[store]'" in lines[0]


# Last in this file: it adds the extras to the virtualenv the tests above find without them.
def test_extras_as_the_dockerfile_installs_them(
    fresh: tuple[Path, dict[str, str]], wheel: Path
) -> None:
    bin_dir, env = fresh
    constraints = str(ROOT / "constraints.txt")
    res = _run(
        [str(bin_dir / "pip"), "install", "-q", "-c", constraints, f"{wheel}[store,redis]"],
        env=env,
        cwd=bin_dir,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    check = "import psycopg, psycopg_pool, redis; print(psycopg.__version__, redis.__version__)"
    res = _run([str(bin_dir / "python"), "-c", check], env=env, cwd=bin_dir)
    assert res.returncode == 0, res.stderr
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    )
    assert res.stdout.split() == [pins["psycopg"], pins["redis"]]
