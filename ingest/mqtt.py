"""The one place that turns `broker` settings into a paho-mqtt 2.x client (credentials and TLS).

    client = make_client(settings.broker, client_id="envwatch-notify-1")
    client.on_connect = ...
    client.connect_async(**connect_options(settings.broker))
    client.loop_start()

    reason = check_connect(settings.broker)      # None when a CONNECT with our credentials succeeds

Every MQTT client of envwatch (ingest, notice channel, alert publisher, simulator, preflight)
should be built here, so that a broker with passwords, ACLs and TLS works for all of them alike.
"""

from __future__ import annotations

import os
import threading
import uuid
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


def make_client(broker: BrokerSettings, client_id: str | None = None, *, protocol: int = mqtt.MQTTv5,
                manual_ack: bool = False) -> mqtt.Client:
    """A paho Client (callback API v2) with the configured username/password and TLS applied.

    client_id defaults to broker.client_id; give each connection of one process its own id, since
    the broker disconnects an older connection when a new one arrives with the same id.
    """
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or broker.client_id,
                    protocol=protocol, manual_ack=manual_ack)
    if broker.username:
        c.username_pw_set(broker.username, broker.password.get_secret_value() if broker.password else None)
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
    error, or a timeout. A client id of its own, so that a running service is not disconnected.
    """
    c = make_client(broker, f"{broker.client_id}-check-{uuid.uuid4().hex[:8]}")
    done = threading.Event()
    result: list[Any] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result.append(rc)
        done.set()

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        # A TLS listener spoken to in plain text, for one, closes the socket without a CONNACK.
        if not done.is_set():
            result.append(f"connection closed by the broker before CONNACK ({rc})")
            done.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    try:
        c.connect(**connect_options(broker))  # TCP and TLS handshake happen here, synchronously
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return f"{type(exc).__name__}: {exc}"
    c.loop_start()
    try:
        if not done.wait(timeout_s):
            return f"no CONNACK within {timeout_s:g}s"
        rc = result[0]
        if isinstance(rc, str):
            return rc
        return None if not rc.is_failure else str(rc)
    finally:
        c.disconnect()
        c.loop_stop()
