"""Publish alert changes on MQTT for the live board: `{topic_prefix}/alerts`, QoS 1, JSON.

One message per changed alert: the alert's export fields plus `status` (open|resolved) and
`change` (new|updated|resolved). Unchanged re-detections are not published. The store is the
record; MQTT is a notification, so a publish lost while the broker is away is not retried
beyond what paho's own queue does (QoS 1 messages queued while disconnected go out on reconnect).

    pub = AlertPublisher(settings.broker).start()
    runner = Runner(settings, publish=pub)        # the runner calls pub(list_of_dicts)
    ...; pub.close()
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any


from config.schema import BrokerSettings
from core.mqtt import make_client

log = logging.getLogger(__name__)


def alerts_topic(broker: BrokerSettings) -> str:
    return f"{broker.topic_prefix}/alerts"


class AlertPublisher:
    """A paho-mqtt 2.x client that publishes alert changes; callable with a list of alert dicts."""

    def __init__(self, broker: BrokerSettings, *, client_id: str | None = None, timeout_s: float = 10.0) -> None:
        self.broker = broker
        self.topic = alerts_topic(broker)
        self.timeout_s = timeout_s
        self._connected = threading.Event()
        self.client = make_client(broker, client_id or f"{broker.client_id}-detect")
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("alert publisher: broker refused the connection: %s", rc)
        else:
            self._connected.set()

    def _on_disconnect(self, *_: Any) -> None:
        self._connected.clear()

    def start(self) -> "AlertPublisher":
        """Connect (asynchronously; paho reconnects by itself) and wait up to timeout_s for the first CONNACK."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive)
        self.client.loop_start()
        if not self._connected.wait(self.timeout_s):
            log.warning("alert publisher: not connected to %s:%s yet; messages queue until it is",
                        self.broker.host, self.broker.port)
        return self

    def __call__(self, alerts: list[dict[str, Any]]) -> None:
        infos = [self.client.publish(self.topic, json.dumps(a, ensure_ascii=False, sort_keys=True), qos=1)
                 for a in alerts]
        if self._connected.is_set():
            for info in infos:
                try:
                    info.wait_for_publish(self.timeout_s)
                except (RuntimeError, ValueError) as exc:  # disconnected meanwhile / queue full
                    log.warning("alert publisher: %s", exc)
                    break

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
