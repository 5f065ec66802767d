"""`envwatch config check` catches what would only break at run time, and says where: file, line, key path,
and the closest known name for a misspelt key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, load
from config.loader import from_mapping, key_lines, line_of

ENVWATCH = Path(sys.executable).with_name("envwatch")
TOKEN = "t" * 32


def _registry() -> dict[str, Any]:
    return {"enterprises": [{"id": "plant-a", "name": "甲厂", "outlets": [{
        "id": "DA001", "medium": "gas", "reference_o2": 6,
        "limits": {"a21026": {"hourly": 35, "standard": "GB 13223-2011"}},
        "stations": [{"mn": "MN-A-01", "pollutants": ["a21026"]}]}]}],
        "devices": [{"id": "UAV01", "kind": "drone"}]}


def _problems(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        from_mapping(raw, env={})
    return {p.path: p.message for p in info.value.problems}


def check(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run([str(ENVWATCH), "config", "check", str(path)], capture_output=True, text=True, env=env,
                          timeout=120)


def test_urls_without_a_scheme_fail_with_a_hint() -> None:
    p = _problems({"influxdb": {"url": "127.0.0.1:8086"}})
    assert "no scheme" in p["influxdb.url"] and "http://127.0.0.1:8086" in p["influxdb.url"]
    reg = _registry()
    reg["enterprises"][0]["contact"] = {"webhook_url": "example.cn/hook"}
    p = _problems({"registry": reg})
    assert "registry.enterprises.0.contact.webhook_url" in p
    assert _problems({"influxdb": {"url": "http://:8086"}})["influxdb.url"].endswith("'http://127.0.0.1:8086'")
    assert "port" in _problems({"influxdb": {"url": "http://127.0.0.1:99999"}})["influxdb.url"].lower()
    assert from_mapping({"influxdb": {"url": "https://influx.example.cn"}}, env={}).influxdb.url


def test_references_between_sections() -> None:
    raw = {"registry": _registry(),
           "notify": {"officers": [{"id": "officer-wang", "name": "王"}, {"id": "UAV01", "name": "重名"}]},
           "center": {"users": [
               {"name": "a", "role": "enterprise", "enterprise_id": "plant-aa", "token": TOKEN},
               {"name": "w", "role": "officer", "officer_id": "officer-wong", "token": TOKEN},
               {"name": "ok", "role": "officer", "officer_id": "officer-wang", "token": TOKEN}]},
           "detect": {"overrides": [{"enterprise": "plant-b", "params": {}},
                                    {"enterprise": "plant-a", "outlet": "DA002", "params": {}},
                                    {"pollutant": "a21062", "params": {}}]}}
    p = _problems(raw)
    assert p["center.users.0.enterprise_id"] == "no enterprise 'plant-aa' in registry.enterprises; did you mean 'plant-a'?"
    assert p["center.users.1.officer_id"] == "no officer 'officer-wong' in notify.officers; did you mean 'officer-wang'?"
    assert "center.users.2.officer_id" not in p
    assert "plant-b" in p["detect.overrides.0.enterprise"]
    assert "DA002" in p["detect.overrides.1.outlet"] and "did you mean 'DA001'" in p["detect.overrides.1.outlet"]
    assert "did you mean 'a21026'" in p["detect.overrides.2.pollutant"]
    # An officer named like a device: `envwatch broker acl` would skip one of the two MQTT accounts.
    assert "registry.devices.0.id" in p["notify.officers.1.id"] and "MQTT" in p["notify.officers.1.id"]


def test_misspelt_keys_get_the_closest_field_name() -> None:
    reg = _registry()
    reg["enterprises"][0]["outlets"][0]["limits"]["a21026"] = {"hourley": 35, "standard": "GB 13223-2011"}
    reg["enterprises"][0]["emergency_grad"] = "A"
    p = _problems({"registry": reg, "influxdb": {"databse": "x"}})
    assert p["registry.enterprises.0.outlets.0.limits.a21026.hourley"].startswith(
        "unknown key 'hourley' at registry.enterprises.0.outlets.0.limits.a21026; did you mean 'hourly'?")
    assert "did you mean 'emergency_grade'?" in p["registry.enterprises.0.emergency_grad"]
    assert "did you mean 'database'?" in p["influxdb.databse"]
    assert "Extra inputs" not in " ".join(p.values())
    p = _problems({"detect": {"detectors": {"exceedance": {"major_factor": 2}}}})
    assert "parameters go under detect.detectors.exceedance.params" in p["detect.detectors.exceedance.major_factor"]
    p = _problems({"brokr": {}})
    assert p["brokr"].startswith("unknown key 'brokr' at the top level; did you mean 'broker'?")


def test_detector_kinds_and_parameters_are_checked(tmp_path: Path) -> None:
    from detect.registry import detector_classes

    params = sorted(detector_classes()["exceedance"]._get_param_names())
    wrong = params[0][:-1] + "x" + params[0][-1]  # a typo of a real parameter
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"detect:\n  detectors:\n    exceedence: {{enabled: true}}\n    exceedance:\n"
                   f"      params: {{{wrong}: 1}}\n", encoding="utf-8")
    r = check(cfg)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert any(line.startswith(f"  {cfg}:3: detect.detectors.exceedence: unknown detector kind 'exceedence'; known: ")
               and line.endswith("did you mean 'exceedance'?") for line in lines), r.stderr
    assert any(line.startswith(f"  {cfg}:5: detect.detectors.exceedance.params.{wrong}: unknown parameter {wrong!r}")
               and line.endswith(f"did you mean {params[0]!r}?") for line in lines), r.stderr


def test_a_detector_parameter_of_the_wrong_type_is_refused_by_config_check(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detect:\n  detectors:\n    exceedance:\n      params: {major_factor: lots, min_valid_hours: 1.5}\n"
                   "    hotspot:\n      params: {radius_m: 300}\n", encoding="utf-8")
    r = check(cfg)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"  {cfg}:4: detect.detectors.exceedance.params.major_factor: exceedance's major_factor takes float, " \
           "not 'lots'" in r.stderr.splitlines(), r.stderr
    assert f"  {cfg}:4: detect.detectors.exceedance.params.min_valid_hours: exceedance's min_valid_hours takes int, " \
           "not 1.5" in r.stderr.splitlines(), r.stderr
    assert "radius_m" not in r.stderr  # an int where a float is wanted is a number all the same
    cfg.write_text("detect:\n  detectors:\n    exceedance:\n      params: {major_factor: 2, min_valid_hours: 18}\n",
                   encoding="utf-8")
    assert check(cfg).returncode == 0


def test_every_problem_names_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "envwatch.yaml"
    cfg.write_text("broker:\n  host: 127.0.0.1\n  port: 70000\n"
                   "influxdb:\n  url: '127.0.0.1:8086'\n"
                   "registry:\n  enterprises:\n    - id: plant-a\n      name: 甲厂\n      colour: red\n", encoding="utf-8")
    r = check(cfg)
    assert r.returncode == 1
    assert f"{cfg}:3: broker.port:" in r.stderr
    assert f"{cfg}:5: influxdb.url: '127.0.0.1:8086' is not an http:// or https:// URL" in r.stderr
    assert f"{cfg}:10: registry.enterprises.0.colour: unknown key 'colour'" in r.stderr
    assert "<unicode string>" not in r.stderr and "Traceback" not in r.stderr


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("broker:\n  host: 127.0.0.1\n  port: [1883\ninfluxdb: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(cfg, env={})
    (problem,) = info.value.problems
    assert problem.line == 4 and problem.path == "(yaml)"
    r = check(cfg)
    assert r.returncode == 1 and f"{cfg}:4: (yaml):" in r.stderr and "<unicode string>" not in r.stderr


def test_key_lines_follow_lists_and_nested_mappings() -> None:
    text = "a:\n  b:\n    - x: 1\n    - x: 2\n      y: 3\n"
    lines = key_lines(text)
    assert lines[("a",)] == 1 and lines[("a", "b", "0", "x")] == 3 and lines[("a", "b", "1", "y")] == 5
    assert line_of(lines, "a.b.1.z") == 4  # a missing key: its nearest ancestor in the file


def test_state_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "conf" / "envwatch.yaml"
    cfg.parent.mkdir()
    cfg.write_text("ingest: {state_dir: state}\n", encoding="utf-8")
    assert Path(load(cfg, env={}).ingest.state_dir) == tmp_path / "conf" / "state"
    cfg.write_text("{}\n", encoding="utf-8")
    assert Path(load(cfg, env={}).ingest.state_dir) == tmp_path / "conf" / ".state"
    cfg.write_text(f"ingest: {{state_dir: {tmp_path / 'abs'}}}\n", encoding="utf-8")
    assert Path(load(cfg, env={}).ingest.state_dir) == tmp_path / "abs"
    assert load(cfg, env={}).store_url() == f"sqlite:///{tmp_path / 'abs'}/envwatch.sqlite"


def test_the_shipped_examples_pass_the_new_checks() -> None:
    root = Path(__file__).resolve().parents[1] / "config" / "examples"
    for name in ("demo-city.yaml", "field-2016.yaml"):
        r = check(root / name)
        assert r.returncode == 0, r.stderr
