"""Enterprise answers over MQTT: `{prefix}/enterprise/{enterprise_id}/answer`, JSON, QoS 1.

    sub = AnswerSubscriber(settings, on_answer=workflow_handle)   # connects, subscribes
    ...
    sub.close()

Message: {"answer_id", "case_id", "type": acknowledge|rectification|contest, "text",
"attachments": [{"name", "content_base64"}]}. The enterprise id comes from the topic, never from
the body: the broker's ACL decides who may publish under which enterprise. Ids must match their
patterns (config/ids.py) and the answer must keep the limits of notify.answers (text length,
number and bytes of attachments). A message is
acknowledged to the broker only after `on_answer` returned, so an answer is not lost when the
handler fails; the handler must be idempotent on answer_id (the answers table's primary key), as
MQTT may deliver twice. Malformed messages, and answers `on_answer` refuses by raising
InvalidAnswer, go to `on_invalid` (logged by default; the service keeps them as dead letters) and
are acked: resending them would not make them valid.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from config import ids
from config.ids import attachment_name
from config.schema import AnswerLimits, Settings
from ingest.mqtt import make_client
from notify.attachments import check_base64_size, check_count, check_size, check_text

log = logging.getLogger(__name__)

ANSWER_TYPES = ("acknowledge", "rectification", "contest")
SESSION_EXPIRY_S = 7 * 24 * 3600  # answers sent while envwatch is down wait at the broker this long


class InvalidAnswer(ValueError):
    """A message on an answer topic that is not a valid answer."""


@dataclass(frozen=True)
class Attachment:
    name: str  # the enterprise's file name, cleaned (config.ids.attachment_name); metadata, never a path
    content: bytes


@dataclass(frozen=True)
class Answer:
    answer_id: str
    enterprise_id: str
    case_id: str
    type: str
    text: str
    attachments: list[Attachment] = field(default_factory=list)
    received_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def answer_filter(prefix: str) -> str:
    return f"{prefix}/enterprise/+/answer"


def enterprise_of(topic: str, prefix: str) -> str:
    """The enterprise id in `{prefix}/enterprise/{id}/answer`; InvalidAnswer unless it matches its pattern."""
    head, tail = f"{prefix}/enterprise/", "/answer"
    if not (topic.startswith(head) and topic.endswith(tail)) or len(topic) <= len(head) + len(tail):
        raise InvalidAnswer(f"not an answer topic: {topic!r}")
    try:
        return ids.check("enterprise", topic[len(head):-len(tail)], "enterprise id in the topic")
    except ids.InvalidId as exc:
        raise InvalidAnswer(str(exc)) from exc


def parse_answer(topic: str, payload: bytes, prefix: str, received_at: datetime | None = None,
                 limits: AnswerLimits | None = None) -> Answer:
    """Validate one message against the id patterns and `limits` (notify.answers); raises
    InvalidAnswer saying what is wrong."""
    limits = limits or AnswerLimits()
    enterprise = enterprise_of(topic, prefix)
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidAnswer(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidAnswer("an answer is a JSON object")
    for key in ("answer_id", "case_id", "type"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise InvalidAnswer(f"`{key}` must be a non-empty string")
    if doc["type"] not in ANSWER_TYPES:
        raise InvalidAnswer(f"`type` must be one of {', '.join(ANSWER_TYPES)}, not {doc['type']!r}")
    if not isinstance(doc.get("text", ""), str):
        raise InvalidAnswer("`text` must be a string")
    try:
        ids.check("answer", doc["answer_id"], "answer_id")
        ids.check("case", doc["case_id"], "case_id")
        text = check_text(doc.get("text", ""), limits)
        attachments = _attachments(doc.get("attachments", []), limits)
    except ValueError as exc:  # InvalidId, LimitExceeded
        raise InvalidAnswer(str(exc)) from exc
    return Answer(doc["answer_id"], enterprise, doc["case_id"], doc["type"], text, attachments,
                  received_at or datetime.now(timezone.utc))


def _attachments(items: Any, limits: AnswerLimits) -> list[Attachment]:
    if not isinstance(items, list):
        raise InvalidAnswer("`attachments` must be a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidAnswer(f"attachments[{i}] needs a `name`")
        if not isinstance(item.get("content_base64", ""), str):
            raise InvalidAnswer(f"attachments[{i}]: content_base64 must be a string")
    return decode_attachments([(item["name"], item.get("content_base64", "")) for item in items], limits)


def decode_attachments(items: list[tuple[str, str]], limits: AnswerLimits) -> list[Attachment]:
    """(name, base64) pairs decoded, names cleaned, within `limits`: an oversized one is refused
    before it is decoded. LimitExceeded (413/422) or ValueError (bad name or base64) otherwise."""
    check_count(len(items), limits)
    out, total = [], 0
    for i, (raw_name, encoded) in enumerate(items):
        try:
            name = attachment_name(raw_name)
        except ValueError as exc:
            raise ValueError(f"attachments[{i}]: {exc}") from exc
        check_base64_size(name, len(encoded), total, limits)
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"attachment {name!r}: content_base64 is not base64") from exc
        total += len(content)
        check_size(name, len(content), total, limits)
        out.append(Attachment(name, content))
    return out


class AnswerSubscriber:
    """Subscribes to every enterprise's answer topic and hands valid answers to `on_answer`."""

    def __init__(self, settings: Settings, on_answer: Callable[[Answer], None],
                 on_invalid: Callable[[str, bytes, str], None] | None = None,
                 client_id: str | None = None) -> None:
        self.settings = settings
        self.on_answer = on_answer
        self.on_invalid = on_invalid or (lambda t, _p, why: log.warning("invalid answer on %s: %s", t, why))
        self.prefix = settings.broker.topic_prefix
        self.subscribed = threading.Event()
        self._client = self._connect(client_id or f"{settings.broker.client_id}-answers")

    def _connect(self, client_id: str) -> mqtt.Client:
        b = self.settings.broker
        c = make_client(b, client_id, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.on_message = self._on_message
        c.reconnect_delay_set(0.2, 5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        c.connect_async(b.host, b.port, b.keepalive, clean_start=False, properties=props)
        c.loop_start()
        return c

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("answers: MQTT connect refused: %s", rc)
            return
        client.subscribe(answer_filter(self.prefix), options=SubscribeOptions(qos=1))

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            answer = parse_answer(msg.topic, msg.payload, self.prefix, limits=self.settings.notify.answers)
        except InvalidAnswer as exc:
            self.on_invalid(msg.topic, msg.payload, str(exc))
            client.ack(msg.mid, msg.qos)
            return
        try:
            self.on_answer(answer)
        except InvalidAnswer as exc:  # the handler refused it for good (e.g. another enterprise's case)
            self.on_invalid(msg.topic, msg.payload, str(exc))
            client.ack(msg.mid, msg.qos)
            return
        except Exception:  # noqa: BLE001 - keep the subscriber alive; unacked, the broker resends on reconnect
            log.exception("answer %s of %s: handler failed; not acknowledged", answer.answer_id, answer.enterprise_id)
            return
        client.ack(msg.mid, msg.qos)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


__all__ = ["ANSWER_TYPES", "Answer", "AnswerSubscriber", "Attachment", "InvalidAnswer", "answer_filter",
           "decode_attachments", "parse_answer"]
