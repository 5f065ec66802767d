"""Delivery channels: each delivers one outbox row and returns only once the far side confirmed it.

    channel.deliver(notice_row)   # returns: delivered; raises DeliveryError(retryable=...)

- MQTTChannel: MQTT v5, QoS 1, waits for the PUBACK. Enterprises on
  `{prefix}/enterprise/{id}/notice`, officers on `{prefix}/officer/{id}/ticket`.
- WebhookChannel: HTTP POST of the JSON message, HMAC-SHA256 signed.
- EmailChannel: SMTP, plain text in UTF-8 plus the JSON message as an attachment.

Every message carries the notice id (MQTT user property `notice_id` and payload field, header
`X-Envwatch-Notice-Id`, e-mail `Message-ID`): delivery is at-least-once, recipients de-duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import threading
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timezone
from typing import Any, Protocol

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.schema import Enterprise, Settings
from ingest.mqtt import NOTIFY, connection_id, make_client

log = logging.getLogger(__name__)

NOTICE_ID_HEADER = "X-Envwatch-Notice-Id"
SIGNATURE_HEADER = "X-Envwatch-Signature"
# PUBACK reason codes that no retry will change: not authorized, topic name invalid, packet too large.
_MQTT_PERMANENT = {0x87, 0x90, 0x95}


class DeliveryError(Exception):
    """A delivery that did not happen. `retryable`: worth trying again later (the far side may recover)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    """Delivers one outbox row; returns only when the recipient's side has confirmed it."""

    def deliver(self, notice_row: Mapping[str, Any]) -> None: ...


def message(notice_row: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON message every channel sends: the machine-readable payload plus the rendered text."""
    return dict(notice_row["payload"]) | {"notice_id": notice_row["id"], "subject": notice_row["subject"],
                                          "body": notice_row["body"]}


def message_bytes(notice_row: Mapping[str, Any]) -> bytes:
    return json.dumps(message(notice_row), ensure_ascii=False, sort_keys=True).encode()


def sign(secret: str | bytes, body: bytes) -> str:
    """The X-Envwatch-Signature value: 'sha256=' + hex HMAC-SHA256 of the exact body bytes."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """What a recipient does: constant-time comparison of the header with the body's signature."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def _enterprise(settings: Settings, enterprise_id: str) -> Enterprise:
    for e in settings.registry.enterprises:
        if e.id == enterprise_id:
            return e
    raise DeliveryError(f"enterprise {enterprise_id!r} is not in the registry", retryable=False)


# -- MQTT -----------------------------------------------------------------------------------------

def notice_topic(prefix: str, audience: str, recipient: str) -> str:
    """The topic a notice is published on, by audience."""
    if audience == "officer":
        return f"{prefix}/officer/{recipient}/ticket"
    return f"{prefix}/enterprise/{recipient}/notice"


class MQTTChannel:
    """QoS 1 publish, confirmed by the broker's PUBACK. One connection, opened on first use."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._acks: dict[int, Any] = {}  # mid -> PUBACK reason code
        self._lock = threading.Lock()

    def _connect(self) -> mqtt.Client:
        b = self.settings.broker
        # The instance's notify connection (its own account when the broker binds ids to accounts).
        c = make_client(b, connection_id(b, NOTIFY))
        c.on_connect = lambda _c, _u, _f, rc, _p: self._connected.set() if not rc.is_failure else None
        c.on_disconnect = lambda *_a: self._connected.clear()
        c.on_publish = self._on_publish
        c.reconnect_delay_set(0.2, 5)
        c.connect_async(b.host, b.port, b.keepalive)
        c.loop_start()
        return c

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        self._acks[mid] = rc

    def deliver(self, notice_row: Mapping[str, Any]) -> None:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            client = self._client
        if not self._connected.wait(self.timeout_s):
            raise DeliveryError(f"MQTT broker {self.settings.broker.host}:{self.settings.broker.port} "
                                f"not reachable within {self.timeout_s}s", retryable=True)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("notice_id", str(notice_row["id"])), ("kind", str(notice_row["kind"]))]
        props.ContentType = "application/json"
        topic = notice_topic(self.settings.broker.topic_prefix, notice_row["audience"], notice_row["recipient"])
        info = client.publish(topic, message_bytes(notice_row), qos=1, properties=props)
        self._wait_puback(info, topic)

    def _wait_puback(self, info: mqtt.MQTTMessageInfo, topic: str) -> None:
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:  # not queued: connection lost or queue full
            raise DeliveryError(f"MQTT publish to {topic} failed: {exc}", retryable=True) from exc
        if not info.is_published():
            raise DeliveryError(f"no PUBACK for {topic} within {self.timeout_s}s", retryable=True)
        rc = self._acks.pop(info.mid, None)
        if rc is not None and rc.is_failure:
            raise DeliveryError(f"broker refused {topic}: {rc}", retryable=rc.value not in _MQTT_PERMANENT)

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


# -- webhook --------------------------------------------------------------------------------------

class WebhookChannel:
    """POST the JSON message to the enterprise's webhook_url, signed with its webhook_secret."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0, client: httpx.Client | None = None) -> None:
        self.settings = settings
        self._http = client or httpx.Client(timeout=timeout_s, follow_redirects=False)

    def deliver(self, notice_row: Mapping[str, Any]) -> None:
        contact = _enterprise(self.settings, notice_row["recipient"]).contact
        if not contact.webhook_url:
            raise DeliveryError(f"enterprise {notice_row['recipient']!r} has no webhook_url", retryable=False)
        body = message_bytes(notice_row)
        headers = {"Content-Type": "application/json; charset=utf-8", NOTICE_ID_HEADER: str(notice_row["id"])}
        if contact.webhook_secret is not None:
            headers[SIGNATURE_HEADER] = sign(contact.webhook_secret.get_secret_value(), body)
        else:
            log.warning("webhook of %s has no webhook_secret: notice %s goes unsigned",
                        notice_row["recipient"], notice_row["id"])
        try:
            resp = self._http.post(contact.webhook_url, content=body, headers=headers)
        except httpx.TransportError as exc:  # refused, reset, timeout: the receiver may come back
            raise DeliveryError(f"webhook {contact.webhook_url}: {type(exc).__name__}: {exc}", retryable=True) from exc
        _check_status(resp, contact.webhook_url)

    def close(self) -> None:
        self._http.close()


def _check_status(resp: httpx.Response, url: str) -> None:
    """2xx: delivered. 408/429/5xx: retry. Any other status: the request itself is wrong, don't."""
    code = resp.status_code
    if 200 <= code < 300:
        return
    retryable = code in (408, 429) or code >= 500
    raise DeliveryError(f"webhook {url}: HTTP {code} {resp.text[:200]!r}", retryable=retryable)


# -- e-mail ---------------------------------------------------------------------------------------

class EmailChannel:
    """Send over SMTP (settings.notify.smtp); delivered once the server accepted the message."""

    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        if settings.notify.smtp is None:
            raise ValueError("notify.smtp is not configured: no e-mail channel")
        self.settings = settings
        self.smtp = settings.notify.smtp
        self.timeout_s = timeout_s

    def _address(self, notice_row: Mapping[str, Any]) -> str:
        recipient = notice_row["recipient"]
        if notice_row["audience"] == "officer":
            email = next((o.email for o in self.settings.notify.officers if o.id == recipient), None)
        else:
            email = _enterprise(self.settings, recipient).contact.email
        if not email:
            raise DeliveryError(f"{notice_row['audience']} {recipient!r} has no e-mail address", retryable=False)
        return email

    def build(self, notice_row: Mapping[str, Any]) -> EmailMessage:
        """The message: UTF-8 text body, JSON attachment, Message-ID derived from the notice id."""
        msg = EmailMessage()
        msg["Subject"] = notice_row["subject"]
        msg["From"] = self.smtp.sender
        msg["To"] = self._address(notice_row)
        msg["Message-ID"] = message_id(str(notice_row["id"]), self.smtp.sender)
        msg["Date"] = format_datetime(datetime.now(timezone.utc))
        msg[NOTICE_ID_HEADER] = str(notice_row["id"])
        msg.set_content(notice_row["body"], charset="utf-8")
        msg.add_attachment(message_bytes(notice_row), maintype="application", subtype="json",
                           filename=f"notice-{notice_row['id']}.json")
        return msg

    def deliver(self, notice_row: Mapping[str, Any]) -> None:
        msg = self.build(notice_row)
        try:
            with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.timeout_s) as smtp:
                if self.smtp.starttls:
                    smtp.starttls()
                if self.smtp.username:
                    pw = self.smtp.password.get_secret_value() if self.smtp.password else ""
                    smtp.login(self.smtp.username, pw)
                smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [c for c, _m in exc.recipients.values()]
            raise DeliveryError(f"SMTP refused {msg['To']}: {exc.recipients}",
                                retryable=any(400 <= c < 500 for c in codes)) from exc
        except smtplib.SMTPResponseException as exc:  # 4xx: try later; 5xx: permanent
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", retryable=exc.smtp_code < 500) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, disconnected, timeout
            raise DeliveryError(f"SMTP {self.smtp.host}:{self.smtp.port}: {type(exc).__name__}: {exc}",
                                retryable=True) from exc


def message_id(notice_id: str, sender: str) -> str:
    """'<notice-id@sender-domain>': the same notice always has the same Message-ID."""
    domain = sender.rpartition("@")[2] or "envwatch"
    return f"<{notice_id}@{domain}>"


def default_channels(settings: Settings) -> dict[str, Channel]:
    """The channels a deployment's settings allow: mqtt and webhook always, email when SMTP is set."""
    out: dict[str, Channel] = {"mqtt": MQTTChannel(settings), "webhook": WebhookChannel(settings)}
    if settings.notify.smtp is not None:
        out["email"] = EmailChannel(settings)
    return out


__all__ = ["Channel", "DeliveryError", "EmailChannel", "MQTTChannel", "WebhookChannel", "default_channels",
           "message", "message_bytes", "message_id", "notice_topic", "sign", "verify_signature"]
