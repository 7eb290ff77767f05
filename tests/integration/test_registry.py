"""The MLflow registry against a real ``mlflow server``: log, register, load, promote, clean up."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.artifacts import list_artifacts
from mlflow.exceptions import MlflowException

from models.errors import DataError, RegistryError
from models.registry import CHAMPION, HISTORY_TAG, ModelRegistry
from models.synthetic import TradeGenerator
from models.trainer import MODEL_TYPES, TrainingConfig, TrainingData, TrainingResult, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(mlflow_server: str) -> ModelRegistry:
    return ModelRegistry(mlflow_server, experiment=f"test-registry-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def data() -> TrainingData:
    df = TradeGenerator(n_features=5, n_informative=3, seed=21).frame(400)
    return TrainingData.from_frame(df, exclude=["regime"])


def unique(prefix: str = "test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def fit(model_type: str, data: TrainingData, **kw: object) -> TrainingResult:
    options: dict[str, object] = {"n_estimators": 20, "max_depth": 3, **kw}
    return train(TrainingConfig(model_type=model_type, **options), data)  # type: ignore[arg-type]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_registered_model_loads_back_by_version_and_predicts_identically(
    registry: ModelRegistry, data: TrainingData, model_type: str
) -> None:
    name = unique()
    result = fit(model_type, data, focal_loss=model_type == "xgboost")
    with registry.training_run(name, result.config) as run:
        reg = run.register(result)
    assert (reg.version, reg.promoted, reg.champion_version) == ("1", True, None)
    loaded = registry.load_version(name, reg.version)
    assert loaded.model_type == model_type
    assert loaded.feature_names == result.feature_names
    np.testing.assert_array_equal(loaded.predict_proba(data.X), result.model.predict_proba(data.X))
    assert registry.resolve_alias(name) == "1"

    logged = registry.client.get_run(reg.run_id)
    assert logged.info.status == "FINISHED"
    params = logged.data.params
    assert params["n_rows"] == str(len(data))
    assert params["n_train"] == str(result.n_train)
    assert data.ts is not None
    assert params["data_ts_min"] == str(int(data.ts.min()))
    assert params["data_ts_max"] == str(int(data.ts.max()))
    assert params["cfg.model_type"] == model_type
    assert logged.data.metrics["holdout_log_loss"] == pytest.approx(result.metrics["log_loss"])
    assert logged.data.metrics["holdout_roc_auc"] == pytest.approx(result.metrics["roc_auc"])
    source = registry.client.get_model_version_download_uri(name, reg.version)
    listed = list_artifacts(f"{source}/artifacts/booster", tracking_uri=registry.tracking_uri)
    assert "booster/features.json" in {a.path for a in listed}


def test_worse_challenger_is_not_promoted_unless_forced(
    registry: ModelRegistry, data: TrainingData
) -> None:
    name = unique()
    good = fit("lightgbm", data, n_estimators=60)
    bad = fit("lightgbm", data, n_estimators=1, learning_rate=0.01)
    with registry.training_run(name, good.config) as run:
        assert run.register(good).promoted
    with registry.training_run(name, bad.config) as run:
        reg = run.register(bad)
    assert not reg.promoted and reg.version == "2" and reg.champion_version == "1"
    assert reg.champion_metrics is not None
    assert reg.champion_metrics["log_loss"] < bad.metrics["log_loss"]
    assert "does not beat" in reg.reason
    assert registry.resolve_alias(name, CHAMPION) == "1"
    with registry.training_run(name, bad.config) as run:
        forced = run.register(bad, force=True)
    assert forced.promoted and registry.resolve_alias(name) == forced.version == "3"
    tags = registry.client.get_model_version(name, "2").tags
    assert tags["alphapulse.model_type"] == "lightgbm"
    assert "does not beat" in tags["alphapulse.promotion"]


def test_promote_rollback_and_history(registry: ModelRegistry, data: TrainingData) -> None:
    name = unique()
    result = fit("xgboost", data, n_estimators=5)
    for _ in range(3):
        with registry.training_run(name, result.config) as run:
            run.register(result, force=True)
    assert registry.resolve_alias(name) == "3"
    registry.promote(name, 1)
    assert registry.resolve_alias(name) == "1"
    (info,) = [m for m in registry.list_models() if m.name == name]
    assert info.champion_history == ("1", "2", "3", "1")
    assert info.aliases == {CHAMPION: "1"}
    assert [v.version for v in info.versions] == ["3", "2", "1"]
    assert info.versions[2].aliases == (CHAMPION,)
    assert registry.rollback(name) == "3"
    assert registry.rollback(name) == "2"
    assert registry.resolve_alias(name) == "2"
    assert registry.rollback(name) == "1"
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback(name)
    with pytest.raises(RegistryError, match=r"not found|does not exist"):
        registry.promote(name, 99)
    with pytest.raises(RegistryError, match="exact version"):
        registry.load_version(name, CHAMPION)
    version, model = registry.load_alias(name)
    assert version == "1" and model.n_trees == 5


def test_search_trials_are_nested_runs(registry: ModelRegistry, data: TrainingData) -> None:
    name = unique()
    cfg = TrainingConfig.for_cadence("xgboost", "monthly_full", n_estimators=15, hpo_trials=2)
    with registry.training_run(name, cfg) as run:
        result = train(cfg, data, on_trial=run.log_trial)
        reg = run.register(result)
    children = registry.client.search_runs(
        [run.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{reg.run_id}'"
    )
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert {"learning_rate", "max_depth"} <= set(child.data.params)
        assert "log_loss" in child.data.metrics


def test_failed_training_leaves_a_failed_run_and_no_version(
    registry: ModelRegistry, data: TrainingData
) -> None:
    name = unique()
    cfg = TrainingConfig(model_type="catboost", n_estimators=5)
    with pytest.raises(DataError, match="single class"), registry.training_run(name, cfg) as run:
        train(cfg, data.X, np.zeros(len(data)))
    assert registry.client.get_run(run.run_id).info.status == "FAILED"
    assert not registry.client.search_registered_models(f"name = '{name}'")


def test_failure_part_way_removes_the_half_registered_version(
    registry: ModelRegistry, data: TrainingData, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique()
    result = fit("lightgbm", data, n_estimators=5)

    def broken(*_a: object, **_k: object) -> None:
        raise MlflowException("injected failure")

    # A brand-new model: the registered model itself is removed again.
    with monkeypatch.context() as m:
        m.setattr(registry.client, "set_model_version_tag", broken)
        with (
            pytest.raises(RegistryError, match="injected"),
            registry.training_run(name, result.config) as run,
        ):
            run.register(result)
    assert not registry.client.search_registered_models(f"name = '{name}'")

    # An existing model: the new version goes, the champion alias and its history stay as before.
    with registry.training_run(name, result.config) as run:
        run.register(result)
    with monkeypatch.context() as m:
        m.setattr(registry.client, "set_model_version_tag", broken)
        with (
            pytest.raises(RegistryError, match="injected"),
            registry.training_run(name, result.config) as run,
        ):
            run.register(result, force=True)
    versions = registry.client.search_model_versions(f"name = '{name}'")
    assert [v.version for v in versions] == ["1"]
    assert registry.resolve_alias(name) == "1"
    tags = registry.client.get_registered_model(name).tags
    assert tags[HISTORY_TAG] == '["1"]'


def test_champion_with_other_features_is_kept_unless_forced(
    registry: ModelRegistry, data: TrainingData
) -> None:
    name = unique()
    first = fit("xgboost", data, n_estimators=5)
    with registry.training_run(name, first.config) as run:
        run.register(first)
    renamed = TrainingData(data.X, data.y, ("a", "b", "c", "d", "e"), data.rr, data.ts)
    second = train(TrainingConfig(model_type="xgboost", n_estimators=30), renamed)
    with registry.training_run(name, second.config) as run:
        reg = run.register(second)
    assert not reg.promoted and "cannot be scored" in reg.reason


def test_unreachable_server_is_a_registry_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    client_registry = ModelRegistry("http://127.0.0.1:9", experiment="nowhere")
    assert isinstance(client_registry.client, MlflowClient)
    with pytest.raises(RegistryError):
        client_registry.resolve_alias("weekly_quick")
