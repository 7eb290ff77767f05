"""stream.transactions without a broker: the transactional id, and the worker's Faust consumer
made to read committed records only (re-routed outcomes are written in transactions)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alphapulse.app import create_app
from stream.settings import Settings
from stream.transactions import read_committed, transactional_id


def test_the_worker_consumer_reads_committed_records_only(tmp_path: Path) -> None:
    async def run() -> str:
        settings = Settings(_env_file=None, data_dir=tmp_path, reload_interval_s=0)
        built = create_app(settings)
        read_committed(built.app)
        thread = built.app.consumer._thread
        consumer = thread._create_consumer(loop=asyncio.get_running_loop())
        return str(consumer._isolation_level)

    assert asyncio.run(run()) == "read_committed"


def test_one_transactional_id_per_outcomes_partition_and_group() -> None:
    ids = {transactional_id(app, p) for app in ("a", "b") for p in range(3)}
    assert len(ids) == 6 and transactional_id("a", 2) == "a-learner-2"
