"""The one place naive times become China time (HJ 212 DataTime, JSON, CLI and API input)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.time import china_time, parse_time


def test_a_naive_time_is_china_time_and_an_offset_is_kept() -> None:
    assert parse_time(" 2016-08-24T08:00 ") == datetime(2016, 8, 24, 0, 0, tzinfo=timezone.utc)
    assert parse_time("2016-08-24T08:00:00Z") == datetime(2016, 8, 24, 8, 0, tzinfo=timezone.utc)
    assert parse_time("2016-08-24T08:00+02:00").utcoffset() == timedelta(hours=2)
    aware = datetime(2020, 1, 1, tzinfo=timezone.utc)
    assert china_time(aware) is aware


def test_not_a_time_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_time("yesterday")
