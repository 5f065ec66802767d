"""`envwatch deadletters replay` against the real broker and influxd: packets of a station that was not yet
registered are dead-lettered; once the registry holds it, a replay writes them through the ingest's own checks
and marks them replayed; what still fails keeps its new reason; a second replay changes nothing."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

from config.schema import Settings
from ingest import hj212
from ingest.consumer import Ingest
from ingest.deadletter_replay import counts, letters, replay
from core.influx import Influx
from tests.test_consumer import (MN_GAS, MN_OTHER, REGISTRY, T0, dead_letters, drained, minute_packet,
                                 publish_all, station_topic, wait_until)

ENVWATCH = Path(sys.executable).with_name("envwatch")
MN_NEVER = "37990009010001"  # never registered


def _points(settings: Settings, mn: str) -> int:
    with Influx(settings.influxdb) as influx:
        series = influx.query(f"SELECT count(\"avg\") FROM \"station_minute\" WHERE \"mn\" = '{mn}'")
    return int(series[0].values[0][1]) if series else 0


def _config(settings: Settings, path: Path) -> Path:
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json"), allow_unicode=True), encoding="utf-8")
    return path


def test_replay_writes_what_the_fixed_registry_accepts(settings_factory: Callable[..., Settings],
                                                      mqtt_client_factory: Callable[..., mqtt.Client],
                                                      tmp_path: Path) -> None:
    without_b = copy.deepcopy(REGISTRY)
    without_b["enterprises"] = [e for e in without_b["enterprises"] if e["id"] != "plant-b"]
    before = settings_factory(without_b, ingest={"batch_interval_s": 0.1})
    old = minute_packet(MN_OTHER, -2000)  # 2000 minutes before T0: refused once `earliest` is moved past it
    messages = ([(station_topic(before, MN_OTHER), minute_packet(MN_OTHER, i)) for i in range(3)]
                + [(station_topic(before, MN_OTHER), old), (station_topic(before, MN_NEVER), minute_packet(MN_NEVER, 0)),
                   (station_topic(before, MN_GAS), minute_packet(MN_GAS, 0)), (station_topic(before, MN_GAS), b"##junk")])
    with Ingest(before) as ing:
        assert ing.wait_subscribed()
        publish_all(mqtt_client_factory(), messages)
        wait_until("all committed", drained(ing, len(messages)))
    reasons = sorted(str(d.reason) for d in dead_letters(before))
    assert reasons == ["bad_length"] + ["unknown_station"] * 5
    assert _points(before, MN_OTHER) == 0 and _points(before, MN_GAS) == 2

    # The registry is fixed (plant-b registered) and ingest.earliest moved past the old packet.
    earliest = (T0 - timedelta(minutes=1000)).astimezone(timezone.utc).replace(tzinfo=None)
    fixed = settings_factory(REGISTRY, ingest={"state_dir": before.ingest.state_dir, "earliest": earliest.isoformat()})
    # Meanwhile the now registered station re-sent minute 1 with other values, which were stored: they stay.
    resent = hj212.encode(hj212.build_segment(
        mn=MN_OTHER, cn="2051", st="31", flag=4, qn=(T0 + timedelta(minutes=1)).strftime("%Y%m%d%H%M%S") + "000",
        data_time=T0 + timedelta(minutes=1), values={"a21026": {"avg": 99.0, "flag": "N"}}))
    with Ingest(fixed) as ing:
        assert ing.wait_subscribed()
        publish_all(mqtt_client_factory(), [(station_topic(fixed, MN_OTHER), resent)])
        wait_until("the re-send written", drained(ing, 1))
    cfg = _config(fixed, tmp_path / "fixed.yaml")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    r = subprocess.run([str(ENVWATCH), "deadletters", "replay", "-c", str(cfg), "--json"], capture_output=True,
                       text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    outcome = json.loads(r.stdout)
    assert {k: v for k, v in outcome.items() if k != "lines"} == {
        "written": 3, "still_failing": {"bad_length": 1, "bad_time": 1, "unknown_station": 1},
        "skipped": 0, "already_replayed": 0}
    assert _points(fixed, MN_OTHER) == 6  # 3 packets x 2 pollutants, through the ingest's line protocol
    with Influx(fixed.influxdb) as influx:
        (series,) = influx.query(f"SELECT avg FROM station_minute WHERE mn = '{MN_OTHER}' AND pollutant = 'a21026' "
                                 "ORDER BY time LIMIT 1")
        assert series.values[0][0] == int(T0.timestamp()) and series.values[0][1] == 10.0
        # Through the writer's revision screen: minute 1 keeps the value stored first, the replay is a revision.
        (m1,) = influx.query(f"SELECT avg FROM station_minute WHERE mn = '{MN_OTHER}' AND pollutant = 'a21026' "
                             f"AND time = {int((T0 + timedelta(minutes=1)).timestamp())}s")
        assert m1.values[0][1] == 99.0
        revised = influx.query(f"SELECT * FROM revisions WHERE mn = '{MN_OTHER}'")
        assert revised and any(11.0 in row for s in revised for row in s.values), revised
        (ent,) = influx.query(f"SHOW TAG VALUES FROM station_minute WITH KEY = \"enterprise\" WHERE mn = '{MN_OTHER}'")
        assert [v[1] for v in ent.values] == ["plant-b"]  # tagged as the registry now says

    # Still failing: kept, with the reason of this run.
    rows = {d["id"]: d for d in letters(fixed, limit=100)}
    by_reason = sorted((d["reason"], d["replayed_at"] is not None) for d in rows.values())
    assert by_reason == [("bad_length", False), ("bad_time", False), ("unknown_station", False)] + [
        ("unknown_station", True)] * 3
    (bad_time,) = [d for d in rows.values() if d["reason"] == "bad_time"]
    assert "ingest.earliest" in bad_time["detail"]
    assert counts(fixed) == {"bad_length": 1, "bad_time": 1, "replayed": 3, "unknown_station": 1}

    # Idempotent: nothing written twice, nothing changes.
    again = replay(fixed)
    assert (again.written, again.already, again.failed) == (0, 3, {"bad_length": 1, "bad_time": 1,
                                                                  "unknown_station": 1})
    assert _points(fixed, MN_OTHER) == 6 and counts(fixed)["replayed"] == 3

    # The listing shows it too, as JSON and CSV.
    r = subprocess.run([str(ENVWATCH), "deadletters", "count", "-c", str(cfg), "--json"], capture_output=True,
                       text=True, timeout=120, env=env, cwd=tmp_path)
    assert {row["reason"]: row["count"] for row in json.loads(r.stdout)}["replayed"] == 3
    r = subprocess.run([str(ENVWATCH), "deadletters", "list", "-c", str(cfg), "--csv", "--reason", "bad_length"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("id,received_at,reason,topic,detail,raw")
    assert "##junk" in r.stdout and len(r.stdout.splitlines()) == 2


def test_answers_and_truncated_payloads_are_not_replayed(settings_factory: Callable[..., Settings]) -> None:
    from ingest.deadletter import DeadLetter, DeadLetters, deadletter_path

    s = settings_factory(REGISTRY)
    packet = minute_packet(MN_GAS, 1)
    with DeadLetters(deadletter_path(s.ingest.state_dir), max_raw_bytes=64) as dl:
        dl.add_many([DeadLetter(station_topic(s, MN_GAS), "unknown_station", "x", packet),  # cut to 64 bytes
                     DeadLetter(f"{s.broker.topic_prefix}/enterprise/plant-a/answer", "invalid_answer", "y", b"{}"),
                     DeadLetter("influxdb", "bad_field", "z", b"m f=1 1")])
    out = replay(s)
    assert (out.written, out.skipped, out.failed) == (0, 3, {})
    assert sorted(d["reason"] for d in letters(s)) == ["bad_field", "invalid_answer", "unknown_station"]
    assert _points(s, MN_GAS) == 0




def test_pending_letters_are_read_a_page_at_a_time(tmp_path: Path) -> None:
    from ingest.deadletter import DeadLetter, DeadLetters
    from ingest.deadletter_replay import _Store

    path = tmp_path / "deadletters.sqlite"
    with DeadLetters(path) as dl:
        dl.add_many([DeadLetter("t", "unknown_station" if i % 2 else "bad_time", "d", b"x%d" % i) for i in range(7)])
    store = _Store(path)
    try:
        assert [row[0] for row in store.pending(None, page=2)] == list(range(1, 8))
        assert [row[3] for row in store.pending("bad_time", page=3)] == [b"x0", b"x2", b"x4", b"x6"]
        assert store.pending_count("unknown_station") == 3
        store.mark([1, 2])
        assert [row[0] for row in store.pending(None, page=2)] == [3, 4, 5, 6, 7]
    finally:
        store.close()
