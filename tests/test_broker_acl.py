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
SVC = ("envwatch-svc", "svc-secret")


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
    broker = {"host": "127.0.0.1", "port": port, "username": SVC[0], "password": SVC[1], "topic_prefix": P}
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
    """A connected client with queues of received messages and broker acknowledgements."""

    def __init__(self, broker: BrokerSettings, user: str | None, password: str | None) -> None:
        b = broker.model_copy(update={"username": user, "password": SecretStr(password) if password else None})
        self.client = make_client(b, f"t-{user}-{id(self)}")
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[Any] = queue.Queue()
        self.pubacks: dict[int, Any] = {}
        self._acked = threading.Condition()
        connected: queue.Queue[Any] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put(codes)
        self.client.on_publish = self._on_publish
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

    def make(user: str | None, password: str | None) -> Peer:
        made.append(Peer(secured.broker, user, password))
        return made[-1]

    yield make
    for p in made:
        p.close()


def test_plan_skips_entries_without_password_with_one_warning_each() -> None:
    p = plan(_settings(1883))
    assert [(a.role, a.username) for a in p.accounts] == [
        ("service", SVC[0]), ("station", "MN-A"), ("station", "MN-B"), ("station", "MN-C"),
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
    svc = peers(*SVC)
    assert svc.publish(f"{P}/enterprise/entY/notice", b"notice-for-Y") == "Success"
    assert svc.publish(f"{P}/enterprise/entX/notice", b"notice-for-X") == "Success"
    assert y.next() == (f"{P}/enterprise/entY/notice", b"notice-for-Y")
    # X's own notice was published after Y's: had Y's been delivered to X, it would come first.
    assert x.next() == (f"{P}/enterprise/entX/notice", b"notice-for-X")


def test_enterprise_answers_only_as_itself_and_service_reads_answers(peers: Any) -> None:
    svc = peers(*SVC)
    svc.subscribe(f"{P}/enterprise/+/answer")
    x = peers("entX", "x-secret")
    assert x.publish(f"{P}/enterprise/entY/answer", b"forged") == "Not authorized"
    assert x.publish(f"{P}/enterprise/entX/notice", b"self-notice") == "Not authorized"
    assert x.publish(f"{P}/enterprise/entX/answer", b"ack") == "Success"
    assert svc.next() == (f"{P}/enterprise/entX/answer", b"ack")


def test_service_account_writes_tickets_and_alerts_stations_cannot(peers: Any) -> None:
    svc = peers(*SVC)
    svc.subscribe(f"{P}/alerts")
    # Nobody subscribes to the ticket topic here: 0x10 is the broker's success code for that.
    assert svc.publish(f"{P}/officer/off1/ticket", b"ticket") == "No matching subscribers"
    station = peers("MN-A", "a-secret")
    assert station.publish(f"{P}/alerts", b"fake alert") == "Not authorized"
    assert svc.publish(f"{P}/alerts", b"alert") == "Success"
    assert svc.next() == (f"{P}/alerts", b"alert")


def test_wrong_password_unknown_user_and_anonymous_are_refused(secured: Settings) -> None:
    b = secured.broker
    assert check_connect(b) is None
    for user, pw in (("MN-A", "wrong"), ("MN-NOPW", "anything"), (None, None)):
        cand = b.model_copy(update={"username": user, "password": SecretStr(pw) if pw else None})
        reason = check_connect(cand)
        assert reason in ("Not authorized", "Bad user name or password"), (user, reason)


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
        peer = Peer(settings.broker, *SVC)  # make_client with broker.tls.ca_file
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

    assert cli_acl(_settings(1883), tmp_path / "out") == 6
    out, err = capsys.readouterr()
    assert err.count("warning") == 4 and "'MN-NOPW': no password configured" in err
    assert "1 service, 3 station, 0 device, 2 enterprise, 0 officer account(s)" in out
    assert (tmp_path / "out" / "passwd").exists() and (tmp_path / "out" / CONF_FILE).exists()


def test_only_the_service_account_writes_the_written_topic_a_station_cannot_forge_readings_into_warnings(
        peers: Any) -> None:
    svc = peers(*SVC)
    svc.subscribe(f"{P}/internal/written")
    station, enterprise = peers("MN-A", "a-secret"), peers("entX", "x-secret")
    forged = b'station_minute,mn=MN-B,enterprise=entY,outlet=O1,medium=gas,pollutant=a21026,code=a21026 avg=999.0 1'
    assert station.publish(f"{P}/internal/written", forged) == "Not authorized"
    assert enterprise.publish(f"{P}/internal/written", forged) == "Not authorized"
    assert svc.publish(f"{P}/internal/written", b"real") == "Success"
    assert svc.next() == (f"{P}/internal/written", b"real")
