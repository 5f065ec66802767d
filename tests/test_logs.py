"""center.logs: JSON lines with ts/level/logger/msg and extras; text lines; run in a real subprocess too."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from center.logs import configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_json_record_has_base_fields_and_extras(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging(json=True, level="INFO", stream=out)
    logging.getLogger("ingest.consumer").warning("batch of %d rejected", 12,
                                                 extra={"station": "MN1", "path": Path("/x"), "level": "mine"})
    logging.getLogger("ingest.consumer").debug("not shown at INFO")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["level"] == "WARNING" and rec["logger"] == "ingest.consumer" and rec["msg"] == "batch of 12 rejected"
    assert rec["station"] == "MN1" and rec["path"] == "/x" and rec["level_"] == "mine"
    assert datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).tzinfo is not None


def test_json_exception_and_non_ascii(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    try:
        raise ValueError("坏数据")
    except ValueError:
        logging.getLogger("x").exception("解析失败")
    rec = json.loads(out.getvalue())
    assert rec["msg"] == "解析失败" and "ValueError: 坏数据" in rec["exc"] and rec["level"] == "ERROR"


def test_reconfigure_replaces_own_handler_only(restore_root: None) -> None:
    text, js = io.StringIO(), io.StringIO()
    configure_logging(json=False, stream=text)
    logging.getLogger("a").info("first", extra={"n": 1})
    configure_logging(json=True, stream=js)
    logging.getLogger("a").info("second")
    assert text.getvalue().count("\n") == 1 and " INFO a: first n=1" in text.getvalue()
    assert json.loads(js.getvalue())["msg"] == "second"
    assert sum(getattr(h, "_envwatch_handler", False) for h in logging.getLogger().handlers) == 1


def test_chatty_http_client_quiet_at_info(restore_root: None) -> None:
    configure_logging(json=True, level="INFO", stream=io.StringIO())
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    configure_logging(json=True, level="DEBUG", stream=io.StringIO())
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)


def test_apscheduler_says_only_what_an_operator_needs(restore_root: None) -> None:
    """The schedule's runs and fires skipped while a kind still runs are quiet; a missed run warns."""
    import threading
    import time
    from datetime import datetime, timedelta, timezone

    from apscheduler.schedulers.background import BackgroundScheduler

    from detect.schedule import SerialExecutor

    out = io.StringIO()
    configure_logging(json=True, level="INFO", stream=out)
    release = threading.Event()
    scheduler = BackgroundScheduler(executors={"default": SerialExecutor()}, timezone=timezone.utc)
    scheduler.add_job(release.wait, "interval", seconds=0.2, args=[5], id="busy", max_instances=1, coalesce=True,
                      misfire_grace_time=60)
    scheduler.add_job(lambda: None, "interval", hours=1, id="late", misfire_grace_time=1,
                      next_run_time=datetime.now(timezone.utc) - timedelta(seconds=30))
    scheduler.start()
    try:
        time.sleep(1.5)  # "busy" fires about 7 times while its first run waits; "late" is seen missed
    finally:
        release.set()
        scheduler.shutdown(wait=True)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["level"], r["logger"]) for r in lines] == [("WARNING", "apscheduler.executors.default")]
    assert "was missed by" in lines[0]["msg"]


def test_every_stderr_line_of_a_process_is_json() -> None:
    code = ("import logging; from center.logs import configure_logging; configure_logging(json=True);"
            "logging.getLogger('svc').info('up', extra={'port': 8080});"
            "logging.getLogger('svc').error('down')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=Path(__file__).resolve().parents[1])
    recs = [json.loads(line) for line in r.stderr.splitlines()]
    assert [(x["level"], x["msg"]) for x in recs] == [("INFO", "up"), ("ERROR", "down")]
    assert recs[0]["port"] == 8080
