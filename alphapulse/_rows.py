"""Rows of trading history from JSONL, CSV or the synthetic generator, as wire messages.

A row is a plain dict with the wire contract's field names: ``signal_id``, ``symbol``,
``features`` (a dict, or None), and optionally ``outcome_id``, ``label``, ``realized_rr``,
``model_key``, ``strategy``, ``side``, ``ts`` and ``regime`` (the generator's ground truth; never
sent). In a CSV file, or a JSON line without a ``features`` object, every other numeric column is
a feature.

>>> row = {"signal_id": "s1", "symbol": "BTC", "f0": 0.5, "label": 1, "ts": 7}
>>> r = normalise(row)
>>> r["features"], r["model_key"], r["ts"]
({'f0': 0.5}, 'BTC', 7)
>>> signal_message(r, keep_ts=False)
{'signal_id': 's1', 'symbol': 'BTC', 'features': {'f0': 0.5}}
>>> outcome_message(r, keep_ts=True, with_features=False)
{'outcome_id': 's1', 'signal_id': 's1', 'symbol': 'BTC', 'label': True, 'ts': 7}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from models.errors import DataError
from models.synthetic import TradeGenerator
from stream.codec import parse_ts

__all__ = [
    "RESERVED",
    "generated_rows",
    "normalise",
    "outcome_message",
    "read_rows",
    "signal_message",
    "trade_rows",
]

RESERVED = frozenset(
    {
        "signal_id",
        "outcome_id",
        "symbol",
        "model_key",
        "strategy",
        "side",
        "ts",
        "label",
        "realized_rr",
        "regime",
        "features",
    }
)
_CARRIED = ("model_key", "strategy", "side")


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None if v is None else float(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _label(v: Any) -> bool | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        low = v.strip().lower()
        if low in ("1", "true", "win", "yes"):
            return True
        if low in ("0", "false", "loss", "no"):
            return False
        raise DataError(f"label {v!r} is not true/false or 1/0")
    if v in (0, 1) or isinstance(v, bool):
        return bool(v)
    raise DataError(f"label {v!r} is not true/false or 1/0")


def normalise(raw: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """One row with its features gathered in ``features`` and its fields checked."""
    symbol = raw.get("symbol")
    sid = raw.get("signal_id")
    if not isinstance(symbol, str) or not symbol:
        raise DataError(f"row {index}: 'symbol' is missing")
    if sid is None or (isinstance(sid, float) and math.isnan(sid)):
        raise DataError(f"row {index}: 'signal_id' is missing")
    feats = raw.get("features")
    if isinstance(feats, Mapping):
        features: dict[str, Any] | None = {str(k): _number(v) for k, v in feats.items()}
    else:
        extra = {k: v for k, v in raw.items() if k not in RESERVED}
        features = {str(k): _number(v) for k, v in extra.items()} or None
    row: dict[str, Any] = {"signal_id": str(sid), "symbol": symbol, "features": features}
    mk = raw.get("model_key")
    row["model_key"] = mk if isinstance(mk, str) and mk else symbol
    for name in ("strategy", "side"):
        if isinstance(raw.get(name), str):
            row[name] = raw[name]
    try:
        row["ts"] = parse_ts(raw.get("ts")) if raw.get("ts") == raw.get("ts") else None
    except ValueError as exc:
        raise DataError(f"row {index}: {exc}") from exc
    label = _label(raw.get("label"))
    if label is not None:
        row["label"] = label
        oid = raw.get("outcome_id")
        row["outcome_id"] = str(oid) if oid is not None and oid == oid else row["signal_id"]
        row["realized_rr"] = _number(raw.get("realized_rr"))
    if raw.get("regime") is not None and raw.get("regime") == raw.get("regime"):
        row["regime"] = int(raw["regime"])
    return row


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL (``.jsonl``, ``.ndjson``, ``.json``) or CSV (``.csv``, ``.csv.gz``) file."""
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    name = path.name.lower()
    raws: Iterable[Mapping[str, Any]]
    if name.endswith((".jsonl", ".ndjson", ".json")):
        text = path.read_bytes()
        try:
            if name.endswith(".json") and text.lstrip().startswith(b"["):
                raws = orjson.loads(text)
            else:
                raws = [orjson.loads(line) for line in text.splitlines() if line.strip()]
        except orjson.JSONDecodeError as exc:
            raise DataError(f"{path}: not JSON lines: {exc}") from exc
    elif name.endswith((".csv", ".csv.gz")):
        import pandas as pd

        try:
            frame = pd.read_csv(path)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        raws = frame.astype(object).where(frame.notna(), None).to_dict("records")
    else:
        raise DataError(f"{path}: unknown file type; use .jsonl or .csv")
    return [normalise(r, i) for i, r in enumerate(raws)]


def generated_rows(
    n: int, seed: int = 0, n_features: int = 8, drift_at: tuple[int, ...] = ()
) -> list[dict[str, Any]]:
    """``n`` rows of :class:`models.synthetic.TradeGenerator` (half its features informative)."""
    gen = TradeGenerator(
        n_features=n_features,
        n_informative=max(1, n_features // 2),
        drift_points=drift_at,
        seed=seed,
    )
    return trade_rows(gen, n)


def trade_rows(gen: TradeGenerator, n: int) -> list[dict[str, Any]]:
    """The next ``n`` trades of ``gen`` as rows (model key: the symbol; ``regime`` kept)."""
    return [
        {
            "signal_id": r.signal_id,
            "outcome_id": r.outcome_id,
            "symbol": r.symbol,
            "model_key": r.symbol,
            "ts": r.ts,
            "features": r.features,
            "label": bool(r.label),
            "realized_rr": r.realized_rr,
            "regime": r.regime,
        }
        for r in gen.rows(n)
    ]


def signal_message(row: Mapping[str, Any], keep_ts: bool) -> dict[str, Any]:
    """The SignalRequest of ``row``; ``ts`` only when ``keep_ts`` (else the broker's time)."""
    if row.get("features") is None:
        raise DataError(f"signal {row['signal_id']!r} has no features")
    msg: dict[str, Any] = {
        "signal_id": row["signal_id"],
        "symbol": row["symbol"],
        "features": row["features"],
    }
    if row.get("model_key") not in (None, row["symbol"]):
        msg["model_key"] = row["model_key"]
    msg.update({k: row[k] for k in ("strategy", "side") if k in row})
    if keep_ts and row.get("ts") is not None:
        msg["ts"] = row["ts"]
    return msg


def outcome_message(row: Mapping[str, Any], keep_ts: bool, with_features: bool) -> dict[str, Any]:
    """The TradeOutcome of ``row``; without features the worker joins it to its signal."""
    if "label" not in row:
        raise DataError(f"row of signal {row['signal_id']!r} has no label")
    msg: dict[str, Any] = {
        "outcome_id": row["outcome_id"],
        "signal_id": row["signal_id"],
        "symbol": row["symbol"],
        "label": row["label"],
    }
    if row.get("realized_rr") is not None:
        msg["realized_rr"] = row["realized_rr"]
    if with_features and row.get("features") is not None:
        msg["features"] = row["features"]
    if row.get("model_key") not in (None, row["symbol"]):
        msg["model_key"] = row["model_key"]
    if keep_ts and row.get("ts") is not None:
        msg["ts"] = row["ts"]
    return msg
