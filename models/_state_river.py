"""River's objects to the numbers of :mod:`models._state_learner` and back, bit for bit.

What each object holds was read from River 0.26's source: ``StandardScaler`` (``counts``,
``means``, ``vars``), ``LogisticRegression`` (``_weights``, ``intercept``, the optimizer's
``n_iterations``; its losses and learning-rate schedules hold nothing), ``PageHinkley`` (a
``stats.Mean`` and four sums) and ADWIN, whose window lives in Rust (``rust_src/adwin.rs``):
its ``__getstate__`` gives the struct in bincode (little-endian, fixed-size integers, vectors
with a u64 length), which :func:`adwin_state` reads field by field and :func:`adwin_bytes`
writes back. Capturing checks that writing back gives the very bytes River gave, so a change
of River's layout fails loudly instead of restoring something else.

The trees cannot be written as numbers: their pipeline and detector go in a pickle that
:mod:`models._state_learner` signs, unpickled here only after the signature verified.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

from river import compose, drift, utils

from models._state_codec import StateRefused
from models._state_learner import AdwinState, LinearState, PageHinkleyState
from models.errors import ModelError

__all__ = [
    "adwin_bytes",
    "adwin_state",
    "capture",
    "capture_detector",
    "check_detector",
    "rebuild",
    "rebuild_detector",
]

_HEAD = struct.Struct("<diQddddddiiiiQ")  # AdaptiveWindowing's scalars and the bucket count
_TAIL = struct.Struct("<diQii")  # the pyo3 wrapper's parameters, after the struct


def adwin_state(det: Any) -> AdwinState:
    """The numbers of a River ``drift.ADWIN``."""
    raw = bytes(det._helper.__getstate__())
    try:
        (delta, clock, max_b, mwl, grace, total, var, width, tw, nb, mnb, tick, nd, rows) = (
            _HEAD.unpack_from(raw, 0)
        )
        pos, buckets = _HEAD.size, []
        for _ in range(rows):
            _size, used, n_tot = struct.unpack_from("<QQQ", raw, pos)
            totals = list(struct.unpack_from(f"<{n_tot}d", raw, pos + 24))
            pos += 24 + 8 * n_tot
            (n_var,) = struct.unpack_from("<Q", raw, pos)
            variances = list(struct.unpack_from(f"<{n_var}d", raw, pos + 8))
            pos += 8 + 8 * n_var
            buckets.append((int(used), totals, variances))
    except struct.error as exc:
        raise ModelError(f"River's ADWIN state has an unknown layout ({exc}); pin river") from exc
    state = AdwinState(
        bool(det._drift_detected),
        delta,
        clock,
        max_b,
        int(mwl),
        int(grace),
        total,
        var,
        width,
        tw,
        nb,
        mnb,
        tick,
        nd,
        buckets,
    )
    if adwin_bytes(state) != raw:
        raise ModelError("River's ADWIN state has an unknown layout; pin river or update this")
    return state


def adwin_bytes(s: AdwinState) -> bytes:
    """The bincode ``AdaptiveWindowing.__setstate__`` reads, from the numbers of ``s``."""
    mwl, grace = float(s.min_window_length), float(s.grace_period)
    head = (s.delta, s.clock, s.max_buckets, mwl, grace, s.total, s.variance, s.width)
    parts = [
        _HEAD.pack(*head, s.total_width, s.n_buckets, s.max_n_buckets, s.tick, s.n_detections,
                   len(s.buckets))
    ]  # fmt: skip
    slots = s.max_buckets + 1
    for used, totals, variances in s.buckets:
        parts.append(struct.pack(f"<QQQ{slots}dQ{slots}d", s.max_buckets, used, slots, *totals,
                                 slots, *variances))  # fmt: skip
    parts.append(_TAIL.pack(s.delta, s.clock, s.max_buckets, s.min_window_length, s.grace_period))
    return b"".join(parts)


def check_detector(d: AdwinState | PageHinkleyState | None, fresh: Any) -> None:
    """Refuse detector numbers that do not fit ``fresh`` (the configured detector) or that River
    could not run on (a window whose buckets disagree with its width would panic in Rust)."""
    if not isinstance(d, AdwinState):
        return
    params = (fresh.delta, fresh.clock, fresh.max_buckets, fresh.min_window_length)
    if (d.delta, d.clock, d.max_buckets, d.min_window_length) != params or (
        d.grace_period != fresh.grace_period
    ):
        raise StateRefused("an online-model record refused: ADWIN parameters differ from config")
    for used, totals, variances in d.buckets:
        if len(totals) != d.max_buckets + 1 or len(variances) != d.max_buckets + 1:
            raise StateRefused("an online-model record refused: an ADWIN bucket row's size")
        if any(v != 0.0 for v in (*totals[used:], *variances[used:])):
            raise StateRefused("an online-model record refused: ADWIN's unused slots hold data")
    if len(d.buckets) > 1 and d.buckets[-1][0] == 0:
        raise StateRefused("an online-model record refused: ADWIN's last bucket row is empty")
    if sum(used << i for i, (used, _, _) in enumerate(d.buckets)) != d.width:
        raise StateRefused("an online-model record refused: ADWIN's buckets disagree with width")


def capture(
    pipeline: compose.Pipeline, detector: Any, linear: bool
) -> tuple[LinearState | None, AdwinState | PageHinkleyState | None, bytes | None]:
    """``(linear, detector, blob)`` of a learner's River objects; ``blob`` for the trees only."""
    if not linear:
        blob = pickle.dumps((pipeline, detector), protocol=pickle.HIGHEST_PROTOCOL)
        return None, None, blob
    scaler, clf = pipeline[0], pipeline[-1]
    lin = LinearState(
        counts=list(scaler.counts.items()),
        means=list(scaler.means.items()),
        variances=list(scaler.vars.items()),
        weights=list(clf._weights.items()),
        intercept=float(clf.intercept),
        n_iterations=int(clf.optimizer.n_iterations),
    )
    return lin, capture_detector(detector), None


def capture_detector(detector: Any) -> AdwinState | PageHinkleyState | None:
    """The numbers of a linear learner's drift detector (None for none, or a Page-Hinkley
    detector that has seen nothing)."""
    if isinstance(detector, drift.ADWIN):
        return adwin_state(detector)
    if isinstance(detector, drift.PageHinkley) and detector._x_mean.n > 0:
        m = detector._x_mean
        return PageHinkleyState(
            bool(detector._drift_detected),
            float(m.n),
            float(m._mean),
            float(detector._sum_increase),
            float(detector._sum_decrease),
            float(detector._min_increase),
            float(detector._max_decrease),
        )
    return None


def rebuild(
    pipeline: compose.Pipeline,
    detector: Any,
    lin: LinearState | None,
    det: AdwinState | PageHinkleyState | None,
    blob: bytes | None,
) -> tuple[compose.Pipeline, Any]:
    """Fill a fresh learner's ``pipeline`` and ``detector`` with the numbers (or, for a
    verified signed record, the blob) and return them."""
    if blob is not None:
        restored: tuple[compose.Pipeline, Any] = pickle.loads(blob)  # the HMAC verified
        return restored
    if lin is None:
        raise StateRefused("an online-model record refused: a linear model without its numbers")
    scaler, clf = pipeline[0], pipeline[-1]
    scaler.counts.update(dict(lin.counts))
    scaler.means.update(lin.means)
    scaler.vars.update(lin.variances)
    clf._weights = utils.VectorDict(dict(lin.weights))
    clf.intercept = lin.intercept
    clf.optimizer.n_iterations = lin.n_iterations
    return pipeline, rebuild_detector(detector, det)


def rebuild_detector(detector: Any, det: AdwinState | PageHinkleyState | None) -> Any:
    """Fill a fresh ``detector`` (the configured one) with the numbers ``det`` and return it."""
    check_detector(det, detector)
    if isinstance(det, AdwinState):
        detector._helper.__setstate__(adwin_bytes(det))
        detector._drift_detected = det.drift_detected
    elif isinstance(det, PageHinkleyState):
        detector._x_mean.n, detector._x_mean._mean = det.n, det.mean
        detector._sum_increase, detector._sum_decrease = det.sum_increase, det.sum_decrease
        detector._min_increase, detector._max_decrease = det.min_increase, det.max_decrease
        detector._drift_detected = det.drift_detected
    return detector
