"""Security settings without a broker: secrets masked, SASL/TLS options passed to every Kafka
client, the local broker's SASL listener, and models loaded only by exact version.
"""

from __future__ import annotations

import ast
import asyncio
import datetime
import logging
import ssl
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.reloader import Reloader
from models.errors import RegistryError
from models.registry import ModelRegistry
from stream.broker import LocalKafka
from stream.errors import BrokerError
from stream.kafka import client_kwargs, faust_broker_kwargs
from stream.runtime import Runtime
from stream.settings import Settings

ROOT = Path(__file__).parents[2]
PACKAGES = ("alphapulse", "agents", "stream", "models")
SECRET = "correct-horse-battery-staple"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_secrets_appear_in_no_representation_or_log_line(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("ALPHAPULSE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_PASSWORD", SECRET)
    clean_env.setenv("ALPHAPULSE_STORE_DSN", f"postgresql://u:{SECRET}@db/x")
    clean_env.setenv("ALPHAPULSE_STORE_PASSWORD", SECRET)
    s = Settings()
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == SECRET
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("alphapulse.test").info("settings: %s / %r", s, s)
    shown = [repr(s), str(s), s.model_dump_json(), str(s.model_dump()), caplog.text]
    for text in shown:
        assert SECRET not in text
    assert "**********" in s.model_dump_json()


def test_sasl_options_pass_to_plain_clients(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    clean_env.setenv("ALPHAPULSE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_USERNAME", "alice")
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_PASSWORD", SECRET)
    kw = client_kwargs(Settings())
    assert kw == {
        "bootstrap_servers": "k1:9093,k2:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": SECRET,
    }


def test_plaintext_clients_get_no_credentials(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_PASSWORD", SECRET)  # set, but not used
    kw = client_kwargs(Settings())
    assert kw["security_protocol"] == "PLAINTEXT"
    assert not {"sasl_plain_password", "ssl_context"} & set(kw)
    assert "broker_credentials" not in faust_broker_kwargs(Settings())


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alphapulse-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_options_pass_to_plain_and_faust_clients(
    protocol: str, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    cert, key = _self_signed(tmp_path)
    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9093")
    clean_env.setenv("ALPHAPULSE_KAFKA_SECURITY_PROTOCOL", protocol)
    clean_env.setenv("ALPHAPULSE_KAFKA_SSL_CAFILE", str(cert))
    clean_env.setenv("ALPHAPULSE_KAFKA_SSL_CERTFILE", str(cert))
    clean_env.setenv("ALPHAPULSE_KAFKA_SSL_KEYFILE", str(key))
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_USERNAME", "alice")
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_PASSWORD", SECRET)
    s = Settings()
    kw = client_kwargs(s)
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "alphapulse-test"),),)]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    # Faust's own clients get the same protocol, mechanism, user, password and TLS context.
    faust_kw = credentials_to_aiokafka_auth(faust_broker_kwargs(s)["broker_credentials"])
    assert faust_kw["security_protocol"] == kw["security_protocol"] == protocol
    assert faust_kw["ssl_context"].get_ca_certs() == ctx.get_ca_certs()
    if protocol == "SASL_SSL":
        for name in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
            assert faust_kw[name] == kw[name]
        assert kw["sasl_plain_password"] == SECRET
    else:
        assert "sasl_plain_password" not in kw


def test_faust_gets_the_same_sasl_options_as_plain_clients(clean_env: pytest.MonkeyPatch) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    clean_env.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    clean_env.setenv("ALPHAPULSE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_USERNAME", "alice")
    clean_env.setenv("ALPHAPULSE_KAFKA_SASL_PASSWORD", SECRET)
    s = Settings()
    fk = faust_broker_kwargs(s)
    assert fk["broker"] == "kafka://k1:9093;kafka://k2:9093"
    auth = credentials_to_aiokafka_auth(fk["broker_credentials"])
    plain = client_kwargs(s)
    for name in ("security_protocol", "sasl_mechanism", "sasl_plain_username"):
        assert auth[name] == plain[name]
    assert auth["sasl_plain_password"] == plain["sasl_plain_password"] == SECRET


_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "create_conn", "App"}
_OPTIONS = {"client_kwargs", "faust_broker_kwargs"}


def _callee(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _unpacks_options(call: ast.Call, scope: ast.AST) -> bool:
    """True when ``call`` gets ``**client_kwargs(...)``, or ``**kw`` built from it in ``scope``."""
    for kw in call.keywords:
        if kw.arg is not None:
            continue
        if isinstance(kw.value, ast.Call) and _callee(kw.value) in _OPTIONS:
            return True
        if isinstance(kw.value, ast.Name):
            for node in ast.walk(scope):
                if (
                    isinstance(node, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == kw.value.id for t in node.targets)
                    and isinstance(node.value, ast.Call)
                    and _callee(node.value) in _OPTIONS
                ):
                    return True
    return False


def test_every_kafka_client_the_project_creates_gets_the_security_options() -> None:
    """Every aiokafka client and Faust app in the project's packages is built from the settings'
    security options, so SASL and TLS reach them all."""
    found, missing = [], []
    for path in sorted(p for pkg in PACKAGES for p in ROOT.glob(f"{pkg}/**/*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and _callee(node) in _CLIENTS:
                    where = f"{path.relative_to(ROOT)}:{node.lineno} {_callee(node)}"
                    found.append(where)
                    if not _unpacks_options(node, fn):
                        missing.append(where)
    assert len(found) >= 5, found  # the scan does see the clients
    assert not missing, f"Kafka clients built without client_kwargs/faust_broker_kwargs: {missing}"


# ----- the local broker's SASL listener ---------------------------------------------------------


def test_local_broker_default_listener_is_unchanged(tmp_path: Path) -> None:
    k = LocalKafka(state_dir=tmp_path, cache_dir=tmp_path)
    assert k.client_listener_protocol == "PLAINTEXT"
    assert k._listener_properties(0, "x") == {}


def test_local_broker_sasl_listener_properties(tmp_path: Path) -> None:
    k = LocalKafka(
        state_dir=tmp_path,
        cache_dir=tmp_path,
        nodes=3,
        base_port=30000,
        client_listener_protocol="SASL_PLAINTEXT",
        scram_users={"alice": "pw"},
    )
    props = k._listener_properties(1, "inter-broker-pw")
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:30002,CONTROLLER://127.0.0.1:30003"
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:30002"
    assert (
        props["listener.security.protocol.map"]
        == "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    )
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-256"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    jaas = props["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"]
    assert 'password="inter-broker-pw";' in jaas and "ScramLoginModule required" in jaas


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_listener_protocol": "SASL_SSL"},
        {"scram_mechanism": "PLAIN"},
        {"scram_users": {"alice": "a,b"}},
        {"scram_users": {"al ice": "pw"}},
        {"scram_users": {"alice": ""}},
        {"scram_users": {"alice": 'p"w'}},
    ],
)
def test_local_broker_refuses_what_it_cannot_configure(
    kwargs: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(BrokerError):
        LocalKafka(state_dir=tmp_path, cache_dir=tmp_path, **kwargs)


# ----- models only by exact version ------------------------------------------------------------


class _Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"MLflow was called ({name}) for a version that is not exact")


NOT_VERSIONS = ["champion", "latest", "1.0", "-1", "", " 1", "1 ", "v1", "1e0"]


@pytest.mark.parametrize("version", NOT_VERSIONS)
def test_load_version_refuses_anything_but_an_exact_version(version: str) -> None:
    with pytest.raises(RegistryError, match="exact version"):
        _guard_only().load_version("monthly_full", version)


class _Model:
    def __init__(self) -> None:
        self.feature_names = ["a", "b"]

    def predict_proba(self, X: Any) -> Any:
        return np.full(len(X), 0.25)


def _guard_only() -> ModelRegistry:
    reg = object.__new__(ModelRegistry)
    reg.client = _Untouchable()  # type: ignore[assignment]
    reg.tracking_uri = "unused"
    return reg


class _FakeRegistry:
    """Answers alias lookups with ``versions`` and records every load."""

    def __init__(self, versions: dict[str, str]) -> None:
        self.versions = versions
        self.resolved: list[tuple[str, str]] = []
        self.loads: list[tuple[str, str]] = []

    def resolve_alias(self, name: str, alias: str) -> str:
        self.resolved.append((name, alias))
        return self.versions[name]

    def load_version(self, name: str, version: str) -> Any:
        self.loads.append((name, version))
        if not version.isdigit():  # the real registry's guard refuses it before touching MLflow
            ModelRegistry.load_version(_guard_only(), name, version)
        return _Model()


class _Topic:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, key: bytes, value: bytes) -> None:
        self.sent.append(value)


def _runtime() -> Runtime:
    return Runtime(Settings(), topics={"model-events": _Topic()})


def test_reloader_resolves_the_alias_then_loads_that_exact_version(
    clean_env: pytest.MonkeyPatch,
) -> None:
    rt = _runtime()
    reg = _FakeRegistry({"monthly_full": "7"})
    reloader = Reloader(rt, lambda: reg, roles=("monthly_full",))
    events = asyncio.run(reloader.poll_once())
    assert reg.resolved == [("monthly_full", "champion")]
    assert reg.loads == [("monthly_full", "7")]
    assert [(e.event, e.version, e.detail) for e in events] == [
        ("loaded", "7", "models:/monthly_full/7")
    ]
    assert rt.serving.versions == {"monthly_full": 7}
    # The same champion again: nothing is loaded twice.
    assert asyncio.run(reloader.poll_once()) == [] and reg.loads == [("monthly_full", "7")]


def test_reloader_never_loads_what_an_alias_resolves_to_unless_it_is_a_version(
    clean_env: pytest.MonkeyPatch,
) -> None:
    rt = _runtime()
    before = rt.serving
    reg = _FakeRegistry({"monthly_full": "champion"})  # a registry answering nonsense
    reloader = Reloader(rt, lambda: reg, roles=("monthly_full",))
    events = asyncio.run(reloader.poll_once())
    assert reg.loads == []  # never asked to load anything but an exact numeric version
    assert rt.serving is before  # nothing swapped in
    assert reloader.models == {}
    assert [(e.event, e.version) for e in events] == [("rejected", "champion")]
    assert "not an exact numeric version" in events[0].detail
    assert len(rt.topics["model-events"].sent) == 1
    asyncio.run(reloader.poll_once())  # rejected once, not retried
    assert len(rt.topics["model-events"].sent) == 1
