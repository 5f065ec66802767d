"""The broker restarted mid-stream: stopped gracefully, or killed with SIGKILL, with persistence on
(as devtools.devservices configures it). Every reading published is reconciled in InfluxDB.

Each test runs its own Mosquitto (so the session broker of the other tests is never restarted)
and streams HJ 212 minute packets through the real ingest into the real influxd. And the cause of
the loss the default configuration avoids, shown on the broker itself: Mosquitto does not keep a
shared subscription across a restart (ingest.topics.shared_subscription_warning).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devtools.devservices import Service, free_port, start_mosquitto
from config.loader import from_mapping
from config.schema import InfluxSettings, Settings
from ingest.consumer import Ingest
from tests.test_consumer import REGISTRY, count_points
from tests.test_ingest_faults import packets

N = 1200  # packets, 2 readings each, published over about 6 s
RATE_PER_S = 200
DOWN_S = 1.5  # how long the broker stays down


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Service]:
    svc = start_mosquitto(tmp_path / "broker", free_port())
    yield svc
    svc.stop()


def _client(port: int, client_id: str, on_message: Any = None, **connect: Any) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    # Set before connecting: a resumed session's queued messages arrive right after CONNACK.
    c.on_message = on_message
    c.reconnect_delay_set(0.1, 1)  # a station's logger reconnects at once, and keeps what is unacked
    c.max_inflight_messages_set(1000)
    up = threading.Event()
    c.on_connect = lambda *_a: up.set()
    c.connect("127.0.0.1", port, 30, **connect)
    c.loop_start()
    assert up.wait(10)
    return c


def _settings(port: int, influx: InfluxSettings, state: Path, **broker: Any) -> Settings:
    return from_mapping({"broker": {"host": "127.0.0.1", "port": port, "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
                                    "topic_prefix": f"ev{uuid.uuid4().hex[:8]}", **broker},
                         "influxdb": influx.model_dump(), "ingest": {"state_dir": str(state), "batch_interval_s": 0.1},
                         "registry": REGISTRY}, env={})


def _wait(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _stream_through_restart(broker: Service, settings: Settings, how: Literal["stop", "kill"]) -> int:
    """Publish N packets at RATE_PER_S; a third of the way in, stop (or kill) the broker, start it
    again DOWN_S later. Returns the readings missing from InfluxDB once everything has settled."""
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        station = _client(broker.port, f"station-{uuid.uuid4().hex[:8]}")
        acked: set[int] = set()  # mids the broker acknowledged (PUBACK), also after paho resent them
        station.on_publish = lambda _c, _u, mid, _rc, _p: acked.add(mid)
        infos: list[mqtt.MQTTMessageInfo] = []
        try:
            for i, (topic, payload) in enumerate(packets(settings, 0, N)):
                if i == N // 3:
                    broker.stop() if how == "stop" else broker.kill()
                    threading.Timer(DOWN_S, broker.start).start()
                infos.append(station.publish(topic, payload, qos=1))  # queued by paho while the broker is away
                time.sleep(1 / RATE_PER_S)
            # Every packet acknowledged by the broker (paho resends what the broker did not ack) ...
            assert _wait(lambda: all(m.mid in acked for m in infos), 30), \
                f"{sum(m.mid not in acked for m in infos)} packets never acknowledged by the broker"
        finally:
            station.disconnect()
            station.loop_stop()
        # ... and then in InfluxDB, or missing for good: wait until the count stops growing.
        _wait(lambda: count_points(settings, "station_minute") == 2 * N, 20)
        assert ing.counters()["dead_letters"] == {}
    return 2 * N - count_points(settings, "station_minute")


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_restart_mid_stream_loses_no_reading(broker: Service, influx_settings: InfluxSettings,
                                                    tmp_path: Path, how: Literal["stop", "kill"]) -> None:
    """The default plain subscription: the broker keeps it (and queues for it) across a restart."""
    settings = _settings(broker.port, influx_settings, tmp_path / "state")
    assert settings.broker.shared_group is None
    assert _stream_through_restart(broker, settings, how) == 0


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_partitioned_workers_lose_nothing_across_a_broker_restart(
        broker: Service, influx_settings: InfluxSettings, tmp_path: Path, how: Literal["stop", "kill"]) -> None:
    """Scale-out: two workers, each a plain subscription to its share of the stations."""
    first = _settings(broker.port, influx_settings, tmp_path / "w0", partitions=2, partition=0)
    second = first.model_copy(update={"broker": first.broker.model_copy(
        update={"client_id": first.broker.client_id + "-1", "partition": 1})})
    second = second.model_copy(update={"ingest": second.ingest.model_copy(update={"state_dir": str(tmp_path / "w1")})})
    with Ingest(second) as other:
        assert other.wait_subscribed()
        assert _stream_through_restart(broker, first, how) == 0
        assert other.counters()["messages_in"] > 0 and other.topic_filters


def _persistent_subscriber(port: int, client_id: str, topic_filter: str | None, got: list[bytes]) -> mqtt.Client:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c = _client(port, client_id, lambda _c, _u, m: got.append(bytes(m.payload)), clean_start=False, properties=props)
    if topic_filter is not None:
        done = threading.Event()
        c.on_subscribe = lambda *_a: done.set()
        c.subscribe(topic_filter, qos=1)
        assert done.wait(10)
    return c


@pytest.mark.parametrize("shared", [False, True])
def test_mosquitto_keeps_plain_but_not_shared_subscriptions_across_a_restart(broker: Service, shared: bool) -> None:
    """The cause: a persistent session's plain subscription survives a restart, its shared one does
    not; what is published before the subscriber subscribes again is acknowledged, then dropped."""
    cid, topic = f"sub-{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}/up/x"
    topic_filter = f"$share/g/{topic.split('/')[0]}/up/#" if shared else f"{topic.split('/')[0]}/up/#"
    got: list[bytes] = []
    sub = _persistent_subscriber(broker.port, cid, topic_filter, got)
    sub.disconnect()
    sub.loop_stop()
    broker.restart()  # graceful: the persistence file is written on exit
    pub = _client(broker.port, f"pub-{uuid.uuid4().hex[:8]}")
    infos = [pub.publish(topic, b"%d" % i, qos=1) for i in range(10)]
    for m in infos:
        m.wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()
    sub = _persistent_subscriber(broker.port, cid, None, got)  # the session resumes, no new SUBSCRIBE
    try:
        _wait(lambda: len(got) == 10, 3)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert all(m.is_published() for m in infos)  # the broker acknowledged all ten to the publisher
    assert len(got) == (0 if shared else 10)
