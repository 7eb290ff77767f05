"""docker-compose.yml and the Dockerfile, checked without a Docker engine."""

from __future__ import annotations

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
    for pkg in ("stream", "agents", "models"):
        assert f"COPY {pkg} ./{pkg}" in text
    assert 'ENTRYPOINT ["alphapulse"]' in text and 'CMD ["worker"]' in text
    assert "EXPOSE 6066" in text


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = sorted(n for n in _env_names() if f"`{n}`" not in readme)
    assert not missing, f"README does not document: {missing}"
