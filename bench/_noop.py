"""A no-op Faust worker: the baseline of ``bench.e2e``. It consumes a topic and does nothing.

Run as ``python -m bench._noop BOOTSTRAP TOPIC GROUP``. It runs Faust as the project's worker
does: the same consumer and producer settings (:func:`stream.app.faust_tuning_kwargs`), event
loop, fetch loop and fetch sizes (:mod:`stream._faust_consumer`) and garbage collector set-up,
so that the ratios in ``bench.e2e`` measure the agents' own work.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

import faust

from stream.app import faust_tuning_kwargs
from stream.settings import Settings
from stream.worker import prepare_process, run_app


def main(argv: list[str]) -> None:
    """Build and run the no-op worker until it is terminated."""
    bootstrap, topic_name, group = argv
    settings = Settings()
    prepare_process(settings)
    app = faust.App(
        group,
        broker=";".join(f"kafka://{hp}" for hp in bootstrap.split(",")),
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="alphapulse-noop-"),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        **faust_tuning_kwargs(settings),
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)

    @app.agent(topic, name="noop")
    async def noop(stream: Any) -> None:
        async for _ in stream:
            pass

    run_app(app, "WARNING")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
