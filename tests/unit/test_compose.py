"""docker-compose.yml and the Dockerfile, checked without a Docker engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from stream.settings import Settings

ROOT = Path(__file__).parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.add(str(choices[0]) if choices else f"ALPHAPULSE_{name.upper()}")
    return names


def test_services_and_their_wiring() -> None:
    services = _compose()["services"]
    assert {"kafka", "mlflow", "worker"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile"
    env = worker["environment"]
    host, port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert host == "kafka"
    assert (
        f"PLAINTEXT://kafka:{port}"
        in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "--port 5000" in services["mlflow"]["command"]
    assert str(Settings.model_fields["web_port"].default) == env["ALPHAPULSE_WEB_PORT"]


def test_every_variable_in_compose_is_a_setting() -> None:
    known = _env_names()
    env = _compose()["services"]["worker"]["environment"]
    unknown = sorted(set(env) - known)
    assert not unknown, f"compose sets variables no setting reads: {unknown}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for var in re.findall(r"\b(ALPHAPULSE_[A-Z_]+)=", dockerfile):
        assert var in known, var


def test_dockerfile_installs_the_packages_and_runs_the_worker() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("alphapulse", "agents", "stream", "models"):
        assert f"COPY {pkg} ./{pkg}" in text
    assert 'ENTRYPOINT ["alphapulse"]' in text and 'CMD ["worker"]' in text
    assert "EXPOSE 6066" in text


def test_configuration_page_lists_every_setting() -> None:
    names = _env_names()
    assert len(names) == len(Settings.model_fields)
    page = (ROOT / "docs" / "configuration.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| `([A-Z][A-Z0-9_]*)` \|", page, re.MULTILINE)}
    missing = sorted(names - rows)
    assert not missing, f"docs/configuration.md has no table row for: {missing}"


def _exported_metric_names() -> set[str]:
    """Every series name the worker's /metrics can expose (with histogram suffixes)."""
    from prometheus_client.parser import text_string_to_metric_families

    from agents.state import PartitionState, PartitionStore
    from alphapulse.metrics import WorkerMetrics
    from models.keyed import KeyedOnline
    from stream.runtime import Runtime, Serving

    rt = Runtime(Settings(_env_file=None), topics={})
    keyed = KeyedOnline()
    for i in range(10):
        keyed.learn(f"o{i}", "K", {"x": float(i)}, i % 2 == 0, 1.0)
    store = PartitionStore(Settings(_env_file=None))  # type: ignore[call-arg]
    store.states[0] = PartitionState(0, 10, keyed)
    rt.serving = Serving(None, {"monthly_full": 1})
    rt.monitor.update({"online": 0.7, "blend": 0.6}, True)
    rt.monitor.update({"online": 0.3, "blend": 0.4}, False)
    for name in ("predictions", "deadletter.schema", "signals.rerouted", "other"):
        rt.count(name)
    m = WorkerMetrics(rt, store)
    rt.observe("predict_latency_s", 0.01)
    m.lag = {("t", 0): 1}
    return {s.name for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts."""
    out = {}
    for v in service.get("volumes", []):
        host, container = v.split(":")[:2]
        if host.startswith("./"):
            out[container] = host
    return out


def test_prometheus_scrapes_every_worker_replica() -> None:
    services = _compose()["services"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, "the worker must scale"
    prom = services["prometheus"]
    config_path = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config"))
    host_file = ROOT / _mounts(prom)[config_path]
    config = yaml.safe_load(host_file.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "alphapulse-worker"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert str(sd["port"]) == worker["environment"]["ALPHAPULSE_WEB_PORT"]
    assert str(sd["port"]) in [str(p) for p in worker["expose"]]


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    services = _compose()["services"]
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    (ds,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    prom_port = services["prometheus"]["ports"][0].split(":")[-1]
    assert ds["url"] == f"http://prometheus:{prom_port}" and ds["type"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "alphapulse.yml").read_text())[
        "providers"
    ]
    dash_dir = provider["options"]["path"]
    assert dash_dir in mounts, "the dashboard provider reads a folder that is not mounted"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dash_dir + "/")
    dashboard = json.loads((ROOT / mounts[dash_dir] / Path(home).name).read_text())
    exported = _exported_metric_names()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == ds["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == ds["uid"]
            used |= set(re.findall(r"\b(alphapulse_[a-z_]+)", target["expr"]))
    unknown = sorted(used - exported)
    assert not unknown, f"the dashboard queries series the worker does not export: {unknown}"
    for needed in (
        "alphapulse_predictions_total",
        "alphapulse_predict_latency_seconds_bucket",
        "alphapulse_component_roc_auc",
        "alphapulse_model_version",
        "alphapulse_consumer_lag",
        "alphapulse_deadletters_total",
    ):
        assert needed in used, needed


def test_dashboard_html_is_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"dashboard.html"' in text
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY stream ./stream" in dockerfile
