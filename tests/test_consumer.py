"""The ingest end to end, against the real Mosquitto and influxd of the test session.

HJ 212 packets and JSON mobile fixes are published to the broker; the test then polls InfluxDB
(and the ingest's counters) with a deadline until the expected state is reached, and asserts it
exactly: every reading once, every bad payload a dead letter with its reason and its raw bytes.
The helpers here are shared with test_ingest_faults.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from config import Lookup
from config.schema import Settings
from ingest import hj212
from ingest.consumer import Ingest, status_line
from ingest.pipeline import Batch, Message, Pipeline
from ingest.deadletter import DeadLetters, deadletter_path
from core.influx import Influx
from core.time import CHINA_TZ
from ingest.model import Reason

MN_GAS, MN_WATER, MN_OTHER = "37990001010001", "37990001020001", "37990002010001"
DRONE = "UAV01"
REGISTRY: dict[str, Any] = {
    "enterprises": [
        {"id": "plant-a", "name": "Plant A", "outlets": [
            {"id": "DA001", "medium": "gas", "reference_o2": 6.0,
             "stations": [{"mn": MN_GAS, "pollutants": ["a21026", "a21002", "a19001"]}]},
            {"id": "DW001", "medium": "water", "stations": [{"mn": MN_WATER, "pollutants": ["w01018"]}]},
        ]},
        {"id": "plant-b", "name": "Plant B", "outlets": [
            {"id": "DA001", "medium": "gas", "stations": [{"mn": MN_OTHER}]},
        ]},
    ],
    "devices": [{"id": DRONE, "kind": "drone"}],
}
# Whole minutes in China time, three days ago: minute packets T0 + i stay in the past for i < 4000.
T0 = (datetime.now(timezone.utc) - timedelta(days=3)).replace(second=0, microsecond=0).astimezone(CHINA_TZ)
DEADLINE_S = 30.0


# --------------------------------------------------------------------------------------------
# helpers (also used by test_ingest_faults.py)


def minute_packet(mn: str, i: int, *, gas: bool = True, cn: str = "2051") -> bytes:
    """A valid HJ 212-2017 minute packet of station `mn`, minute `i` after T0: two pollutants."""
    values: dict[str, dict[str, float | str]] = (
        {"a21026": {"avg": 10.0 + i, "zs_avg": 12.0 + i, "flag": "N"}, "a19001": {"avg": 8.5, "flag": "N"}}
        if gas else {"w01018": {"avg": 20.0 + i, "flag": "N"}, "w00000": {"avg": 0.5, "cou": 30.0}})
    seg = hj212.build_segment(mn=mn, cn=cn, st="31" if gas else "32", flag=4,
                              qn=(T0 + timedelta(minutes=i)).strftime("%Y%m%d%H%M%S") + "000",
                              data_time=T0 + timedelta(minutes=i), values=values)
    return hj212.encode(seg)


def mobile_fix(i: int, device: str = DRONE) -> bytes:
    t = (T0 + timedelta(seconds=10 * i)).isoformat()
    return json.dumps({"device": device, "kind": "drone", "time": t, "lat": 36.65 + i * 1e-4, "lon": 117.0,
                       "alt": 120.0, "species": {"voc": 0.3 + i, "pm25": 35.0}}).encode()


def station_topic(settings: Settings, mn: str) -> str:
    return f"{settings.broker.topic_prefix}/up/station/{mn}"


def mobile_topic(settings: Settings, device: str) -> str:
    return f"{settings.broker.topic_prefix}/up/mobile/{device}"


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 and return once the broker has acknowledged every message."""
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(DEADLINE_S)
        assert info.is_published()


def wait_until(what: str, check: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    """Poll `check` until it is true; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def count_points(settings: Settings, measurement: str, field: str = "avg") -> int:
    """Points of `measurement` that have `field` (every point we write for it has)."""
    with Influx(settings.influxdb) as influx:
        series = influx.query(f'SELECT count("{field}") FROM "{measurement}"')
    return int(series[0].values[0][1]) if series else 0


def drained(ing: Ingest, acked: int) -> Callable[[], bool]:
    """True once `acked` messages are acked and the disk buffer is empty."""
    def check() -> bool:
        c = ing.counters()
        return c["acked"] >= acked and c["buffer_depth"] == 0
    return check


def dead_letters(settings: Settings) -> list[Any]:
    with DeadLetters(deadletter_path(settings.ingest.state_dir)) as dl:
        return dl.list(limit=10_000)


# --------------------------------------------------------------------------------------------
# tests


# decode_process: the same behaviour with the Pipeline in a child process (ingest/offload.py).
@pytest.mark.parametrize("decode_process", [False, True])
def test_readings_events_and_mobile_land_once(settings_factory: Callable[..., Settings],
                                              mqtt_client_factory: Callable[..., mqtt.Client],
                                              decode_process: bool) -> None:
    settings = settings_factory(REGISTRY, ingest={"batch_size": 50, "batch_interval_s": 0.1,
                                                  "decode_process": decode_process})
    gas = [(station_topic(settings, MN_GAS), minute_packet(MN_GAS, i)) for i in range(30)]
    water = [(station_topic(settings, MN_WATER), minute_packet(MN_WATER, i, gas=False)) for i in range(30)]
    heartbeat = hj212.encode(hj212.build_segment(mn=MN_GAS, cn="8013", st="31", flag=4,
                                                 data_time=T0, values={}))
    fixes = [(mobile_topic(settings, DRONE), mobile_fix(i)) for i in range(10)]
    messages = gas + water + [(station_topic(settings, MN_GAS), heartbeat)] + fixes
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, messages)
        wait_until("all messages written", drained(ing, len(messages)))
        assert bool(multiprocessing.active_children()) == decode_process
        # 60 packets x 2 pollutants; 10 mobile fixes; 1 heartbeat
        assert count_points(settings, "station_minute") == 120
        assert count_points(settings, "mobile", "lat") == 10
        assert count_points(settings, "station_event", "seen") == 1

        publish_all(pub, messages)  # re-delivery, a replay, a logger re-sending: same points
        wait_until("the repeat written", drained(ing, 2 * len(messages)))
        assert count_points(settings, "station_minute") == 120
        assert count_points(settings, "mobile", "lat") == 10
        c = ing.counters()
    assert c["messages_in"] == c["acked"] == 2 * len(messages)
    assert c["readings_written"] == 2 * (120 + 10 + 1)
    assert c["events"] == {"heartbeat": 2, "mobile": 20}
    assert c["dead_letters"] == {}
    assert "acked 142" in status_line(c)
    with Influx(settings.influxdb) as influx:
        rows = influx.query(f"SELECT avg, zs_avg, flag FROM station_minute WHERE mn = '{MN_GAS}' "
                            "AND pollutant = 'a21026' ORDER BY time LIMIT 1")
    assert rows[0].values[0][1:] == [10.0, 12.0, "N"]
    assert rows[0].values[0][0] == int(T0.timestamp())


BAD_CASES = ["crc", "unknown_station", "future", "too_large", "garbage", "topic_mismatch",
             "unknown_device", "bad_json"]


def _bad_payloads(settings: Settings) -> dict[str, tuple[str, bytes, Reason]]:
    good = minute_packet(MN_GAS, 0)
    bad_crc = good[:-6] + (b"0000" if good[-6:-2] != b"0000" else b"1111") + b"\r\n"
    future = hj212.encode(hj212.build_segment(
        mn=MN_GAS, cn="2051", st="31", flag=4, data_time=datetime.now(timezone.utc) + timedelta(days=30),
        values={"a21026": {"avg": 1.0}}))
    huge = hj212.encode(hj212.build_segment(
        mn=MN_GAS, cn="2051", st="31", flag=4, data_time=T0,
        values={f"a{i:05d}": {"avg": 1.0} for i in range(40)}))
    assert len(huge) > settings.ingest.max_payload_bytes
    return {
        "crc": (station_topic(settings, MN_GAS), bad_crc, Reason.CRC_MISMATCH),
        "unknown_station": (station_topic(settings, "99990000000001"), minute_packet("99990000000001", 1),
                            Reason.UNKNOWN_STATION),
        "future": (station_topic(settings, MN_GAS), future, Reason.BAD_TIME),
        "too_large": (station_topic(settings, MN_GAS), huge, Reason.TOO_LARGE),
        "garbage": (station_topic(settings, MN_GAS), b"\x00\xff garbage \r\n", Reason.NO_HEADER),
        # A station may only publish for itself: plant B's logger sending plant A's MN.
        "topic_mismatch": (station_topic(settings, MN_OTHER), minute_packet(MN_GAS, 2), Reason.BAD_FIELD),
        "unknown_device": (mobile_topic(settings, "UAV99"), mobile_fix(1, "UAV99"), Reason.UNKNOWN_DEVICE),
        "bad_json": (mobile_topic(settings, DRONE), b'{"device": "UAV01", ', Reason.BAD_JSON),
    }


@pytest.mark.parametrize("decode_process", [False, True])
def test_bad_payloads_become_dead_letters_byte_exact(settings_factory: Callable[..., Settings],
                                                     mqtt_client_factory: Callable[..., mqtt.Client],
                                                     decode_process: bool) -> None:
    settings = settings_factory(REGISTRY, ingest={"max_payload_bytes": 512, "batch_interval_s": 0.1,
                                                  "decode_process": decode_process})
    bad = _bad_payloads(settings)
    good = [(station_topic(settings, MN_GAS), minute_packet(MN_GAS, i)) for i in range(3)]
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, [(t, p) for t, p, _ in bad.values()] + good)
        wait_until("every payload committed", drained(ing, len(bad) + len(good)))
        c = ing.counters()
    assert count_points(settings, "station_minute") == 6  # only the good ones, 2 pollutants each
    assert sum(c["dead_letters"].values()) == len(bad)
    stored = {(d.topic, d.raw): d for d in dead_letters(settings)}
    assert len(stored) == len(bad)
    for case, (topic, raw, reason) in bad.items():
        d = stored[(topic, raw)]  # the raw payload, byte for byte, on its topic
        assert d.reason == reason, (case, d.detail)
        assert d.detail
    assert "does not match topic" in stored[(bad["topic_mismatch"][0], bad["topic_mismatch"][1])].detail


@pytest.mark.parametrize("decode_process", [False, True])
def test_split_packet_reassembled_and_incomplete_one_dead_lettered(
        settings_factory: Callable[..., Settings], mqtt_client_factory: Callable[..., mqtt.Client],
        decode_process: bool) -> None:
    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1, "decode_process": decode_process})

    def part(qn: str, pno: int, values: dict[str, dict[str, float | str]]) -> bytes:
        return hj212.encode(hj212.build_segment(mn=MN_GAS, cn="2061", st="31", qn=qn, pnum=2, pno=pno,
                                                data_time=T0, values=values))

    whole = [part("20260101000000001", 1, {"a21026": {"avg": 1.0}}),
             part("20260101000000001", 2, {"a21002": {"avg": 2.0}})]
    orphan = part("20260101000000002", 1, {"a19001": {"avg": 9.0}})
    topic = station_topic(settings, MN_GAS)
    pub = mqtt_client_factory()
    with Ingest(settings, split_timeout_s=0.5) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, [(topic, whole[0]), (topic, orphan), (topic, whole[1])])
        # The orphan's ack is held until its group expires; then it is a dead letter and acked.
        wait_until("all three parts acked", drained(ing, 3))
    assert count_points(settings, "station_hour") == 2
    [d] = dead_letters(settings)
    assert (d.reason, d.raw, d.topic) == (Reason.INCOMPLETE_SPLIT, orphan, topic)
    assert "of 2" in d.detail


def test_a_killed_decode_process_is_replaced_and_nothing_is_lost(
        settings_factory: Callable[..., Settings], mqtt_client_factory: Callable[..., mqtt.Client]) -> None:
    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1, "decode_process": True})
    topic = station_topic(settings, MN_GAS)
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, [(topic, minute_packet(MN_GAS, i)) for i in range(10)])
        wait_until("the first ten written", drained(ing, 10))
        [child] = multiprocessing.active_children()
        os.kill(child.pid, signal.SIGKILL)
        publish_all(pub, [(topic, minute_packet(MN_GAS, i)) for i in range(10, 30)])
        wait_until("the rest written by a new decode process", drained(ing, 30))
        [new_child] = multiprocessing.active_children()
        c = ing.counters()
    assert new_child.pid != child.pid
    assert count_points(settings, "station_minute") == 60  # 30 packets x 2 pollutants
    assert c["acked"] == 30 and c["dead_letters"] == {}


def test_pipeline_validation_without_broker(settings_factory: Callable[..., Settings]) -> None:
    """Pipeline alone: accept_unknown_stations, earliest, and events counted by kind."""
    settings = settings_factory(REGISTRY, ingest={"accept_unknown_stations": True,
                                                  "earliest": "2020-01-01T00:00:00"})
    p = Pipeline(settings, Lookup(settings.registry))
    now = datetime.now(timezone.utc)

    def msg(mn: str, payload: bytes) -> Message:
        return Message(station_topic(settings, mn), payload, 1, 1, now)

    old = hj212.encode(hj212.build_segment(mn=MN_GAS, cn="2051", st="31", flag=4,
                                           data_time=datetime(2015, 6, 1, tzinfo=CHINA_TZ),
                                           values={"a21026": {"avg": 1.0}}))
    restart = hj212.encode(hj212.build_segment(mn=MN_GAS, cn="2081", st="31", flag=4, values={}))
    batch = Batch()
    for m in (msg("X1", minute_packet("X1", 0)), msg(MN_GAS, old), msg(MN_GAS, restart)):
        p.feed(m, batch)
    assert len(batch.done) == 3
    assert [d.reason for d in batch.dead] == [Reason.BAD_TIME]
    assert "earliest" in batch.dead[0].detail
    assert sum(1 for x in batch.lines if x.startswith("station_minute,mn=X1,enterprise=_unknown")) == 2
    assert batch.events == {"restart": 1}


def test_dead_letter_cli_reads_the_ingest_store(settings_factory: Callable[..., Settings],
                                                mqtt_client_factory: Callable[..., mqtt.Client],
                                                tmp_path: Path) -> None:
    """`envwatch deadletters list` reads what the ingest stored (same state_dir)."""
    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1})
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, [(station_topic(settings, MN_GAS), b"##garbage")])
        wait_until("garbage committed", drained(ing, 1))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    envwatch = Path(sys.executable).with_name("envwatch")
    out = subprocess.run([str(envwatch), "deadletters", "list", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, env={"COLUMNS": "250", "PATH": "/usr/bin:/bin",
                              "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert out.returncode == 0, out.stderr
    assert "bad_length" in out.stdout and "##garbage" in out.stdout


def test_pipeline_decrypts_hj212_2025_with_the_registry_key(settings_factory: Callable[..., Settings]) -> None:
    """An SM4-encrypted CP (HJ 212-2025) is read with the station's key from the registry."""
    mn, key = "0123456789ABCDEF01234567", "00112233445566778899AABBCCDDEEFF"
    registry = {"enterprises": [{"id": "p", "name": "P", "outlets": [
        {"id": "DA001", "medium": "gas", "stations": [{"mn": mn, "sm4_key": key}]}]}]}
    settings = settings_factory(registry)
    payload = hj212.encode(hj212.build_segment(mn=mn, cn="2051", st="31", data_time=T0,
                                               values={"a21026": {"avg": 3.5}}, sm4_key=bytes.fromhex(key)))
    batch = Batch()
    Pipeline(settings, Lookup(settings.registry)).feed(
        Message(station_topic(settings, mn), payload, 1, 1, datetime.now(timezone.utc)), batch)
    assert batch.dead == [] and len(batch.lines) == 1
    assert f"mn={mn}" in batch.lines[0] and "avg=3.5" in batch.lines[0]


def split_part(mn: str, qn: str, pnum: int, pno: int, values: dict[str, dict[str, float | str]]) -> bytes:
    return hj212.encode(hj212.build_segment(mn=mn, cn="2061", st="31", qn=qn, pnum=pnum, pno=pno,
                                            data_time=T0, values=values))


def test_split_part_with_inconsistent_pnum_is_dead_lettered_not_swallowed(
        settings_factory: Callable[..., Settings], mqtt_client_factory: Callable[..., mqtt.Client]) -> None:
    """Issue 15.3: parts PNUM 2, 5, 2 of one MN/QN/CN: the two consistent ones are reassembled,
    the PNUM=5;PNO=4 part is a dead letter with the reason, byte-exact (it used to vanish)."""
    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1})
    qn = "20260101000000009"
    first = split_part(MN_GAS, qn, 2, 1, {"a21026": {"avg": 1.0}})
    odd = split_part(MN_GAS, qn, 5, 4, {"a34013": {"avg": 4.0}})
    last = split_part(MN_GAS, qn, 2, 2, {"a21002": {"avg": 2.0}})
    topic = station_topic(settings, MN_GAS)
    pub = mqtt_client_factory()
    with Ingest(settings, split_timeout_s=30) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, [(topic, first), (topic, odd), (topic, last)])
        wait_until("all three parts acked", drained(ing, 3))
    assert count_points(settings, "station_hour") == 2
    [d] = dead_letters(settings)
    assert (d.reason, d.raw) == (Reason.BAD_FIELD, odd)
    assert "PNUM=5;PNO=4 disagrees with PNUM=2" in d.detail


def test_incomplete_split_parts_do_not_hold_other_stations(
        settings_factory: Callable[..., Settings], mqtt_client_factory: Callable[..., mqtt.Client]) -> None:
    """Issue 15.4: 1,500 parts that never complete (more than receive_maximum), then 500 ordinary
    packets of another station: the ordinary ones land at once, not after the split timeout;
    every part ends as a dead letter (the bound per station dead-letters the oldest early, the
    rest expire), none is lost."""
    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1, "receive_maximum": 1000,
                                                  "split_parts_per_station": 50})
    parts = [(station_topic(settings, MN_GAS), split_part(MN_GAS, f"2026010100{i:07d}", 2, 1, {"a21026": {"avg": 1.0}}))
             for i in range(1500)]
    ordinary = [(station_topic(settings, MN_WATER), minute_packet(MN_WATER, i, gas=False)) for i in range(500)]
    pub = mqtt_client_factory()
    with Ingest(settings, split_timeout_s=120) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, parts + ordinary)
        started = time.monotonic()
        wait_until("the ordinary packets written", lambda: count_points(settings, "station_minute") == 1000, timeout=30)
        assert time.monotonic() - started < 30  # far below the 120 s split timeout
        wait_until("all acked but the 50 parts held", lambda: ing.counters()["acked"] == 2000 - 50)
        c = ing.counters()
    assert c["dead_letters"] == {"incomplete_split": 1450}
    letters = dead_letters(settings)
    assert {d.raw for d in letters} == {p for _, p in parts[:1450]}
    assert all("split_parts_per_station" in d.detail for d in letters)


def test_held_parts_are_bounded_in_all_and_expire_on_their_own(settings_factory: Callable[..., Settings]) -> None:
    """Without a broker: parts of many stations held past a quarter of receive_maximum push out
    the oldest group; the rest expire after the timeout; each part is a dead letter once."""
    from ingest.pipeline import Batch, Message, Pipeline
    from config.lookup import Lookup

    settings = settings_factory(REGISTRY, ingest={"receive_maximum": 8, "accept_unknown_stations": True})
    pipe = Pipeline(settings, Lookup(settings.registry), split_timeout_s=60)
    batch = Batch()
    mns = [f"MN{i:02d}" for i in range(4)]
    for i, mn in enumerate(mns):
        payload = split_part(mn, f"q{i}", 3, 1, {"a21026": {"avg": 1.0}})
        pipe.feed(Message(station_topic(settings, mn), payload, i, 1, datetime.now(timezone.utc)), batch)
    assert pipe.held == 2 and len(batch.dead) == 2  # a quarter of 8
    assert "a quarter of ingest.receive_maximum" in batch.dead[0].detail
    pipe.expire(batch, now=time.monotonic() + 61)
    assert pipe.held == 0 and len(batch.dead) == 4 and len(batch.done) == 4


def test_events_take_their_time_from_the_packet(settings_factory: Callable[..., Settings],
                                                mqtt_client_factory: Callable[..., mqtt.Client]) -> None:
    """Issue 15.5: a backlog of alarms published at once lands as one point per AlarmTime (not
    collapsed onto the arrival second); a heartbeat with a QN takes the QN's time; only a packet
    without any time is stamped on arrival, and says so in time_source."""
    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1})
    topic = station_topic(settings, MN_GAS)

    def alarm(i: int) -> bytes:
        t = hj212.format_data_time(T0 + timedelta(minutes=i))
        return hj212.encode(f"QN=20990101000000000;ST=31;CN=2072;PW=1;MN={MN_GAS};Flag=5;"
                            f"CP=&&AlarmTime={t};a21026-Ala=16.00,AlarmType=1&&")

    qn_time = T0 + timedelta(hours=2, seconds=7)
    with_qn = hj212.encode(f"QN={hj212.format_data_time(qn_time)}123;ST=31;CN=8013;PW=1;MN={MN_GAS};Flag=4;"
                           f"CP=&&HeartbeatTime=120&&")
    bare = hj212.encode(f"ST=31;CN=8013;PW=1;MN={MN_GAS};Flag=4;CP=&&HeartbeatTime=120&&")
    bad_alarm = hj212.encode(f"ST=31;CN=2072;PW=1;MN={MN_GAS};Flag=4;CP=&&AlarmTime=2016-08-24;a21026-Ala=1&&")
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, [(topic, alarm(i)) for i in range(30)] + [(topic, with_qn), (topic, bare), (topic, bad_alarm)])
        wait_until("all acked and written", drained(ing, 33))
    with Influx(settings.influxdb) as influx:
        [s] = influx.query('SELECT seen, time_source, "a21026_ala" FROM station_event WHERE kind = \'alarm\'')
        rows = s.values
        assert [r[0] for r in rows] == [int((T0 + timedelta(minutes=i)).timestamp()) for i in range(30)]
        assert {r[2] for r in rows} == {"alarm_time"} and {r[3] for r in rows} == {16.0}
        [h] = influx.query("SELECT seen, time_source FROM station_event WHERE kind = 'heartbeat'")
    by_source = {r[2]: r[0] for r in h.values}
    assert by_source["qn"] == int(qn_time.timestamp())
    assert abs(by_source["arrival"] - time.time()) < 120
    [d] = dead_letters(settings)
    assert d.raw == bad_alarm and "AlarmTime" in d.detail


def test_implausible_values_are_kept_flagged_and_never_a_valid_minute(
        settings_factory: Callable[..., Settings], mqtt_client_factory: Callable[..., mqtt.Client]) -> None:
    """Issue 15.6: 1.7e308 and 5e9 mg/m3 SO2 are stored (as avg_implausible, zs_avg_implausible,
    named in `implausible`), but the hourly valid mean counts only the plausible minute."""
    from detect.base import Window
    from detect.source import ReadingSource

    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1})
    hour = T0.replace(minute=0) - timedelta(hours=1)

    def minute(i: int, avg: float, zs: float) -> bytes:
        return hj212.encode(hj212.build_segment(mn=MN_GAS, cn="2051", st="31", flag=4, data_time=hour + timedelta(minutes=i),
                                                values={"a21026": {"avg": avg, "zs_avg": zs, "flag": "N"}}))

    topic = station_topic(settings, MN_GAS)
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, [(topic, minute(0, 10.0, 12.0)), (topic, minute(1, 1.7e308, 5e9))])
        wait_until("both written", drained(ing, 2))
    with Influx(settings.influxdb) as influx:
        [s] = influx.query("SELECT avg, zs_avg, avg_implausible, zs_avg_implausible, implausible, flag "
                           "FROM station_minute")
        rows = [dict(zip(s.columns, v)) for v in s.values]
        assert rows[0]["avg"] == 10.0 and rows[0]["implausible"] is None
        assert rows[1]["avg"] is None and rows[1]["avg_implausible"] == 1.7e308
        assert rows[1]["zs_avg_implausible"] == 5e9 and rows[1]["implausible"] == "avg,zs_avg"
        window = Window(hour.astimezone(timezone.utc), (hour + timedelta(hours=1)).astimezone(timezone.utc))
        agg = ReadingSource(influx).hourly_valid_means(window, pollutants=["a21026"])
        minutes = ReadingSource(influx).minutes(window, pollutants=["a21026"])
    assert agg["count"].tolist() == [1] and agg["mean"].tolist() == [12.0]
    assert minutes["zs_avg"].notna().sum() == 1  # the minute path reads no value for it either


def test_codes_outside_registry_and_table_share_one_catch_all_series(
        settings_factory: Callable[..., Settings], mqtt_client_factory: Callable[..., mqtt.Client]) -> None:
    """Issue 15.6: one 9,999-byte packet of ~900 invented codes used to make ~900 series; now
    they are one `_other` series per station and interval, their values kept as text."""
    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1})
    head = f"QN=20260101000000000;ST=31;CN=2051;PW=1;MN={MN_GAS};Flag=4;CP=&&DataTime={hj212.format_data_time(T0)}"
    items, i = [], 0
    while len(head) + sum(len(x) + 1 for x in items) < 9900:
        items.append(f"x{i:04d}-Avg=1")
        i += 1
    seg = head + ";a21026-Avg=3.5;" + ";".join(items) + "&&"
    topic = station_topic(settings, MN_GAS)
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, [(topic, hj212.encode(seg))])
        wait_until("written", drained(ing, 1))
    with Influx(settings.influxdb) as influx:
        series = influx.query("SHOW SERIES FROM station_minute")
        [other] = influx.query("SELECT other FROM station_minute WHERE pollutant = '_other'")
    assert sum(len(s.values) for s in series) == 2  # a21026 and _other
    text = other.values[0][1]
    assert text.split(",")[:2] == ["x0000-Avg=1.0", "x0001-Avg=1.0"] and len(text.split(",")) == len(items)
    assert count_points(settings, "station_minute") == 1  # a21026's avg


def test_tag_values_are_escaped_exactly_as_line_protocol_defines(
        settings_factory: Callable[..., Settings], mqtt_client_factory: Callable[..., mqtt.Client]) -> None:
    """Issue 15.6: an MN with backslashes is stored as sent (it used to be doubled); one ending
    in a backslash cannot be stored at all and is dead-lettered raw, not as line protocol."""
    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1, "accept_unknown_stations": True})
    mns = ["AB\\CD", "A B,C=D\\\\E", "AB\\"]
    packets = [(station_topic(settings, mn), json.dumps({"mn": mn, "cn": "2051", "data_time": T0.isoformat(),
                                                         "values": {"a21026": {"avg": 1.0}}}).encode())
               for mn in mns]
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, packets)
        wait_until("all acked", drained(ing, 3))
    with Influx(settings.influxdb) as influx:
        [tags] = influx.query('SHOW TAG VALUES FROM station_minute WITH KEY = "mn"')
    assert sorted(v[1] for v in tags.values) == sorted(mns[:2])
    [d] = dead_letters(settings)
    assert (d.reason, d.raw, d.topic) == (Reason.BAD_FIELD, packets[2][1], packets[2][0])
    assert "backslash" in d.detail
