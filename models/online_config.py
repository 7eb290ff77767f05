"""The online model's hyperparameters, and the River pipeline and drift detector they build.

:class:`OnlineConfig` is what a worker's settings choose (``ALPHAPULSE_ONLINE_*``) and what a
learner's state records; :mod:`models.online` builds its learners from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from river import compose, drift, linear_model, optim, preprocessing, tree

from models.errors import ConfigError

__all__ = [
    "CLASSIFIERS",
    "DRIFT_DETECTORS",
    "LINEAR",
    "OnlineConfig",
    "build_detector",
    "build_pipeline",
]


CLASSIFIERS: tuple[str, ...] = (
    "logistic_regression",
    "perceptron",
    "hoeffding_tree",
    "hoeffding_adaptive_tree",
)
LINEAR: tuple[str, ...] = ("logistic_regression", "perceptron")
DRIFT_DETECTORS: tuple[str, ...] = ("adwin", "page_hinkley", "none")


@dataclass(frozen=True)
class OnlineConfig:
    """Hyperparameters of :class:`models.online.OnlineLearner`, validated on construction.

    Parameters
    ----------
    classifier : str
        One of :data:`CLASSIFIERS`; default ``"logistic_regression"``.
    learning_rate : float
        SGD step of the linear classifiers (weights and intercept); ignored by the trees.
    l2 : float
        L2 penalty of the linear classifiers.
    decay : bool
        Whether old outcomes fade (linear classifiers only; see the module docstring).
    decay_window, decay_factor : int, float
        An outcome's update keeps ``decay_factor`` of its weight after ``decay_window`` more.
    drift_detector : str
        ``"adwin"``, ``"page_hinkley"`` or ``"none"``, run on the prequential 0/1 error.
    drift_delta : float
        ADWIN's confidence parameter (smaller: fewer false alarms, later detection).
    drift_threshold : float
        Page-Hinkley's detection threshold (smaller: earlier detection, more false alarms).
    metrics_window : int
        Number of recent outcomes the rolling metrics cover.
    seed : int
        Seed of the classifiers that draw random numbers (``hoeffding_adaptive_tree``).

    Examples
    --------
    >>> OnlineConfig(classifier="perceptron", decay=True).per_outcome_decay < 1.0
    True
    >>> OnlineConfig(classifier="svm")
    Traceback (most recent call last):
    ...
    models.errors.ConfigError: classifier must be one of ('logistic_regression', 'perceptron', \
'hoeffding_tree', 'hoeffding_adaptive_tree'), got 'svm'
    """

    classifier: str = "logistic_regression"
    learning_rate: float = 0.01
    l2: float = 0.0
    decay: bool = False
    decay_window: int = 500
    decay_factor: float = 0.5
    drift_detector: str = "adwin"
    drift_delta: float = 0.002
    drift_threshold: float = 50.0
    metrics_window: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.classifier not in CLASSIFIERS:
            raise ConfigError(f"classifier must be one of {CLASSIFIERS}, got {self.classifier!r}")
        if self.drift_detector not in DRIFT_DETECTORS:
            raise ConfigError(
                f"drift_detector must be one of {DRIFT_DETECTORS}, got {self.drift_detector!r}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate must be finite and > 0, got {self.learning_rate}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ConfigError(f"l2 must be finite and >= 0, got {self.l2}")
        if self.decay_window < 1:
            raise ConfigError(f"decay_window must be >= 1, got {self.decay_window}")
        if not 0.0 < self.decay_factor < 1.0:
            raise ConfigError(f"decay_factor must be in (0, 1), got {self.decay_factor}")
        if self.decay and self.classifier not in LINEAR:
            raise ConfigError(
                f"decay is defined for {LINEAR} only; turn it off for {self.classifier!r}"
            )
        if not 0.0 < self.drift_delta < 1.0:
            raise ConfigError(f"drift_delta must be in (0, 1), got {self.drift_delta}")
        if not (math.isfinite(self.drift_threshold) and self.drift_threshold > 0):
            raise ConfigError(f"drift_threshold must be finite and > 0, got {self.drift_threshold}")
        if self.metrics_window < 2:
            raise ConfigError(f"metrics_window must be >= 2, got {self.metrics_window}")

    @property
    def per_outcome_decay(self) -> float:
        """Factor applied to the linear weights after each outcome (1.0 when decay is off)."""
        return self.decay_factor ** (1.0 / self.decay_window) if self.decay else 1.0


def build_pipeline(cfg: OnlineConfig) -> compose.Pipeline:
    """A fresh River pipeline of ``cfg``: a standard scaler, then its classifier.

    >>> print(build_pipeline(OnlineConfig()))
    StandardScaler | LogisticRegression
    >>> print(build_pipeline(OnlineConfig(classifier="hoeffding_tree")))
    StandardScaler | HoeffdingTreeClassifier
    """
    clf: Any
    if cfg.classifier == "logistic_regression":
        clf = linear_model.LogisticRegression(
            optimizer=optim.SGD(cfg.learning_rate), intercept_lr=cfg.learning_rate, l2=cfg.l2
        )
    elif cfg.classifier == "perceptron":
        clf = linear_model.LogisticRegression(
            optimizer=optim.SGD(cfg.learning_rate),
            intercept_lr=cfg.learning_rate,
            loss=optim.losses.Hinge(threshold=0.0),
            l2=cfg.l2,
        )
    elif cfg.classifier == "hoeffding_tree":
        clf = tree.HoeffdingTreeClassifier()
    else:
        clf = tree.HoeffdingAdaptiveTreeClassifier(seed=cfg.seed)
    return compose.Pipeline(preprocessing.StandardScaler(), clf)


def build_detector(cfg: OnlineConfig) -> Any:
    """A fresh drift detector of ``cfg``, or None when it has none.

    >>> build_detector(OnlineConfig(drift_detector="none")) is None
    True
    """
    if cfg.drift_detector == "adwin":
        return drift.ADWIN(delta=cfg.drift_delta)
    if cfg.drift_detector == "page_hinkley":
        return drift.PageHinkley(threshold=cfg.drift_threshold, mode="up")
    return None
