"""The wire contract's messages as plain records.

Each record maps one-to-one onto a message of ``CONTRACT.md``. They are slotted dataclasses and
not frozen ones: one is made per message on the hot path, and a frozen one of ten fields takes
about 3 us to make against 0.5 us. Nothing assigns to a record once made. Input records are built by
:mod:`stream.codec` from raw bytes; output records turn into plain JSON dicts with ``to_dict`` (no
framework envelope).

>>> p = Prediction(signal_id="s1", symbol="BTCUSDT", model_key="BTCUSDT", score=0.5,
...                components={"online": 0.5}, weights={"online": 1.0},
...                model_versions={"online": 0}, degraded=False, ts=1, predicted_at=2)
>>> sorted(p.to_dict())[:3]
['components', 'degraded', 'model_key']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "DEADLETTER_REASONS",
    "MODEL_EVENTS",
    "DeadLetter",
    "HardExample",
    "ModelEvent",
    "Prediction",
    "SignalRequest",
    "TradeOutcome",
]

DEADLETTER_REASONS = (
    "invalid_json",
    "schema",
    "bad_feature",
    "too_large",
    "unjoinable",
    "duplicate",
    "internal",
)
MODEL_EVENTS = (
    "loaded",
    "rejected",
    "promoted",
    "drift",
    "checkpoint",
    "retrain_started",
    "retrain_finished",
    "state_refused",  # in the contract for issue 25; nothing publishes it yet
)


@dataclass(slots=True)
class _Output:
    """An output record: ``to_dict`` gives the plain JSON-ready dict of the contract's fields."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, exactly the contract's fields."""
        return asdict(self)


@dataclass(slots=True)
class SignalRequest:
    """A request for a prediction (``alphapulse.signals``).

    ``features`` holds only finite numbers: null and non-finite inputs are dropped as missing.
    ``ts`` is epoch milliseconds, or None when the message carried none.
    """

    signal_id: str
    symbol: str
    features: dict[str, float]
    model_key: str
    strategy: str | None = None
    side: str | None = None
    ts: int | None = None


@dataclass(slots=True)
class TradeOutcome:
    """The result of a trade (``alphapulse.outcomes``). ``features`` is None when absent."""

    outcome_id: str
    signal_id: str
    symbol: str
    label: bool
    model_key: str
    realized_rr: float | None = None
    features: dict[str, float] | None = None
    ts: int | None = None


@dataclass(slots=True)
class Prediction(_Output):
    """The answer to one SignalRequest (``alphapulse.predictions``)."""

    signal_id: str
    symbol: str
    model_key: str
    score: float
    components: dict[str, float]
    weights: dict[str, float]
    model_versions: dict[str, int | str]
    degraded: bool
    ts: int
    predicted_at: int


@dataclass(slots=True)
class DeadLetter(_Output):
    """A message an agent could not use (``alphapulse.deadletter``)."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    ts: int

    def __post_init__(self) -> None:
        if self.reason not in DEADLETTER_REASONS:
            raise ValueError(f"unknown dead-letter reason {self.reason!r}")


@dataclass(slots=True)
class HardExample(_Output):
    """A confidently wrong prediction, for the batch trainer (``alphapulse.retrain-queue``)."""

    outcome_id: str
    signal_id: str
    symbol: str
    model_key: str
    features: dict[str, float]
    label: bool
    realized_rr: float | None
    prediction: float
    loss: float
    ts: int


@dataclass(slots=True)
class ModelEvent(_Output):
    """Something that happened to a model (``alphapulse.model-events``)."""

    event: str
    ts: int
    role: str | None = None
    model_key: str | None = None
    version: int | str | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in MODEL_EVENTS:
            raise ValueError(f"unknown model event {self.event!r}; expected one of {MODEL_EVENTS}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``extra`` is merged in only when not empty."""
        d = asdict(self)
        extra = d.pop("extra")
        if extra:
            d.update({k: v for k, v in extra.items() if k not in d})
        return d
