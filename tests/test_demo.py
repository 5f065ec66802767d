"""`envwatch demo`'s run planning: whole China days at any hour, and each run its own data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from center.demo import catch_up_start, detect_from, for_run
from config.loader import from_mapping
from detect.registry import build_detectors
from detect.runner import job_name
from detect.store import AlertStore
from notify.store import engine_from_settings

CHINA = timezone(timedelta(hours=8))


@pytest.mark.parametrize("hour", range(24))
def test_the_catch_up_starts_at_a_china_midnight_and_holds_a_whole_day_at_any_hour(hour: int) -> None:
    end = datetime(2026, 11, 29, hour, tzinfo=CHINA).astimezone(timezone.utc)
    start = catch_up_start(end, 1)
    local = start.astimezone(CHINA)
    assert (local.hour, local.minute) == (0, 0)  # the daily judgements see whole days ...
    assert timedelta(days=1) <= end - start < timedelta(days=2)  # ... and at least one is complete
    assert catch_up_start(end, 3) == start - timedelta(days=2)


def test_two_runs_never_share_a_store_or_a_database(tmp_path: Path) -> None:
    base = from_mapping({"ingest": {"state_dir": str(tmp_path)}, "influxdb": {"database": "envwatch"}}, source="t",
                        env={})
    first = for_run(base, datetime(2026, 11, 29, 21, 0, 5, tzinfo=timezone.utc))
    second = for_run(base, datetime(2026, 11, 29, 21, 40, 0, tzinfo=timezone.utc))
    assert first.store_url() != second.store_url()
    assert first.influxdb.database != second.influxdb.database
    assert first.influxdb.database.startswith("envwatch_") and first.influxdb.database.isidentifier()
    assert Path(first.ingest.state_dir).parent == tmp_path / "runs"
    assert first.broker == base.broker and first.registry == base.registry


def test_detection_starts_at_the_catch_up_start(tmp_path: Path) -> None:
    settings = for_run(from_mapping({"ingest": {"state_dir": str(tmp_path)}}, source="t", env={}),
                       datetime(2026, 11, 29, 21, tzinfo=timezone.utc))
    start = datetime(2026, 11, 27, 16, tzinfo=timezone.utc)
    detect_from(settings, start)
    engine = engine_from_settings(settings)
    try:
        store = AlertStore(engine)
        assert {store.watermark(job_name(d)).replace(tzinfo=timezone.utc) for d in build_detectors(settings)} == {start}
    finally:
        engine.dispose()
