"""The outbox delivers at least once over real servers: Mosquitto, an HTTP receiver, an SMTP server.

Time is simulated: the dispatcher is given `now`, so retries and leases are stepped through
deterministically, never waited for.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aiosmtpd.controller import Controller
from paho.mqtt.subscribeoptions import SubscribeOptions

from devtools.devservices import free_port
from config.schema import Settings
from notify.channels import (EmailChannel, MQTTChannel, WebhookChannel, message_id, verify_signature)
from core.time import as_utc
from notify.notices import enqueue
from notify.outbox import Dispatcher, backoff, outbox_counts, retry_failed
from tests.test_notices import postgres, store  # noqa: F401 - fixtures: the store on SQLite and PostgreSQL
from tests.test_notices import T0, make_store, notice_rows, open_case, registry

ROOT = Path(__file__).resolve().parents[1]
SECRET = "webhook-s3cret"


class Inbox:
    """MQTT messages received by a subscriber: (notice id from the user property, JSON payload)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str | None, dict[str, Any]]] = []
        self._cond = threading.Condition()

    def on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = dict(getattr(msg.properties, "UserProperty", []) or [])
        with self._cond:
            self.messages.append((props.get("notice_id"), json.loads(msg.payload)))
            self._cond.notify_all()

    def wait_for(self, n: int) -> list[tuple[str | None, dict[str, Any]]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.messages) >= n, timeout=15), self.messages
            return list(self.messages)


def subscribe(client: mqtt.Client, topic: str) -> None:
    done = threading.Event()
    client.on_subscribe = lambda *_a: done.set()
    client.subscribe(topic, options=SubscribeOptions(qos=1))
    assert done.wait(10), f"no SUBACK for {topic}"


@pytest.fixture
def inbox(settings_factory: Callable[..., Settings], mqtt_client_factory: Callable[..., mqtt.Client]) -> Inbox:
    """A subscriber on every enterprise's and officer's notice topics of this test's prefix."""
    box = Inbox()
    prefix = settings_factory().broker.topic_prefix
    client = mqtt_client_factory(on_message=box.on_message)
    subscribe(client, f"{prefix}/enterprise/+/notice")
    subscribe(client, f"{prefix}/officer/+/ticket")
    return box


def decide(settings: Settings, tmp_path: Path | None = None, kind: str = "rectification_notice",
           engine: Any = None) -> tuple[Any, list[str]]:
    engine = engine if engine is not None else make_store(tmp_path / "store.sqlite" if tmp_path else None)
    case_row, event = open_case(engine)
    with engine.begin() as conn:
        ids = enqueue(conn, settings, case_row, event, kind)
    return engine, ids


# -- MQTT -----------------------------------------------------------------------------------------

def test_notice_reaches_the_enterprise_topic_with_its_id(settings_factory: Callable[..., Settings],
                                                         inbox: Inbox, store: Any) -> None:
    settings = settings_factory(registry())
    engine, (nid,) = decide(settings, engine=store)
    channel = MQTTChannel(settings)
    try:
        counts = Dispatcher(engine, settings, {"mqtt": channel}).run_once(T0)
    finally:
        channel.close()
    assert (counts.claimed, counts.delivered) == (1, 1)
    ((prop_id, payload),) = inbox.wait_for(1)
    assert prop_id == nid == payload["notice_id"]
    assert payload["case_id"] == "C1" and payload["kind"] == "rectification_notice"
    assert "35 mg/m3" in payload["body"] and payload["subject"].startswith("【整改通知】")
    (row,) = notice_rows(engine)
    assert row["status"] == "delivered" and row["attempts"] == 1 and row["delivered_at"] is not None


_CRASHING_DISPATCHER = """
import json, os, signal, sys
from datetime import datetime
from config.loader import from_mapping
from notify.channels import MQTTChannel
from notify.outbox import Dispatcher
from core.db import make_engine

db, raw, now = sys.argv[1], json.loads(sys.argv[2]), datetime.fromisoformat(sys.argv[3])
settings = from_mapping(raw, env={})
def die(row):  # the broker has PUBACKed; the row is not marked yet: the worst moment to die
    os.kill(os.getpid(), signal.SIGKILL)
Dispatcher(make_engine(f"sqlite:///{db}"), settings, {"mqtt": MQTTChannel(settings)}, after_send=die).run_once(now)
"""


def test_dispatcher_killed_after_publish_resends_the_same_id(settings_factory: Callable[..., Settings],
                                                             inbox: Inbox, tmp_path: Path) -> None:
    settings = settings_factory(registry())
    engine, ids = decide(settings, tmp_path)
    raw = settings.model_dump(mode="json", exclude_defaults=True)
    proc = subprocess.run([sys.executable, "-c", _CRASHING_DISPATCHER, str(tmp_path / "store.sqlite"), json.dumps(raw),
                           T0.isoformat()], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9, proc.stderr
    (row,) = notice_rows(engine)
    assert row["status"] == "pending" and row["attempts"] == 0  # sent, but not recorded as sent

    # The workflow, restarted, re-decides: still one row. A new dispatcher skips the dead one's
    # lease, then re-sends once the lease expired.
    case_row, event = open_case_rows(engine)
    with engine.begin() as conn:
        assert enqueue(conn, settings, case_row, event, "rectification_notice") == ids
    channel = MQTTChannel(settings)
    try:
        dispatcher = Dispatcher(engine, settings, {"mqtt": channel})
        assert dispatcher.run_once(T0).claimed == 0
        assert dispatcher.run_once(T0 + dispatcher.lease + timedelta(seconds=1)).delivered == 1
    finally:
        channel.close()
    received = inbox.wait_for(2)
    assert [m[0] for m in received] == ids * 2  # at least once: the same id twice ...
    assert len({m[0] for m in received}) == len(notice_rows(engine)) == 1  # ... one notice per decision
    assert notice_rows(engine)[0]["status"] == "delivered"


def open_case_rows(engine: Any) -> tuple[Any, Any]:
    from sqlalchemy import select

    from notify.tables import case_events, cases
    with engine.connect() as conn:
        return (conn.execute(select(cases)).first(),
                dict(conn.execute(select(case_events).where(case_events.c.seq == 1)).first()._mapping))


# -- webhook --------------------------------------------------------------------------------------

class Receiver:
    """A real HTTP server on loopback recording every POST; answers with `status`."""

    def __init__(self, port: int) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(settings_factory: Callable[..., Settings]) -> Iterator[tuple[Settings, int, list[Receiver]]]:
    port = free_port()
    contact = {"webhook_url": f"http://127.0.0.1:{port}/envwatch", "webhook_secret": SECRET}
    receivers: list[Receiver] = []
    yield settings_factory(registry(contact)), port, receivers
    for r in receivers:
        r.close()


def test_webhook_down_then_up_is_delivered_once_signed(webhook: tuple[Settings, int, list[Receiver]],
                                                      store: Any) -> None:
    settings, port, receivers = webhook
    engine, _ = decide(settings, engine=store)
    nid = next(r["id"] for r in notice_rows(engine) if r["channel"] == "webhook")
    dispatcher = Dispatcher(engine, settings, {"webhook": WebhookChannel(settings)}, base_delay_s=10)
    now = T0
    for attempt in (1, 2, 3):  # nothing listens on the port
        assert dispatcher.run_once(now).retried == 1
        row = next(r for r in notice_rows(engine) if r["id"] == nid)
        assert row["status"] == "pending" and row["attempts"] == attempt and "ConnectError" in row["last_error"]
        assert dispatcher.run_once(now).claimed == 0  # not due before its backoff
        now = as_utc(row["next_attempt_at"])
    receivers.append(Receiver(port))
    counts = dispatcher.run_once(now)
    assert (counts.delivered, counts.retried) == (1, 0)
    ((headers, body),) = receivers[0].requests
    assert headers["X-Envwatch-Notice-Id"] == nid == json.loads(body)["notice_id"]
    assert verify_signature(SECRET, body, headers["X-Envwatch-Signature"])
    assert not verify_signature("other", body, headers["X-Envwatch-Signature"])
    row = next(r for r in notice_rows(engine) if r["id"] == nid)
    assert row["status"] == "delivered" and row["attempts"] == 4
    assert dispatcher.run_once(now + timedelta(days=1)).claimed == 0  # the mqtt row is not ours
    assert outbox_counts(engine) == {"pending": 1, "delivered": 1, "failed": 0}


def test_webhook_4xx_fails_at_once_5xx_retries_until_max(webhook: tuple[Settings, int, list[Receiver]]) -> None:
    settings, port, receivers = webhook
    receivers.append(Receiver(port))
    engine, _ = decide(settings)
    dispatcher = Dispatcher(engine, settings, {"webhook": WebhookChannel(settings)}, max_attempts=2)
    receivers[0].status = 503
    assert dispatcher.run_once(T0).retried == 1
    assert dispatcher.run_once(T0 + timedelta(hours=2)).failed == 1  # second and last attempt
    row = next(r for r in notice_rows(engine) if r["channel"] == "webhook")
    assert row["status"] == "failed" and "gave up after 2 attempts" in row["last_error"]
    assert outbox_counts(engine)["failed"] == 1

    assert retry_failed(engine, T0) == 1  # an operator fixed the receiver's config
    receivers[0].status = 400
    assert dispatcher.run_once(T0).failed == 1  # a 4xx will not get better by retrying
    receivers[0].status = 429
    retry_failed(engine, T0)
    assert dispatcher.run_once(T0).retried == 1  # ... except "too many requests"
    assert len(receivers[0].requests) == 4


# -- e-mail ---------------------------------------------------------------------------------------

class _Collect:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's naming
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, _Collect]]:
    handler = _Collect()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


def test_email_reaches_a_local_smtp_server(settings_factory: Callable[..., Settings],
                                           smtp_server: tuple[Controller, _Collect]) -> None:
    controller, handler = smtp_server
    settings = settings_factory(registry({"email": "ehs@plant.example.cn"}), notify={
        "smtp": {"host": "127.0.0.1", "port": controller.port, "sender": "notices@sthjj.example.gov.cn"}})
    engine, _ = decide(settings)
    counts = Dispatcher(engine, settings, {"email": EmailChannel(settings)}).run_once(T0)
    assert counts.delivered == 1
    row = next(r for r in notice_rows(engine) if r["channel"] == "email")
    (env,) = handler.envelopes
    assert env.rcpt_tos == ["ehs@plant.example.cn"] and env.mail_from == "notices@sthjj.example.gov.cn"
    msg = email.message_from_bytes(env.content, policy=email.policy.default)
    assert msg["Subject"] == row["subject"] and msg["Subject"].startswith("【整改通知】")
    assert msg["Message-ID"] == message_id(row["id"], "notices@sthjj.example.gov.cn") == f"<{row['id']}@sthjj.example.gov.cn>"
    body = msg.get_body(preferencelist=("plain",)).get_content()
    assert "案件编号：C1" in body and "35 mg/m3" in body
    (attachment,) = list(msg.iter_attachments())
    assert json.loads(attachment.get_content())["notice_id"] == row["id"]


def test_smtp_server_down_is_retried(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(registry({"email": "ehs@plant.example.cn"}),
                                notify={"smtp": {"host": "127.0.0.1", "port": free_port()}})
    engine, _ = decide(settings)
    assert Dispatcher(engine, settings, {"email": EmailChannel(settings)}).run_once(T0).retried == 1
    row = next(r for r in notice_rows(engine) if r["channel"] == "email")
    assert row["status"] == "pending" and "SMTP" in row["last_error"]


# -- backoff --------------------------------------------------------------------------------------

def test_backoff_grows_is_capped_and_deterministic() -> None:
    delays = [backoff(a, "n1", 5, 600).total_seconds() for a in range(1, 12)]
    assert delays == [backoff(a, "n1", 5, 600).total_seconds() for a in range(1, 12)]
    for a, d in enumerate(delays, start=1):
        full = min(600, 5 * 2 ** (a - 1))
        assert full / 2 <= d <= full
    assert max(delays) <= 600 and delays[-1] >= 300
    assert backoff(3, "n1", 5, 600) != backoff(3, "n2", 5, 600)  # jitter spreads notices apart
