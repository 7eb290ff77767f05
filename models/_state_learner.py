"""One online learner's state as plain numbers: the record layout, its writer and its reader.

The layout (big-endian; docs/state-format.md has the table) after the header
``ALPHAPULSE-ONLINE\\n`` + u16 version 2:

- u64 ``n_learned`` (at a fixed offset, so it reads without decoding the rest), u8 kind
  (0 plain numbers, 1 signed blob), the configuration, the drift flag and points, the rolling
  metrics' window of (label, prediction);
- kind 0: the scaler's counts, means and variances, the weights, the intercept, the optimizer's
  step count, then the drift detector's own numbers (ADWIN's buckets or Page-Hinkley's sums);
- kind 1: the pipeline and detector as a pickled blob, and an HMAC-SHA256 of the whole record
  under the signing key, verified before anything past the kind byte is read.

This module only reads and writes numbers; :mod:`models._state_river` turns them into River
objects and back. Version 1 (a pickle) is refused.
"""

from __future__ import annotations

import math
import secrets
import struct
from dataclasses import dataclass
from typing import Any

from models._snapshot import Header
from models._state_codec import MAC_SIZE, Reader, StateRefused, Writer, mac, verify_mac

__all__ = [
    "HEADER",
    "NO_KEY",
    "PROCESS_KEY",
    "VERSION",
    "AdwinState",
    "LearnerState",
    "LinearState",
    "PageHinkleyState",
    "decode_learner",
    "encode_learner",
    "is_signed",
    "n_learned_of",
    "read_config",
    "write_config",
]

VERSION = 2  # 2: plain numbers (or a signed blob). 1: a pickle, never read again
HEADER = Header(b"ALPHAPULSE-ONLINE\n", ">H", "an online-learner snapshot")
# The format's own codes: an index here is written, so the order never changes.
_CLASSIFIERS = ("logistic_regression", "perceptron", "hoeffding_tree", "hoeffding_adaptive_tree")
_DETECTORS = ("adwin", "page_hinkley", "none")
_PLAIN, _SIGNED = 0, 1
_N_LEARNED_AT = HEADER.size
PROCESS_KEY = secrets.token_bytes(32)
"""Signs the trees' snapshots made without a signing key: they restore in this process only."""
NO_KEY = (
    "a signed online-model record needs the signing key: set ALPHAPULSE_STATE_SIGNING_KEY "
    "(the same on every worker) to checkpoint or restore hoeffding_tree models"
)


@dataclass
class LinearState:
    """The scaler's statistics and the linear model's parameters, each in its dict's order."""

    counts: list[tuple[str, int]]
    means: list[tuple[str, float]]
    variances: list[tuple[str, float]]
    weights: list[tuple[str, float]]
    intercept: float
    n_iterations: int


@dataclass
class AdwinState:
    """What River's ``AdaptiveWindowing`` holds (river ``rust_src/adwin.rs``), and the Python
    wrapper's drift flag. ``buckets`` holds each bucket row's used length, totals and variances
    (``max_buckets + 1`` slots each)."""

    drift_detected: bool
    delta: float
    clock: int
    max_buckets: int
    min_window_length: int
    grace_period: int
    total: float
    variance: float
    width: float
    total_width: float
    n_buckets: int
    max_n_buckets: int
    tick: int
    n_detections: int
    buckets: list[tuple[int, list[float], list[float]]]


@dataclass
class PageHinkleyState:
    """River's ``PageHinkley`` after at least one update: its running mean and its four sums."""

    drift_detected: bool
    n: float
    mean: float
    sum_increase: float
    sum_decrease: float
    min_increase: float
    max_decrease: float


@dataclass
class LearnerState:
    """Everything an :class:`models.online.OnlineLearner` holds, as numbers."""

    config: dict[str, Any]
    n_learned: int
    drift_detected: bool
    drift_points: list[int]
    recent: list[tuple[bool, float]]
    linear: LinearState | None = None
    detector: AdwinState | PageHinkleyState | None = None
    """None for no detector, or a Page-Hinkley detector that never updated (rebuilt fresh)."""
    blob: bytes | None = None
    """Kind 1 only: the pickled pipeline and detector, read only once the signature verified."""


_CONFIG = struct.Struct(">BddBIdBddIq")  # an OnlineConfig's fields, in their order


def write_config(w: Writer, c: dict[str, Any]) -> None:
    """An :class:`models.online.OnlineConfig`'s fields (as a dict)."""
    w.raw(
        _CONFIG.pack(
            _CLASSIFIERS.index(c["classifier"]),
            c["learning_rate"],
            c["l2"],
            bool(c["decay"]),
            c["decay_window"],
            c["decay_factor"],
            _DETECTORS.index(c["drift_detector"]),
            c["drift_delta"],
            c["drift_threshold"],
            c["metrics_window"],
            c["seed"],
        )
    )


def read_config(r: Reader) -> dict[str, Any]:
    """The configuration :func:`write_config` wrote, as :class:`models.online.OnlineConfig`'s
    fields (which the caller checks by making one)."""
    clf, lr, l2, decay, window, factor, det, delta, threshold, metrics, seed = r.fields(_CONFIG)
    if clf >= len(_CLASSIFIERS) or det >= len(_DETECTORS) or decay > 1:
        raise r.refuse(f"unknown classifier {clf}, drift detector {det} or decay flag {decay}")
    if not all(map(math.isfinite, (lr, l2, factor, delta, threshold))):
        raise r.refuse("a configuration number is not finite")
    return {
        "classifier": _CLASSIFIERS[clf],
        "learning_rate": lr,
        "l2": l2,
        "decay": decay == 1,
        "decay_window": window,
        "decay_factor": factor,
        "drift_detector": _DETECTORS[det],
        "drift_delta": delta,
        "drift_threshold": threshold,
        "metrics_window": metrics,
        "seed": seed,
    }


def _write_map(w: Writer, m: list[tuple[str, Any]], code: str, names: list[str]) -> None:
    """A map as a flag (1: its keys are the first names of the table, in order; the usual case),
    the count, the name indices unless flagged, then the values (``code``)."""
    keys = [k for k, _ in m]
    same = keys == names[: len(keys)]
    w.u8(same)
    w.u32(len(m))
    if not same:
        index = {name: i for i, name in enumerate(names)}
        w.many("I", [index[k] for k in keys])
    w.many(code, [v for _, v in m])


def _read_map(r: Reader, names: list[str], code: str) -> list[tuple[str, Any]]:
    """What :func:`_write_map` wrote, in the map's order."""
    same, n = r.flag(), r.count(8)
    if same:
        if n > len(names):
            raise r.refuse("a map names more features than the table holds")
        return list(zip(names, r.many(code, n), strict=False))
    idx, values = r.many("I", n), r.many(code, n)
    if len(set(idx)) != n or (idx and max(idx) >= len(names)):
        raise r.refuse("a map names a feature twice or one not in the table")
    return list(zip(map(names.__getitem__, idx), values, strict=True))


def encode_learner(s: LearnerState, signing_key: bytes | None = None) -> bytes:
    """The record of ``s``; a kind-1 state (``blob``) needs ``signing_key``."""
    if s.blob is not None and signing_key is None:
        raise StateRefused(NO_KEY)
    w = Writer()
    w.raw(HEADER.pack(b"", VERSION))
    w.u64(s.n_learned)
    w.u8(_PLAIN if s.blob is None else _SIGNED)
    write_config(w, s.config)
    w.u8(s.drift_detected)
    w.u32(len(s.drift_points))
    w.many("Q", s.drift_points)
    w.u32(len(s.recent))
    w.many("B", [label for label, _ in s.recent])
    w.many("d", [p for _, p in s.recent])
    if s.blob is not None:
        w.blob(s.blob)
        body = w.bytes()
        assert signing_key is not None
        return body + mac(signing_key, body)
    if s.linear is not None:
        lin = s.linear
        maps = ((lin.counts, "Q"), (lin.means, "d"), (lin.variances, "d"), (lin.weights, "d"))
        names = list(dict.fromkeys(k for m, _ in maps for k, _ in m))
        w.texts(names)
        for m, code in maps:
            _write_map(w, m, code, names)
        w.f64(lin.intercept)
        w.u64(lin.n_iterations)
    _detector(w, s.detector)
    return w.bytes()


def _detector(w: Writer, d: AdwinState | PageHinkleyState | None) -> None:
    if d is None:
        w.u8(0)
    elif isinstance(d, AdwinState):
        w.u8(1)
        w.u8(d.drift_detected)
        for v in (d.delta, d.min_window_length, d.grace_period, d.total, d.variance, d.width):
            w.f64(v)
        w.f64(d.total_width)
        for i in (d.clock, d.max_buckets, d.n_buckets, d.max_n_buckets, d.tick, d.n_detections):
            w.i64(i)
        w.u32(len(d.buckets))
        for used, totals, variances in d.buckets:
            w.u32(used)
            w.many("d", [*totals, *variances])
    else:
        w.u8(2)
        w.u8(d.drift_detected)
        for v in (d.n, d.mean, d.sum_increase, d.sum_decrease, d.min_increase, d.max_decrease):
            w.f64(v)


_ADWIN = struct.Struct(">B7d6q")  # the flag, the doubles, the integers, as _detector writes them


def _read_adwin(r: Reader) -> AdwinState:
    flag, *values = r.fields(_ADWIN)
    if flag > 1 or not all(map(math.isfinite, values[:7])):
        raise r.refuse("ADWIN's flag is not 0/1 or a number of it is not finite")
    delta, mwl, grace, total, variance, width, total_width = values[:7]
    clock, max_buckets, n_buckets, max_n, tick, n_det = values[7:]
    if not (0 < delta < 1 and 1 <= clock < 2**31 and 1 <= max_buckets <= 64):
        raise r.refuse("ADWIN parameters out of range")
    if mwl != int(mwl) or grace != int(grace) or not (0 <= mwl < 2**31 and 0 <= grace < 2**31):
        raise r.refuse("ADWIN window parameters out of range")
    if min(n_buckets, max_n, tick, n_det) < 0 or max(n_buckets, max_n, tick, n_det) >= 2**31:
        raise r.refuse("ADWIN counters out of range")
    if width < 0 or variance < 0:
        raise r.refuse("ADWIN width or variance negative")
    rows = r.count(4 + 16 * (max_buckets + 1))
    if not 1 <= rows <= 63:
        raise r.refuse(f"ADWIN must hold 1 to 63 bucket rows, got {rows}")
    buckets = []
    for _ in range(rows):
        used = r.u32()
        if used > max_buckets:  # a row holds at most max_buckets entries between updates
            raise r.refuse(f"an ADWIN bucket row uses {used} of {max_buckets} entries")
        values = list(r.many("d", 2 * (max_buckets + 1)))
        buckets.append((used, values[: max_buckets + 1], values[max_buckets + 1 :]))
    return AdwinState(
        flag == 1,
        delta,
        clock,
        max_buckets,
        int(mwl),
        int(grace),
        total,
        variance,
        width,
        total_width,
        n_buckets,
        max_n,
        tick,
        n_det,
        buckets,
    )


def _read_detector(r: Reader) -> AdwinState | PageHinkleyState | None:
    kind = r.u8()
    if kind == 0:
        return None
    if kind == 1:
        return _read_adwin(r)
    if kind == 2:
        flag = r.flag()
        n, mean, inc, dec, min_inc, max_dec = (r.f64() for _ in range(6))
        if not (n >= 1 and 0.0 <= mean <= 1.0):
            raise r.refuse("Page-Hinkley state out of range")
        return PageHinkleyState(flag, n, mean, inc, dec, min_inc, max_dec)
    raise r.refuse(f"unknown drift detector state {kind}")


def is_signed(data: bytes) -> bool:
    """Whether a record (checked before) is a signed blob rather than plain numbers."""
    return data[_N_LEARNED_AT + 8] == _SIGNED


def n_learned_of(data: bytes) -> int:
    """``n_learned`` of a record, read from its fixed offset (the record was checked before)."""
    value: int = int.from_bytes(data[_N_LEARNED_AT : _N_LEARNED_AT + 8], "big")
    return value


def decode_learner(data: bytes, signing_key: bytes | None = None) -> LearnerState:
    """Read and check a record of :func:`encode_learner`; :class:`StateRefused` otherwise.

    A signed record is read only when its HMAC verifies under ``signing_key``.
    """
    HEADER.unpack_versioned(bytes(data[: HEADER.size]), (VERSION,))
    r = Reader(data, "an online-model record", HEADER.size)
    n_learned, kind = r.u64(), r.u8()
    if kind == _SIGNED:
        if signing_key is None:
            raise StateRefused(f"an online-model record refused: {NO_KEY}")
        if r.left() < MAC_SIZE or not verify_mac(
            signing_key, bytes(data[:-MAC_SIZE]), bytes(data[-MAC_SIZE:])
        ):
            raise StateRefused(
                "an online-model record refused: its signature is missing or does not match "
                "ALPHAPULSE_STATE_SIGNING_KEY (written by another key, or tampered with)"
            )
        r = Reader(bytes(data[:-MAC_SIZE]), "an online-model record", r.pos)
    elif kind != _PLAIN:
        raise r.refuse(f"unknown record kind {kind}")
    config = read_config(r)
    drift_detected = r.flag()
    points = list(r.many("Q", r.count(8)))
    if points != sorted(set(points)) or (points and points[-1] >= n_learned):
        raise r.refuse("drift points must rise and stay below n_learned")
    n = r.count(9)
    labels, predictions = r.many("B", n), r.many("d", n)
    if any(b > 1 for b in labels) or not all(0.0 <= p <= 1.0 for p in predictions):
        raise r.refuse("the metrics window holds a label that is not 0/1 or a p outside [0, 1]")
    recent = [(b == 1, p) for b, p in zip(labels, predictions, strict=True)]
    if len(recent) > config["metrics_window"] or len(recent) > n_learned:
        raise r.refuse("the metrics window holds more outcomes than allowed")
    state = LearnerState(config, n_learned, drift_detected, points, recent)
    if kind == _SIGNED:
        state.blob = r.blob()
        r.end()
        return state
    if config["classifier"] not in _CLASSIFIERS[:2]:
        raise r.refuse(f"a {config['classifier']} model must be a signed record")
    names = r.texts()
    if len(set(names)) != len(names):
        raise r.refuse("a feature name appears twice")
    counts = _read_map(r, names, "Q")
    means = _read_map(r, names, "d")
    variances = _read_map(r, names, "d")
    if any(c < 1 for _, c in counts) or any(v < 0 for _, v in variances):
        raise r.refuse("scaler counts must be >= 1 and variances >= 0")
    weights = _read_map(r, names, "d")
    state.linear = LinearState(counts, means, variances, weights, r.f64(), r.u64())
    state.detector = _read_detector(r)
    r.end()
    expected = {"adwin": AdwinState, "page_hinkley": PageHinkleyState}.get(config["drift_detector"])
    if state.detector is not None and not isinstance(state.detector, expected or type(None)):
        raise StateRefused("an online-model record refused: its detector is not the configured one")
    if expected is AdwinState and state.detector is None:
        raise StateRefused("an online-model record refused: its ADWIN state is missing")
    return state
