"""JSON payloads: station readings and mobile (drone / vehicle) fixes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from ingest.jsonfmt import decode
from core.time import CHINA_TZ
from ingest.model import MobileFix, Packet, Reason, Rejected

STATION = {"mn": "LD1", "cn": "2051", "st": "31", "data_time": "2026-11-29T10:00:00+08:00",
           "values": {"a21026": {"avg": 12.3, "zs_avg": 15.1, "flag": "N"}, "02": {"min": 1}}}
MOBILE = {"device": "UAV01", "kind": "drone", "time": "2026-11-29T10:00:00", "lat": 31.2, "lon": 121.5,
          "alt": 120.0, "species": {"voc": 0.8, "pm25": 35}, "wind_dir": 270, "wind_speed": 3.5}


def _dec(obj: object) -> Packet | MobileFix:
    return decode(json.dumps(obj).encode())


def _rejects(raw: bytes, reason: Reason) -> str:
    with pytest.raises(Rejected) as info:
        decode(raw)
    assert info.value.reason is reason, info.value.detail
    assert info.value.detail
    return info.value.detail


def test_station_packet() -> None:
    p = _dec(STATION)
    assert isinstance(p, Packet)
    assert (p.mn, p.cn, p.st) == ("LD1", "2051", "31")
    assert p.data_time == datetime(2026, 11, 29, 10, tzinfo=CHINA_TZ)
    # the 2005 code "02" is SO2 (a21026): merged into the 2017 code, original kept
    assert p.values == {"a21026": {"avg": 12.3, "zs_avg": 15.1, "flag": "N", "min": 1.0}}
    assert p.original_codes == {"a21026": "02"}


def test_naive_time_means_china_time() -> None:
    p = _dec({**STATION, "data_time": "2026-11-29T03:00:00"})
    assert p.data_time.astimezone(timezone.utc) == datetime(2026, 11, 28, 19, tzinfo=timezone.utc)
    z = _dec({**STATION, "data_time": "2026-11-29T03:00:00Z"})
    assert z.data_time == datetime(2026, 11, 29, 3, tzinfo=timezone.utc)


def test_mobile_fix() -> None:
    m = _dec(MOBILE)
    assert isinstance(m, MobileFix)
    assert (m.device, m.kind, m.lat, m.lon, m.alt) == ("UAV01", "drone", 31.2, 121.5, 120.0)
    assert m.time == datetime(2026, 11, 29, 10, tzinfo=CHINA_TZ)
    assert m.species == {"voc": 0.8, "pm25": 35.0}
    assert (m.wind_dir, m.wind_speed) == (270.0, 3.5)
    minimal = _dec({k: MOBILE[k] for k in ("device", "kind", "time", "lat", "lon")})
    assert minimal.species == {} and minimal.alt is None and minimal.wind_dir is None


@pytest.mark.parametrize("change", [
    {"lat": 91}, {"lon": -180.5}, {"lat": "31.2"}, {"lat": True}, {"kind": "boat"}, {"device": ""},
    {"species": {"benzene": 1.0}}, {"species": {"voc": "high"}}, {"wind_dir": 361}, {"wind_speed": -1},
    {"time": "yesterday"}, {"time": 1764381600}, {"device": "UAV\u0000"}, {"colour": "red"},
])
def test_mobile_bad_fields(change: dict) -> None:
    _rejects(json.dumps({**MOBILE, **change}).encode(), Reason.BAD_FIELD)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers(literal: str) -> None:
    _rejects(json.dumps(MOBILE).replace("31.2", literal).encode(), Reason.BAD_FIELD)
    _rejects(json.dumps(STATION).replace("12.3", literal).encode(), Reason.BAD_FIELD)


@pytest.mark.parametrize("change", [
    {"cn": "20x1"}, {"cn": 2051}, {"mn": ""}, {"data_time": None}, {"values": {"a21026": {"avg": "12"}}},
    {"values": {"a21026": {"flag": 1}}}, {"values": {"a21026": {"avg": True}}}, {"values": {"": {"avg": 1}}},
    {"values": {"a21026": {"avg": 1, "flag": "N\ud800"}}}, {"flag": 256},
])
def test_station_bad_fields(change: dict) -> None:
    _rejects(json.dumps({**STATION, **change}).encode(), Reason.BAD_FIELD)


def test_non_readings_station_packet_needs_no_time() -> None:
    p = _dec({"mn": "LD1", "cn": "8013", "extra": {"HeartbeatTime": "120"}})
    assert p.data_time is None and p.extra == {"HeartbeatTime": "120"}


@pytest.mark.parametrize("raw", [b"{", b"{\"mn\": }", b"\xff{}", b"[" * 100_000, b"{'mn': 'x'}"])
def test_bad_json(raw: bytes) -> None:
    _rejects(raw, Reason.BAD_JSON)


@pytest.mark.parametrize("raw", [b"[]", b"{}", b"{\"x\": 1}", b"\"mn\""])
def test_wrong_shape(raw: bytes) -> None:
    _rejects(raw, Reason.BAD_FIELD)
