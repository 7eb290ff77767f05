"""The JSON log format, the one logging set-up, and the Redis sink's bounded queue (pure logic:
the Redis client here is a stand-in; tests/integration/test_redis_logs.py uses a real server)."""

from __future__ import annotations

import io
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from alphapulse._logs import JsonFormatter, RepeatFilter, configure_logging, record_dict
from alphapulse._logsink import RedisLogHandler, RedisLogSink
from alphapulse.cli import app
from alphapulse.metrics import WorkerMetrics
from stream.runtime import Runtime
from stream.settings import Settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def _record(**extra: Any) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": "agents.learner", "levelno": 20, "levelname": "INFO", "msg": "m", **extra}
    )


def test_json_record_has_the_fields_and_the_context() -> None:
    rec = _record(msg="learned %d of %s", args=(3, "BTC"), created=1714564800.5)
    rec.model_key, rec.partition, rec.offset = "BTC", 2, 41
    doc = orjson.loads(JsonFormatter().format(rec))
    assert doc == {
        "time": "2024-05-01T12:00:00.500Z",
        "level": "INFO",
        "logger": "agents.learner",
        "message": "learned 3 of BTC",
        "model_key": "BTC",
        "partition": 2,
        "offset": 41,
    }


def test_json_record_carries_the_exception_and_odd_values() -> None:
    try:
        raise KeyError("gone")
    except KeyError:
        logger = logging.getLogger("t.exc")
        out = io.StringIO()
        configure_logging("json", logging.INFO, stream=out)
        logger.exception("failed", extra={"path": Path("/x"), "offsets": {0: [1, 2]}})
    doc = orjson.loads(out.getvalue())
    assert doc["level"] == "ERROR" and doc["message"] == "failed"
    assert doc["exc"].startswith("Traceback") and "KeyError: 'gone'" in doc["exc"]
    assert doc["path"] == "/x" and doc["offsets"] == {"0": [1, 2]}
    assert out.getvalue().count("\n") == 1  # one line, the traceback inside it


def test_standard_attributes_are_not_context() -> None:
    doc = record_dict(_record(args=(), pathname="/a.py", lineno=3))
    assert set(doc) == {"time", "level", "logger", "message"}


def test_configure_replaces_handlers_and_logs_warnings_as_json() -> None:
    out = io.StringIO()
    extra = logging.NullHandler()
    configure_logging("json", "INFO", stream=out, handlers=[extra])
    configure_logging("json", "INFO", stream=out, handlers=[extra])  # again: no duplicates
    assert len(logging.getLogger().handlers) == 2
    logging.getLogger("t.debug").debug("hidden")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = orjson.loads(lines[0])
    assert doc["logger"] == "py.warnings" and "careful" in doc["message"]


def test_library_repeats_are_held_back_on_every_handler_alike() -> None:
    out = io.StringIO()
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    extra = Keep()
    configure_logging("text", "WARNING", stream=out, handlers=[extra])
    configure_logging("text", "WARNING", stream=out, handlers=[extra])  # one filter, not two
    assert sum(isinstance(f, RepeatFilter) for f in extra.filters) == 1
    lib, own = logging.getLogger("somelib.conn"), logging.getLogger("agents.learner")
    for _ in range(5):
        lib.error("Unable connect to node with id %s", 1)
        own.warning("late outcome %s", "o1")
    lib.error("Unable to update metadata from %s", [1])  # another message: its own window
    lines = out.getvalue().splitlines()
    assert lines.count("ERROR somelib.conn: Unable connect to node with id 1") == 1
    assert lines.count("WARNING agents.learner: late outcome o1") == 5
    assert "ERROR somelib.conn: Unable to update metadata from [1]" in lines
    assert len(seen) == len(lines) == 7  # the second handler saw exactly what the first did
    configure_logging()


def test_repeats_are_counted_once_the_window_has_passed() -> None:
    now = [100.0]
    f = RepeatFilter(window_s=10.0, clock=lambda: now[0])

    def rec(level: int = logging.ERROR) -> logging.LogRecord:
        return logging.makeLogRecord(
            {"name": "faust.worker", "levelno": level, "msg": "timer %s late", "args": ("t",)}
        )

    assert f.filter(rec()) and not f.filter(rec()) and not f.filter(rec())
    assert f.filter(rec(logging.WARNING))  # another level: another message
    now[0] = 109.9
    assert not f.filter(rec())
    now[0] = 110.0
    after = rec()
    assert f.filter(after)
    assert after.getMessage() == "timer t late (3 repeats not logged since its previous line)"
    now[0] = 125.0
    quiet = rec()
    assert f.filter(quiet) and quiet.getMessage() == "timer t late"  # nothing was dropped


def test_text_format_is_plain() -> None:
    out = io.StringIO()
    configure_logging("text", "WARNING", stream=out)
    logging.getLogger("t.text").warning("plain %s", "line", extra={"partition": 1})
    assert out.getvalue() == "WARNING t.text: plain line\n"
    with pytest.raises(ValueError, match="'text' or 'json'"):
        configure_logging("xml")


class FakeRedis:
    """A stand-in for a redis-py client: records the pipelines, fails while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.added: list[tuple[str, dict[str, Any], int, bool]] = []
        self.closed = 0
        self._pending: list[tuple[str, dict[str, Any], int, bool]] = []

    def pipeline(self, transaction: bool) -> FakeRedis:
        assert transaction is False
        self._pending = []
        return self

    def xadd(self, name: str, fields: dict[str, Any], maxlen: int, approximate: bool) -> None:
        self._pending.append((name, fields, maxlen, approximate))

    def execute(self) -> None:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.added.extend(self._pending)

    def close(self) -> None:
        self.closed += 1


def test_full_queue_drops_and_counts_exactly_across_threads() -> None:
    sink = RedisLogSink(lambda: None, "s", maxlen=10, queue_size=500)
    accepted = [0] * 8

    def offer(i: int) -> None:
        accepted[i] = sum(sink.offer("log", {"n": j}) for j in range(1000))

    threads = [threading.Thread(target=offer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(accepted) == 500 and sink.dropped == 8000 - 500


def test_own_lines_skip_the_full_queue_and_come_first() -> None:
    client = FakeRedis()
    sink = RedisLogSink(lambda: client, "s", maxlen=10, queue_size=1, source="h:1")
    assert sink.offer("log", {"message": "a"}) and not sink.offer("log", {"message": "b"})
    assert sink.offer("log", {"message": "outage"}, own=True)
    assert sink.write(sink._take())
    sent = [orjson.loads(fields["data"])["message"] for _, fields, _, _ in client.added]
    assert sent == ["outage", "a"] and sink.dropped == 1
    name, fields, maxlen, approximate = client.added[0]
    assert (name, fields["kind"], fields["worker"]) == ("s", "log", "h:1")
    assert (maxlen, approximate) == (10, True)  # XADD ... MAXLEN ~ 10


def test_an_outage_is_one_warning_and_one_line_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeRedis()
    connects = [0]

    def connect() -> FakeRedis:
        connects[0] += 1
        return client

    sink = RedisLogSink(connect, "s", maxlen=10, queue_size=10)
    batch = [("log", {"message": "x"})]
    client.down = True
    with caplog.at_level(logging.INFO, logger="alphapulse._logsink"):
        results = [sink.write(batch) for _ in range(5)]
        client.down = False
        assert sink.write(batch) and sink.write(batch)
    assert results == [False] * 5 and sink.failures == 0
    assert connects[0] == 6 and client.closed == 5  # a new connection after each failure
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0][0] == "WARNING" and "unavailable (ConnectionError" in lines[0][1]
    assert lines[1][0] == "INFO" and "reachable again" in lines[1][1]
    assert len(client.added) == 2  # the batch kept through the outage, written once it ended


def test_closing_with_redis_down_counts_what_is_left() -> None:
    client = FakeRedis()
    client.down = True
    sink = RedisLogSink(lambda: client, "s", maxlen=10, queue_size=10).start()
    for i in range(5):
        sink.offer("log", {"n": i})
    sink.close(timeout=5)
    assert sink.dropped == 5 and not client.added


def test_the_handler_offers_info_and_above_without_waiting() -> None:
    sink = RedisLogSink(lambda: None, "s", maxlen=10, queue_size=2)
    logger = logging.getLogger("t.handler")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(RedisLogHandler(sink))
    try:
        logger.debug("not offered")
        for i in range(4):
            logger.info("offered %d", i, extra={"model_key": "BTC"})
    finally:
        logger.handlers.clear()
    batch = sink._take()
    assert [d["message"] for _, d in batch] == ["offered 0", "offered 1"]
    assert batch[0][1]["model_key"] == "BTC" and sink.dropped == 2


def test_drop_counter_is_a_worker_metric() -> None:
    m = WorkerMetrics(Runtime(Settings(_env_file=None), topics={}))

    def value() -> float:
        for fam in text_string_to_metric_families(m.render().decode()):
            for s in fam.samples:
                if s.name == "alphapulse_log_records_dropped_total":
                    return float(s.value)
        raise AssertionError("no alphapulse_log_records_dropped_total")

    assert value() == 0.0
    m.log_records_dropped = lambda: 7
    assert value() == 7.0
    assert {"rates", "latency", "lag", "components"} <= set(m.performance())


def test_logs_needs_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALPHAPULSE_REDIS_URL", raising=False)
    result = CliRunner().invoke(app, ["logs"])
    assert result.exit_code == 2
    assert "ALPHAPULSE_REDIS_URL is not set" in result.output
    result = CliRunner().invoke(app, ["logs"], env={"ALPHAPULSE_REDIS_URL": "http://x:1"})
    assert result.exit_code == 2
    assert "ALPHAPULSE_REDIS_URL must start with redis://" in result.output
