"""devtools.devservices against the real binaries, plus a smoke test of the shared fixtures."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from devtools.devservices import (
    ServiceError, _pid_alive, ensure_down, ensure_up, free_port, start_influxd, start_mosquitto,
)


def _pids(lines: list[str]) -> list[int]:
    return [int(line.split("(pid ")[1].split(",")[0]) for line in lines]


def test_ensure_up_twice_reuses_and_ensure_down_stops(tmp_path: Path) -> None:
    mqtt_port, influx_port = free_port(), free_port()
    try:
        first = list(ensure_up(tmp_path, mqtt_port=mqtt_port, influx_port=influx_port))
        assert [line.split()[0] for line in first] == ["mosquitto", "influxd"]
        assert all("started" in line for line in first), first
        second = list(ensure_up(tmp_path, mqtt_port=mqtt_port, influx_port=influx_port))
        assert all("reused" in line for line in second), second
        assert _pids(first) == _pids(second)
        assert f"127.0.0.1:{mqtt_port}" in second[0] and f"127.0.0.1:{influx_port}" in second[1]
        assert httpx.get(f"http://127.0.0.1:{influx_port}/ping").status_code == 204
    finally:
        down = list(ensure_down(tmp_path))
    assert [line.split()[:2] for line in down] == [["mosquitto", "stopped"], ["influxd", "stopped"]]
    assert not any(_pid_alive(p) for p in _pids(first))
    assert all("not running" in line for line in ensure_down(tmp_path))


def test_ensure_up_restarts_after_a_crash(tmp_path: Path) -> None:
    mqtt_port, influx_port = free_port(), free_port()
    try:
        first = list(ensure_up(tmp_path, mqtt_port=mqtt_port, influx_port=influx_port))
        os.kill(_pids(first)[0], signal.SIGKILL)
        deadline = time.monotonic() + 5  # SIGKILL is delivered asynchronously
        while _pid_alive(_pids(first)[0]) and time.monotonic() < deadline:
            time.sleep(0.01)
        again = list(ensure_up(tmp_path, mqtt_port=mqtt_port, influx_port=influx_port))
        assert "started" in again[0] and "reused" in again[1]
    finally:
        list(ensure_down(tmp_path))


def test_influxd_restart_keeps_data(tmp_path: Path) -> None:
    svc = start_influxd(tmp_path, free_port())
    try:
        httpx.post(f"{svc.url}/query", data={"q": "CREATE DATABASE keep"}).raise_for_status()
        httpx.post(f"{svc.url}/write?db=keep&precision=s", content=b"m,t=a v=1 1700000000").raise_for_status()
        old_pid, port = svc.pid, svc.port
        svc.restart()
        assert svc.pid != old_pid and svc.port == port
        r = httpx.get(f"{svc.url}/query", params={"db": "keep", "q": "SELECT v FROM m", "epoch": "s"})
        assert r.json()["results"][0]["series"][0]["values"] == [[1700000000, 1]]
    finally:
        svc.stop()
    assert not svc.running()


def test_mosquitto_persistent_session_survives_restart(tmp_path: Path) -> None:
    """A QoS 1 message queued for an offline persistent session is delivered after a broker restart.

    Mosquitto 2.0.11 only saves a v5 session to disk if the client connected with clean_start
    False (a session created with clean_start True and an expiry interval survives a client
    reconnect, but not a broker restart): the ingest must connect with clean_start=False.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    svc = start_mosquitto(tmp_path, free_port())
    got: list[bytes] = []
    arrived, subscribed = threading.Event(), threading.Event()

    def connect() -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="durable", protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.on_message = lambda _c, _u, m: (got.append(m.payload), arrived.set())
        c.on_subscribe = lambda *_: subscribed.set()
        c.connect(svc.host, svc.port, clean_start=False, properties=props)
        c.loop_start()
        return c

    try:
        sub = connect()
        sub.subscribe("t/#", qos=1)
        assert subscribed.wait(5)
        sub.disconnect()
        sub.loop_stop()
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect(svc.host, svc.port)
        pub.loop_start()
        pub.publish("t/x", b"queued", qos=1).wait_for_publish(5)
        pub.disconnect()
        pub.loop_stop()
        svc.restart()  # a graceful stop writes the persistence file
        sub = connect()
        assert arrived.wait(10), "queued QoS 1 message lost across broker restart"
        sub.disconnect()
        sub.loop_stop()
        assert got == [b"queued"]
    finally:
        svc.stop()


def test_port_in_use_is_a_clear_error(tmp_path: Path, mosquitto) -> None:
    with pytest.raises(ServiceError, match="already in use"):
        start_mosquitto(tmp_path, mosquitto.port)


def test_bad_config_shows_log_tail(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"mosquitto exited.*\n.*(?i:error)"):
        start_mosquitto(tmp_path, free_port(), extra_conf="no_such_option 1")


def test_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    import devtools.devservices as ds
    monkeypatch.setattr(ds.os, "access", lambda *_: False)
    with pytest.raises(ServiceError, match=r"mosquitto not found: run `make install` \(apt-get install mosquitto\)"):
        start_mosquitto(tmp_path, free_port())


def test_shared_fixtures(settings_factory, mqtt_client_factory, influx_settings) -> None:
    s1, s2 = settings_factory(), settings_factory(ingest={"batch_size": 7})
    assert s1.influxdb.database == s2.influxdb.database == influx_settings.database
    assert s1.broker.topic_prefix == s2.broker.topic_prefix and s1.broker.client_id != s2.broker.client_id
    assert s1.ingest.state_dir != s2.ingest.state_dir and s2.ingest.batch_size == 7
    dbs = httpx.get(f"{influx_settings.url}/query", params={"q": "SHOW DATABASES"}).json()
    assert [influx_settings.database] in dbs["results"][0]["series"][0]["values"]

    got = threading.Event()
    sub = mqtt_client_factory(on_message=lambda _c, _u, m: got.set())
    sub.subscribe(f"{s1.broker.topic_prefix}/#", qos=1)[0]
    pub = mqtt_client_factory()
    time.sleep(0.2)  # paho's subscribe() returns before the SUBACK
    pub.publish(f"{s1.broker.topic_prefix}/x", b"hi", qos=1).wait_for_publish(5)
    assert got.wait(5)
