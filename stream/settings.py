"""The one settings object.

Every environment variable AlphaPulse reads is a field here; docs/configuration.md lists them
all. Fields use the ``ALPHAPULSE_`` prefix, except the two standard variables
``KAFKA_BOOTSTRAP_SERVERS`` and ``MLFLOW_TRACKING_URI``.

>>> s = Settings(_env_file=None)
>>> s.topic("signals")
'alphapulse.signals'
>>> s.web_port
6066
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import ConfigError
from models.online import OnlineConfig
from models.schedule import FORMATS, parse_schedule

__all__ = ["ENV_PREFIX", "TOPIC_ROLES", "Settings", "env_names", "unknown_variables"]

ENV_PREFIX = "ALPHAPULSE_"
TOPIC_ROLES = ("signals", "outcomes", "predictions", "deadletter", "retrain-queue", "model-events")


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("alphapulse"))


def _default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("alphapulse"))


def _counts(text: str) -> tuple[int, ...] | None:
    """Increasing positive whole numbers from ``"300,600"``, or None.

    >>> _counts("300, 600"), _counts("600,300"), _counts("x")
    ((300, 600), None, None)
    """
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isascii() and p.isdigit() for p in parts):
        return None
    counts = tuple(int(p) for p in parts)
    if counts[0] < 1 or any(b <= a for a, b in itertools.pairwise(counts)):
        return None
    return counts


class Settings(BaseSettings):
    """AlphaPulse configuration, read once from the environment and frozen."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", env_file=None
    )

    # Kafka
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "ALPHAPULSE_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="Existing Kafka cluster; when unset the local broker is used (and started).",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    # Local broker launcher
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(default=9092, ge=1, le=65535)
    kafka_version: str = "4.1.1"
    log4j_version: str = "2.24.3"
    broker_heap: str = Field(default="512m", pattern=r"^[0-9]+[kmgKMG]?$")

    # Topics
    topic_prefix: str = "alphapulse."
    topic_signals: str = "signals"
    topic_outcomes: str = "outcomes"
    topic_predictions: str = "predictions"
    topic_deadletter: str = "deadletter"
    topic_retrain_queue: str = "retrain-queue"
    topic_model_events: str = "model-events"
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    outcomes_retention_ms: int = Field(default=-1, description="-1 keeps outcome history forever")
    topic_retention_ms: int = Field(default=7 * 24 * 3600 * 1000)

    # Worker
    app_id: str = "alphapulse"
    web_port: int = Field(default=6066, ge=1, le=65535)
    web_host: str = "127.0.0.1"
    metrics_max_model_keys: int = Field(
        default=100,
        ge=0,
        description="Model keys with their own metrics label; the rest share the label 'other'.",
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per log line (alphapulse._logs)."
    )
    max_message_bytes: int = Field(default=64 * 1024, ge=256)
    max_features: int = Field(default=512, ge=1)
    deadletter_value_max_bytes: int = Field(default=16 * 1024, ge=0)
    join_window_s: float = Field(default=24 * 3600.0, gt=0)
    join_max_entries: int = Field(default=500_000, ge=1)
    join_wait_max: int = Field(default=10_000, ge=0)
    join_wait_s: float = Field(default=600.0, ge=0, allow_inf_nan=False)
    checkpoint_interval_s: float = Field(default=1.0, gt=0)
    commit_interval_s: float = Field(default=2.8, gt=0)
    checkpoint_max_events: int = Field(default=1000, ge=1)
    max_seen_ids: int = Field(default=200_000, ge=1)
    state_signing_key: SecretStr | None = None
    predict_batch_max: int = Field(default=256, ge=1)
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    fetch_min_bytes: int = Field(default=1, ge=1)
    fetch_max_wait_ms: int = Field(default=5, ge=0, le=10_000)
    direct_fetch: bool = True
    hard_example_confidence: float = Field(default=0.8, gt=0.5, le=1.0)
    hard_example_weight: float = Field(
        default=2.0,
        ge=1.0,
        allow_inf_nan=False,
        description="Training weight multiplier of rows that were hard examples; at least 1.",
    )

    # MLflow
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "ALPHAPULSE_MLFLOW_TRACKING_URI"),
        description="MLflow tracking server; default a SQLite store under the data directory.",
    )
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    mlflow_experiment: str = "alphapulse"
    reload_interval_s: float = Field(default=10.0, ge=0, description="0 turns the reloader off")
    online_log_interval_s: float = Field(default=300.0, ge=0)
    retrain_model_type: Literal["xgboost", "lightgbm", "catboost"] = "lightgbm"
    retrain_nightly_incremental_at: str = Field(
        default="02:00", description="UTC schedule of nightly_incremental jobs; see models.schedule"
    )
    retrain_weekly_quick_at: str = "sun 03:00"
    retrain_monthly_full_at: str = "1 04:00"
    retrain_check_interval_s: float = Field(default=30.0, gt=0)
    retrain_on_drift: bool = True
    retrain_drift_min_gap_s: float = Field(
        default=3600.0, ge=0, description="A drift alarm this soon after the last one is ignored."
    )
    retrain_drift_outcomes: str = Field(
        default="300,600,1200,2400",
        description="Outcomes learned after a drift alarm at which weekly_quick retrains on them.",
    )

    # Online model: forgetting and drift detection. Defaults from `python -m bench.quality
    # --sweep` (docs/configuration.md says why, docs/benchmarks.md has the table).
    online_decay: bool = Field(default=True, description="Old outcomes fade (models.online).")
    online_decay_window: int = Field(
        default=2000, description="Outcomes after which an update keeps decay_factor of itself."
    )
    online_decay_factor: float = 0.5
    online_drift_detector: Literal["adwin", "page_hinkley", "none"] = "adwin"
    online_drift_delta: float = Field(default=0.02, description="ADWIN's confidence parameter.")
    online_drift_threshold: float = Field(
        default=20.0, description="Page-Hinkley's detection threshold."
    )

    # Blend and fitted ensemble
    blend_batch_weight: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="The fixed blend's weight of the batch models (shared); online gets the rest.",
    )
    ensemble_method: Literal["weights", "stacking"] = "stacking"
    ensemble_history: int = Field(
        default=5000, ge=100, description="Most recent joined outcomes an ensemble is fitted on."
    )
    ensemble_refit: bool = Field(
        default=True, description="Refit the ensemble after a retraining job promotes a model."
    )

    # Feature and outcome store (PostgreSQL, TimescaleDB when available)
    store_enabled: bool = False
    store_dsn: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN (URI or key=value); a secret, as it may hold a password.",
    )
    store_password: SecretStr | None = Field(
        default=None, description="Password merged into the DSN; overrides one inside it."
    )
    store_pool_size: int = Field(default=4, ge=1, le=100)
    store_batch_size: int = Field(default=1000, ge=1, le=100_000)
    store_flush_interval_ms: int = Field(default=500, ge=1)
    store_retry_max_ms: int = Field(default=10_000, ge=1)

    # Redis log stream (the optional extra alphapulse[redis])
    redis_url: str | None = Field(
        default=None,
        description="Redis of the worker's log stream (redis://, rediss://, unix://); unset: off.",
    )
    redis_stream: str = Field(default="alphapulse:logs", min_length=1)
    redis_maxlen: int = Field(default=100_000, ge=1, description="XADD MAXLEN ~ of the stream.")
    redis_snapshot_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    redis_queue_size: int = Field(
        default=10_000, ge=1, description="Records waiting for Redis; the overflow is dropped."
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "ALPHAPULSE_REDIS_URL must start with redis://, rediss:// or unix://, "
                f"got {v.split('@')[-1]!r}"
            )
        return v

    @field_validator("state_signing_key")
    @classmethod
    def _signing_key_long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().encode()) < 16:
            raise ValueError("ALPHAPULSE_STATE_SIGNING_KEY must be at least 16 bytes")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_clean(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError("ALPHAPULSE_TOPIC_PREFIX must not contain whitespace")
        return v

    @field_validator(
        "retrain_nightly_incremental_at", "retrain_weekly_quick_at", "retrain_monthly_full_at"
    )
    @classmethod
    def _is_a_schedule(cls, v: str, info: ValidationInfo) -> str:
        try:
            parse_schedule(v)
        except ValueError:
            var = f"ALPHAPULSE_{str(info.field_name).upper()}"
            raise ValueError(f"{var} must be {FORMATS} in UTC, got {v!r}") from None
        return " ".join(v.lower().split())

    @field_validator("retrain_drift_outcomes")
    @classmethod
    def _drift_outcomes(cls, v: str) -> str:
        counts = _counts(v)
        if counts is None:
            raise ValueError(
                "ALPHAPULSE_RETRAIN_DRIFT_OUTCOMES must be increasing positive whole numbers "
                f"separated by commas, such as 300,600,1200, got {v!r}"
            )
        return ",".join(map(str, counts))

    @field_validator(
        "online_decay",
        "online_decay_window",
        "online_decay_factor",
        "online_drift_detector",
        "online_drift_delta",
        "online_drift_threshold",
        mode="wrap",
    )
    @classmethod
    def _online_value(
        cls, v: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> object:
        # OnlineConfig holds the one set of bounds; the message names the variable to fix.
        var = f"ALPHAPULSE_{str(info.field_name).upper()}"
        try:
            value = handler(v)
            OnlineConfig(**{str(info.field_name).removeprefix("online_"): value})
        except ValidationError as exc:
            raise ValueError(f"{var}: {exc.errors()[0]['msg']}, got {v!r}") from None
        except ConfigError as exc:
            raise ValueError(f"{var}: {exc}") from None
        return value

    def topic(self, role: str) -> str:
        """Full topic name for a role such as ``"signals"`` or ``"retrain-queue"``."""
        if role not in TOPIC_ROLES:
            raise ValueError(f"unknown topic role {role!r}; expected one of {TOPIC_ROLES}")
        name: str = getattr(self, "topic_" + role.replace("-", "_"))
        return self.topic_prefix + name

    def internal_topic(self, name: str) -> str:
        """Name of one of the worker group's own topics (checkpoints, join store).

        >>> Settings(_env_file=None).internal_topic("checkpoints")
        'alphapulse._alphapulse-checkpoints'
        """
        return f"{self.topic_prefix}_{self.app_id}-{name}"

    @cached_property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI in force (explicit, or the local SQLite store)."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        """Artifact folder used with the local SQLite tracking store."""
        return self.data_dir / "mlflow" / "artifacts"

    def drift_outcomes(self) -> tuple[int, ...]:
        """When drift retraining runs: outcomes learned after the alarm, in increasing order.

        >>> Settings(_env_file=None, retrain_drift_outcomes="100, 400").drift_outcomes()
        (100, 400)
        """
        return _counts(self.retrain_drift_outcomes) or ()

    def online_config(self) -> OnlineConfig:
        """The configuration of the worker's online models: forgetting and drift detection.

        >>> Settings(_env_file=None, online_decay_window=1000).online_config().decay_window
        1000
        """
        return OnlineConfig(
            decay=self.online_decay,
            decay_window=self.online_decay_window,
            decay_factor=self.online_decay_factor,
            drift_detector=self.online_drift_detector,
            drift_delta=self.online_drift_delta,
            drift_threshold=self.online_drift_threshold,
        )

    @property
    def bootstrap_servers(self) -> str:
        """Kafka bootstrap servers in force (explicit, or the local broker)."""
        return self.kafka_bootstrap_servers or f"{self.broker_host}:{self.broker_port}"

    @property
    def uses_local_broker(self) -> bool:
        """True when no external cluster is configured."""
        return not self.kafka_bootstrap_servers


def env_names(field: str) -> tuple[str, ...]:
    """The environment variables that set the setting ``field``, the preferred one first.

    >>> env_names("web_port"), env_names("mlflow_tracking_uri")
    (('ALPHAPULSE_WEB_PORT',), ('MLFLOW_TRACKING_URI', 'ALPHAPULSE_MLFLOW_TRACKING_URI'))
    """
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(name) for name in alias.choices)
    return (ENV_PREFIX + field.upper(),)


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The ``ALPHAPULSE_*`` variables of ``environ`` that set nothing, each with the nearest known.

    Names are compared without regard to case, as the settings read them.

    >>> env = {"ALPHAPULSE_WEBPORT": "1", "ALPHAPULSE_WEB_PORT": "2", "HOME": "/root"}
    >>> unknown_variables(env)
    [('ALPHAPULSE_WEBPORT', 'ALPHAPULSE_WEB_PORT')]
    >>> unknown_variables({"ALPHAPULSE_XYZZY": "1", "alphapulse_log_level": "INFO"})
    [('ALPHAPULSE_XYZZY', None)]
    """
    known = sorted(
        name
        for field in Settings.model_fields
        for name in env_names(field)
        if name.startswith(ENV_PREFIX)
    )
    unknown = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            # Compared without the shared prefix, which would make every name look close.
            suffixes = [k.removeprefix(ENV_PREFIX) for k in known]
            nearest = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), suffixes, n=1)
            unknown.append((name, ENV_PREFIX + nearest[0] if nearest else None))
    return unknown
