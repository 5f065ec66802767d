"""The demo's catch-up shows a progress bar of the messages the ingest has taken, and returns only once every
one is acknowledged and written (real broker and influxd; the publishing side is a plain MQTT client)."""

from __future__ import annotations

import io
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from rich.console import Console

from center.demo import _publish_with_progress
from config.schema import Settings
from ingest.consumer import Ingest
from tests.test_consumer import MN_GAS, REGISTRY, minute_packet, publish_all, station_topic


def test_catch_up_progress_follows_the_ingest(settings_factory: Callable[..., Settings],
                                              mqtt_client_factory: Callable[..., mqtt.Client]) -> None:
    settings = settings_factory(REGISTRY, ingest={"batch_interval_s": 0.1})
    messages = [(station_topic(settings, MN_GAS), minute_packet(MN_GAS, i)) for i in range(40)]
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    pub = mqtt_client_factory()

    def publish() -> int:
        publish_all(pub, messages)
        return len(messages)

    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        _publish_with_progress(ing, console, publish)
        c = ing.counters()
    assert c["acked"] == 40 and c["buffer_depth"] == 0 and c["readings_written"] == 80
    text = out.getvalue()
    assert "catch-up: ingesting" in text and "40/40" in text


def test_a_failing_simulator_is_reported_not_waited_for(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(REGISTRY)

    def publish() -> int:
        raise ConnectionRefusedError("broker gone")

    with Ingest(settings) as ing, pytest.raises(RuntimeError, match="simulator stopped") as info:
        _publish_with_progress(ing, Console(file=io.StringIO()), publish)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
