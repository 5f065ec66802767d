"""Real HJ/T 212-2005 field data (four hours, ~290 stations): outcome counts as a regression guard.

The exact counts were measured with this decoder; the README of the data describes them loosely
(~99.9 % valid, a few length mismatches, a few missing headers / bad lengths, some NUL bytes in
ST with a correct CRC). Both are asserted. NUL bytes in ST are accepted: ST is informational, so
those packets decode with st=None and the escaped raw value in extra["ST_raw"].
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ingest.decode import decode_payload, to_json
from ingest.model import Packet, Reason, Rejected

FIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "hj212-field-2016"
REPO = Path(__file__).resolve().parents[1]

EXPECTED = {
    "2016-08-24_00.h212": {
        "lines": 9455, "st_raw": 6,
        "outcomes": {"valid": 9447, "length_mismatch": 5, "crc_mismatch": 1, "no_header": 1, "bad_length": 1},
        "cn": {"1013": 1, "2011": 4523, "2021": 889, "2031": 222, "2051": 1777, "2061": 416, "2072": 12,
               "8013": 450, "9011": 195, "9012": 193, "9015": 769},
    },
    "2016-08-24_08.h212": {
        "lines": 8627, "st_raw": 1,
        "outcomes": {"valid": 8621, "length_mismatch": 4, "no_header": 1, "bad_length": 1},
        "cn": {"1013": 5, "2011": 4478, "2021": 889, "2031": 4, "2051": 1752, "2061": 291, "2072": 8,
               "2073": 3, "8013": 462, "9011": 3, "9012": 3, "9015": 723},
    },
    "2016-08-24_13.h212": {
        "lines": 9185, "st_raw": 1,
        "outcomes": {"valid": 9181, "length_mismatch": 4},
        "cn": {"1013": 8, "2011": 4686, "2021": 1100, "2031": 1, "2051": 1833, "2061": 301, "2072": 14,
               "8013": 461, "9011": 7, "9012": 7, "9015": 763},
    },
    "2016-08-24_18.h212": {
        "lines": 9267, "st_raw": 1,
        "outcomes": {"valid": 9262, "length_mismatch": 3, "no_header": 1, "bad_length": 1},
        "cn": {"1013": 21, "2011": 4695, "2021": 1092, "2051": 1837, "2061": 309, "2072": 128, "8013": 447,
               "9011": 7, "9012": 7, "9015": 719},
    },
}


def _lines(path: Path) -> list[bytes]:
    # One payload a line; only the trailing LF and CR are framing, NUL bytes inside are data.
    out = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        out.append(line[:-1] if line.endswith(b"\r") else line)
    return out


def _survey(path: Path) -> tuple[Counter, Counter, int, list[Packet]]:
    outcomes: Counter = Counter()
    cns: Counter = Counter()
    st_raw = 0
    packets = []
    for line in _lines(path):
        try:
            p = decode_payload(line)
        except Rejected as exc:
            assert exc.detail and isinstance(exc.reason, Reason)
            outcomes[exc.reason.value] += 1
            continue
        assert isinstance(p, Packet)
        outcomes["valid"] += 1
        cns[p.cn] += 1
        st_raw += "ST_raw" in p.extra
        packets.append(p)
    return outcomes, cns, st_raw, packets


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def survey(request: pytest.FixtureRequest) -> tuple[str, Counter, Counter, int, list[Packet]]:
    path = FIELD / request.param
    if not path.exists():
        pytest.skip(f"field data not found at {path}")
    return (request.param, *_survey(path))


def test_exact_outcomes_per_file(survey) -> None:
    name, outcomes, cns, st_raw, _ = survey
    exp = EXPECTED[name]
    assert sum(outcomes.values()) == exp["lines"]
    assert dict(outcomes) == exp["outcomes"]
    assert dict(cns) == exp["cn"]
    assert st_raw == exp["st_raw"]


def test_outcomes_match_the_data_readme(survey) -> None:
    _, outcomes, cns, st_raw, _ = survey
    total = sum(outcomes.values())
    assert outcomes["valid"] / total >= 0.999  # "~99.9 % well-formed"
    assert 1 <= outcomes["length_mismatch"] <= 10  # "a few"
    assert outcomes["no_header"] + outcomes["bad_length"] <= 4  # "a few"
    assert outcomes["crc_mismatch"] <= 2 and outcomes["bad_field"] == 0 and outcomes["decrypt_failed"] == 0
    assert st_raw >= 1  # "some NUL bytes inside a field (ST=\0\0) with a correct CRC": decoded
    main = {"2011", "2051", "2061", "2031", "2021", "8013", "9015", "2072"}  # the README's "mostly"
    assert sum(cns[c] for c in main) / outcomes["valid"] > 0.95


def test_field_packets_are_2005_and_mapped(survey) -> None:
    _, _, _, st_raw, packets = survey
    readings = [p for p in packets if p.interval]
    assert all(p.data_time is not None and p.data_time.utcoffset().total_seconds() == 8 * 3600 for p in readings)
    assert {p.edition for p in packets} <= {None, 0}
    mapped = Counter(orig for p in readings for orig in p.original_codes.values())
    assert {"01", "02", "03", "S01", "B02", "011", "060", "B01"} <= set(mapped)
    # wrong logger clocks are decoded as sent (year 2000 / 2015); ingest decides what to do with them
    years = Counter(p.data_time.year for p in readings)
    assert years[2016] > 0.95 * len(readings) and (years[2000] or years[2015])
    for p in packets:
        to_json(p)


def test_cli_end_to_end() -> None:
    src = FIELD / "2016-08-24_08.h212"
    if not src.exists():
        pytest.skip("field data not found")
    exe = Path(sys.executable).with_name("envwatch")
    cmd = [str(exe), "decode", str(src)] if exe.exists() else [sys.executable, "-m", "center.cli", "decode", str(src)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120, check=True)
    out = res.stdout.decode("utf-8").splitlines()
    assert len(out) == src.read_bytes().count(b"\n") == EXPECTED[src.name]["lines"]
    rows = [json.loads(line) for line in out]
    assert all(isinstance(r["ok"], bool) for r in rows)
    bad = [r for r in rows if not r["ok"]]
    assert all(r["reason"] in {x.value for x in Reason} and r["detail"] for r in bad)
    assert Counter(r["reason"] for r in bad) == {k: v for k, v in EXPECTED[src.name]["outcomes"].items() if k != "valid"}
    good = [r for r in rows if r["ok"]]
    assert {"mn", "st", "cn", "data_time", "values"} <= set(good[0])
    assert any(r["data_time"] and r["data_time"].endswith("+08:00") for r in good)


# ------------------------------------------------------------------ dispatch, to_json and run_cli


def _settings_with_key(mn: str, key_hex: str):
    from config.schema import Enterprise, Outlet, Registry, Settings, Station

    station = Station(mn=mn, sm4_key=key_hex)
    outlet = Outlet(id="o1", medium="gas", stations=[station])
    return Settings(registry=Registry(enterprises=[Enterprise(id="e1", name="E1", outlets=[outlet])]))


def test_run_cli_mixed_input() -> None:
    import io
    from datetime import datetime

    from ingest.hj212 import build_segment, encode
    from ingest.decode import run_cli
    from core.time import CHINA_TZ

    key_hex = "00112233445566778899AABBCCDDEEFF"
    mn = "0102030405060708090A0B0C"
    enc = encode(build_segment(mn=mn, cn="2061", st="31", qn="20260101000000000",
                               data_time=datetime(2026, 1, 1, 0, 30, 0, 250000, tzinfo=CHINA_TZ),
                               values={"a21026": {"avg": 12.5, "flag": "N"}}, sm4_key=bytes.fromhex(key_hex)))
    lines = [
        enc,  # ends in CR LF itself
        b' {"device": "V1", "kind": "vehicle", "time": "2026-01-01T08:00:00", "lat": 30, "lon": 120,'
        b' "species": {"no2": 41.5}}\n',
        b"\n",
        b"##0000\x00\x00\r\n",
        b"#" * 70000 + b"\n",
        b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
        b"CP=&&RtdInterval=30&&1C80",  # no final newline
    ]
    for settings, first_ok in ((_settings_with_key(mn, key_hex), True), (None, False)):
        out = io.StringIO()
        run_cli(io.BytesIO(b"".join(lines)), out, settings)
        rows = [json.loads(x) for x in out.getvalue().splitlines()]
        assert len(rows) == len(lines)
        assert rows[0]["ok"] is first_ok
        if first_ok:
            assert rows[0]["values"] == {"a21026": {"avg": 12.5, "flag": "N"}}
            assert rows[0]["encrypted"] is True and rows[0]["edition"] == 2
            assert rows[0]["data_time"] == "2026-01-01T00:30:00.250+08:00"
        else:
            assert rows[0]["reason"] == "decrypt_failed"
        assert rows[1] == {"ok": True, "type": "mobile", "device": "V1", "kind": "vehicle",
                           "time": "2026-01-01T08:00:00+08:00", "lat": 30.0, "lon": 120.0, "alt": None,
                           "species": {"no2": 41.5}, "wind_dir": None, "wind_speed": None}
        assert [r.get("reason") for r in rows[2:5]] == ["no_header", "length_mismatch", "too_large"]
        assert rows[5]["ok"] and rows[5]["extra"] == {"RtdInterval": "30"} and rows[5]["data_time"] is None
        assert (rows[5]["flag"], rows[5]["edition"], rows[5]["ack"], rows[5]["kind"]) == (5, 1, True, "other")


def test_to_json_station_shape() -> None:
    line = _lines(FIELD / "2016-08-24_13.h212")[0] if FIELD.exists() else None
    if line is None:
        pytest.skip("field data not found")
    obj = to_json(decode_payload(line))
    assert obj["ok"] is True and obj["type"] == "station"
    assert set(obj) >= {"mn", "st", "cn", "data_time", "values", "qn", "flag", "edition", "kind",
                        "original_codes", "extra", "encrypted"}
    json.dumps(obj)
