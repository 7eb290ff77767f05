"""``alphapulse train`` and ``alphapulse models`` against a real ``mlflow server``.

The role names (``weekly_quick``) are fixed by the CLI and the server is shared by the session, so
these tests compare versions and aliases before and after each command instead of assuming an
empty registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner, Result

from alphapulse.cli import app as cli_app
from models.registry import ModelRegistry
from models.synthetic import TradeGenerator
from models.trainer import evaluate

pytestmark = pytest.mark.integration

ROLE = "weekly_quick"
JSON_KEYS = {"model_name", "version", "promoted", "metrics", "n_train", "n_valid", "hard_examples"}


@pytest.fixture(scope="module")
def experiment() -> str:
    return f"test-cli-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def env(
    mlflow_server: str, experiment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    values = {
        "MLFLOW_TRACKING_URI": mlflow_server,
        "ALPHAPULSE_MLFLOW_EXPERIMENT": experiment,
        "ALPHAPULSE_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


@pytest.fixture(scope="module")
def cancer_csv(cancer: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "breast_cancer.csv"
    cancer.to_csv(path, index=False)
    return path


def cli(*args: str) -> Result:
    # The whole CLI, so that its error policy (exit statuses, one-line errors) applies.
    return CliRunner().invoke(cli_app, list(args))


def last_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.stderr
    payload: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(payload) == JSON_KEYS
    return payload


def versions(uri: str, name: str = ROLE) -> list[str]:
    return sorted(
        (v.version for v in MlflowClient(uri).search_model_versions(f"name = '{name}'")), key=int
    )


def champion(uri: str, name: str = ROLE) -> str:
    return ModelRegistry(uri).resolve_alias(name)


@pytest.mark.parametrize("model_type", ["xgboost", "lightgbm", "catboost"])
def test_breast_cancer_through_the_console_script(
    model_type: str, cancer_csv: Path, cancer: pd.DataFrame, env: dict[str, str]
) -> None:
    script = Path(sys.executable).with_name("alphapulse")
    proc = subprocess.run(
        [
            str(script),
            "train",
            "--model-type",
            model_type,
            "--cadence",
            ROLE,
            "--json",
            "--from-file",
            str(cancer_csv),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == JSON_KEYS
    assert out["model_name"] == ROLE
    assert out["n_train"] + out["n_valid"] == len(cancer)
    assert out["metrics"]["roc_auc"] >= 0.97
    assert 0 < out["metrics"]["log_loss"] < 0.3 and 0 <= out["metrics"]["brier"] < 0.1

    uri = env["MLFLOW_TRACKING_URI"]
    model = ModelRegistry(uri).load_version(ROLE, out["version"])
    assert model.model_type == model_type
    holdout = cancer.iloc[out["n_train"] :]
    p = model.predict_proba(holdout.drop(columns="label"))
    assert evaluate(holdout["label"].to_numpy(), p)["roc_auc"] == pytest.approx(
        out["metrics"]["roc_auc"]
    )
    if out["promoted"]:
        assert champion(uri) == str(out["version"])


def test_jsonl_with_nested_features_and_parquet(env: dict[str, str], tmp_path: Path) -> None:
    df = TradeGenerator(n_features=4, n_informative=3, seed=9).frame(300).drop(columns="regime")
    features = [f"f{j}" for j in range(4)]
    records = [
        {
            "outcome_id": row.outcome_id,
            "signal_id": row.signal_id,
            "symbol": row.symbol,
            "label": bool(row.label),
            "realized_rr": row.realized_rr,
            "ts": pd.Timestamp(row.ts, unit="ms", tz="UTC").isoformat(),
            "features": {f: getattr(row, f) for f in features},
        }
        for row in df.itertuples()
    ]
    jsonl = tmp_path / "outcomes.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in records))
    out = last_json(
        cli(
            "train",
            "--model-type",
            "lightgbm",
            "--cadence",
            ROLE,
            "--from-file",
            str(jsonl),
            "--json",
        )
    )
    assert out["n_train"] + out["n_valid"] == 300
    # A file is an offline input: no retrain queue is read, even with outcome ids.
    assert out["hard_examples"] == 0
    model = ModelRegistry(env["MLFLOW_TRACKING_URI"]).load_version(ROLE, out["version"])
    assert model.feature_names == tuple(features)

    parquet = tmp_path / "outcomes.parquet"
    df.rename(columns={"label": "won", "realized_rr": "r"}).to_parquet(parquet)
    out = last_json(
        cli(
            "train",
            "--model-type",
            "catboost",
            "--cadence",
            ROLE,
            "--from-file",
            str(parquet),
            "--label-column",
            "won",
            "--rr-column",
            "r",
            "--json",
        )
    )
    model = ModelRegistry(env["MLFLOW_TRACKING_URI"]).load_version(ROLE, out["version"])
    assert model.feature_names == tuple(features)


def test_worse_challenger_is_not_promoted_then_models_commands(
    env: dict[str, str], cancer: pd.DataFrame, cancer_csv: Path, tmp_path: Path
) -> None:
    uri = env["MLFLOW_TRACKING_URI"]
    args = ["train", "--model-type", "xgboost", "--cadence", ROLE, "--json"]
    good = last_json(cli(*args, "--from-file", str(cancer_csv), "--force"))
    assert good["promoted"] and champion(uri) == str(good["version"])

    # Same holdout (the last 20 % of rows), but the training rows carry shuffled labels.
    worse = cancer.copy()
    n_train = int(good["n_train"])
    rng = np.random.default_rng(0)
    worse.loc[: n_train - 1, "label"] = rng.permutation(worse["label"].to_numpy()[:n_train])
    worse_csv = tmp_path / "worse.csv"
    worse.to_csv(worse_csv, index=False)
    bad = last_json(cli(*args, "--from-file", str(worse_csv)))
    assert bad["promoted"] is False
    assert champion(uri) == str(good["version"])
    forced = last_json(cli(*args, "--from-file", str(worse_csv), "--force"))
    assert forced["promoted"] and champion(uri) == str(forced["version"])

    rolled = cli("models", "rollback", ROLE)
    assert rolled.exit_code == 0, rolled.stderr
    assert champion(uri) == str(good["version"])
    promoted = cli("models", "promote", ROLE, str(bad["version"]))
    assert promoted.exit_code == 0 and champion(uri) == str(bad["version"])
    listed = cli("models", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    (entry,) = [m for m in json.loads(listed.stdout.strip().splitlines()[-1]) if m["name"] == ROLE]
    assert entry["aliases"]["champion"] == str(bad["version"])
    by_version = {v["version"]: v for v in entry["versions"]}
    assert by_version[bad["version"]]["aliases"] == ["champion"]
    assert by_version[good["version"]]["model_type"] == "xgboost"
    human = cli("models", "list")
    assert human.exit_code == 0 and ROLE in human.stdout

    missing = cli("models", "promote", ROLE, "99999")
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ")


def test_nightly_incremental_continues_the_champion(
    env: dict[str, str], cancer: pd.DataFrame, cancer_csv: Path, tmp_path: Path
) -> None:
    uri = env["MLFLOW_TRACKING_URI"]
    base = last_json(
        cli(
            "train",
            "--model-type",
            "lightgbm",
            "--cadence",
            ROLE,
            "--from-file",
            str(cancer_csv),
            "--json",
            "--force",
        )
    )
    registry = ModelRegistry(uri)
    base_trees = registry.load_version(ROLE, base["version"]).n_trees
    nightly = last_json(
        cli(
            "train",
            "--model-type",
            "lightgbm",
            "--cadence",
            "nightly_incremental",
            "--from-file",
            str(cancer_csv),
            "--json",
        )
    )
    assert nightly["model_name"] == ROLE
    assert registry.load_version(ROLE, nightly["version"]).n_trees == base_trees + 20
    run_id = registry.client.get_model_version(ROLE, str(nightly["version"])).run_id
    assert run_id is not None
    run = registry.client.get_run(run_id)
    assert run.data.params["warm_start_from"] == f"{ROLE}/{base['version']}"

    registry.promote(ROLE, base["version"])
    before = versions(uri)
    other = tmp_path / "renamed.csv"
    cancer.rename(columns={"mean_radius": "radius_mean"}).to_csv(other, index=False)
    result = cli(
        "train",
        "--model-type",
        "lightgbm",
        "--cadence",
        "nightly_incremental",
        "--from-file",
        str(other),
    )
    assert result.exit_code == 2
    assert "mean_radius" in result.stderr and "radius_mean" in result.stderr
    wrong_lib = cli(
        "train",
        "--model-type",
        "catboost",
        "--cadence",
        "nightly_incremental",
        "--from-file",
        str(cancer_csv),
    )
    assert wrong_lib.exit_code == 2 and "lightgbm" in wrong_lib.stderr
    assert versions(uri) == before


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("empty", "empty"),
        ("one_class", "single class"),
        ("nan_label", "missing"),
        ("no_label", "no label column"),
        ("text_feature", "not numeric"),
        ("unknown_type", "unknown file type"),
        ("no_file", "no such file"),
        ("bad_model", "'sklearn' is not one of"),
        ("bad_cadence", "'hourly' is not one of"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_registers_nothing(
    case: str, expected: str, env: dict[str, str], cancer: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "data.csv"
    frame = cancer.copy()
    model_type, cadence = "xgboost", ROLE
    if case == "empty":
        frame = frame.iloc[:0]
    elif case == "one_class":
        frame["label"] = 1
    elif case == "nan_label":
        frame["label"] = frame["label"].astype(float)
        frame.loc[10, "label"] = np.nan
    elif case == "no_label":
        frame = frame.drop(columns="label")
    elif case == "text_feature":
        frame["venue"] = "binance"
    elif case == "unknown_type":
        path = tmp_path / "data.xlsx"
    elif case == "no_file":
        path = tmp_path / "absent.csv"
    elif case == "bad_model":
        model_type = "sklearn"
    elif case == "bad_cadence":
        cadence = "hourly"
    if case != "no_file":
        frame.to_csv(path, index=False)
    before = versions(env["MLFLOW_TRACKING_URI"])
    result = cli(
        "train",
        "--model-type",
        model_type,
        "--cadence",
        cadence,
        "--from-file",
        str(path),
        "--json",
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1]
    assert "Traceback" not in result.stderr
    assert result.stdout.strip() == ""
    assert versions(env["MLFLOW_TRACKING_URI"]) == before
