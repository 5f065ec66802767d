"""`envwatch broker acl` files enforced by a real Mosquitto 2.0, and TLS through ingest.mqtt.

The broker is started by center.devservices with the generated snippet appended: its listener
(on broker.port), allow_anonymous false (the last allow_anonymous line wins), password and ACL file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from center.broker_acl import CONF_FILE, hash_password, plan, write_acl
from center.devservices import Service, free_port, start_mosquitto
from ingest.mqtt import check_connect, connect_options, make_client
from config.loader import from_mapping
from config.schema import BrokerSettings, Settings, TLSSettings

P = "ev"
SVC = ("envwatch-svc", "svc-secret")  # broker.client_id and broker.password: the ingest's account
ANSWERS, DETECT, NOTIFY, CHECK, WARNING = (f"{SVC[0]}-{r}" for r in ("answers", "detect", "notify", "check", "warning"))


def _station(mn: str, password: str | None) -> dict[str, Any]:
    return {"mn": mn, **({"password": password} if password else {})}


def _enterprise(eid: str, password: str | None, stations: list[dict[str, Any]]) -> dict[str, Any]:
    contact = {"mqtt_password": password} if password else {}
    return {"id": eid, "name": eid, "contact": contact,
            "outlets": [{"id": f"{eid}-o1", "medium": "gas", "stations": stations}]}


def _settings(port: int, tls: dict[str, Any] | None = None) -> Settings:
    registry = {
        "enterprises": [_enterprise("entX", "x-secret", [_station("MN-A", "a-secret"), _station("MN-NOPW", None)]),
                        _enterprise("entY", "y-secret", [_station("MN-B", "b-secret")]),
                        _enterprise("entZ", None, [_station("MN-C", "c-secret")])],
        "devices": [{"id": "drone1", "kind": "drone"}],
    }
    broker = {"host": "127.0.0.1", "port": port, "client_id": SVC[0], "password": SVC[1], "topic_prefix": P}
    if tls is not None:
        broker["tls"] = tls
    return from_mapping({"broker": broker, "registry": registry,
                         "notify": {"officers": [{"id": "off1", "name": "Officer One"}]}}, env={})


def _start(tmp: Path, settings: Settings, **conf_kw: Any) -> Service:
    out = tmp / "acl"
    write_acl(settings, out, bind="127.0.0.1", warn=lambda _w: None, **conf_kw)
    svc = start_mosquitto(tmp / "broker", free_port(), extra_conf=(out / CONF_FILE).read_text())
    _wait_listening(settings.broker.port)
    return svc


def _wait_listening(port: int) -> None:
    # Readiness, not a timing assertion: the service probe checked devservices' own listener,
    # ours is opened in the same start-up sequence.
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            threading.Event().wait(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Peer:
    """A connected client with queues of received messages and broker acknowledgements.

    It logs in as `user` with the client id it asks for (default: one of its own), whatever the
    broker then makes of that id.
    """

    def __init__(self, broker: BrokerSettings, user: str | None, password: str | None,
                 client_id: str | None = None, protocol: int = mqtt.MQTTv5) -> None:
        b = broker.model_copy(update={"username": user, "password": SecretStr(password) if password else None,
                                      "account_per_connection": False})
        self.client = make_client(b, client_id or f"t-{user}-{id(self)}", protocol=protocol)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[Any] = queue.Queue()
        self.pubacks: dict[int, Any] = {}
        self.disconnects: list[Any] = []
        self._acked = threading.Condition()
        connected: queue.Queue[Any] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put(codes)
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(rc)
        self.client.connect(**connect_options(b))
        self.client.loop_start()
        rc = connected.get(timeout=10)
        assert not rc.is_failure, f"{user}: {rc}"

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self._acked:
            self.pubacks[mid] = rc
            self._acked.notify_all()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        codes = self.subacks.get(timeout=10)
        assert not any(c.is_failure for c in codes), codes

    def publish(self, topic: str, payload: bytes) -> str:
        """QoS 1 publish; the PUBACK's reason ("Success", "Not authorized")."""
        info = self.client.publish(topic, payload, qos=1)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self.pubacks, timeout=10), f"no PUBACK for {topic}"
            return str(self.pubacks.pop(info.mid))

    def next(self) -> tuple[str, bytes]:
        return self.messages.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = _settings(free_port())
    svc = _start(tmp_path_factory.mktemp("secured"), settings)
    yield settings
    svc.stop()


@pytest.fixture
def peers(secured: Settings) -> Iterator[Any]:
    made: list[Peer] = []

    def make(user: str | None, password: str | None, client_id: str | None = None,
             protocol: int = mqtt.MQTTv5) -> Peer:
        made.append(Peer(secured.broker, user, password, client_id, protocol))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_plan_skips_entries_without_password_with_one_warning_each() -> None:
    p = plan(_settings(1883))
    assert [(a.role, a.username) for a in p.accounts] == [
        ("service", SVC[0]), ("service", ANSWERS), ("service", DETECT), ("service", NOTIFY), ("service", CHECK),
        ("service", WARNING),
        ("station", "MN-A"), ("station", "MN-B"), ("station", "MN-C"),
        ("enterprise", "entX"), ("enterprise", "entY")]
    joined = "\n".join(p.warnings)
    for name in ("'MN-NOPW'", "'drone1'", "'entZ'", "'off1'"):
        assert name in joined
    assert len(p.warnings) == 4


def test_devices_and_officers_with_passwords_get_accounts_for_their_own_topics() -> None:
    raw = _settings(1883).model_dump(mode="python")
    raw["registry"]["devices"][0]["password"] = "d-secret"
    raw["notify"]["officers"][0]["mqtt_password"] = "o-secret"
    s = from_mapping(_unmask(raw), env={})
    accounts = {a.username: a for a in plan(s).accounts}
    assert accounts["drone1"].write == (f"{P}/up/mobile/drone1",) and not accounts["drone1"].read
    assert accounts["off1"].read == (f"{P}/officer/off1/ticket",) and not accounts["off1"].write


def _unmask(v: Any) -> Any:
    """A model dump with SecretStr values turned back into plain strings."""
    if isinstance(v, SecretStr):
        return v.get_secret_value()
    if isinstance(v, dict):
        return {k: _unmask(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unmask(x) for x in v]
    return v


def test_password_hash_is_the_format_mosquitto_passwd_writes(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "u", "pässword:1"], check=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    _, _, iterations, salt_b64, _ = theirs.split("$")
    import base64
    ours = hash_password("pässword:1", salt=base64.b64decode(salt_b64), iterations=int(iterations))
    assert ours == theirs


def test_files_and_modes(tmp_path: Path) -> None:
    passwd, acl = write_acl(_settings(1883), tmp_path / "out", warn=lambda _w: None)
    assert passwd.stat().st_mode & 0o777 == 0o600
    assert "a-secret" not in passwd.read_text()
    text = acl.read_text()
    assert "user MN-A\ntopic write ev/up/station/MN-A\n" in text
    assert "user entX\ntopic read ev/enterprise/entX/notice\ntopic write ev/enterprise/entX/answer\n" in text
    conf = (tmp_path / "out" / CONF_FILE).read_text()
    assert "allow_anonymous false" in conf and f"acl_file {acl.resolve()}" in conf and "certfile" not in conf


def test_station_publishes_its_own_topic_and_service_receives_it_via_shared_subscription(peers: Any) -> None:
    svc = peers(*SVC)
    svc.subscribe(f"$share/envwatch-ingest/{P}/up/#")
    station = peers("MN-A", "a-secret")
    assert station.publish(f"{P}/up/station/MN-A", b"reading-A") == "Success"
    assert svc.next() == (f"{P}/up/station/MN-A", b"reading-A")


def test_station_cannot_publish_as_another(peers: Any) -> None:
    svc = peers(*SVC)
    svc.subscribe(f"{P}/up/#")
    station = peers("MN-A", "a-secret")
    assert station.publish(f"{P}/up/station/MN-B", b"forged") == "Not authorized"
    assert station.publish(f"{P}/up/mobile/drone1", b"forged") == "Not authorized"
    # A message published after the forged ones arrives first: the forged ones were never delivered.
    assert station.publish(f"{P}/up/station/MN-A", b"marker") == "Success"
    assert svc.next() == (f"{P}/up/station/MN-A", b"marker")


def test_enterprise_cannot_read_another_enterprises_notices(peers: Any) -> None:
    x, y = peers("entX", "x-secret"), peers("entY", "y-secret")
    x.subscribe(f"{P}/enterprise/entY/notice")  # Mosquitto 2.0 grants it, then filters each delivery
    x.subscribe(f"{P}/enterprise/entX/notice")
    y.subscribe(f"{P}/enterprise/entY/notice")
    svc = peers(NOTIFY, SVC[1])
    assert svc.publish(f"{P}/enterprise/entY/notice", b"notice-for-Y") == "Success"
    assert svc.publish(f"{P}/enterprise/entX/notice", b"notice-for-X") == "Success"
    assert y.next() == (f"{P}/enterprise/entY/notice", b"notice-for-Y")
    # X's own notice was published after Y's: had Y's been delivered to X, it would come first.
    assert x.next() == (f"{P}/enterprise/entX/notice", b"notice-for-X")


def test_enterprise_answers_only_as_itself_and_service_reads_answers(peers: Any) -> None:
    svc = peers(ANSWERS, SVC[1])
    svc.subscribe(f"{P}/enterprise/+/answer")
    x = peers("entX", "x-secret")
    assert x.publish(f"{P}/enterprise/entY/answer", b"forged") == "Not authorized"
    assert x.publish(f"{P}/enterprise/entX/notice", b"self-notice") == "Not authorized"
    assert x.publish(f"{P}/enterprise/entX/answer", b"ack") == "Success"
    assert svc.next() == (f"{P}/enterprise/entX/answer", b"ack")


def test_service_accounts_write_tickets_and_alerts_stations_cannot(peers: Any) -> None:
    detect, notify = peers(DETECT, SVC[1]), peers(NOTIFY, SVC[1])
    detect.subscribe(f"{P}/alerts")
    # Nobody subscribes to the ticket topic here: 0x10 is the broker's success code for that.
    assert notify.publish(f"{P}/officer/off1/ticket", b"ticket") == "No matching subscribers"
    station = peers("MN-A", "a-secret")
    assert station.publish(f"{P}/alerts", b"fake alert") == "Not authorized"
    assert detect.publish(f"{P}/alerts", b"alert") == "Success"
    assert detect.next() == (f"{P}/alerts", b"alert")


def test_each_service_account_has_only_its_connections_topics(peers: Any) -> None:
    ingest, answers, notify = peers(*SVC), peers(ANSWERS, SVC[1]), peers(NOTIFY, SVC[1])
    assert ingest.publish(f"{P}/alerts", b"x") == "Not authorized"
    assert ingest.publish(f"{P}/enterprise/entX/notice", b"x") == "Not authorized"
    assert answers.publish(f"{P}/officer/off1/ticket", b"x") == "Not authorized"
    assert notify.publish(f"{P}/up/station/MN-A", b"x") == "Not authorized"


def test_wrong_password_unknown_user_and_anonymous_are_refused(secured: Settings) -> None:
    b = secured.broker
    assert check_connect(b) is None  # as the check account, SVC[0]-check
    assert check_connect(b.model_copy(update={"password": SecretStr("wrong")})) in (
        "Not authorized", "Bad user name or password")
    for user, pw in (("MN-A", "wrong"), ("MN-NOPW", "anything"), (None, None)):
        cand = b.model_copy(update={"username": user, "password": SecretStr(pw) if pw else None,
                                    "account_per_connection": False})
        reason = check_connect(cand)
        assert reason in ("Not authorized", "Bad user name or password"), (user, reason)


# -- message size -------------------------------------------------------------------------------------


def test_conf_sets_the_packet_limit_and_the_queue(tmp_path: Path) -> None:
    raw = _unmask(_settings(1883).model_dump(mode="python"))
    raw["broker"]["max_message_bytes"] = 65536
    write_acl(from_mapping(raw, env={}), tmp_path, warn=lambda _w: None)
    conf = (tmp_path / CONF_FILE).read_text()
    assert "\nmax_packet_size 65536\n" in conf and "\nmax_queued_messages 1000000\n" in conf
    assert "\nautosave_interval 10\n" in conf
    assert "\nuse_username_as_clientid true\n" in conf
    assert "max_packet_size 262144" in (write_acl(_settings(1883), tmp_path / "d", warn=lambda _w: None)
                                        and (tmp_path / "d" / CONF_FILE).read_text())  # the default, 256 KiB


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_a_1_mb_publish_is_refused_by_the_broker_and_legit_traffic_flows(peers: Any, protocol: int) -> None:
    """broker.max_message_bytes (256 KiB) as max_packet_size: a station's 1 MB message is never
    delivered (the broker drops the connection: v5 clients were told the limit in CONNACK, v3.1.1
    ones cannot be); a 10 KB frame before and after it arrives as usual."""
    ingest = peers(*SVC)
    ingest.subscribe(f"{P}/up/#")
    station = peers("MN-A", "a-secret", protocol=protocol)
    frame = b"##" + b"0" * 10_000  # about the largest HJ 212 frame
    assert station.publish(f"{P}/up/station/MN-A", frame) == "Success"
    station.client.publish(f"{P}/up/station/MN-A", b"x" * (1 << 20), qos=1)
    assert _gone(station, 3.0), "the broker kept the connection of a client that sent 1 MB"
    station.close()
    again = peers("MN-A", "a-secret", protocol=protocol)
    assert again.publish(f"{P}/up/station/MN-A", b"after") == "Success"
    assert [ingest.next(), ingest.next()] == [(f"{P}/up/station/MN-A", frame), (f"{P}/up/station/MN-A", b"after")]
    assert ingest.messages.empty()


# -- sessions: one account, its own sessions ---------------------------------------------------------


def _gone(peer: Peer, wait_s: float = 0.5) -> bool:
    """True if the broker dropped `peer`'s connection (within wait_s: a takeover is immediate)."""
    deadline = time.monotonic() + wait_s
    while not peer.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(peer.disconnects)


def test_no_account_takes_over_a_service_or_station_session(peers: Any) -> None:
    """A station's and an enterprise's account connecting with each of the service's client ids, and
    with another station's, each get a session of their own name: nobody is disconnected."""
    victims = {cid: peers(cid, SVC[1], cid) for cid in (SVC[0], ANSWERS, DETECT, NOTIFY, CHECK)}
    victims["MN-B"] = peers("MN-B", "b-secret", "MN-B")
    victims[SVC[0]].subscribe(f"{P}/up/#")
    for cid in victims:
        peers("MN-A", "a-secret", cid)  # connects fine: the broker makes its client id "MN-A"
        peers("entX", "x-secret", cid)
    assert not any(_gone(v, 0) for v in victims.values()) and not _gone(victims[SVC[0]])
    # Still the same sessions, still working: the ingest's connection receives MN-B's reading.
    assert victims["MN-B"].publish(f"{P}/up/station/MN-B", b"after") == "Success"
    assert victims[SVC[0]].next() == (f"{P}/up/station/MN-B", b"after")


def test_without_the_binding_a_station_takes_over_the_service(tmp_path: Path) -> None:
    """The control: files for one shared service account (no use_username_as_clientid) let a
    station's account drop the service's connection by using its client id."""
    raw = _unmask(_settings(free_port()).model_dump(mode="python"))
    raw["broker"].update(account_per_connection=False, username=SVC[0])
    settings = from_mapping(raw, env={})
    assert "use_username_as_clientid" not in (write_acl(settings, tmp_path / "x", warn=lambda _w: None)
                                              and (tmp_path / "x" / CONF_FILE).read_text())
    svc = _start(tmp_path, settings)
    try:
        victim = Peer(settings.broker, *SVC, client_id=SVC[0])
        attacker = Peer(settings.broker, "MN-A", "a-secret", client_id=SVC[0])
        try:
            assert _gone(victim, 2.0)
        finally:
            attacker.close()
            victim.close()
    finally:
        svc.stop()


def test_the_service_connections_work_together_under_the_binding(secured: Settings, peers: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The real clients of one instance, each logged in as its own account: the answers subscriber
    receives an answer, the alert publisher and the notice channel publish, the start-up check
    connects and reads the version, and none of them drops another."""
    from detect.publish import AlertPublisher
    from notify.answers_mqtt import AnswerSubscriber
    from notify.channels import MQTTChannel
    from center.preflight import check_broker

    invalid: queue.Queue[str] = queue.Queue()
    ent = peers("entX", "x-secret")
    ent.subscribe(f"{P}/enterprise/entX/notice")
    answers = AnswerSubscriber(secured, on_answer=lambda _a: None, on_invalid=lambda t, _p, _w: invalid.put(t))
    alerts = AlertPublisher(secured.broker, timeout_s=10).start()
    channel = MQTTChannel(secured)
    try:
        assert answers.subscribed.wait(10)
        with caplog.at_level("WARNING"):
            channel.deliver({"id": "N1", "kind": "rectification_notice", "audience": "enterprise",
                             "recipient": "entX", "subject": "s", "body": "b", "payload": {}})
            assert ent.next()[0] == f"{P}/enterprise/entX/notice"
            alerts([{"id": "A1"}])
            ok = check_broker(secured.broker)
            assert ok.ok and f"connected as {CHECK}" in ok.detail and "mosquitto version 2." in ok.detail
            assert ent.publish(f"{P}/enterprise/entX/answer", b"not an answer") == "Success"
            assert invalid.get(timeout=10) == f"{P}/enterprise/entX/answer"
        assert alerts._connected.is_set() and channel._connected.is_set()
        assert not [r for r in caplog.records if "refused" in r.getMessage() or "disconnect" in r.getMessage()]
    finally:
        channel.close()
        alerts.close()
        answers.close()


def _city(port: int, influx: Any, state_dir: Path, **broker: Any) -> Settings:
    """The ingest tests' registry with an MQTT password per station, on a secured broker."""
    from tests.test_consumer import REGISTRY

    registry = _unmask(REGISTRY)
    registry = {**registry, "enterprises": [
        {**e, "outlets": [{**o, "stations": [{**st, "password": f"pw-{st['mn']}"} for st in o["stations"]]}
                          for o in e["outlets"]]} for e in registry["enterprises"]]}
    return from_mapping({"broker": {"host": "127.0.0.1", "port": port, "client_id": SVC[0], "password": SVC[1],
                                    "topic_prefix": P, **broker},
                         "influxdb": influx.model_dump(), "ingest": {"state_dir": str(state_dir),
                                                                     "batch_interval_s": 0.1},
                         "registry": registry}, env={})


def _publish_as_stations(settings: Settings, msgs: list[tuple[str, bytes]]) -> list[Peer]:
    """Each station's packets published over its own account; returns the station peers."""
    by_mn: dict[str, list[tuple[str, bytes]]] = {}
    for topic, payload in msgs:
        by_mn.setdefault(topic.rsplit("/", 1)[1], []).append((topic, payload))
    stations = [Peer(settings.broker, mn, f"pw-{mn}", client_id=mn) for mn in by_mn]
    for st, (mn, items) in zip(stations, by_mn.items()):
        infos = [st.client.publish(t, p, qos=1) for t, p in items]
        for info in infos:
            info.wait_for_publish(30)
    return stations


def test_takeover_attempts_during_a_stream_lose_no_reading(tmp_path: Path, influx_settings: Any,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Readings streamed through the real ingest while another station's account keeps connecting
    with the ingest's and a station's client ids: every reading lands, no connection is dropped."""
    from ingest.consumer import Ingest
    from tests.test_consumer import MN_GAS, MN_OTHER, count_points, drained, wait_until
    from tests.test_ingest_faults import packets

    settings = _city(free_port(), influx_settings, tmp_path / "state")
    svc = _start(tmp_path, settings)
    stop, attempts = threading.Event(), [0]

    def attack() -> None:
        while not stop.is_set():
            for cid in (SVC[0], MN_GAS):
                Peer(settings.broker, MN_OTHER, f"pw-{MN_OTHER}", client_id=cid).close()
                attempts[0] += 1

    n = 600
    try:
        with caplog.at_level("WARNING", logger="envwatch.ingest"), Ingest(settings) as ing:
            assert ing.wait_subscribed()
            attacker = threading.Thread(target=attack, daemon=True)
            attacker.start()
            stations = _publish_as_stations(settings, packets(settings, 0, n))
            wait_until("all acked and written", drained(ing, n))
            stop.set()
            attacker.join(10)
            assert not any(st.disconnects for st in stations)
            for st in stations:
                st.close()
            counters = ing.counters()
    finally:
        stop.set()
        svc.stop()
    assert attempts[0] >= 4
    assert counters["messages_in"] == n and counters["dead_letters"] == {}
    assert count_points(settings, "station_minute") == 2 * n
    assert not [r for r in caplog.records if "disconnected" in r.getMessage()]


def test_partitioned_workers_each_with_their_own_account(tmp_path: Path, influx_settings: Any) -> None:
    """Two ingest workers (broker.instances) on the secured broker split the stations between them
    by partition, each logged in as its own account; every reading lands once per its worker."""
    from ingest.consumer import Ingest
    from tests.test_consumer import count_points, wait_until
    from tests.test_ingest_faults import packets

    port = free_port()
    workers = [_city(port, influx_settings, tmp_path / f"w{i}", client_id=f"w{i}", instances=["w0", "w1"],
                     partitions=2, partition=i) for i in range(2)]
    svc = _start(tmp_path, workers[0])
    n = 200
    try:
        with Ingest(workers[0]) as w0, Ingest(workers[1]) as w1:
            assert w0.wait_subscribed() and w1.wait_subscribed()
            assert sorted(w0.topic_filters + w1.topic_filters) == sorted(
                f"{P}/up/{kind}/{key}" for kind, keys in (("station", w0.lookup.stations),
                                                          ("mobile", w0.lookup.devices)) for key in keys)
            for st in _publish_as_stations(workers[0], packets(workers[0], 0, n)):
                st.close()
            wait_until("both together acked all", lambda: w0.counters()["acked"] + w1.counters()["acked"] == n)
            wait_until("both buffers empty",
                       lambda: w0.counters()["buffer_depth"] + w1.counters()["buffer_depth"] == 0)
    finally:
        svc.stop()
    assert count_points(workers[0], "station_minute") == 2 * n


# -- TLS --------------------------------------------------------------------------------------------


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _throwaway_pki(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, server.key)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("envwatch test CA", ca_key, "envwatch test CA", ca_key, ca=True)
    srv = _cert("127.0.0.1", srv_key, "envwatch test CA", ca_key, ca=False)
    paths = d / "ca.crt", d / "server.crt", d / "server.key"
    for path, data in zip(paths, (_pem_cert(ca), _pem_cert(srv), _pem_key(srv_key))):
        path.write_bytes(data)
    return paths


def test_tls_listener_works_with_the_ca_and_fails_without(tmp_path: Path) -> None:
    ca, crt, key = _throwaway_pki(tmp_path / "pki")
    settings = _settings(free_port(), tls={"ca_file": str(ca)})
    svc = _start(tmp_path, settings, server_cert=str(crt), server_key=str(key))
    try:
        peer = Peer(settings.broker, DETECT, SVC[1])  # make_client with broker.tls.ca_file
        try:
            peer.subscribe(f"{P}/alerts")
            assert peer.publish(f"{P}/alerts", b"over tls") == "Success"
            assert peer.next() == (f"{P}/alerts", b"over tls")
        finally:
            peer.close()
        no_ca = settings.broker.model_copy(update={"tls": TLSSettings()})  # system trust store only
        assert "CERTIFICATE_VERIFY_FAILED" in (check_connect(no_ca) or "")
        plain = settings.broker.model_copy(update={"tls": None})
        assert "before CONNACK" in (check_connect(plain) or "")
    finally:
        svc.stop()


def test_cli_acl_prints_warnings_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from center.broker_acl import cli_acl

    assert cli_acl(_settings(1883), tmp_path / "out") == 11
    out, err = capsys.readouterr()
    assert err.count("warning") == 4 and "'MN-NOPW': no password configured" in err
    assert "6 service, 3 station, 0 device, 2 enterprise, 0 officer account(s)" in out
    assert (tmp_path / "out" / "passwd").exists() and (tmp_path / "out" / CONF_FILE).exists()


def test_only_the_service_account_writes_the_written_topic_a_station_cannot_forge_readings_into_warnings(
        peers: Any) -> None:
    svc, engine = peers(*SVC), peers(WARNING, SVC[1])  # the ingest writes, the early warning reads
    engine.subscribe(f"{P}/internal/written")
    station, enterprise = peers("MN-A", "a-secret"), peers("entX", "x-secret")
    forged = b'station_minute,mn=MN-B,enterprise=entY,outlet=O1,medium=gas,pollutant=a21026,code=a21026 avg=999.0 1'
    assert station.publish(f"{P}/internal/written", forged) == "Not authorized"
    assert enterprise.publish(f"{P}/internal/written", forged) == "Not authorized"
    assert svc.publish(f"{P}/internal/written", b"real") == "Success"
    assert engine.next() == (f"{P}/internal/written", b"real")
