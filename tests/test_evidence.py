"""Evidence packages built from a real InfluxDB verify, and stop verifying after any edit."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from config.schema import Settings
from core.influx import Influx
from notify.evidence import build, cli_verify, verify
from notify.events import append_event
from tests.test_notices import T0, alert_json, make_store, open_case, registry

ALERT_START = T0 - timedelta(hours=1)


def _write_readings(influx: Influx) -> None:
    """Minute readings of the stack from 3 h before to 2 h after the alert hour; SO2 high in that hour."""
    head = "station_minute,mn=MN0001,enterprise=E1,outlet=DA001,medium=gas"
    lines = []
    for m in range(-180, 120):
        t = int((ALERT_START + timedelta(minutes=m)).timestamp())
        zs = 61.0 if 0 <= m < 60 else 20.0
        flag = "M" if m == -30 else "N"
        lines.append(f'{head},pollutant=a21026,code=a21026 avg={zs * 0.8},zs_avg={zs},flag="{flag}" {t}')
        lines.append(f'{head},pollutant=a19001,code=a19001 avg=9.5,flag="N" {t}')
    # Another enterprise's reading in the same window must stay out of the package.
    lines.append(f'station_minute,mn=MN9,enterprise=E2,outlet=X,medium=gas,pollutant=a21026 avg=999 {int(T0.timestamp())}')
    influx.write(lines)


@pytest.fixture
def package(settings_factory: Callable[..., Settings], tmp_path: Path) -> tuple[Path, str]:
    settings = settings_factory(registry())
    with Influx(settings.influxdb) as influx:
        _write_readings(influx)
    engine = make_store()
    open_case(engine, alerts=[alert_json(61.0, ALERT_START)])
    with engine.begin() as conn:
        append_event(conn, "C1", T0 + timedelta(hours=1), "enterprise:E1", "acknowledged", {"answer_id": "a1"})
        append_event(conn, "C1", T0 + timedelta(days=2), "system", "escalated", {"reason": "repeat", "note": "二次复发"})
    return build(engine, settings, "C1", tmp_path / "evidence", now=T0 + timedelta(days=2))


def test_package_holds_the_readings_and_verifies(package: tuple[Path, str]) -> None:
    path, digest = package
    assert path.name == "evidence-C1-20250303T020000Z" and path.with_suffix(".zip").is_file()
    names = {p.name for p in path.iterdir()}
    assert names == {"readings.csv", "revisions.csv", "payloads.jsonl", "chart.png", "alerts.json", "case.json",
                     "answers.json", "history.json", "manifest.json", "manifest.sha256"}
    assert pd.read_csv(path / "revisions.csv").empty  # nothing was re-sent
    readings = pd.read_csv(path / "readings.csv")
    # The alert hour +- 1 h, minute by minute, both pollutants of the outlet, flags included; no E2.
    assert len(readings) == 2 * 180 and set(readings["enterprise"]) == {"E1"}
    # Beijing time first (issue 10), UTC beside it; pollutant names beside the codes.
    assert readings["time"].min() == "2025-03-01T08:00:00+08:00" and readings["time"].max() == "2025-03-01T10:59:00+08:00"
    assert readings["time_utc"].min() == "2025-03-01T00:00:00Z" and readings["time_utc"].max() == "2025-03-01T02:59:00Z"
    assert set(readings["pollutant_name"]) == {"二氧化硫", "氧气含量"}
    so2 = readings[readings["pollutant"] == "a21026"]
    assert (so2["zs_avg"] == 61.0).sum() == 60 and "M" in set(so2["flag"])
    assert (path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (path / "payloads.jsonl").read_bytes() == b""
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["case_id"] == "C1" and manifest["payloads"]["kept"] is False
    assert manifest["created_at"] == "2025-03-03T02:00:00Z" and manifest["tool"]["name"] == "envwatch"
    assert manifest["files"]["readings.csv"]["sha256"] == hashlib.sha256((path / "readings.csv").read_bytes()).hexdigest()
    history = json.loads((path / "history.json").read_text())
    assert [e["type"] for e in history["events"]] == ["opened", "acknowledged", "escalated"]
    assert manifest["event_chain"]["final_digest"] == history["events"][-1]["digest"]
    assert digest == hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    for where in (path, path.with_suffix(".zip")):
        result = verify(where, expected_digest=digest)
        assert result.ok and result.problems == [] and result.case_id == "C1", result.problems
    assert cli_verify(path) == 0


def test_one_changed_byte_of_readings_fails(package: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = package
    data = bytearray((path / "readings.csv").read_bytes())
    i = data.index(b"61.0")
    data[i] = ord("5")  # 61.0 -> 51.0 in one reading
    (path / "readings.csv").write_bytes(bytes(data))
    result = verify(path)
    assert not result.ok and any(p.startswith("readings.csv changed") for p in result.problems)
    assert cli_verify(path) == 1 and "readings.csv changed" in capsys.readouterr().err


def test_one_edited_event_fails_even_with_a_rewritten_manifest(package: tuple[Path, str]) -> None:
    path, digest = package
    history = json.loads((path / "history.json").read_text())
    history["events"][1]["actor"] = "enterprise:E1-forged"
    edited = (json.dumps(history, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode()
    (path / "history.json").write_bytes(edited)
    assert "history.json changed" in " ".join(verify(path).problems)

    # A forger who also re-hashes the file in the manifest and the manifest itself is still caught
    # by the chained digests, and by the digest the ticket recorded.
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["history.json"]["sha256"] = hashlib.sha256(edited).hexdigest()
    raw = (json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode()
    (path / "manifest.json").write_bytes(raw)
    (path / "manifest.sha256").write_text(f"{hashlib.sha256(raw).hexdigest()}  manifest.json\n")
    problems = verify(path).problems
    assert problems == ["history.json: event 2 does not match its chained digest (edited, missing or reordered)"]
    assert any("recorded evidence digest" in p for p in verify(path, expected_digest=digest).problems)


def test_zip_with_a_changed_file_or_extra_file_fails(package: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = package
    src = path.with_suffix(".zip")
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(forged, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            zout.writestr(name, data.replace(b'"major"', b'"minor"') if name.endswith("alerts.json") else data)
        zout.writestr(f"{path.name}/extra.txt", b"added later")
    problems = verify(forged).problems
    assert "extra.txt is not in the manifest" in problems
    assert any(p.startswith("alerts.json changed") for p in problems)
    assert verify(tmp_path / "missing.zip").ok is False


# -- revisions: the first-received value kept, the re-sent one beside it -------------------------------

RECEIVED = T0 + timedelta(days=1, hours=3)  # when the station re-sent its history


def _resend(influx: Influx, minutes: dict[int, float], mn: str = "MN0001", enterprise: str = "E1",
            outlet: str = "DA001") -> None:
    """The station re-sends SO2 minutes (offset from the alert hour -> Zs value) through the ingest's screen."""
    from ingest.revisions import RevisionGuard

    head = f"station_minute,mn={mn},enterprise={enterprise},outlet={outlet},medium=gas"
    lines = [f'{head},pollutant=a21026,code=a21026 avg={zs * 0.8},zs_avg={zs},flag="N" '
             f'{int((ALERT_START + timedelta(minutes=m)).timestamp())}' for m, zs in minutes.items()]
    screened = RevisionGuard(influx).screen(lines, now=RECEIVED)
    influx.write(screened.lines)


def _revision_world(settings_factory: Callable[..., Settings]) -> tuple[Settings, Influx]:
    settings = settings_factory(registry())
    influx = Influx(settings.influxdb)
    _write_readings(influx)
    # In the alert hour (minute 10), and far outside any window read (5 h before); another enterprise's too.
    _resend(influx, {10: 30.0, -170: 5.0})
    influx.write([f'station_minute,mn=MN9,enterprise=E2,outlet=X,medium=gas,pollutant=a21026,code=a21026 '
                  f'avg=999 {int((ALERT_START + timedelta(minutes=10)).timestamp())}'])
    _resend(influx, {10: 1.0}, mn="MN9", enterprise="E2", outlet="X")
    return settings, influx


def test_package_lists_the_revisions_of_its_windows_beside_the_first_values(
        settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    settings, influx = _revision_world(settings_factory)
    with influx:
        engine = make_store()
        open_case(engine, alerts=[alert_json(61.0, ALERT_START)])
        path, digest = build(engine, settings, "C1", tmp_path / "evidence", influx=influx, now=T0 + timedelta(days=2))
    revs = pd.read_csv(path / "revisions.csv")
    # Minute 10 of the alert hour: first 61 (what was judged) and the re-sent 30, for avg and zs_avg.
    # The re-send of 170 minutes before lies outside the window read (alert hour +- 1 h); E2's is not the case's.
    assert [(r.field, r.first, r.revised) for r in revs.itertuples()] == [("avg", 48.8, 24.0), ("zs_avg", 61.0, 30.0)]
    assert set(revs["mn"]) == {"MN0001"} and set(revs["time"]) == {"2025-03-01T09:10:00+08:00"}
    assert set(revs["received_at"]) == {"2025-03-02T05:00:00Z"}
    readings = pd.read_csv(path / "readings.csv")
    first = readings[(readings["pollutant"] == "a21026") & (readings["time"] == "2025-03-01T09:10:00+08:00")]
    assert list(first["zs_avg"]) == [61.0]  # the first value stays the reading
    assert verify(path, expected_digest=digest).ok


def test_a_data_revision_case_carries_the_revisions_it_reports_whatever_their_reading_time(
        settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    settings, influx = _revision_world(settings_factory)
    receipt = RECEIVED.replace(minute=0)
    alert = alert_json(61.0, receipt, case_kind="data_revision")  # its window is the receipt hour
    with influx:
        engine = make_store()
        open_case(engine, alerts=[alert], problem="data_revision")
        path, digest = build(engine, settings, "C1", tmp_path / "evidence", influx=influx, now=T0 + timedelta(days=2))
    revs = pd.read_csv(path / "revisions.csv")
    # Both re-sent minutes of MN0001 (received in that hour, readings a day older), not E2's.
    assert set(revs["mn"]) == {"MN0001"} and len(revs) == 4
    assert set(revs["time_utc"]) == {"2025-03-01T01:10:00Z", "2025-02-28T22:10:00Z"}
    assert verify(path, expected_digest=digest).ok
