"""The online model: a River pipeline that learns from every trade outcome as it arrives.

The default pipeline is River's ``StandardScaler | LogisticRegression`` with its defaults (SGD,
learning rate 0.01), so that with decay off it learns exactly like River's own pipeline. Other
River classifiers can be chosen by :class:`OnlineConfig`.

Decay
-----
With ``decay=True`` old outcomes fade exponentially. After every learned outcome the linear
model's feature weights are multiplied by ``lam = decay_factor ** (1 / decay_window)``.
Unrolling the SGD recursion ``w_t = lam * (w_{t-1} - lr * g_t)`` gives
``w_t = -lr * sum_s lam ** (t - s + 1) * g_s``: the update that outcome ``s`` made is worth
``decay_factor`` of itself after ``decay_window`` further outcomes (with the defaults, half of it
after 500). This is the forgetting-factor form of exponentially weighted least squares applied to
SGD, and it acts like an L2 penalty of strength ``(1 - lam) / (lam * lr)`` that pulls a model of
an old regime back towards zero, so a new regime takes over sooner. The price is less confident
predictions in a stable regime (higher log loss). The intercept (the base win rate) and the
scaler's statistics are not decayed: pulling the intercept to zero would pull every prediction
towards 0.5 rather than towards the base rate. Decay is defined for the linear classifiers only;
the Hoeffding trees keep their own statistics (``hoeffding_adaptive_tree`` replaces branches on
drift by itself).

Monitoring
----------
``learn_one`` first predicts the outcome (prequential evaluation), then learns it. The
prediction and the label feed rolling metrics over the last ``metrics_window`` outcomes (ROC AUC,
log loss, accuracy) and the 0/1 error feeds a drift detector (ADWIN or Page-Hinkley). Like any
River classifier, ``learn_one`` returns nothing: what it found is left in attributes.
``drift_detected`` tells whether the detector fired on the last outcome learned (the 0-based
index of each such outcome is appended to ``drift_points``) and ``last_prediction`` what the
model predicted for it. Only rises of the error count: ADWIN also signals falls (for instance
while the model is still learning), and those are not reported; Page-Hinkley runs in ``"up"``
mode.

Finite state
------------
No outcome may make a model's state non-finite: ``learn_one`` refuses such an outcome with
:class:`NonFiniteUpdate` and leaves the model as it was (how, in :mod:`models.online_input`).

Compiled step
-------------
The logistic regression (the default) runs on :mod:`models._linear_core`, a C step that makes
River's floating-point operations in River's order, so that it predicts, learns, refuses and
snapshots bit for bit as River's pipeline does (``tests/unit/test_linear_core.py``), at about a
seventh of the cost. Built without a C compiler, or with :data:`COMPILED` set to False, learners
use River's objects. The other classifiers always do.

River contract
--------------
:class:`OnlineLearner` is a ``river.base.Classifier``: ``predict_proba_one`` returns
``{True: p, False: 1 - p}``, ``learn_one`` returns None, the hyperparameters are the constructor's
only argument, and River's own conformance suite (``river.checks.check_estimator``) runs on it.

Snapshots
---------
``snapshot()`` writes the complete state (scaler statistics, weights, optimizer and decay state,
drift detector, metric window, counters, configuration) as plain versioned numbers
(:mod:`models._state_learner`, docs/state-format.md); ``OnlineLearner.restore`` gives a learner
that predicts bit for bit the same and keeps learning identically. Nothing is unpickled, except
for the Hoeffding trees, which cannot be written as numbers: theirs is a pickle signed with
HMAC-SHA256 and read only when the signature verifies (under the signing key given, else under a
key made for this process alone, so such a snapshot restores only in the process that wrote it).
"""

from __future__ import annotations

import copy
import copyreg
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from river import base, compose

from models._state_codec import StateRefused
from models._state_learner import (
    HEADER,
    PROCESS_KEY,
    LearnerState,
    LinearState,
    decode_learner,
    encode_learner,
)
from models._state_river import (
    capture,
    capture_detector,
    check_detector,
    rebuild,
    rebuild_detector,
)
from models.errors import ConfigError, DataError
from models.metrics import RollingMetrics, rolling_metrics
from models.online_config import (
    CLASSIFIERS,
    DRIFT_DETECTORS,
    LINEAR,
    OnlineConfig,
    build_detector,
    build_pipeline,
)
from models.online_input import (
    FEATURE_SAFE_ABS,
    MAX_WEIGHT,
    MIN_WEIGHT,
    TREE_FEATURE_MAX_ABS,
    NonFiniteUpdate,
    check_tree_input,
    clean_features,
    label_of,
)

__all__ = [
    "CLASSIFIERS",
    "DRIFT_DETECTORS",
    "FEATURE_SAFE_ABS",
    "LINEAR",
    "TREE_FEATURE_MAX_ABS",
    "NonFiniteUpdate",
    "OnlineConfig",
    "OnlineLearner",
    "clean_features",
]

_linear_core: Any
try:
    from models import _linear_core
except ImportError:  # installed without a C compiler: River's own objects do the work
    _linear_core = None

COMPILED = _linear_core is not None
"""Whether logistic-regression learners run on the compiled step (:mod:`models._linear_core`),
which learns bit for bit as River's pipeline does; False makes new learners use River's objects."""


def _new_core(cfg: OnlineConfig) -> Any:
    """A compiled logistic regression of ``cfg``, empty."""
    return _linear_core.Core(cfg.learning_rate, cfg.l2, cfg.per_outcome_decay)


def _clean(x: Mapping[Any, Any]) -> dict[str, float]:
    """:func:`clean_features`, compiled for a plain dict of names to floats or None."""
    if _linear_core is not None:
        xc: dict[str, float] | None = _linear_core.clean(x)
        if xc is not None:
            return xc
    return clean_features(x)


def _estimation(det: Any, default: float) -> float:
    """The detector's ``estimation`` (``default`` for one without): ADWIN's is read from its Rust
    window directly, as its property computes it, without the property's three wrappers."""
    helper = getattr(det, "_helper", None)
    if helper is not None:
        width = helper.get_width()
        return 0.0 if width == 0 else float(helper.get_total() / width)
    return float(getattr(det, "estimation", default))


def _core_of(params: tuple[float, float, float], state: tuple[Any, ...]) -> Any:
    """The compiled step of ``params`` holding ``state`` (what pickling a learner writes)."""
    core = _linear_core.Core(*params)
    if not core.load(*state):
        raise StateRefused("a compiled online model's pickle holds a state it cannot take")
    return core


if _linear_core is not None:
    copyreg.pickle(_linear_core.Core, lambda c: (_core_of, (c.params(), c.state())))

SNAPSHOT_MAGIC = HEADER.magic
SNAPSHOT_VERSION = 2  # 2: plain numbers (models._state_learner). 1: a pickle, refused


class OnlineLearner(base.Classifier):
    """A River pipeline with decay, rolling metrics, drift detection and exact snapshots.

    Parameters
    ----------
    config : OnlineConfig, optional
        Hyperparameters; default ``OnlineConfig()``.

    Attributes
    ----------
    drift_detected : bool
        Whether the drift detector fired on the last outcome learned.
    drift_points : list of int
        0-based indices of the outcomes on which the detector fired.

    Notes
    -----
    Inputs go through :func:`clean_features` first: None, NaN and infinite values are dropped
    (River treats an absent key as missing) and keys are sorted, so the order of the features
    never changes a result, not even in the last bit.

    Examples
    --------
    A prequential run: predict each outcome, then learn it.

    >>> learner = OnlineLearner()
    >>> learner.predict_proba_one({"rsi": 30.0})
    {True: 0.5, False: 0.5}
    >>> hits = 0
    >>> for i in range(200):
    ...     x, y = {"rsi": float(i % 10), "vol": None}, i % 10 >= 5
    ...     hits += learner.predict_one(x) == y
    ...     learner.learn_one(x, y)
    >>> learner.n_learned, hits > 150, learner.drift_detected
    (200, True, False)
    >>> learner.win_probability({"rsi": 9.0}) > 0.5
    True
    >>> clone = OnlineLearner.restore(learner.snapshot())
    >>> clone.predict_proba_one({"rsi": 2.0}) == learner.predict_proba_one({"rsi": 2.0})
    True
    """

    def __init__(self, config: OnlineConfig | None = None) -> None:
        self.config = config if config is not None else OnlineConfig()
        self._core: Any = None
        self._river: Any = None
        if COMPILED and self.config.classifier == "logistic_regression":
            self._core = _new_core(self.config)
        else:
            self._river = build_pipeline(self.config)
        self.detector = build_detector(self.config)
        self.drift_detected = False
        self.drift_points: list[int] = []
        self._lam = self.config.per_outcome_decay
        self._linear = self.config.classifier in LINEAR
        self._recent: deque[tuple[bool, float]] = deque(maxlen=self.config.metrics_window)
        self._n_learned = 0
        self._wide = False
        """Whether a scaler mean may exceed :data:`FEATURE_SAFE_ABS` (then every update is
        checked; see the module's text)."""

    @property
    def pipeline(self) -> compose.Pipeline:
        """River's pipeline holding this learner's numbers. With the compiled step it is a new
        copy at each call: changing it does not change the learner."""
        if self._core is None:
            return self._river
        pipeline = build_pipeline(self.config)
        lin = LinearState(*self._core.state())
        return rebuild(pipeline, None, lin, None, None)[0]

    @pipeline.setter
    def pipeline(self, value: compose.Pipeline) -> None:
        self._river, self._core = value, None

    @property
    def n_learned(self) -> int:
        """Number of outcomes learned so far."""
        return self._n_learned

    @property
    def last_prediction(self) -> float | None:
        """The probability predicted for the last outcome learned, just before learning it."""
        return self._recent[-1][1] if self._recent else None

    def _proba(self, x: dict[str, float]) -> float:
        if self._n_learned == 0:
            return 0.5
        if self._core is not None:
            p: float = self._core.predict(x)
            return p
        try:
            probs = self._river.predict_proba_one(x)
        except OverflowError:  # a tree's Gaussian leaf squares a huge feature: no answer
            return 0.5
        p_true, p_false = float(probs.get(True, 0.0)), float(probs.get(False, 0.0))
        total = p_true + p_false
        if not total > 0:
            return 0.5
        return p_true if total == 1.0 else p_true / total

    def win_probability(self, x: Mapping[Any, Any]) -> float:
        """Probability that the trade wins; 0.5 before any outcome has been learned."""
        return self._proba(_clean(x))

    def win_probabilities(self, xs: Iterable[Mapping[Any, Any]]) -> list[float]:
        """:meth:`win_probability` for each row."""
        return [self._proba(_clean(x)) for x in xs]

    def predict_proba_one(
        self, x: Mapping[Any, Any], **kwargs: Any
    ) -> dict[base.typing.ClfTarget, float]:
        """``{True: p, False: 1 - p}`` with ``p`` the :meth:`win_probability` of ``x``."""
        p = self._proba(clean_features(x))
        return {True: p, False: 1.0 - p}

    def predict_one(self, x: Mapping[Any, Any], **kwargs: Any) -> bool:
        """Whether the trade wins, by the same rule as the prequential error (``p > 0.5``)."""
        return self._proba(clean_features(x)) > 0.5

    def learn_one(self, x: Mapping[Any, Any], y: base.typing.ClfTarget, w: float = 1.0) -> None:
        """Predict ``x``, record the metrics and the error, then learn ``(x, y)``.

        Sets :attr:`drift_detected` (and extends :attr:`drift_points` when it is True) and
        :attr:`last_prediction`. ``x`` is not modified. ``y`` is a bool or 0/1. The sample
        weight ``w`` must be 0 or within [:data:`MIN_WEIGHT`, :data:`MAX_WEIGHT`]; an outcome
        of weight 0 counts in the metrics, the drift detector and ``n_learned`` but does not
        change the pipeline (decay still ticks).
        """
        label = label_of(y)
        if not (w == 0 or MIN_WEIGHT <= w <= MAX_WEIGHT):
            raise DataError(f"weight must be 0 or within [{MIN_WEIGHT}, {MAX_WEIGHT}], got {w!r}")
        xc = _clean(x)
        if self._core is not None:
            # Predicts, learns and decays, or returns what would have become non-finite.
            r = self._core.learn(xc, label, float(w), self._n_learned == 0)
            if type(r) is tuple:
                raise NonFiniteUpdate(r[0], xc.get(r[0], math.nan), r[1])
            p = r
        else:
            if not self._linear and w > 0:
                check_tree_input(xc)  # before predicting it too: a tree's leaves overflow on it
            p = self._proba(xc)
            if w > 0:
                self._learn_finite(xc, label, float(w))  # raises before anything else changed
            if self._lam != 1.0:
                self._river[-1]._weights *= self._lam
        self._recent.append((label, p))
        fired = False
        det = self.detector
        if det is not None:
            before = _estimation(det, -math.inf)
            det.update(float((p > 0.5) != label))
            if det.drift_detected and getattr(det, "estimation", math.inf) > before:
                self.drift_points.append(self._n_learned)
                fired = True
        self.drift_detected = fired
        self._n_learned += 1

    def _learn_finite(self, xc: dict[str, float], label: bool, w: float) -> None:
        """``pipeline.learn_one``, or :class:`NonFiniteUpdate` with the pipeline unchanged."""
        if not self._linear:  # checked by check_tree_input already
            self._river.learn_one(xc, label, w=w)
            return
        hi = max(xc.values(), default=0.0)
        lo = min(xc.values(), default=0.0)
        if not self._wide and lo >= -FEATURE_SAFE_ABS and hi <= FEATURE_SAFE_ABS:
            self._river.learn_one(xc, label, w=w)  # provably finite: the hot path
            return
        saved = copy.deepcopy(self._river)
        self._river.learn_one(xc, label, w=w)
        bad = self._non_finite(xc)
        if bad is not None:
            self._river = saved
            raise NonFiniteUpdate(bad[0], xc.get(bad[0], math.nan), bad[1])
        self._wide = any(abs(m) > FEATURE_SAFE_ABS for m in self._river[0].means.values())

    def _non_finite(self, xc: dict[str, float]) -> tuple[str, str] | None:
        """The first feature (and what of the model) that is not finite after learning ``xc``."""
        scaler, clf = self._river[0], self._river[-1]
        for k in xc:
            if not (math.isfinite(scaler.means[k]) and math.isfinite(scaler.vars[k])):
                return k, "scaler statistics"
        for k, v in clf._weights.items():  # all: an L2 penalty moves every weight
            if not math.isfinite(v):
                return str(k), "weights"
        if not math.isfinite(clf.intercept):
            return "intercept", "intercept"
        return None

    def learn_many(
        self,
        xs: Sequence[Mapping[Any, Any]],
        ys: Sequence[bool | int],
        weights: Sequence[float] | None = None,
    ) -> None:
        """:meth:`learn_one` for each row in order; drifts found extend :attr:`drift_points`."""
        if len(xs) != len(ys) or (weights is not None and len(weights) != len(xs)):
            raise DataError("xs, ys and weights must have the same length")
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            self.learn_one(x, y, 1.0 if weights is None else weights[i])

    def metrics(self) -> RollingMetrics:
        """Prequential ROC AUC, log loss and accuracy over the last ``metrics_window`` outcomes."""
        return rolling_metrics(self._recent)

    def state(self) -> LearnerState:
        """The complete state as numbers (:mod:`models._state_learner`)."""
        lin: LinearState | None
        if self._core is not None:
            lin, det, blob = LinearState(*self._core.state()), capture_detector(self.detector), None
        else:
            lin, det, blob = capture(self._river, self.detector, self._linear)
        return LearnerState(
            asdict(self.config),
            self._n_learned,
            self.drift_detected,
            list(self.drift_points),
            list(self._recent),
            lin,
            det,
            blob,
        )

    def snapshot(self, signing_key: bytes | None = None) -> bytes:
        """The complete state as bytes; see :meth:`restore`. A tree's is signed with
        ``signing_key`` (without one, with this process's own key)."""
        return encode_learner(self.state(), signing_key or PROCESS_KEY)

    @staticmethod
    def check(data: bytes, signing_key: bytes | None = None, local: bool = True) -> LearnerState:
        """The numbers of :meth:`snapshot` bytes, checked as :meth:`restore` checks them, without
        building River's objects; :class:`models._state_codec.StateRefused` otherwise. With
        ``local`` False, a signed record needs ``signing_key`` (not this process's own)."""
        state = decode_learner(data, signing_key or (PROCESS_KEY if local else None))
        try:
            config = OnlineConfig(**state.config)
        except ConfigError as exc:
            raise StateRefused(f"an online-model record refused: {exc}") from None
        if state.blob is None:
            check_detector(state.detector, build_detector(config))
        return state

    @classmethod
    def restore(cls, data: bytes, signing_key: bytes | None = None) -> OnlineLearner:
        """Rebuild a learner from :meth:`snapshot` bytes; anything else is refused with
        :class:`models._state_codec.StateRefused` (a :class:`models._snapshot.SnapshotError`)."""
        return cls.from_state(cls.check(data, signing_key))

    @classmethod
    def from_state(cls, state: LearnerState) -> OnlineLearner:
        """A learner holding ``state`` (checked by :meth:`check`)."""
        learner = cls(OnlineConfig(**state.config))
        lin = state.linear
        core = learner._core
        if core is not None and not (
            lin is not None
            and core.load(
                lin.counts, lin.means, lin.variances, lin.weights, lin.intercept, lin.n_iterations
            )
        ):
            learner._core = None  # a shape only River's objects hold: they take it
            learner._river = build_pipeline(learner.config)
        if learner._core is not None:
            learner.detector = rebuild_detector(learner.detector, state.detector)
        else:
            learner._river, learner.detector = rebuild(
                learner._river, learner.detector, lin, state.detector, state.blob
            )
        learner.drift_points = list(state.drift_points)
        learner.drift_detected = state.drift_detected
        learner._recent.extend(state.recent)
        learner._n_learned = state.n_learned
        if learner._river is not None:
            means = learner._river[0].means.values()
            learner._wide = any(abs(m) > FEATURE_SAFE_ABS for m in means)
        return learner

    def export(self) -> dict[str, Any]:
        """Compact, JSON-ready summary: config, weights or tree summary, metrics, drifts."""
        scaler, clf = self.pipeline[0], self.pipeline[-1]
        out: dict[str, Any] = {
            "format_version": SNAPSHOT_VERSION,
            "config": asdict(self.config),
            "n_learned": self._n_learned,
            "drift_points": list(self.drift_points),
            "metrics": {k: v for k, v in asdict(self.metrics()).items() if v is not None},
            "scaler_mean": {k: float(v) for k, v in scaler.means.items()},
            "scaler_var": {k: float(v) for k, v in scaler.vars.items()},
        }
        if self.config.classifier in LINEAR:
            out["weights"] = {k: float(v) for k, v in clf.weights.items()}
            out["intercept"] = float(clf.intercept)
        else:
            out["tree"] = {k: v for k, v in clf.summary.items() if isinstance(v, int | float)}
        return out
