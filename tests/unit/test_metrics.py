"""Worker metrics: Prometheus series and dashboard figures read from a runtime, without Kafka."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace
from typing import NamedTuple

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.state import PartitionState, PartitionStore
from alphapulse.lag import consumer_lag
from alphapulse.metrics import WorkerMetrics
from alphapulse.web import dashboard_html
from models.keyed import KeyedOnline
from stream.runtime import Runtime, Serving
from stream.settings import Settings


def _store() -> PartitionStore:
    store = PartitionStore(Settings(_env_file=None))  # type: ignore[call-arg]
    keyed = KeyedOnline()
    for i in range(40):
        keyed.learn(f"o{i}", "BTC", {"x": float(i % 4)}, i % 4 >= 2, 1.0)
    keyed.learn("e0", "ETH", {"x": 1.0}, True, None)
    store.states[2] = PartitionState(2, 41, keyed)
    return store


def _runtime() -> Runtime:
    rt = Runtime(Settings(_env_file=None), topics={})  # type: ignore[call-arg]
    rt.serving = Serving(scorer=None, versions={"monthly_full": 3, "weekly_quick": 7})
    for i in range(10):
        label = i % 2 == 0
        rt.monitor.update({"online": 0.6 if label else 0.4, "blend": 0.7 if label else 0.2}, label)
    rt.count("predictions", 12)
    rt.count("outcomes.learned", 41)
    rt.count("deadletter.schema", 2)
    rt.count("deadletter.unjoinable")
    rt.count("signals.rerouted", 4)
    rt.count("outcomes.covered_skipped", 5)
    return rt


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_series_is_prefixed_and_carries_the_runtime_figures() -> None:
    rt = _runtime()
    m = WorkerMetrics(rt, _store())
    for v in (0.002, 0.004, 0.030):
        rt.observe("predict_latency_s", v)
    m.lag = {("alphapulse.signals", 0): 7, ("alphapulse.outcomes", 1): 2}
    text = m.render().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    # prometheus_client's process and platform collectors keep their usual names
    own = {n for n in names if not n.startswith(("process_", "python_"))}
    assert own and all(n.startswith("alphapulse_") for n in own), names
    s = _samples(text)
    assert s[("alphapulse_predictions_total", ())] == 12
    assert s[("alphapulse_outcomes_learned_total", ())] == 41
    assert s[("alphapulse_deadletters_total", (("reason", "schema"),))] == 2
    assert s[("alphapulse_deadletters_total", (("reason", "unjoinable"),))] == 1
    assert s[("alphapulse_rerouted_total", (("topic", "signals"),))] == 4
    assert s[("alphapulse_events_total", (("name", "outcomes.covered_skipped"),))] == 5
    assert s[("alphapulse_predict_latency_seconds_count", ())] == 3
    assert s[("alphapulse_predict_latency_seconds_bucket", (("le", "0.005"),))] == 2
    assert s[("alphapulse_component_roc_auc", (("component", "blend"),))] == 1.0
    assert s[("alphapulse_component_window_outcomes", (("component", "online"),))] == 10
    assert s[("alphapulse_model_version", (("role", "weekly_quick"),))] == 7
    assert s[("alphapulse_online_outcomes_learned", (("model_key", "BTC"),))] == 40
    assert ("alphapulse_online_roc_auc", (("model_key", "BTC"),)) in s
    # one outcome of one class: no AUC, so no sample rather than NaN
    assert ("alphapulse_online_roc_auc", (("model_key", "ETH"),)) not in s
    lag = ("alphapulse_consumer_lag", (("partition", "0"), ("topic", "alphapulse.signals")))
    assert s[lag] == 7


def test_own_registry_only() -> None:
    before = {m.name for m in prometheus_client.REGISTRY.collect()}
    rt = _runtime()
    m1, m2 = WorkerMetrics(rt), WorkerMetrics(rt)  # two workers in one process: no clash
    rt.observe("predict_latency_s", 0.01)
    assert m1.registry is not m2.registry
    assert {m.name for m in prometheus_client.REGISTRY.collect()} == before


def test_snapshot_quantiles_and_rates() -> None:
    rt = _runtime()
    m = WorkerMetrics(rt, _store())
    for ms in range(1, 101):
        rt.observe("predict_latency_s", ms / 1000)
    snap = m.snapshot()
    assert snap["latency"] == {"p50_ms": 50.5, "p99_ms": 99.01, "n": 100}
    assert snap["deadletters"] == {"schema": 2, "unjoinable": 1}
    assert snap["versions"] == {"monthly_full": 3, "weekly_quick": 7}
    assert snap["online"]["BTC"]["n_learned"] == 40
    assert snap["online"]["BTC"]["partition"] == 2
    assert WorkerMetrics(rt).snapshot()["online"] == {}  # no learner state: no online models
    assert snap["components"]["blend"]["roc_auc"] == 1.0
    m.sample(now=100.0)
    rt.count("predictions", 20)
    point = m.sample(now=102.0)
    assert point["predictions_per_s"] == 10.0
    assert point["auc"]["blend"] == 1.0
    assert len(m.snapshot(with_history=True)["history"]) == 2


def test_quantiles_cover_the_recent_window_only() -> None:
    rt = _runtime()
    m = WorkerMetrics(rt, latency_window_s=60.0)
    for ms in (900, 800, 1, 2, 3):
        rt.observe("predict_latency_s", ms / 1000)
    times, _ = m.recent["predict_latency_s"]
    times[0] -= 120.0  # the two slow ones were observed two minutes ago
    times[1] -= 120.0
    assert m.quantiles() == {"p50_ms": 2.0, "p99_ms": 2.98, "n": 3}


def test_non_finite_and_non_duration_observations_are_ignored() -> None:
    rt = _runtime()
    m = WorkerMetrics(rt)
    rt.observe("predict_latency_s", float("nan"))
    rt.observe("queue_depth", 1.0)  # not a duration
    assert m.quantiles()["n"] == 0
    assert "queue_depth" not in m.render().decode()


class _TP(NamedTuple):
    topic: str
    partition: int


def test_consumer_lag_from_a_consumer() -> None:
    class Consumer:
        def assignment(self) -> set[_TP]:
            return {_TP("s", 0), _TP("s", 1), _TP("app-__assignor-__leader", 0)}

        def highwater(self, tp: _TP) -> int | None:
            return {0: 10, 1: None}[tp.partition]

        async def position(self, tp: _TP) -> int:
            return 4

    app = SimpleNamespace(consumer=Consumer())
    assert asyncio.run(consumer_lag(app)) == {("s", 0): 6}


def test_dashboard_page_is_self_contained() -> None:
    page = dashboard_html()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "<link" not in page
    for chart in ("chart-rate", "chart-latency", "chart-auc", "chart-lag"):
        assert f'id="{chart}"' in page
    assert "/data" in page


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_sizes_are_rejected(bad: int) -> None:
    with pytest.raises(ValueError, match="above 0"):
        WorkerMetrics(_runtime(), latency_window=bad)
