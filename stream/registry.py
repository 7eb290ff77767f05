"""The MLflow model registry the settings name.

>>> import tempfile
>>> from pathlib import Path
>>> from stream.settings import Settings
>>> tmp = tempfile.TemporaryDirectory()
>>> registry = open_registry(Settings(_env_file=None, data_dir=tmp.name))
>>> registry.tracking_uri.startswith("sqlite:///"), registry.artifact_location.startswith("file:")
(True, True)
>>> tmp.cleanup()
"""

from __future__ import annotations

import os

from models.registry import ModelRegistry
from stream.settings import Settings

__all__ = ["open_registry"]


def open_registry(settings: Settings) -> ModelRegistry:
    """The registry at ``settings.tracking_uri``, holding runs in ``settings.mlflow_experiment``.

    With the local SQLite store, a newly created experiment keeps its artifacts under
    ``settings.artifact_root``; a tracking server decides that itself.
    """
    # MLflow draws a progress bar on stderr for every artifact download; callers report their own
    # progress or log. setdefault leaves a value the user chose.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = settings.tracking_uri
    artifacts = settings.artifact_root.as_uri() if uri.startswith("sqlite:") else None
    return ModelRegistry(uri, settings.mlflow_experiment, artifact_location=artifacts)
