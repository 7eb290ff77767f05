"""The MLflow pyfunc of an AlphaPulse batch model, logged with MLflow's models-from-code.

MLflow copies this file into every batch model version and runs it when the version is loaded
(``mlflow.pyfunc.load_model``, ``mlflow models serve``): ``load_context`` reads the booster in its
library's native format, the same file the worker loads, from the version's ``booster`` artifact;
nothing pickled is read. ``predict`` returns the win probability of each row as a 1-D float64
array, computed as the worker computes it.

The file stands alone (numpy, pandas, mlflow and the booster's own library), because it runs
wherever the version is loaded, where AlphaPulse need not be installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

ARTIFACT = "booster"
"""Key of the folder holding the native booster and ``alphapulse_model.json``."""
META_FILE = "alphapulse_model.json"


def _sigmoid(margin: Any) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(margin, dtype=np.float64))))


class BoosterModel(PythonModel):
    """Win probability per row from a native XGBoost, LightGBM or CatBoost booster."""

    model_type: str = ""
    feature_names: tuple[str, ...] = ()
    focal_loss: bool = False
    booster: Any = None

    def load_context(self, context: Any) -> None:
        """Load the booster that the version's ``booster`` artifact folder holds."""
        folder = Path(context.artifacts[ARTIFACT])
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        self.model_type = str(meta["model_type"])
        self.feature_names = tuple(meta["feature_names"])
        self.focal_loss = bool(meta["focal_loss"])
        file = str(folder / meta["file"])
        # Each version needs only its own library: import the one it was trained with.
        if self.model_type == "xgboost":
            import xgboost

            self.booster = xgboost.Booster(model_file=file)
        elif self.model_type == "lightgbm":
            import lightgbm

            self.booster = lightgbm.Booster(model_file=file)
        elif self.model_type == "catboost":
            import catboost

            self.booster = catboost.CatBoost().load_model(file)
        else:
            raise ValueError(f"unknown model type {self.model_type!r} in {META_FILE}")

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Win probability of each row of ``model_input`` (a frame with the feature columns)."""
        if hasattr(model_input, "columns"):
            missing = [c for c in self.feature_names if c not in model_input.columns]
            if missing:
                raise ValueError(f"input lacks the model's feature(s): {', '.join(missing)}")
            model_input = model_input[list(self.feature_names)]
        X = np.asarray(model_input, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} feature columns, got {X.shape}")
        if self.model_type == "xgboost":
            if self.focal_loss:
                out = _sigmoid(self.booster.inplace_predict(X, predict_type="margin"))
            else:
                out = self.booster.inplace_predict(X, predict_type="value")
        elif self.model_type == "lightgbm":
            out = self.booster.predict(X, raw_score=self.focal_loss)
            out = _sigmoid(out) if self.focal_loss else out
        else:
            out = self.booster.predict(X, prediction_type="Probability")[:, 1]
        return np.asarray(out, dtype=np.float64).reshape(-1)


mlflow.models.set_model(BoosterModel())
