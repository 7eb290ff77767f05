"""A trained native booster behind one interface, and the per-library fitting code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from models._config import MODEL_TYPES, TrainingConfig
from models._focal import lightgbm_focal_objective, xgboost_focal_objective
from models.errors import ConfigError, DataError, ModelError

__all__ = ["TrainedModel", "fit_booster"]

_FILES = {"xgboost": "model.ubj", "lightgbm": "model.txt", "catboost": "model.cbm"}
_META = "alphapulse_model.json"


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A native booster (``xgboost.Booster``, ``lightgbm.Booster`` or ``catboost.CatBoost``).

    ``predict_proba`` scores a batch through the library's own batch predictor
    (``inplace_predict``, ``Booster.predict``, ``predict(prediction_type="Probability")``);
    raw margins of a focal-loss model go through a sigmoid.

    Examples
    --------
    >>> import numpy as np
    >>> from models.trainer import TrainingConfig, train
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 3)); y = (X[:, 0] > 0).astype(int)
    >>> cfg = TrainingConfig(model_type="xgboost", n_estimators=5)
    >>> model = train(cfg, X, y).model
    >>> model.feature_names, model.n_trees
    (('f0', 'f1', 'f2'), 5)
    >>> bool(np.all((model.predict_proba(X) >= 0) & (model.predict_proba(X) <= 1)))
    True
    """

    model_type: str
    booster: Any
    feature_names: tuple[str, ...]
    focal_loss: bool = False

    @property
    def n_trees(self) -> int:
        """Number of boosting rounds in the model."""
        if self.model_type == "xgboost":
            return int(self.booster.num_boosted_rounds())
        if self.model_type == "lightgbm":
            return int(self.booster.num_trees())
        return int(self.booster.tree_count_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Win probability per row of ``X`` (columns in ``feature_names`` order, or a DataFrame)."""
        if hasattr(X, "columns"):
            missing = [c for c in self.feature_names if c not in X.columns]
            if missing:
                raise DataError(f"input lacks the model's feature(s): {', '.join(missing)}")
            X = X[list(self.feature_names)]
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(self.feature_names):
            raise DataError(
                f"expected a 2-D array with {len(self.feature_names)} columns, "
                f"got shape {arr.shape}"
            )
        if self.model_type == "xgboost":
            out = self.booster.inplace_predict(
                arr, predict_type="margin" if self.focal_loss else "value"
            )
            # XGBoost's margins are float32: the sigmoid runs in float64, as in the MLflow pyfunc.
            out = expit(np.asarray(out, dtype=np.float64)) if self.focal_loss else out
        elif self.model_type == "lightgbm":
            out = self.booster.predict(arr, raw_score=self.focal_loss)
            out = expit(out) if self.focal_loss else out
        else:
            out = self.booster.predict(arr, prediction_type="Probability")[:, 1]
        return np.asarray(out, dtype=np.float64)

    def save(self, directory: str | Path) -> Path:
        """Write the booster in its native format plus a small JSON description."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(path / _FILES[self.model_type]))
        meta = {
            "format": 1,
            "model_type": self.model_type,
            "feature_names": list(self.feature_names),
            "focal_loss": self.focal_loss,
            "file": _FILES[self.model_type],
        }
        (path / _META).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainedModel:
        """Read a model written by :meth:`save`."""
        path = Path(directory)
        try:
            meta = json.loads((path / _META).read_text())
            model_type = meta["model_type"]
            file = str(path / meta["file"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{path} holds no readable AlphaPulse model: {exc}") from exc
        if model_type == "xgboost":
            import xgboost as xgb

            booster: Any = xgb.Booster(model_file=file)
        elif model_type == "lightgbm":
            import lightgbm as lgb

            booster = lgb.Booster(model_file=file)
        elif model_type == "catboost":
            import catboost as cb

            booster = cb.CatBoost().load_model(file)
        else:
            raise ModelError(f"{path}: unknown model type {model_type!r}")
        return cls(model_type, booster, tuple(meta["feature_names"]), bool(meta["focal_loss"]))


def _fit_xgboost(
    cfg: TrainingConfig, X: np.ndarray, y: np.ndarray, w: np.ndarray, names: list[str], init: Any
) -> Any:
    import xgboost as xgb

    params: dict[str, Any] = {
        "eta": cfg.learning_rate,
        "max_depth": cfg.max_depth,
        "seed": cfg.seed,
        "nthread": cfg.n_jobs,
        "tree_method": "hist",
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample,
        "verbosity": 0,
    }
    if cfg.reg_lambda is not None:
        params["lambda"] = cfg.reg_lambda
    obj = None
    if cfg.focal_loss:
        obj = xgboost_focal_objective(cfg.focal_alpha, cfg.focal_gamma)
        params["disable_default_eval_metric"] = True
        if init is None:
            params["base_score"] = 0.0
    else:
        params.update(objective="binary:logistic", eval_metric="logloss")
    dtrain = xgb.DMatrix(X, label=y, weight=w, feature_names=names, nthread=cfg.n_jobs)
    return xgb.train(
        params,
        dtrain,
        num_boost_round=cfg.n_estimators,
        obj=obj,
        xgb_model=init,
        verbose_eval=False,
    )


def _fit_lightgbm(
    cfg: TrainingConfig, X: np.ndarray, y: np.ndarray, w: np.ndarray, names: list[str], init: Any
) -> Any:
    import lightgbm as lgb

    objective: Any = "binary"
    if cfg.focal_loss:
        objective = lightgbm_focal_objective(cfg.focal_alpha, cfg.focal_gamma)
    params: dict[str, Any] = {
        "objective": objective,
        "learning_rate": cfg.learning_rate,
        "max_depth": cfg.max_depth,
        "num_leaves": max(2, min(2**cfg.max_depth, 255)),
        "feature_fraction": cfg.colsample,
        "seed": cfg.seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": cfg.n_jobs,
        "verbosity": -1,
    }
    if cfg.subsample < 1.0:
        params.update(bagging_fraction=cfg.subsample, bagging_freq=1)
    if cfg.reg_lambda is not None:
        params["lambda_l2"] = cfg.reg_lambda
    dataset = lgb.Dataset(X, label=y, weight=w, feature_name=names, params={"verbosity": -1})
    return lgb.train(params, dataset, num_boost_round=cfg.n_estimators, init_model=init)


def _fit_catboost(
    cfg: TrainingConfig, X: np.ndarray, y: np.ndarray, w: np.ndarray, names: list[str], init: Any
) -> Any:
    import catboost as cb

    loss = "Logloss"
    if cfg.focal_loss:
        loss = f"Focal:focal_alpha={cfg.focal_alpha!r};focal_gamma={cfg.focal_gamma!r}"
    params: dict[str, Any] = {
        "loss_function": loss,
        "iterations": cfg.n_estimators,
        "learning_rate": cfg.learning_rate,
        "depth": cfg.max_depth,
        "rsm": cfg.colsample,
        "random_seed": cfg.seed,
        "thread_count": cfg.n_jobs,
        "verbose": False,
        "allow_writing_files": False,
    }
    if cfg.subsample < 1.0:
        params.update(bootstrap_type="Bernoulli", subsample=cfg.subsample)
    if cfg.reg_lambda is not None:
        params["l2_leaf_reg"] = cfg.reg_lambda
    model = cb.CatBoost(params)
    model.fit(cb.Pool(X, label=y, weight=w, feature_names=names), init_model=init)
    return model


_FITTERS = {"xgboost": _fit_xgboost, "lightgbm": _fit_lightgbm, "catboost": _fit_catboost}


def check_warm_start(cfg: TrainingConfig, init: TrainedModel, names: list[str]) -> None:
    """Raise unless ``init`` can be continued with ``cfg`` on features ``names``."""
    if init.model_type != cfg.model_type:
        raise DataError(
            f"cannot warm-start a {cfg.model_type} model from a {init.model_type} model; "
            f"train with --model-type {init.model_type} or start fresh"
        )
    if init.focal_loss != cfg.focal_loss:
        raise ConfigError(
            f"the warm-start model was trained with focal_loss={init.focal_loss}; "
            f"continue it with the same loss"
        )
    if list(init.feature_names) != list(names):
        missing = [n for n in init.feature_names if n not in names]
        extra = [n for n in names if n not in init.feature_names]
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing)}")
        if extra:
            detail.append(f"unexpected {', '.join(extra)}")
        raise DataError(
            "feature names differ from the warm-start model's: "
            + ("; ".join(detail) or "same names in a different order")
        )


def fit_booster(
    cfg: TrainingConfig,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    names: list[str],
    init: TrainedModel | None = None,
) -> TrainedModel:
    """Fit ``cfg.n_estimators`` new trees, continuing ``init`` when given."""
    if cfg.model_type not in MODEL_TYPES:  # pragma: no cover - the config validates this
        raise ConfigError(f"unknown model_type {cfg.model_type!r}")
    if init is not None:
        check_warm_start(cfg, init, names)
    booster = _FITTERS[cfg.model_type](cfg, X, y, w, names, None if init is None else init.booster)
    return TrainedModel(cfg.model_type, booster, tuple(names), cfg.focal_loss)
