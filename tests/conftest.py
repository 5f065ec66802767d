"""Shared fixtures: a real Mosquitto and a real influxd on loopback, started once per session.

    mosquitto            session  devtools.devservices.Service (.host, .port, .url, .stop(), .restart(), .kill())
    influxd              session  Service (.url is http://127.0.0.1:PORT)
    influx_settings      function InfluxSettings on the session influxd, a fresh database (created)
    settings_factory     function (registry: dict | None = None, **overrides) -> config.Settings
    mqtt_client_factory  function (client_id=None, *, clean_start=True, session_expiry=None,
                                   on_message=None) -> connected paho Client (loop running)

A test that stops or kills a session service must leave it running again (svc.restart()).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from devtools.devservices import Service, free_port, start_influxd, start_mosquitto
from config.loader import from_mapping
from config.schema import InfluxSettings, Settings


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_mosquitto(tmp_path_factory.mktemp("mosquitto"), free_port())
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_influxd(tmp_path_factory.mktemp("influxd"), free_port())
    yield svc
    svc.stop()


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def influx_settings(influxd: Service) -> InfluxSettings:
    """Settings for the session influxd with a database of this test's own, already created."""
    db = _unique("test")
    if not influxd.running():  # a previous test stopped it and failed before restarting
        influxd.restart()
    r = httpx.post(f"{influxd.url}/query", data={"q": f'CREATE DATABASE "{db}"'}, timeout=10)
    r.raise_for_status()
    return InfluxSettings(url=influxd.url, api="auto", database=db)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def settings_factory(
    mosquitto: Service, influx_settings: InfluxSettings, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Settings]:
    """Build validated Settings pointing at the session services.

    All Settings of one test share its database and its topic prefix (so a publisher and a
    consumer built separately meet); each call gets its own ingest.state_dir and client_id, so
    persistent MQTT sessions never leak between tests. `overrides` are deep-merged per section,
    e.g. settings_factory(reg, ingest={"batch_size": 10}, broker={"shared_group": None}).
    """
    topic_prefix = _unique("envwatch")
    if not mosquitto.running():
        mosquitto.restart()

    def make(registry: dict[str, Any] | None = None, **overrides: Any) -> Settings:
        raw: dict[str, Any] = {
            "broker": {"host": mosquitto.host, "port": mosquitto.port,
                       "client_id": _unique("envwatch"), "topic_prefix": topic_prefix},
            "influxdb": {"url": influx_settings.url, "api": influx_settings.api,
                         "database": influx_settings.database},
            "ingest": {"state_dir": str(tmp_path_factory.mktemp("ingest-state"))},
        }
        if registry is not None:
            raw["registry"] = registry
        return from_mapping(_merge(raw, overrides), source="settings_factory", env={})

    return make


@pytest.fixture
def mqtt_client_factory(mosquitto: Service) -> Iterator[Callable[..., mqtt.Client]]:
    """Connected paho-mqtt 2.x clients (MQTT v5, network loop running), disconnected at teardown."""
    clients: list[mqtt.Client] = []

    def make(client_id: str | None = None, *, clean_start: bool = True, session_expiry: int | None = None,
             on_message: Callable[..., None] | None = None) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or _unique("test"),
                        protocol=mqtt.MQTTv5)
        if on_message is not None:
            c.on_message = on_message
        connected = threading.Event()
        result: list[Any] = []

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            result.append(rc)
            connected.set()

        c.on_connect = on_connect
        props = None
        if session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        c.connect(mosquitto.host, mosquitto.port, keepalive=30, clean_start=clean_start, properties=props)
        c.loop_start()
        clients.append(c)
        if not connected.wait(10) or result[0].is_failure:
            raise RuntimeError(f"MQTT connect to {mosquitto.url} failed: {result or 'timeout'}")
        return c

    yield make
    for c in clients:
        c.disconnect()
        c.loop_stop()
