"""Capped model_key labels, the model version info series and the process series, without Kafka."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.state import PartitionState, PartitionStore
from alphapulse._labels import LabelCap
from alphapulse.metrics import WorkerMetrics
from models.keyed import KeyedOnline
from stream.runtime import Runtime, Serving
from stream.settings import Settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(m: WorkerMetrics) -> Samples:
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _labels(s: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["model_key"]: v for (n, labels), v in s.items() if n == name}


def _store(keys: dict[str, int], partition: int = 0) -> PartitionStore:
    """A store with one partition whose online models learned ``keys[key]`` outcomes each."""
    store = PartitionStore(Settings(_env_file=None))  # type: ignore[call-arg]
    keyed = KeyedOnline()
    n = 0
    for key, count in keys.items():
        for i in range(count):
            keyed.learn(f"o{n}", key, {"x": float(i % 4)}, i % 4 >= 2, 1.0)
            n += 1
    store.states[partition] = PartitionState(partition, n, keyed)
    return store


def test_the_first_keys_keep_their_labels_and_the_rest_are_summed_under_other() -> None:
    rt = Runtime(Settings(_env_file=None), topics={})  # type: ignore[call-arg]
    keys = {"A": 8, "B": 8, "C": 4, "D": 4, "E": 4}
    m = WorkerMetrics(rt, _store(keys), max_model_keys=2)
    s = _samples(m)
    assert _labels(s, "alphapulse_online_outcomes_learned") == {"A": 8, "B": 8, "other": 12}
    assert _labels(s, "alphapulse_online_models") == {"A": 1, "B": 1, "other": 3}
    assert _labels(s, "alphapulse_online_drift_points").keys() == {"A", "B", "other"}
    # rolling metrics of separate models do not add up: none under other
    assert _labels(s, "alphapulse_online_roc_auc").keys() == {"A", "B"}
    assert m.model_key_label.own == 2

    # A key seen earlier keeps its label when a key that sorts before it arrives later.
    m.store = _store({"0": 4, **keys})
    s = _samples(m)
    assert _labels(s, "alphapulse_online_outcomes_learned") == {"A": 8, "B": 8, "other": 16}
    assert _labels(s, "alphapulse_online_models") == {"A": 1, "B": 1, "other": 4}


def test_the_cap_comes_from_the_settings() -> None:
    settings = Settings(_env_file=None, metrics_max_model_keys=0)  # type: ignore[call-arg]
    m = WorkerMetrics(Runtime(settings, topics={}), _store({"A": 4, "B": 4}))
    assert _labels(_samples(m), "alphapulse_online_models") == {"other": 2}
    default = WorkerMetrics(Runtime(Settings(_env_file=None), topics={}))  # type: ignore[call-arg]
    assert default.model_key_label.limit == 100


def test_a_key_named_other_is_counted_with_the_rest() -> None:
    rt = Runtime(Settings(_env_file=None), topics={})  # type: ignore[call-arg]
    m = WorkerMetrics(rt, _store({"other": 4, "A": 4}), max_model_keys=5)
    s = _samples(m)
    assert _labels(s, "alphapulse_online_models") == {"A": 1, "other": 1}
    assert "other" not in _labels(s, "alphapulse_online_roc_auc")


def test_label_cap_rejects_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        LabelCap(-1)
    with pytest.raises(ValueError):
        Settings(_env_file=None, metrics_max_model_keys=-1)  # type: ignore[call-arg]


def test_model_versions_as_an_info_series() -> None:
    rt = Runtime(Settings(_env_file=None), topics={})  # type: ignore[call-arg]
    m = WorkerMetrics(rt)
    assert not [k for k in _samples(m) if k[0] == "alphapulse_model_version_info"]
    rt.serving = Serving(None, {"weekly_quick": 3, "monthly_full": 1})
    info = {k: v for k, v in _samples(m).items() if k[0] == "alphapulse_model_version_info"}
    assert info == {
        ("alphapulse_model_version_info", (("role", "monthly_full"), ("version", "1"))): 1.0,
        ("alphapulse_model_version_info", (("role", "weekly_quick"), ("version", "3"))): 1.0,
    }
    # a new version replaces the old label set: one series per role
    rt.serving = Serving(None, {"weekly_quick": 4, "monthly_full": 1})
    weekly = [
        dict(labels)["version"]
        for name, labels in _samples(m)
        if name == "alphapulse_model_version_info" and dict(labels)["role"] == "weekly_quick"
    ]
    assert weekly == ["4"]


def test_process_and_platform_series() -> None:
    m = WorkerMetrics(Runtime(Settings(_env_file=None), topics={}))  # type: ignore[call-arg]
    s = _samples(m)
    assert s[("process_resident_memory_bytes", ())] > 1_000_000
    assert ("process_cpu_seconds_total", ()) in s
    assert any(name == "python_info" for name, _ in s)
