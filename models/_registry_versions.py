"""Registered versions through one MLflow client: the champion alias and its history, the set-up
and undoing of a registration, and the download of one exact version.

>>> CHAMPION, HISTORY_TAG
('champion', 'alphapulse.champion_history')
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException

from models._mlflow_calls import mlflow_errors
from models._registry_types import parse_history
from models.errors import RegistryError

__all__ = [
    "CHAMPION",
    "HISTORY_TAG",
    "alias_or_none",
    "downloaded",
    "prepare_version",
    "read_history",
    "set_champion",
    "undo_version",
]

CHAMPION = "champion"
HISTORY_TAG = "alphapulse.champion_history"
_HISTORY_KEEP = 200


def alias_or_none(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` of ``name`` points at, or ``None`` (also for unknown models)."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def read_history(client: MlflowClient, name: str) -> list[str]:
    """The champion history of ``name``, oldest first."""
    with mlflow_errors(f"reading {name!r}"):
        return parse_history(client.get_registered_model(name).tags.get(HISTORY_TAG))


def set_champion(client: MlflowClient, name: str, version: str) -> None:
    """Point ``champion`` at ``version`` and append it to the champion history."""
    history = [*read_history(client, name), version][-_HISTORY_KEEP:]
    with mlflow_errors(f"setting the champion of {name!r}"):
        client.set_registered_model_alias(name, CHAMPION, version)
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def prepare_version(
    client: MlflowClient, name: str, run_id: str, source: str | None = None
) -> tuple[bool, str | None, list[str], str]:
    """Create ``name`` if new; its champion and history before, and the version's source
    (``source``, or the run's ``model`` artifacts)."""
    with mlflow_errors(f"looking up registered model {name!r}"):
        created_model = not client.search_registered_models(f"name = '{name}'")
        if created_model:
            client.create_registered_model(name)
        old_champion = alias_or_none(client, name, CHAMPION)
        old_history = read_history(client, name)
        if source is None:
            source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/model"
    return created_model, old_champion, old_history, source


def undo_version(
    client: MlflowClient,
    name: str,
    version: str | None,
    created_model: bool,
    restore: tuple[str | None, list[str]] | None,
) -> None:
    """Remove a half-registered version and put the previous champion and history back."""
    try:
        if version is not None:
            client.delete_model_version(name, version)
        if restore is not None and not created_model:
            champion, history = restore
            if champion is not None:
                client.set_registered_model_alias(name, CHAMPION, champion)
            client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        if created_model and not client.search_model_versions(f"name = '{name}'"):
            client.delete_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(
            f"registration of {name!r} failed and cleaning up version {version} failed too: "
            f"{exc.message}; delete it by hand"
        ) from exc


@contextmanager
def downloaded(client: MlflowClient, tracking_uri: str, name: str, version: str) -> Iterator[Path]:
    """The artifacts of ``models:/<name>/<version>`` in a temporary folder."""
    if not (version.isascii() and version.isdigit()):
        raise RegistryError(f"load by exact version only; got {version!r} (resolve aliases first)")
    with (
        tempfile.TemporaryDirectory(prefix="alphapulse-load-") as tmp,
        mlflow_errors(f"loading models:/{name}/{version}"),
    ):
        # MLflow's own "models:/" resolution ignores the registry URI argument and falls back to
        # the process-wide default, so resolve the exact version through this client instead.
        source = client.get_model_version_download_uri(name, version)
        yield Path(
            download_artifacts(
                artifact_uri=source,
                dst_path=tmp,
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
        )
