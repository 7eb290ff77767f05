"""A no-op Faust worker: the baseline of ``bench.e2e``. It consumes a topic and does nothing.

Run as ``python -m bench._noop BOOTSTRAP TOPIC GROUP``; it uses the same Faust settings as the
project's worker (raw bytes, group session timeout, commit interval).
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

import faust


def main(argv: list[str]) -> None:
    """Build and run the no-op worker until it is terminated."""
    bootstrap, topic_name, group = argv
    app = faust.App(
        group,
        broker=";".join(f"kafka://{hp}" for hp in bootstrap.split(",")),
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="alphapulse-noop-"),
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=0.5,
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)

    @app.agent(topic, name="noop")
    async def noop(stream: Any) -> None:
        async for _ in stream:
            pass

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
