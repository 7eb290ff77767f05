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
from urllib.parse import urlsplit

from models.errors import RegistryError
from models.registry import ModelRegistry
from stream._reach import why_unreachable
from stream.settings import Settings

__all__ = ["check_tracking_server", "open_registry"]


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


def check_tracking_server(settings: Settings, timeout: float) -> None:
    """Raise :class:`RegistryError` when the MLflow server named by the settings does not accept a
    connection within ``timeout`` seconds; a local (SQLite) store is not asked.

    >>> check_tracking_server(Settings(_env_file=None), timeout=1.0)  # the local store
    """
    parts = urlsplit(settings.tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    reason = why_unreachable([(parts.hostname, port)], timeout)
    if reason is not None:
        raise RegistryError(
            f"cannot reach MLflow at {parts.scheme}://{parts.hostname}:{port} ({reason}); start "
            "it with 'alphapulse mlflow up' or set MLFLOW_TRACKING_URI"
        )
