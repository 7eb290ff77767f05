"""Readiness checks, the watched reloader, the broker probe and the healthcheck command, without
Kafka or MLflow."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import yaml
from faust.exceptions import NotReady

from agents.state import PartitionState, PartitionStore
from alphapulse import healthcheck
from alphapulse.health import Health, Probe, WatchedReloader, probe_broker
from models.errors import RegistryError
from models.keyed import KeyedOnline
from stream.runtime import Runtime
from stream.settings import Settings

ROOT = Path(__file__).parents[2]


def _health(
    registry: Probe | None = None, broker_ok_ago: float | None = 1.0, rebalancing: bool = False
) -> tuple[Health, PartitionStore]:
    store = PartitionStore(Settings(_env_file=None))  # type: ignore[call-arg]
    broker = Probe()
    if broker_ok_ago is not None:
        broker.succeeded(now=time.monotonic() - broker_ok_ago)
    app = SimpleNamespace(rebalancing=rebalancing)
    return Health(app, store, broker, 15.0, registry), store


def _load(store: PartitionStore, *partitions: int) -> None:
    for p in partitions:
        store.states[p] = PartitionState(p, 0, KeyedOnline())


def test_ready_once_every_assigned_partition_is_loaded() -> None:
    health, store = _health()
    ready, body = health.readiness()
    assert not ready and body["checks"]["partitions"]["ok"] is False
    health.on_assigned({0, 2})
    _load(store, 0)
    ready, body = health.readiness()
    assert not ready
    assert body["checks"]["partitions"]["loading"] == [2]
    assert body["checks"]["broker"]["ok"] and body["checks"]["registry"]["ok"]
    _load(store, 2)
    ready, body = health.readiness()
    assert ready and body["ready"] is True
    assert body["checks"]["registry"] == {
        "ok": True,
        "needed": False,
        "detail": "the model reloader is off (ALPHAPULSE_RELOAD_INTERVAL_S=0)",
    }
    orjson.dumps(body)  # the page serves it as JSON


def test_not_ready_while_rebalancing() -> None:
    health, _ = _health(rebalancing=True)
    health.on_assigned(set())
    ready, body = health.readiness()
    assert not ready and body["checks"]["partitions"]["detail"] == "rebalancing"


@pytest.mark.parametrize(
    ("broker_ok_ago", "detail"),
    [(None, "no check has finished yet"), (60.0, "no success for")],
)
def test_broker_check_fails_without_a_recent_answer(
    broker_ok_ago: float | None, detail: str
) -> None:
    health, _ = _health(broker_ok_ago=broker_ok_ago)
    health.on_assigned(set())
    ready, body = health.readiness()
    assert not ready and body["checks"]["broker"]["detail"].startswith(detail)


def test_registry_check_follows_the_last_poll() -> None:
    registry = Probe()
    health, _ = _health(registry=registry)
    health.on_assigned(set())
    ready, body = health.readiness()
    assert not ready and body["checks"]["registry"]["needed"] is True
    registry.succeeded()
    assert health.readiness()[0]
    registry.failed(RegistryError("API request to http://user:secret@mlflow:5000/api failed"))
    ready, body = health.readiness()
    detail = body["checks"]["registry"]["detail"]
    assert not ready and detail.startswith("failed: RegistryError")
    assert "secret" not in detail and "//***@mlflow" in detail
    # a poll that finishes long after the previous one is no failure by itself
    registry.succeeded(now=time.monotonic() - 3600)
    assert health.readiness()[0]


def test_liveness_body() -> None:
    health, _ = _health()
    body = health.liveness()
    assert body["status"] == "ok" and body["pid"] > 0 and body["uptime_s"] >= 0


class _NoModels:
    """A registry without models: each alias lookup says so, as MLflow does."""

    def resolve_alias(self, name: str, alias: str) -> str:
        cause = Exception("not found")
        cause.error_code = "RESOURCE_DOES_NOT_EXIST"  # type: ignore[attr-defined]
        raise RegistryError(f"{name}@{alias} not found") from cause


def _unreachable() -> Any:
    raise RegistryError("API request to http://127.0.0.1:9 failed: connection refused")


def test_watched_reloader_records_each_poll() -> None:
    rt = Runtime(Settings(_env_file=None), topics={})  # type: ignore[call-arg]
    ok = WatchedReloader(rt, _NoModels)
    assert asyncio.run(ok.poll_once()) == []
    assert ok.status.check()["ok"]
    down = WatchedReloader(rt, _unreachable)
    with pytest.raises(RegistryError):
        asyncio.run(down.poll_once())
    assert down.status.error is not None and "connection refused" in down.status.error


def _app(producer: Any) -> Any:
    def ensure() -> Any:
        if producer is None:
            raise NotReady("Producer service not yet started")
        return producer

    return SimpleNamespace(producer=SimpleNamespace(_ensure_producer=ensure))


def _producer(result: bool | None) -> Any:
    """A producer whose metadata refresh answers ``result`` (None: never answers)."""

    def force_metadata_update() -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if result is not None:
            fut.set_result(result)
        return fut

    client = SimpleNamespace(force_metadata_update=force_metadata_update, add_topic=lambda t: None)
    return SimpleNamespace(client=client)


@pytest.mark.parametrize(
    ("producer", "ok", "detail"),
    [
        (_producer(True), True, "last success"),
        (_producer(False), False, "failed: no broker answered"),
        (_producer(None), False, "failed: no metadata answer within 0.05 s"),
        (None, False, "failed: the producer has not started"),
    ],
)
def test_broker_probe(producer: Any, ok: bool, detail: str) -> None:
    probe = Probe()
    asyncio.run(probe_broker(_app(producer), probe, timeout_s=0.05))
    check = probe.check()
    assert check["ok"] is ok and check["detail"].startswith(detail)


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A loopback server answering /healthz and /readyz with the status in ``page["status"]``;
    the settings point the healthcheck at it."""
    state: dict[str, Any] = {"status": 200, "paths": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["paths"].append(self.path)
            body = b'{"ready": false}'
            self.send_response(state["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ALPHAPULSE_WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("ALPHAPULSE_WEB_PORT", str(server.server_address[1]))
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_command(page: dict[str, Any]) -> None:
    assert healthcheck.main([]) == 0
    page["status"] = 503
    assert healthcheck.main(["--ready"]) == 1
    assert page["paths"] == ["/healthz", "/readyz"]


def test_healthcheck_command_without_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import free_port

    monkeypatch.setenv("ALPHAPULSE_WEB_PORT", str(free_port()))
    assert healthcheck.main(["--timeout", "1"]) == 1


def test_docker_and_compose_healthchecks_ask_for_liveness() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "alphapulse.healthcheck"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "alphapulse.healthcheck"]
