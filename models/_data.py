"""Training data: feature matrix, labels, realised R/R, times and per-row weight multipliers,
checked and in time order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.errors import DataError

__all__ = ["ID_COLUMNS", "TIME_COLUMNS", "TrainingData"]

ID_COLUMNS = ("signal_id", "outcome_id", "symbol", "model_key", "strategy", "side")
TIME_COLUMNS = ("ts",)


def _labels(values: Any, column: str) -> np.ndarray:
    s = pd.Series(values)
    if s.dtype == object:
        s = s.map(
            lambda v: v if not isinstance(v, str) else {"true": 1, "false": 0}.get(v.lower(), v)
        )
    s = pd.to_numeric(s, errors="coerce") if s.dtype != bool else s.astype(np.int64)
    bad = np.flatnonzero(s.isna().to_numpy())
    if bad.size:
        rows = ", ".join(str(i) for i in bad[:5])
        raise DataError(
            f"label column {column!r} has {bad.size} missing or non-numeric value(s) (rows {rows})"
        )
    arr = s.to_numpy(dtype=np.float64)
    other = np.setdiff1d(np.unique(arr), [0.0, 1.0])
    if other.size:
        raise DataError(
            f"label column {column!r} must hold 0/1 or true/false, found {other[:5].tolist()}"
        )
    return arr.astype(np.int64)


def _times(values: Any) -> np.ndarray:
    s = pd.Series(values)
    if s.isna().any():
        raise DataError(f"time column has {int(s.isna().sum())} missing value(s)")
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=np.int64)
    try:
        parsed = pd.to_datetime(s, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"time column holds values that are neither epoch ms nor RFC 3339: {exc}"
        ) from exc
    return (parsed.astype("datetime64[ms, UTC]").astype(np.int64)).to_numpy()


def _multipliers(values: Any, n_rows: int) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"extra_weight must be numeric: {exc}") from exc
    if arr.shape != (n_rows,):
        raise DataError(f"extra_weight needs one value per row ({n_rows}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise DataError("extra_weight values must be finite and greater than 0")
    return arr


@dataclass(frozen=True, eq=False)
class TrainingData:
    """Checked training rows, sorted by time when times are known.

    Examples
    --------
    >>> df = pd.DataFrame({"ts": [2, 1], "a": [0.5, 1.5], "label": [1, 0], "realized_rr": [2, -1]})
    >>> data = TrainingData.from_frame(df)
    >>> data.feature_names, data.y.tolist(), data.ts.tolist()
    (('a',), [0, 1], [1, 2])

    ``extra_weight`` multiplies the trainer's sample weight of each row; it follows the rows
    through the time sort:

    >>> TrainingData.from_frame(df, extra_weight=[2.0, 1.0]).extra_weight.tolist()
    [1.0, 2.0]
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    rr: np.ndarray | None = None
    ts: np.ndarray | None = None
    extra_weight: np.ndarray | None = None

    @classmethod
    def from_arrays(
        cls,
        X: Any,
        y: Any,
        *,
        rr: Any = None,
        ts: Any = None,
        feature_names: Sequence[str] | None = None,
        extra_weight: Any = None,
    ) -> TrainingData:
        """Check and time-sort arrays; ``X`` may be a DataFrame (its columns name the features).

        ``extra_weight`` (one finite value > 0 per row, or None) multiplies the row's sample weight.
        """
        if feature_names is None and hasattr(X, "columns"):
            feature_names = [str(c) for c in X.columns]
        try:
            arr = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"features must be numeric: {exc}") from exc
        if arr.ndim != 2:
            raise DataError(f"features must be a 2-D table, got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise DataError(
                "no training rows: the data is empty (check the file or the time range)"
            )
        names = (
            tuple(feature_names)
            if feature_names is not None
            else tuple(f"f{j}" for j in range(arr.shape[1]))
        )
        if len(names) != arr.shape[1] or len(set(names)) != len(names):
            raise DataError(f"need {arr.shape[1]} distinct feature names, got {list(names)}")
        if arr.shape[1] == 0:
            raise DataError("no feature columns")
        labels = _labels(y, "label")
        if labels.shape[0] != arr.shape[0]:
            raise DataError(f"{arr.shape[0]} feature rows but {labels.shape[0]} labels")
        arr = np.where(np.isfinite(arr), arr, np.nan)
        rr_arr = None if rr is None else np.asarray(rr, dtype=np.float64)
        ts_arr = None if ts is None else _times(ts)
        extra = None if extra_weight is None else _multipliers(extra_weight, arr.shape[0])
        if ts_arr is not None:
            order = np.argsort(ts_arr, kind="stable")
            arr, labels, ts_arr = arr[order], labels[order], ts_arr[order]
            rr_arr = None if rr_arr is None else rr_arr[order]
            extra = None if extra is None else extra[order]
        return cls(arr, labels, names, rr_arr, ts_arr, extra)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        label_column: str = "label",
        rr_column: str = "realized_rr",
        exclude: Iterable[str] = (),
        extra_weight: Any = None,
    ) -> TrainingData:
        """Split a table into features and targets.

        Every column other than the label, the R/R column, the id columns (``signal_id``,
        ``outcome_id``, ``symbol``, ``model_key``, ``strategy``, ``side``), the time column
        (``ts``) and ``exclude`` is a feature. A ``features`` column of dicts is expanded.
        ``extra_weight`` is aligned with the rows of ``frame`` (see :meth:`from_arrays`).
        """
        if "features" in frame.columns:
            expanded = pd.json_normalize(frame["features"].tolist(), max_level=0)
            expanded.index = frame.index
            frame = pd.concat([frame.drop(columns="features"), expanded], axis=1)
        if frame.empty:
            raise DataError(
                "no training rows: the data is empty (check the file or the time range)"
            )
        if label_column not in frame.columns:
            raise DataError(f"no label column {label_column!r}; columns are {list(frame.columns)}")
        skip = {label_column, rr_column, *ID_COLUMNS, *TIME_COLUMNS, *exclude}
        features = [c for c in frame.columns if c not in skip]
        if not features:
            raise DataError(
                "no feature columns left after removing label, R/R, id and time columns"
            )
        table = frame[features]
        bad = [str(c) for c in features if not pd.api.types.is_numeric_dtype(table[c])]
        if bad:
            coerced = table[bad].apply(pd.to_numeric, errors="coerce")
            still = [c for c in bad if coerced[c].isna().sum() > table[c].isna().sum()]
            if still:
                raise DataError(
                    f"feature column(s) {', '.join(still)} are not numeric; drop or encode them"
                )
            table = table.assign(**{c: coerced[c] for c in bad})
        rr = frame[rr_column] if rr_column in frame.columns else None
        ts = frame["ts"] if "ts" in frame.columns else None
        return cls.from_arrays(
            table.astype(np.float64).to_numpy(),
            frame[label_column].to_numpy(),
            rr=None if rr is None else pd.to_numeric(rr, errors="coerce").to_numpy(),
            ts=None if ts is None else ts.to_numpy(),
            feature_names=[str(c) for c in features],
            extra_weight=extra_weight,
        )

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def take(self, idx: np.ndarray) -> TrainingData:
        """The rows at ``idx`` (kept in the given order)."""
        return TrainingData(
            self.X[idx],
            self.y[idx],
            self.feature_names,
            None if self.rr is None else self.rr[idx],
            None if self.ts is None else self.ts[idx],
            None if self.extra_weight is None else self.extra_weight[idx],
        )

    def reorder_features(self, names: Sequence[str]) -> TrainingData:
        """The same rows with columns in ``names`` order (the same set of names is required)."""
        if set(names) != set(self.feature_names):
            return self
        pos = [self.feature_names.index(n) for n in names]
        return TrainingData(
            self.X[:, pos], self.y, tuple(names), self.rr, self.ts, self.extra_weight
        )

    def window(self, days: float | None) -> TrainingData:
        """Rows within ``days`` of the newest row (all rows when ``days`` or times are missing)."""
        if days is None or self.ts is None:
            return self
        keep = np.flatnonzero(self.ts >= self.ts.max() - int(days * 86_400_000))
        return self.take(keep)

    @property
    def time_range(self) -> tuple[int, int] | None:
        """``(first, last)`` time in epoch ms, if known."""
        if self.ts is None:
            return None
        return int(self.ts.min()), int(self.ts.max())
