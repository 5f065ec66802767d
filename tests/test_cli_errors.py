"""The `envwatch` CLI without surprises: a bad argument is one line naming what is wrong and what is accepted,
exit code 2, never a traceback; the state follows the configuration file, not the working directory; listings
have full ids, --json and --csv. Each case runs the real `envwatch` in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.devservices import free_port
from config import load
from detect.store import AlertStore
from notify import workflow
from core.db import engine_from_settings, migrate
from tests.casekit import REGISTRY, T0, H, alert

ENVWATCH = Path(sys.executable).with_name("envwatch")


def envwatch(*args: str, cwd: Path, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    env.pop("ENVWATCH_CONFIG", None)
    return subprocess.run([str(ENVWATCH), *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The run failed with exit code 2 and exactly one line on stderr that holds every needle."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def deployment(tmp_path: Path) -> dict[str, Path]:
    """A config file in conf/ whose state_dir is relative ('state'), and another directory to run from."""
    conf, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    conf.mkdir()
    elsewhere.mkdir()
    cfg = conf / "envwatch.yaml"
    cfg.write_text(yaml.safe_dump({"ingest": {"state_dir": "state"}, "registry": REGISTRY}, allow_unicode=True),
                   encoding="utf-8")
    return {"cfg": cfg, "state": conf / "state", "elsewhere": elsewhere}


# -- bad values -------------------------------------------------------------------------------------


def test_a_time_that_is_not_a_time(deployment: dict[str, Path]) -> None:
    d = deployment
    r = envwatch("alerts", "export", "--from", "yesterday", "--to", "2026-01-01", "-c", str(d["cfg"]), cwd=d["elsewhere"])
    one_line_error(r, "--from", "'yesterday'", "ISO-8601", "2026-11-28T08:00")
    r = envwatch("detect", "--from", "2026-13-01", "--to", "2026-12-02", "-c", str(d["cfg"]), cwd=d["elsewhere"])
    one_line_error(r, "--from", "'2026-13-01'", "month must be in 1..12", "ISO-8601")
    r = envwatch("emergency", "declare", "--level", "red", "--from", "2026-01-01", "--to", "tomorrow",
                 "-c", str(d["cfg"]), cwd=d["elsewhere"])
    one_line_error(r, "--to", "'tomorrow'")


def test_a_range_that_ends_before_it_starts(deployment: dict[str, Path]) -> None:
    r = envwatch("alerts", "export", "--from", "2026-01-02", "--to", "2026-01-01", "-c", str(deployment["cfg"]),
                 cwd=deployment["elsewhere"])
    one_line_error(r, "--to", "is not after --from")


def test_a_misspelt_kind_is_an_error_with_the_registrys_kinds(deployment: dict[str, Path]) -> None:
    for cmd in (["detect"], ["alerts", "export"]):
        r = envwatch(*cmd, "--from", "2026-01-01", "--to", "2026-01-02", "-k", "exceedence",
                     "-c", str(deployment["cfg"]), cwd=deployment["elsewhere"])
        line = one_line_error(r, "unknown detector kind 'exceedence'", "did you mean 'exceedance'?")
        # The list comes from the detector registry, not from a copy in the CLI.
        from detect.registry import detector_classes

        assert all(k in line for k in detector_classes())


def test_unknown_states_statuses_reasons_levels_and_languages(deployment: dict[str, Path]) -> None:
    c, cwd = str(deployment["cfg"]), deployment["elsewhere"]
    one_line_error(envwatch("cases", "list", "--state", "bogus", "-c", c, cwd=cwd),
                   "unknown case state 'bogus'", "notified", "escalated")
    one_line_error(envwatch("cases", "list", "--state", "notifed", "-c", c, cwd=cwd), "did you mean 'notified'?")
    one_line_error(envwatch("tickets", "list", "--status", "shut", "-c", c, cwd=cwd), "unknown ticket status", "closed")
    one_line_error(envwatch("deadletters", "list", "--reason", "crc", "-c", c, cwd=cwd), "unknown reason 'crc'",
                   "crc_mismatch")
    one_line_error(envwatch("emergency", "declare", "--level", "purple", "--from", "2026-01-01", "--to", "2026-01-02",
                            "-c", c, cwd=cwd), "unknown emergency level 'purple'", "yellow, orange, red")
    one_line_error(envwatch("cases", "list", "--lang", "fr", "-c", c, cwd=cwd), "zh-CN or en")
    one_line_error(envwatch("cases", "groups", "--status", "open", "-c", c, cwd=cwd), "unknown group status 'open'",
                   "pending, confirmed, dismissed")


def test_unknown_options_and_missing_ones(deployment: dict[str, Path]) -> None:
    cwd = deployment["elsewhere"]
    one_line_error(envwatch("detect", "--frm", "2026-01-01", cwd=cwd), "No such option: --frm", "--from")
    one_line_error(envwatch("alerts", "export", "--from", "2026-01-01", cwd=cwd), "Missing option '--to'")
    one_line_error(envwatch("replay", str(cwd / "nope.txt"), cwd=cwd), "nope.txt", "does not exist")
    one_line_error(envwatch("cases", "list", "--json", "--csv", "-c", str(deployment["cfg"]), cwd=cwd),
                   "--json or --csv")


def test_a_bad_configuration_file_is_not_a_traceback(tmp_path: Path) -> None:
    r = envwatch("cases", "list", "-c", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "missing.yaml" in r.stderr


# -- ports already in use ----------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_run_with_its_http_port_taken(deployment: dict[str, Path], taken_port: int) -> None:
    cfg = deployment["cfg"]
    raw = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    raw["center"] = {"port": taken_port}
    cfg.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    r = envwatch("run", "-c", str(cfg), cwd=deployment["elsewhere"])
    one_line_error(r, f"127.0.0.1:{taken_port}", "already in use", "center.port", str(cfg))


def test_demo_with_its_ports_taken(deployment: dict[str, Path], taken_port: int) -> None:
    cfg, cwd = str(deployment["cfg"]), deployment["elsewhere"]
    r = envwatch("demo", "-c", cfg, "--http-port", str(taken_port), cwd=cwd)
    one_line_error(r, f"127.0.0.1:{taken_port}", "already in use", "--http-port")
    r = envwatch("demo", "-c", cfg, "--http-port", str(free_port()), "--mqtt-port", str(taken_port), cwd=cwd)
    one_line_error(r, f"127.0.0.1:{taken_port}", "already in use", "--mqtt-port")
    assert not (deployment["state"] / "influxd" / "influxd.pid").exists()  # nothing else was started


def test_services_up_with_the_mqtt_port_taken(tmp_path: Path, taken_port: int) -> None:
    r = envwatch("services", "up", "--state-dir", str(tmp_path / "st"), "--mqtt-port", str(taken_port),
                 "--influx-port", str(free_port()), cwd=tmp_path)
    one_line_error(r, f"127.0.0.1:{taken_port}", "already in use", "--mqtt-port")
    assert not (tmp_path / "st" / "influxd" / "influxd.pid").exists()


# -- the state follows the configuration ----------------------------------------------------------------


def test_reading_commands_refuse_a_store_that_does_not_exist(deployment: dict[str, Path]) -> None:
    d = deployment
    for cmd in (["cases", "list"], ["cases", "show", "X"], ["tickets", "list"],
                ["alerts", "export", "--from", "2026-01-01", "--to", "2026-01-02"]):
        r = envwatch(*cmd, "-c", str(d["cfg"]), cwd=d["elsewhere"])
        one_line_error(r, "no case store at", str(d["state"] / "envwatch.sqlite"), "state_dir")
    assert not (d["elsewhere"] / ".state").exists() and not d["state"].exists()


def test_a_writing_command_creates_the_store_beside_the_config_from_anywhere(deployment: dict[str, Path]) -> None:
    d = deployment
    r = envwatch("emergency", "declare", "--level", "orange", "--from", "2026-01-01T08:00", "--to", "2026-01-03",
                 "-c", str(d["cfg"]), cwd=d["elsewhere"])
    assert r.returncode == 0, r.stderr
    assert (d["state"] / "envwatch.sqlite").exists() and not (d["elsewhere"] / ".state").exists()
    r = envwatch("cases", "list", "--json", "-c", str(d["cfg"]), cwd=d["elsewhere"])
    assert r.returncode == 0 and json.loads(r.stdout) == []


# -- listings --------------------------------------------------------------------------------------


@pytest.fixture
def with_cases(deployment: dict[str, Path]) -> dict[str, Any]:
    settings = load(deployment["cfg"], env={})
    engine = engine_from_settings(settings)
    migrate(engine)
    alerts = [alert(T0 + i * H, enterprise=e) for i, e in enumerate(("E1", "EA", "ED"))]
    AlertStore(engine).create().upsert_alerts(alerts)
    out = workflow.process_alerts(engine, settings, alerts, T0 + 5 * H, evidence=False)
    engine.dispose()
    return {**deployment, "ids": sorted({str(o["case_id"]) for o in out})}


def test_cases_list_shows_full_ids_that_cases_show_accepts(with_cases: dict[str, Any]) -> None:
    d = with_cases
    assert len(d["ids"]) == 3
    r = envwatch("cases", "list", "-c", str(d["cfg"]), cwd=d["elsewhere"], columns=70)  # a narrow terminal
    assert r.returncode == 0, r.stderr
    for case_id in d["ids"]:
        assert case_id in r.stdout, (case_id, r.stdout)
        shown = envwatch("cases", "show", case_id, "-c", str(d["cfg"]), cwd=d["elsewhere"])
        assert shown.returncode == 0 and case_id in shown.stdout
    r = envwatch("cases", "show", "no-such-case", "-c", str(d["cfg"]), cwd=d["elsewhere"])
    assert r.returncode == 1 and "no-such-case" in r.stderr and "cases list" in r.stderr


def test_cases_list_as_json_and_csv(with_cases: dict[str, Any]) -> None:
    d = with_cases
    r = envwatch("cases", "list", "--json", "-c", str(d["cfg"]), cwd=d["elsewhere"])
    rows = json.loads(r.stdout)
    assert sorted(c["id"] for c in rows) == d["ids"] and {c["enterprise_id"] for c in rows} == {"E1", "EA", "ED"}
    assert all(c["state"] and c["opened_at"].startswith("2025-01-06") for c in rows)
    r = envwatch("cases", "list", "--csv", "--state", "notified", "-c", str(d["cfg"]), cwd=d["elsewhere"])
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {row["id"] for row in table} <= set(d["ids"]) and all(row["state"] == "notified" for row in table)
    assert list(table[0]) == ["id", "enterprise_id", "outlet_id", "problem", "pollutant", "severity", "state",
                              "opened_at", "deadline_at", "emergency"]
    r = envwatch("cases", "show", d["ids"][0], "--json", "-c", str(d["cfg"]), cwd=d["elsewhere"])
    case = json.loads(r.stdout)
    assert case["id"] == d["ids"][0] and case["events"] and case["alerts"]
    r = envwatch("tickets", "list", "--json", "-c", str(d["cfg"]), cwd=d["elsewhere"])
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), list)


def test_alerts_export_as_csv(with_cases: dict[str, Any]) -> None:
    d = with_cases
    r = envwatch("alerts", "export", "--from", "2025-01-06T00:00Z", "--to", "2025-01-07T00:00Z", "--csv",
                 "-k", "exceedance", "-c", str(d["cfg"]), cwd=d["elsewhere"])
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 3 and {row["enterprise_id"] for row in rows} == {"E1", "EA", "ED"}
    assert r.stderr.strip() == "3 alerts"


def test_missing_input_files(tmp_path: Path) -> None:
    one_line_error(envwatch("decode", str(tmp_path / "none.txt"), cwd=tmp_path), "'", "none.txt", "or - for stdin")
    one_line_error(envwatch("evidence", "verify", str(tmp_path / "none.zip"), cwd=tmp_path), "none.zip", "does not exist")


def test_replay_shows_progress_and_publishes_every_line(mosquitto: Any, tmp_path: Path) -> None:
    from tests.test_consumer import MN_GAS, minute_packet

    packets = tmp_path / "packets.txt"
    packets.write_bytes(b"\r\n".join(minute_packet(MN_GAS, i) for i in range(5)) + b"\r\n\r\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"broker": {"host": mosquitto.host, "port": mosquitto.port,
                                              "account_per_connection": False, "topic_prefix": "replay-progress"}}),
                   encoding="utf-8")
    r = envwatch("replay", str(packets), "-c", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "published 5 payloads"
    assert "replay" in r.stderr and "5/5" in r.stderr


def test_demo_port_options_change_the_settings_the_demo_runs_with() -> None:
    from center.demo import with_ports

    s = load(Path(__file__).resolve().parents[1] / "config" / "examples" / "demo-city.yaml", env={})
    moved = with_ports(s, mqtt_port=1884, influx_port=8087, http_port=8081)
    assert (moved.broker.port, moved.influxdb.url, moved.center.port) == (1884, "http://127.0.0.1:8087", 8081)
    assert moved.registry == s.registry and moved.center.users == s.center.users
    assert with_ports(s) == s
