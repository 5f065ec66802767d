"""The one place that turns `broker` settings into a paho-mqtt 2.x client (credentials and TLS).

    client = make_client(settings.broker, client_id="envwatch-notify-1")
    client.on_connect = ...
    client.connect_async(**connect_options(settings.broker))
    client.loop_start()

    reason = check_connect(settings.broker)      # None when a CONNECT with our credentials succeeds
    client = make_client(b, connection_id(b, ANSWERS))   # one of the instance's connections

Every MQTT client of envwatch (ingest, notice channel, alert publisher, simulator, preflight)
should be built here, so that a broker with passwords, ACLs and TLS works for all of them alike.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
import zlib
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from config.schema import BrokerSettings, TLSSettings

# Reconnect backoff (seconds): quick after a blip, bounded so that an outage is noticed soon after it ends.
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.2, 5


class MQTTConfigError(ValueError):
    """The broker settings cannot be applied (e.g. a TLS file that does not exist)."""


def connect_options(broker: BrokerSettings) -> dict[str, Any]:
    """Keyword arguments for paho's connect() / connect_async(): host, port, keepalive."""
    return {"host": broker.host, "port": broker.port, "keepalive": broker.keepalive}


# The MQTT connections of one envwatch instance: the suffix of each one's client id and, with
# broker.account_per_connection, of its account (center/broker_acl.py generates one per role).
INGEST, ANSWERS, DETECT, NOTIFY, CHECK, WARNING = "", "answers", "detect", "notify", "check", "warning"
SERVICE_ROLES = (INGEST, ANSWERS, DETECT, NOTIFY, CHECK, WARNING)
SYS_VERSION_TOPIC = "$SYS/broker/version"


def per_connection_login(broker: BrokerSettings) -> bool:
    """True when each connection logs in as its own account, named after its client id."""
    return broker.account_per_connection and broker.password is not None


def connection_id(broker: BrokerSettings, role: str = INGEST, client_id: str | None = None) -> str:
    """The client id (and, per connection, the account) of the connection `role` of instance client_id.

    With one shared account, notify and check connections get a random tail, since several may be
    open at once; with an account per connection the id must be the account's name.
    """
    base = client_id or broker.client_id
    cid = f"{base}-{role}" if role else base
    if role in (NOTIFY, CHECK) and not per_connection_login(broker):
        cid += f"-{uuid.uuid4().hex[:8]}"
    return cid


# A topic level must not hold wildcards or separators: such an id is no topic of its own.
_BAD_LEVEL = re.compile(r"[+#/\x00]")


def in_partition(broker: BrokerSettings, key: str) -> bool:
    """Whether station MN or device id `key` is this worker's (broker.partition of broker.partitions)."""
    return zlib.crc32(key.encode("utf-8")) % broker.partitions == broker.partition


def ingest_topics(broker: BrokerSettings, mns: Iterable[str], devices: Iterable[str]) -> list[str]:
    """The topic filters one ingest worker subscribes to.

    One worker: {p}/up/# (a plain subscription, kept by the broker across restarts), or
    $share/{shared_group}/{p}/up/# when a group is set. Partitioned: the station and device topics
    of this worker's share (a stable hash of the MN or device id), each a plain subscription.
    """
    up = f"{broker.topic_prefix}/up"
    if broker.partitions == 1:
        return [f"$share/{broker.shared_group}/{up}/#" if broker.shared_group else f"{up}/#"]
    return ([f"{up}/station/{mn}" for mn in sorted(mns) if not _BAD_LEVEL.search(mn) and in_partition(broker, mn)]
            + [f"{up}/mobile/{d}" for d in sorted(devices) if not _BAD_LEVEL.search(d) and in_partition(broker, d)])


def shared_subscription_warning(broker: BrokerSettings, version: str | None) -> str | None:
    """Why broker.shared_group loses readings on this broker, or None.

    Mosquitto saves only plain subscriptions in its persistence file (src/persist_write.c walks
    each topic's plain subscribers, never its shared ones: so from 1.6, which added shared
    subscriptions, through 2.0.22, and in 2.1's file persistence). After a restart a shared subscription exists only
    once a worker has reconnected and subscribed again; QoS 1 readings published before that are
    acknowledged to the station and dropped (tests/test_broker_restart.py measures it).
    """
    if not broker.shared_group or not version or not version.lower().startswith("mosquitto"):
        return None
    return (f"broker.shared_group is set, and {version} does not keep shared subscriptions across a "
            "restart: readings published between a broker restart and the workers' re-subscription are "
            "lost. Use a plain subscription (broker.shared_group: null, the default) or broker.partitions "
            "to scale out")


def make_client(broker: BrokerSettings, client_id: str | None = None, *, protocol: int = mqtt.MQTTv5,
                manual_ack: bool = False) -> mqtt.Client:
    """A paho Client (callback API v2) with the configured credentials and TLS applied.

    client_id defaults to broker.client_id; give each connection of one process its own id
    (connection_id), since the broker disconnects an older connection when a new one arrives with
    the same id. With broker.account_per_connection the login name is the client id: the broker
    files of `envwatch broker acl` bind each client id to the account of that name
    (use_username_as_clientid), so no other account can take over the session.
    """
    cid = client_id or broker.client_id
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=protocol, manual_ack=manual_ack)
    password = broker.password.get_secret_value() if broker.password else None
    if per_connection_login(broker):
        c.username_pw_set(cid, password)
    elif broker.username:
        c.username_pw_set(broker.username, password)
    if broker.tls is not None:
        _apply_tls(c, broker.tls)
    c.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    return c


def _apply_tls(c: mqtt.Client, tls: TLSSettings) -> None:
    # Checked here so that a typo in a path is a start-up error naming the key, not an SSL trace.
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path is not None and not os.path.isfile(path):
            raise MQTTConfigError(f"broker.tls.{key}: {path} is not a readable file")
    if (tls.cert_file is None) != (tls.key_file is None):
        raise MQTTConfigError("broker.tls: cert_file and key_file go together (client certificate)")
    # ca_certs=None: the system's trust store, for brokers with a publicly signed certificate.
    c.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
    # insecure: the chain is still verified, only the host name check is off (paho semantics).
    c.tls_insecure_set(tls.insecure)


def check_connect(broker: BrokerSettings, timeout_s: float = 5.0) -> str | None:
    """Open one MQTT connection with the configured credentials and TLS; None if the broker accepts it.

    Otherwise a short reason: the broker's CONNACK reason ("Not authorized"), the TLS or socket
    error, or a timeout. The check connection's own client id, so a running service is not disconnected.
    """
    return probe(broker, timeout_s)[0]


def probe(broker: BrokerSettings, timeout_s: float = 5.0, version_wait_s: float = 2.0) -> tuple[str | None, str | None]:
    """(check_connect's reason, the broker's `$SYS/broker/version` or None if it does not say in time)."""
    c = make_client(broker, connection_id(broker, CHECK))
    done, got_version = threading.Event(), threading.Event()
    result: list[Any] = []
    version: list[str] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result.append(rc)
        done.set()
        if not rc.is_failure:
            _c.subscribe(SYS_VERSION_TOPIC, qos=0)

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        # A TLS listener spoken to in plain text, for one, closes the socket without a CONNACK.
        if not done.is_set():
            result.append(f"connection closed by the broker before CONNACK ({rc})")
            done.set()

    def on_message(_c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
        version.append(m.payload.decode("utf-8", "replace")[:200])
        got_version.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    c.on_message = on_message
    try:
        c.connect(**connect_options(broker))  # TCP and TLS handshake happen here, synchronously
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return f"{type(exc).__name__}: {exc}", None
    c.loop_start()
    try:
        if not done.wait(timeout_s):
            return f"no CONNACK within {timeout_s:g}s", None
        rc = result[0]
        if isinstance(rc, str):
            return rc, None
        if rc.is_failure:
            return str(rc), None
        # Mosquitto publishes its version retained, so it arrives right after the SUBACK.
        got_version.wait(version_wait_s)
        return None, (version[0] if version else None)
    finally:
        c.disconnect()
        c.loop_stop()
