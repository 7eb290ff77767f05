"""docker-compose.yml, deploy/, the Dockerfile and the install pins, checked without Docker.

What the images themselves accept cannot all be read here. MLflow's can: the server image runs
the MLflow version that the project pins, so its ``mlflow server`` options are read from the
installed package's click command. Kafka's settings are broker properties whose names the image
derives from the ``KAFKA_*`` variables (not checked beyond their wiring). The flags of
kafka-exporter, Prometheus, Grafana, Redis and PostgreSQL live in binaries inside their images
and cannot be read offline; Prometheus's config and rules are checked by promtool instead.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from stream.settings import Settings, env_names
from tests._containers import KAFKA_IMAGE, KAFKA_READY, bootstrap_server, kafka_container

ROOT = Path(__file__).parents[2]

# kafka-exporter's series, from its README's metric tables (the Go binary is only in its image).
KAFKA_EXPORTER_SERIES = frozenset({
    "kafka_brokers", "kafka_broker_info", "kafka_topic_partitions",
    "kafka_topic_partition_current_offset", "kafka_topic_partition_oldest_offset",
    "kafka_topic_partition_in_sync_replica", "kafka_topic_partition_leader",
    "kafka_topic_partition_leader_is_preferred", "kafka_topic_partition_replicas",
    "kafka_topic_partition_under_replicated_partition", "kafka_consumergroup_current_offset",
    "kafka_consumergroup_current_offset_sum", "kafka_consumergroup_lag",
    "kafka_consumergroup_lag_sum", "kafka_consumergroup_members",
})  # fmt: skip


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _env_names() -> set[str]:
    return {name for field in Settings.model_fields for name in env_names(field)}


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name of a service's named volumes."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        if not source.startswith((".", "/")):
            out[target] = source
    return out


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts."""
    out = {}
    for v in service.get("volumes", []):
        host, container = v.split(":")[:2]
        if host.startswith("./"):
            out[container] = host
    return out


def _flags(command: list[str]) -> dict[str, str]:
    """``--name=value`` arguments as a dict (a bare ``--flag`` maps to "")."""
    out = {}
    for arg in command:
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            out[name] = value
    return out


def test_services_and_their_wiring() -> None:
    services = _services()
    assert {"kafka", "mlflow", "postgres", "redis", "worker", "kafka-exporter"} <= set(services)
    assert services["kafka"]["image"] == KAFKA_IMAGE, "tests and compose run one Kafka image"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile"
    env = worker["environment"]
    host, port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert host == "kafka"
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://kafka:{port}" in advertised
    mlflow = urlsplit(env["MLFLOW_TRACKING_URI"])
    assert mlflow.hostname == "mlflow"
    assert _flags(services["mlflow"]["command"])["--port"] == str(mlflow.port)
    assert str(Settings.model_fields["web_port"].default) == env["ALPHAPULSE_WEB_PORT"]


def test_every_image_is_pinned_or_built() -> None:
    for name, service in _services().items():
        if "build" in service:
            continue
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image!r} is not pinned"


def test_every_service_has_a_healthcheck() -> None:
    for name, service in _services().items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), name


def test_dependencies_wait_until_healthy() -> None:
    services = _services()
    for name, service in services.items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on as a list waits only for a start"
        for dep, how in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert "healthcheck" in services[dep], dep
            assert how == {"condition": "service_healthy"}, f"{name} -> {dep}: {how}"
    worker_deps = set(services["worker"]["depends_on"])
    assert worker_deps == {"kafka", "mlflow", "postgres", "redis"}
    assert "worker" not in services["prometheus"].get("depends_on", {}), (
        "Prometheus must run, and alert, while no worker is up"
    )


def test_worker_health_is_its_healthz() -> None:
    worker = _services()["worker"]
    assert worker["healthcheck"]["test"] == ["CMD", "python", "-m", "alphapulse.healthcheck"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "alphapulse.healthcheck"]' in dockerfile


def test_kafka_keeps_its_log_on_a_volume() -> None:
    compose = _compose()
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    volumes = _named_volumes(kafka)
    assert env["KAFKA_LOG_DIRS"] in volumes, "the outcome history would die with the container"
    assert volumes[env["KAFKA_LOG_DIRS"]] in compose["volumes"]
    assert env["CLUSTER_ID"], "the apache/kafka image in KRaft mode needs a CLUSTER_ID"
    listeners = {spec.split("://")[0] for spec in env["KAFKA_LISTENERS"].split(",")}
    mapped = {pair.split(":")[0] for pair in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")}
    assert listeners <= mapped
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    controller_port = next(
        s.rsplit(":", 1)[1] for s in env["KAFKA_LISTENERS"].split(",") if s.startswith("CONTROLLER")
    )
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"1@kafka:{controller_port}"


def test_mlflow_keeps_store_and_artifacts_on_volumes() -> None:
    compose = _compose()
    mlflow = compose["services"]["mlflow"]
    flags = _flags(mlflow["command"])
    volumes = _named_volumes(mlflow)
    db = flags["--backend-store-uri"].removeprefix("sqlite:///")
    artifacts = flags["--artifacts-destination"]
    for path in (db, artifacts):
        assert any(path.startswith(v + "/") or path == v for v in volumes), path
    assert set(volumes.values()) <= set(compose["volumes"])
    assert "--serve-artifacts" in flags


def test_mlflow_image_is_the_client_version() -> None:
    installed = importlib.metadata.version("mlflow")
    image = _services()["mlflow"]["image"]
    assert image == f"ghcr.io/mlflow/mlflow:v{installed}"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"mlflow=={installed}" in deps, "pyproject pins the client to the server's version"


def test_mlflow_server_flags_exist_in_that_version() -> None:
    from mlflow.cli import cli  # mlflow takes seconds to import: this test alone needs it

    server = cli.commands["server"]
    known = {opt for p in server.params for opt in (*p.opts, *p.secondary_opts)}
    command = _services()["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    unknown = sorted(set(_flags(command)) - known)
    assert not unknown, f"mlflow {importlib.metadata.version('mlflow')} has no {unknown}"
    # Parsing them as the server would also checks their values (a port is a number, ...).
    ctx = server.make_context("server", list(command[2:]))
    assert ctx.params["host"] == "0.0.0.0"
    hosts = ctx.params["allowed_hosts"].split(",")
    assert "mlflow:5000" in hosts, "the workers' Host header must be allowed"


def test_every_worker_variable_is_a_setting() -> None:
    known = _env_names()
    env = _services()["worker"]["environment"]
    unknown = sorted(set(env) - known)
    assert not unknown, f"compose sets variables no setting reads: {unknown}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for var in re.findall(r"\b(ALPHAPULSE_[A-Z_]+)=", dockerfile):
        assert var in known, var


def test_worker_writes_the_store_and_the_log_stream() -> None:
    services = _services()
    env = services["worker"]["environment"]
    pg = services["postgres"]
    assert pg["image"].startswith("timescale/timescaledb:") and pg["image"].endswith("-pg16")
    assert env["ALPHAPULSE_STORE_ENABLED"] == "true"
    dsn = urlsplit(env["ALPHAPULSE_STORE_DSN"])
    assert (dsn.hostname, dsn.port) == ("postgres", 5432)
    assert dsn.username == pg["environment"]["POSTGRES_USER"]
    assert dsn.path == "/" + pg["environment"]["POSTGRES_DB"]
    assert env["ALPHAPULSE_STORE_PASSWORD"] == pg["environment"]["POSTGRES_PASSWORD"]
    assert "/var/lib/postgresql/data" in _named_volumes(pg)
    redis = urlsplit(env["ALPHAPULSE_REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    assert services["redis"]["image"].startswith("redis:")


def test_dockerfile_installs_the_wheel_from_the_constraints() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("alphapulse", "agents", "stream", "models"):
        assert f"COPY {pkg} ./{pkg}" in text
    assert "COPY bench" not in text
    assert "pip wheel" in text and "--no-deps" in text
    install = next(line for line in text.splitlines() if "pip install" in line)
    assert "-c /tmp/constraints.txt" in install and ".whl)[store,redis]" in install
    assert "COPY constraints.txt /tmp/constraints.txt" in text
    assert 'ENTRYPOINT ["alphapulse"]' in text and 'CMD ["worker"]' in text
    assert "EXPOSE 6066" in text


def test_constraints_pin_every_package_exactly() -> None:
    lines = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pins = dict(line.split("==", 1) for line in lines)
    assert len(pins) == len(lines), [line for line in lines if "==" not in line]
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pins.values())
    names = {re.sub(r"[-_.]+", "-", n).lower() for n in pins}
    assert "alphapulse" not in names
    assert pins["mlflow"] == importlib.metadata.version("mlflow")
    for needed in ("psycopg", "psycopg-pool", "redis", "pyarrow", "jsonschema", "pytest"):
        assert needed in names, needed


def test_extras_keep_the_base_install_slim() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[\s\[<>=!;~]", r, maxsplit=1)[0].lower() for r in reqs}

    base = names(project["dependencies"])
    extras = project["optional-dependencies"]
    for test_only in ("psycopg", "pyarrow", "jsonschema", "redis", "rfc3339-validator"):
        assert test_only not in base, test_only
    for test_only in ("testcontainers", "hypothesis", "pytest", "pytest-asyncio"):
        assert test_only not in base, test_only
    assert names(extras["store"]) == {"psycopg"}
    assert "pool" in extras["store"][0] and "binary" in extras["store"][0]
    assert names(extras["redis"]) == {"redis"}
    assert names(extras["parquet"]) == {"pyarrow"}
    assert "alphapulse[store,redis,parquet]" in extras["dev"]
    assert {"jsonschema", "testcontainers", "hypothesis", "pytest"} <= names(extras["dev"])
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    assert "bench" not in tool["setuptools"]["packages"]


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
    for name in ("predictions", "deadletter.schema", "signals.rerouted", "drifts", "other"):
        rt.count(name)
    m = WorkerMetrics(rt, store)
    rt.observe("predict_latency_s", 0.01)
    m.lag = {("t", 0): 1}
    return {s.name for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}


def _prometheus_config() -> tuple[dict[str, Any], Path]:
    prom = _services()["prometheus"]
    config_path = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config"))
    host_file = ROOT / _mounts(prom)[config_path]
    config: dict[str, Any] = yaml.safe_load(host_file.read_text())
    return config, host_file


def test_prometheus_scrapes_every_worker_replica() -> None:
    services = _services()
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, "the worker must scale"
    config, _ = _prometheus_config()
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "alphapulse-worker"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert str(sd["port"]) == worker["environment"]["ALPHAPULSE_WEB_PORT"]
    assert str(sd["port"]) in [str(p) for p in worker["expose"]]


def test_prometheus_scrapes_kafka_exporter_and_loads_the_alerts() -> None:
    services = _services()
    exporter = services["kafka-exporter"]
    assert exporter["image"].startswith("danielqsj/kafka-exporter:v")
    server = _flags(exporter["command"])["--kafka.server"]
    assert f"PLAINTEXT://{server}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    config, host_file = _prometheus_config()
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "kafka-exporter"]
    (target,) = job["static_configs"][0]["targets"]
    assert target == "kafka-exporter:9308" and "9308" in [str(p) for p in exporter["expose"]]
    prom = services["prometheus"]
    mounts = _mounts(prom)
    config_dir = Path(next(c for c, h in mounts.items() if ROOT / h == host_file)).parent
    for rules in config["rule_files"]:
        container_path = str(config_dir / rules)
        assert container_path in mounts, f"{rules} is not mounted beside prometheus.yml"
        assert (ROOT / mounts[container_path]) == host_file.parent / rules


def _alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_alerts_query_series_that_exist() -> None:
    rules = _alert_rules()
    names = {r["alert"] for r in rules}
    assert {
        "AlphaPulseNoWorkerUp",
        "AlphaPulseConsumerLagGrowing",
        "AlphaPulseDeadLetters",
        "AlphaPulseDrift",
    } <= names
    exported = _exported_metric_names()
    for rule in rules:
        expr = rule["expr"]
        ours = set(re.findall(r"\b(alphapulse_[a-z_]+)\b", expr))
        assert ours <= exported, f"{rule['alert']}: the worker exports no {ours - exported}"
        theirs = set(re.findall(r"\b(kafka_[a-z_]+)\b", expr))
        assert theirs <= KAFKA_EXPORTER_SERIES, f"{rule['alert']}: {theirs}"
        jobs = set(re.findall(r'job="([^"]+)"', expr))
        config, _ = _prometheus_config()
        assert jobs <= {j["job_name"] for j in config["scrape_configs"]}, jobs
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    lag = next(r for r in rules if r["alert"] == "AlphaPulseConsumerLagGrowing")["expr"]
    assert "kafka_consumergroup_lag" in lag, "lag seen from outside the worker"
    app_id = str(Settings.model_fields["app_id"].default)
    assert f'consumergroup=~"{app_id}.*"' in lag


def _promtool() -> str:
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which("promtool") or shutil.which("promtool", path=venv_bin)
    assert found, "promtool not found: `make install` puts it in .venv/bin (Debian's prometheus)"
    return found


def test_promtool_accepts_the_config_and_rules() -> None:
    res = subprocess.run(
        [_promtool(), "check", "config", "deploy/prometheus.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "alerts.yml" in res.stdout + res.stderr, "the rules file was not read"


def test_alerts_fire_when_they_should() -> None:
    res = subprocess.run(
        [_promtool(), "test", "rules", "deploy/alerts_test.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    tested = set(re.findall(r"alertname: (\w+)", (ROOT / "deploy" / "alerts_test.yml").read_text()))
    assert tested == {r["alert"] for r in _alert_rules()}, "every alert has a promtool test"


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    services = _services()
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


def test_configuration_page_lists_every_setting() -> None:
    names = {env_names(field)[0] for field in Settings.model_fields}
    assert len(names) == len(Settings.model_fields)
    page = (ROOT / "docs" / "configuration.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\| `([A-Z][A-Z0-9_]*)` \|", page, re.MULTILINE)}
    missing = sorted(names - rows)
    assert not missing, f"docs/configuration.md has no table row for: {missing}"


# The testcontainers path of tests/conftest.py, configured without starting anything: an explicit
# Docker API version keeps the client from asking an engine for one.
@pytest.fixture
def kafka_tc() -> Any:
    return kafka_container(29092, host="docker-host.example", docker_client_kw={"version": "1.44"})


def test_testcontainers_kafka_is_a_kraft_apache_kafka(kafka_tc: Any) -> None:
    env = kafka_tc.env
    assert kafka_tc.image == KAFKA_IMAGE and kafka_tc.image.startswith("apache/kafka:")
    assert kafka_tc._command is None, "the image's own start script configures and runs the broker"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "KRaft formats with a cluster id"
    assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in env)
    assert all(isinstance(v, str) for v in env.values()), "docker wants strings"
    wait = kafka_tc._wait_strategy
    assert wait is not None and wait._message.pattern == KAFKA_READY


def test_testcontainers_kafka_advertises_the_bound_port(kafka_tc: Any) -> None:
    env = kafka_tc.env
    listeners = dict(s.split("://") for s in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(s.split("://") for s in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(s.split(":") for s in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols) and set(advertised) <= set(listeners)
    assert "CONTROLLER" not in advertised, "a controller listener is never advertised"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    container_port = listeners["PLAINTEXT"].rsplit(":", 1)[1]
    assert kafka_tc.ports == {container_port: 29092}, "the advertised port is the bound one"
    assert advertised["PLAINTEXT"] == "docker-host.example:29092"
    assert bootstrap_server(kafka_tc) == "docker-host.example:29092"
    voter_port = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].rsplit(":", 1)[1]
    assert listeners["CONTROLLER"].endswith(f":{voter_port}")
