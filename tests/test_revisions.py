"""Tamper-evident readings (ingest/revisions.py): the first value received stays, re-sends that differ
become revisions, replays and back-fill change nothing. Against the real influxd (and broker)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from config.schema import InfluxSettings
from ingest.influx import Influx
from ingest.revisions import RevisionGuard, read_revisions
from tests.detect_helpers import lookup, minute_lines, utc

T = utc(2025, 3, 4, 10)


def _avg(influx: Influx, mn: str = "GAS01", pollutant: str = "a21026") -> list[tuple[int, float]]:
    s = influx.query(f"SELECT avg FROM station_minute WHERE mn = '{mn}' AND pollutant = '{pollutant}'")
    return [(int(t), v) for t, v in s[0].values] if s else []


def _lines(start: datetime, values: list[float], pollutant: str = "a21026") -> list[str]:
    return minute_lines(lookup(), "GAS01", start, len(values),
                        lambda i: {pollutant: {"avg": values[i], "zs_avg": values[i] + 1, "flag": "N"}})


def _write(guard: RevisionGuard, lines: list[str], now: datetime | None = None) -> int:
    screened = guard.screen(lines, now=now)
    guard.influx.write(screened.lines)
    guard.remember(screened)
    return screened.revisions


def test_first_value_stays_and_revision_is_kept_beside_it(influx_settings: InfluxSettings) -> None:
    with Influx(influx_settings) as influx:
        _write(RevisionGuard(influx), _lines(T, [40.0, 41.0, 42.0]))
        # A new worker (nothing remembered): the lookup finds the stored points.
        assert _write(RevisionGuard(influx), _lines(T, [40.0, 20.0, 42.0]), now=utc(2025, 3, 5, 1)) == 1
        assert [v for _, v in _avg(influx)] == [40.0, 41.0, 42.0]
        revs = read_revisions(influx, T, T + timedelta(hours=1))
        assert [(r.field, r.first, r.revised) for r in revs] == [("avg", 41.0, 20.0), ("zs_avg", 42.0, 21.0)]
        assert {(r.mn, r.enterprise, r.outlet, r.pollutant, r.interval) for r in revs} == {
            ("GAS01", "e-power", "stack1", "a21026", "minute")}
        assert revs[0].time == T + timedelta(minutes=1) and revs[0].received_at == utc(2025, 3, 5, 1)
        assert read_revisions(influx, utc(2025, 3, 5), utc(2025, 3, 6), by="received") == revs
        assert read_revisions(influx, utc(2025, 3, 6), utc(2025, 3, 7), by="received") == []


def test_several_revisions_of_one_point_are_all_kept_once_each(influx_settings: InfluxSettings) -> None:
    with Influx(influx_settings) as influx:
        guard = RevisionGuard(influx)
        _write(guard, _lines(T, [40.0]))
        assert _write(guard, _lines(T, [30.0]), now=utc(2025, 3, 5, 1)) == 1
        assert _write(guard, _lines(T, [20.0]), now=utc(2025, 3, 5, 2)) == 1
        # The same revised value again (another worker, another day): already stored, nothing new.
        assert _write(RevisionGuard(influx), _lines(T, [30.0]), now=utc(2025, 3, 6, 1)) == 0
        revs = [r for r in read_revisions(influx, T, T + timedelta(hours=1)) if r.field == "avg"]
        assert [(r.first, r.revised, r.received_at) for r in revs] == [
            (40.0, 30.0, utc(2025, 3, 5, 1)), (40.0, 20.0, utc(2025, 3, 5, 2))]
        assert _avg(influx) == [(int(T.timestamp()), 40.0)]


def test_identical_replay_and_backfill_write_no_revision(influx_settings: InfluxSettings) -> None:
    with Influx(influx_settings) as influx:
        _write(RevisionGuard(influx), _lines(T, [40.0, 41.0]))
        guard = RevisionGuard(influx)
        screened = guard.screen(_lines(T, [40.0, 41.0]))
        assert screened.lines == [] and screened.revisions == 0
        # Back-fill (补发) of minutes never received, in the same batch as a replay: written as sent.
        backfill = _lines(T + timedelta(minutes=2), [43.0, 44.0])
        screened = guard.screen(_lines(T, [40.0, 41.0]) + backfill)
        assert screened.lines == backfill and screened.revisions == 0
        influx.write(screened.lines)
        assert [v for _, v in _avg(influx)] == [40.0, 41.0, 43.0, 44.0]
        assert read_revisions(influx, T, T + timedelta(hours=1)) == []


def test_two_versions_in_one_batch_the_first_stays(influx_settings: InfluxSettings) -> None:
    with Influx(influx_settings) as influx:
        assert _write(RevisionGuard(influx), _lines(T, [40.0]) + _lines(T, [10.0]) + _lines(T, [40.0])) == 1
        assert _avg(influx) == [(int(T.timestamp()), 40.0)]
        revs = read_revisions(influx, T, T + timedelta(minutes=1))
        assert [(r.field, r.first, r.revised) for r in revs] == [("avg", 40.0, 10.0), ("zs_avg", 41.0, 11.0)]


def test_missing_fields_are_added_never_overwritten(influx_settings: InfluxSettings) -> None:
    lk = lookup()
    with Influx(influx_settings) as influx:
        _write(RevisionGuard(influx), minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0}}))
        assert _write(RevisionGuard(influx), minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0, "flag": "D"}})) == 0
        s = influx.query("SELECT avg, flag FROM station_minute")
        assert s[0].values == [[int(T.timestamp()), 40.0, "D"]]
        # A flag changed afterwards (making a minute invalid) is a revision like any value.
        assert _write(RevisionGuard(influx), minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0, "flag": "N"}})) == 1
        assert influx.query("SELECT flag FROM station_minute")[0].values == [[int(T.timestamp()), "D"]]
        assert [(r.field, r.first, r.revised) for r in read_revisions(influx, T, T + timedelta(minutes=1))] == [
            ("flag", "D", "N")]


def test_a_resend_under_another_code_tag_is_still_a_revision(influx_settings: InfluxSettings) -> None:
    """The `code` tag (code as sent) is not part of a point's identity: a 2005 code cannot add a second point."""
    with Influx(influx_settings) as influx:
        _write(RevisionGuard(influx), _lines(T, [40.0]))
        other = [ln.replace("code=a21026", "code=03") for ln in _lines(T, [10.0])]
        assert _write(RevisionGuard(influx), other) == 1
        assert _avg(influx) == [(int(T.timestamp()), 40.0)]
