"""data_revision: re-sent readings that differ from the first received, judged per receipt hour.

Readings go through ingest/revisions.py's RevisionGuard (what the ingest writer does) into the
real influxd; alerts through the Runner and its store, as in test_detect_runner.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from config.schema import InfluxSettings
from detect.exceedance import Exceedance
from detect.registry import detector_classes
from detect.revision import DataRevision
from detect.runner import Runner
from core.influx import Influx
from ingest.revisions import RevisionGuard
from tests.detect_helpers import lookup, minute_lines, registry, utc

H0 = utc(2024, 3, 1, 2)  # the data hour
R = utc(2024, 3, 3, 5, 20)  # when the re-send is received
SO2, NOX = "a21026", "a21002"  # GAS01's limits: SO2 35, NOx 50 (hourly, Zs)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def influx(influx_settings: InfluxSettings) -> Any:
    with Influx(influx_settings) as client:
        yield client


def so2(values: Callable[[int], float]) -> list[str]:
    return minute_lines(lookup(), "GAS01", H0, 60, lambda i: {SO2: {"avg": values(i) * 0.8, "zs_avg": values(i), "flag": "N"},
                                                              NOX: {"zs_avg": 5.0, "flag": "N"}})


def ingest(influx: Influx, lines: list[str], now: datetime) -> int:
    """What the ingest writer does with a batch: screen, write, remember; the revisions written."""
    guard = RevisionGuard(influx)
    screened = guard.screen(lines, now=now)
    influx.write(screened.lines)
    return screened.revisions


def runner(settings_factory: Any, influx: Influx) -> Runner:
    return Runner(settings_factory(registry()), influx=influx, detectors=[Exceedance(), DataRevision()])


def test_lowering_resend_keeps_the_exceedance_open_and_raises_critical_revision(settings_factory: Any,
                                                                               influx: Influx) -> None:
    r = runner(settings_factory, influx)
    ingest(influx, so2(lambda i: 50.0), now=H0 + timedelta(hours=1))
    r.evaluate_range(H0, H0 + timedelta(hours=1), kinds=["exceedance"])
    # The station re-sends the hour two days later, every minute under the limit.
    assert ingest(influx, so2(lambda i: 20.0), now=R) == 60
    r.evaluate_range(H0, H0 + timedelta(hours=1), kinds=["exceedance"])  # the next detection run
    r.evaluate_range(R - timedelta(hours=1), R + timedelta(hours=1), kinds=["data_revision"])
    by_kind = {s.alert.kind: s for s in r.store.alerts()}
    assert set(by_kind) == {"exceedance", "data_revision"}
    exc = by_kind["exceedance"]
    assert exc.status == "open" and exc.alert.value == 50.0
    rev = by_kind["data_revision"].alert
    assert (rev.severity, rev.enterprise_id, rev.outlet_id, rev.pollutant, rev.station_mn) == (
        "critical", "e-power", "stack1", SO2, "GAS01")
    assert (rev.window_start, rev.window_end) == (utc(2024, 3, 3, 5), utc(2024, 3, 3, 6))  # the receipt hour
    assert rev.value == 50.0 and rev.limit == 35
    ev = rev.evidence
    assert ev["revised_readings"] == 120  # avg and zs_avg of 60 minutes
    assert ev["hours"] == [{"station_mn": "GAS01", "local_hour": "2024-03-01T10:00+08:00", "severity": "critical",
                            "first_mean": 50.0, "revised_mean": 20.0, "change": -0.6, "basis": "zs", "limit": 35}]
    first = [x for x in ev["revisions"] if x["field"] == "zs_avg"][0]
    assert first == {"time": "2024-03-01T02:00:00Z", "interval": "minute", "station_mn": "GAS01", "field": "zs_avg",
                     "first": 50.0, "revised": 20.0, "received_at": "2024-03-03T05:20:00Z"}
    json.dumps(rev.to_json())  # evidence is plain JSON


def test_small_and_large_changes_under_the_limit(settings_factory: Any, influx: Influx) -> None:
    r = runner(settings_factory, influx)
    ingest(influx, so2(lambda i: 20.0), now=H0 + timedelta(hours=1))
    ingest(influx, so2(lambda i: 20.5 if i < 6 else 20.0), now=R)  # +0.05 on the hour mean: minor
    ingest(influx, minute_lines(lookup(), "GAS01", H0, 60, {NOX: {"zs_avg": 9.0, "flag": "N"}}), now=R)  # +80 %: major
    alerts = {a.pollutant: a for a in DataRevision().detect(_window(R), r.source, r.lookup)}
    assert alerts[SO2].severity == "minor" and alerts[SO2].evidence["hours"][0]["revised_mean"] == 20.05
    assert alerts[NOX].severity == "major"


def test_identical_replay_and_backfill_raise_nothing(settings_factory: Any, influx: Influx) -> None:
    r = runner(settings_factory, influx)
    ingest(influx, so2(lambda i: 50.0)[:60], now=H0)  # the first half hour of both channels
    assert ingest(influx, so2(lambda i: 50.0), now=R) == 0  # replay of the same data + back-fill of the rest
    assert DataRevision().detect(_window(R), r.source, r.lookup) == []
    assert int(influx.query("SELECT count(zs_avg) FROM station_minute")[0].values[0][1]) == 120


def test_data_revision_is_declared_everywhere_a_kind_is() -> None:
    """data_revision is declared once, by its class's tags, and every reader knows it (notice labels,
    escalation, the board's kinds, the simulator)."""
    from center import board
    from devtools import simulate
    from config.schema import EscalationSettings
    from notify.notices import problem_labels

    assert detector_classes()["data_revision"] is DataRevision
    assert all("data_revision" in labels for labels in problem_labels().values())
    assert "data_revision" in EscalationSettings().immediate_kinds
    assert "data_revision" in simulate.KINDS
    served = {k["kind"]: k for k in board.kinds()}
    assert set(detector_classes()) <= set(served)
    for lang in ("zh-CN", "en"):
        assert served["data_revision"]["labels"][lang]
        i18n = json.loads((ROOT / f"center/static/i18n/{lang}.json").read_text())
        assert not [k for k in i18n if k.startswith("kind.")], "kind labels come from the detectors' tags"


def _window(t: datetime) -> Any:
    from detect.base import Window

    start = t.replace(minute=0, second=0, microsecond=0)
    return Window(start, start + timedelta(hours=1))


def test_realtime_revisions_are_kept_but_not_reported_by_default(settings_factory: Any, influx: Influx) -> None:
    """Field loggers stamp successive real-time samples with one DataTime: kept first-received, not a finding."""
    r = runner(settings_factory, influx)
    rtd = lambda v: minute_lines(lookup(), "GAS01", H0, 1, {SO2: {"rtd": v}}, cn="2011")  # noqa: E731
    ingest(influx, rtd(50.0), now=H0)
    assert ingest(influx, rtd(20.0), now=R) == 1
    assert DataRevision().detect(_window(R), r.source, r.lookup) == []
    [alert] = DataRevision(intervals=("rtd",)).detect(_window(R), r.source, r.lookup)
    assert alert.severity == "minor" and alert.evidence["revisions"][0]["interval"] == "rtd"
