"""The outcome history read back from Kafka, as training rows.

Outcomes are read from the outcomes topic by time range (``offsets_for_times`` finds the first
offset of ``since`` in each partition), up to the end offsets seen when reading starts. An outcome
without features is joined to its signal's features, read from the signals topic from one join
window before ``since``. Invalid messages, unjoinable outcomes and repeated outcome ids are left
out (the worker has already dead-lettered them) and counted in the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pandas as pd
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from models.errors import DataError
from stream.codec import ContractViolation, decode_outcome, decode_signal
from stream.kafka import client_kwargs
from stream.settings import Settings

__all__ = ["read_outcome_history"]

log = logging.getLogger(__name__)


async def _partitions(settings: Settings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [p["partition"] for d in described if d.get("error_code") == 0 for p in d["partitions"]]


async def _read_topic(settings: Settings, topic: str, since: int | None) -> list[tuple[int, bytes]]:
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=None, enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[int, bytes]] = []
    try:
        parts = await _partitions(settings, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return out
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if since is None:
            starts_at = await consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, starts_at[tp])
        else:
            starts = await consumer.offsets_for_times({tp: since for tp in tps})
            for tp in tps:
                found = starts.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp] and r.value is not None:
                        out.append((r.timestamp, r.value))
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return out


async def _history(settings: Settings, since: int | None, until: int | None) -> pd.DataFrame:
    outcomes = await _read_topic(settings, settings.topic("outcomes"), since)
    join_from = None if since is None else since - int(settings.join_window_s * 1000)
    signals = await _read_topic(settings, settings.topic("signals"), join_from)
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
