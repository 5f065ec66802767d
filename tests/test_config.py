"""Configuration: the shipped examples validate; an invalid file reports every problem with its key path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import ConfigError, load
from config.loader import from_mapping
from config.tables import pollutant_codes

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "config" / "examples"
ENVWATCH = Path(sys.executable).with_name("envwatch")


def _stations(settings: Any) -> list[Any]:
    return [s for e in settings.registry.enterprises for o in e.outlets for s in o.stations]


def test_demo_city_validates() -> None:
    s = load(EXAMPLES / "demo-city.yaml", env={})
    stations = _stations(s)
    assert 35 <= len(s.registry.enterprises) <= 45
    assert 70 <= len(stations) <= 90
    assert {d.kind for d in s.registry.devices} == {"drone", "vehicle"}
    assert any(st.protocol == "json" for st in stations)
    assert any(st.sm4_key is not None and len(st.mn) == 24 for st in stations)
    assert any(st.units.get("a00000") == "m3/h" for st in stations)
    assert any(e.positive_list for e in s.registry.enterprises)
    assert {e.emergency_grade for e in s.registry.enterprises} >= {"A", "B", "C", "D"}
    assert all(e.lat is not None and e.lon is not None for e in s.registry.enterprises)
    assert s.broker.port == 1883 and s.influxdb.database == "envwatch"


def test_demo_city_limits_are_the_standards() -> None:
    s = load(EXAMPLES / "demo-city.yaml", env={})
    power = next(e for e in s.registry.enterprises if e.industry == "coal power").outlets[0]
    assert power.reference_o2 == 6.0
    assert {c: power.limits[c].hourly for c in ("a34013", "a21026", "a21002")} == {"a34013": 10, "a21026": 35, "a21002": 50}
    incin = next(e for e in s.registry.enterprises if e.industry == "waste incineration").outlets[0]
    assert incin.reference_o2 == 11.0
    assert (incin.limits["a21024"].hourly, incin.limits["a21024"].daily) == (60, 50)
    wwtp = next(e for e in s.registry.enterprises if e.industry == "municipal wastewater").outlets[0]
    assert {c: wwtp.limits[c].daily for c in wwtp.limits} == {"w01018": 50, "w21003": 5, "w21011": 0.5, "w21001": 15}


def test_field_2016_validates_and_covers_the_field_data() -> None:
    s = load(EXAMPLES / "field-2016.yaml", env={})
    stations = _stations(s)
    mns = {st.mn for st in stations}
    assert len(mns) == len(stations) > 250
    assert "ZG130131201304" in mns  # seen only with ST=91 (system): registered so it is not "unknown"
    assert all(c in pollutant_codes() for st in stations for c in st.pollutants)
    media = {o.medium for e in s.registry.enterprises for o in e.outlets}
    assert media == {"gas", "water"}


def test_field_registry_generator_is_deterministic(tmp_path: Path) -> None:
    out = tmp_path / "field.yaml"
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_field_registry.py"),
                    "/work/shared/data/hj212-field-2016", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == (EXAMPLES / "field-2016.yaml").read_bytes()


# -- an invalid configuration ------------------------------------------------------------------

BAD: dict[str, Any] = {
    "broker": {"host": "127.0.0.1", "port": 70000},  # bad port
    "registry": {
        "enterprises": [
            {"id": "e1", "name": "甲厂", "outlets": [{
                "id": "DA001", "medium": "gas", "reference_o2": 6,
                "limits": {"a21026": {"unit": "mg/m3", "standard": "GB 13223-2011"}},  # neither hourly nor daily
                "stations": [
                    {"mn": "MN0001", "pollutants": ["a21026", "x99999"]},  # unknown pollutant code
                    {"mn": "MN0002", "sm4_key": "not-a-key"},  # bad sm4_key
                ]}]},
            {"id": "e2", "name": "乙厂", "colour": "red",  # unknown key
             "outlets": [{"id": "DW001", "medium": "water", "stations": [{"mn": "MN0001"}]}]},  # duplicate MN
        ],
    },
}
FIELD_PROBLEMS = {
    "broker.port",
    "registry.enterprises.0.outlets.0.limits.a21026",
    "registry.enterprises.0.outlets.0.stations.0.pollutants",
    "registry.enterprises.0.outlets.0.stations.1.sm4_key",
    "registry.enterprises.1.colour",
}


def _problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        from_mapping(raw, env={})
    return {p.path: p.message for p in info.value.problems}


def test_invalid_config_reports_every_field_problem_with_its_path() -> None:
    problems = _problems(BAD)
    assert FIELD_PROBLEMS <= set(problems)
    assert "x99999" in problems["registry.enterprises.0.outlets.0.stations.0.pollutants"]
    assert "hourly" in problems["registry.enterprises.0.outlets.0.limits.a21026"]


def test_duplicate_mn_is_reported_with_both_key_paths() -> None:
    raw = {"broker": {"port": 0}, "registry": {"enterprises": [
        {"id": "e1", "name": "甲", "outlets": [{"id": "o", "medium": "gas", "stations": [{"mn": "MN1"}]}]},
        {"id": "e2", "name": "乙", "outlets": [{"id": "o", "medium": "gas", "stations": [{"mn": "MN1"}]}]},
    ]}}
    problems = _problems(raw)
    assert "broker.port" in problems
    msg = problems["registry.enterprises.1.outlets.0.stations.0.mn"]
    assert "MN1" in msg and "duplicate" in msg and "registry.enterprises.0.outlets.0.stations.0.mn" in msg


def test_duplicate_mn_is_reported_alongside_field_problems() -> None:
    problems = _problems(BAD)
    assert any("MN0001" in msg and path.endswith(".mn") for path, msg in problems.items())


def _envwatch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}  # no wrapping of long key paths
    env.pop("ENVWATCH_CONFIG", None)
    return subprocess.run([str(ENVWATCH), *args], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


def test_cli_check_fails_with_every_path_on_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(BAD, allow_unicode=True), encoding="utf-8")
    r = _envwatch("config", "check", str(bad))
    assert r.returncode == 1
    for path in FIELD_PROBLEMS:
        assert path in r.stderr, (path, r.stderr)


def test_cli_check_passes_on_the_demo_city() -> None:
    r = _envwatch("config", "check", str(EXAMPLES / "demo-city.yaml"))
    assert r.returncode == 0, r.stderr
    assert "40 enterprises" in r.stdout and "4 mobile devices" in r.stdout


def test_env_overrides_the_influx_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("influxdb: {url: 'http://127.0.0.1:8086', token: from-file}\n", encoding="utf-8")
    assert load(cfg, env={}).influxdb.token.get_secret_value() == "from-file"  # type: ignore[union-attr]
    monkeypatch.setenv("ENVWATCH_INFLUXDB__TOKEN", "from-env")
    s = load(cfg)
    assert s.influxdb.token is not None and s.influxdb.token.get_secret_value() == "from-env"
    assert "from-env" not in repr(s)  # a secret never shows in logs


def test_field_registry_generator_takes_mns_only_from_framed_packets(tmp_path: Path) -> None:
    """Issue 15.6: an MN seen only in packets failing the length or CRC check is not registered."""
    from ingest import hj212

    def seg(mn: str) -> str:
        return f"QN=20160824000000000;ST=31;CN=2051;PW=123456;MN={mn};Flag=4;CP=&&DataTime=20160824000000;01-Avg=1&&"

    good = hj212.encode(seg("GOOD0001"))
    long_ = hj212.encode(seg("LONG0001")).replace(b"##0", b"##1", 1)  # declared length wrong
    bad_crc = hj212.encode(seg("CRCX0001"))[:-6] + b"0000\r\n"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.h212").write_bytes(good + long_ + bad_crc)
    out = tmp_path / "field.yaml"
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_field_registry.py"), str(tmp_path / "data"), str(out)],
                   check=True, capture_output=True)
    s = load(out, env={})
    assert [st.mn for st in _stations(s)] == ["GOOD0001"]
