"""The outcome history read back from Kafka, as training rows.

Outcomes are read from the outcomes topic by time range (``offsets_for_times`` finds the first
offset of ``since`` in each partition), up to the end offsets seen when reading starts. An outcome
without features is joined to its signal's features, read from the signals topic from one join
window before ``since``. Invalid messages, unjoinable outcomes and repeated outcome ids are left
out (the worker has already dead-lettered them) and counted in the log.

The hard examples (:func:`read_hard_example_ids`) are read from the retrain queue by the time they
were recorded, committed records only: the learner publishes them in its checkpoint transactions.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pandas as pd

from models.errors import DataError
from stream.codec import ContractViolation, decode_outcome, decode_signal
from stream.reader import PartitionReader
from stream.settings import Settings

__all__ = ["read_hard_example_ids", "read_outcome_history"]

log = logging.getLogger(__name__)


async def _read_topic(
    reader: PartitionReader, topic: str, since: int | None
) -> list[tuple[int, bytes]]:
    """``(timestamp, value)`` of every record of ``topic`` from ``since`` (None: the beginning)."""
    records = await reader.read(topic, since=since)
    return [(r.timestamp, r.value) for r in records if r.value is not None]


async def _history(settings: Settings, since: int | None, until: int | None) -> pd.DataFrame:
    join_from = None if since is None else since - int(settings.join_window_s * 1000)
    async with PartitionReader(settings) as reader:
        outcomes = await _read_topic(reader, settings.topic("outcomes"), since)
        signals = await _read_topic(reader, settings.topic("signals"), join_from)
    features: dict[str, dict[str, float]] = {}
    for _, raw in signals:
        try:
            req = decode_signal(raw)
        except ContractViolation:
            continue
        features.setdefault(req.signal_id, req.features)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    skipped = {"invalid": 0, "unjoinable": 0, "duplicate": 0, "out_of_range": 0}
    for record_ts, raw in outcomes:
        try:
            out = decode_outcome(raw)
        except ContractViolation:
            skipped["invalid"] += 1
            continue
        ts = out.ts if out.ts is not None else record_ts
        if (since is not None and ts < since) or (until is not None and ts >= until):
            skipped["out_of_range"] += 1
            continue
        if out.outcome_id in seen:
            skipped["duplicate"] += 1
            continue
        feats = out.features if out.features is not None else features.get(out.signal_id)
        if feats is None:
            skipped["unjoinable"] += 1
            continue
        seen.add(out.outcome_id)
        rows.append(
            {
                "outcome_id": out.outcome_id,
                "signal_id": out.signal_id,
                "symbol": out.symbol,
                "model_key": out.model_key,
                "ts": ts,
                "label": int(out.label),
                "realized_rr": out.realized_rr,
                **feats,
            }
        )
    log.info("outcome history: %d rows, left out %s", len(rows), skipped)
    if not rows:
        raise DataError(
            f"no usable outcomes in {settings.topic('outcomes')} for the time range "
            f"({skipped}); produce outcomes first or pass --from-file"
        )
    return pd.DataFrame(rows).sort_values("ts", kind="stable").reset_index(drop=True)


def read_outcome_history(
    settings: Settings, since: int | None = None, until: int | None = None
) -> pd.DataFrame:
    """Training rows from the outcomes topic for ``[since, until)`` (epoch ms; None: open).

    Columns: ``outcome_id``, ``signal_id``, ``symbol``, ``model_key``, ``ts``, ``label``,
    ``realized_rr`` and one column per feature, ordered by ``ts``.
    """
    return asyncio.run(_history(settings, since, until))


def _hard_example_id(raw: bytes) -> str | None:
    """The ``outcome_id`` of a HardExample value, or None when it has no usable one.

    >>> _hard_example_id(b'{"outcome_id": "o-1", "loss": 2.3}'), _hard_example_id(b"[]")
    ('o-1', None)
    """
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    oid = value.get("outcome_id") if isinstance(value, dict) else None
    return oid if isinstance(oid, str) and oid else None


async def _hard_examples(settings: Settings, since: int | None) -> set[str]:
    topic = settings.topic("retrain-queue")
    async with PartitionReader(settings, isolation_level="read_committed") as reader:
        records = await _read_topic(reader, topic, since)
    ids = {oid for _, raw in records if (oid := _hard_example_id(raw)) is not None}
    log.info("%s: %d hard example(s) for %d outcome(s)", topic, len(records), len(ids))
    return ids


def read_hard_example_ids(settings: Settings, since: int | None = None) -> set[str]:
    """The outcome ids of the hard examples recorded in the retrain queue since ``since``.

    ``since`` is epoch ms of the records' Kafka timestamps (None: the whole topic); a missing topic
    holds none. Values without a string ``outcome_id`` are left out.
    """
    return asyncio.run(_hard_examples(settings, since))
