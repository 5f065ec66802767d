"""The bureau's loop end to end, on the service's own path and real servers.

Readings (written as ingest writes them) -> exceedance detector -> stored alert -> case and
rectification notice on the enterprise's MQTT topic -> the enterprise reports rectification ->
the problem recurs twice within the verification window -> enforcement ticket with an evidence
package that verifies, and stops verifying after one byte changes.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from config.lookup import Lookup
from config.schema import Settings
from detect.runner import Runner
from core.influx import Influx
from notify import inbox, queries, workflow
from notify.channels import MQTTChannel
from notify.evidence import verify
from notify.outbox import Dispatcher
from core.db import engine_from_settings, migrate
from tests.detect_helpers import minute_lines, write

H = timedelta(hours=1)
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)
MN = "E2E0001"
REGISTRY = {"enterprises": [{
    "id": "E-power", "name": "东郊热电", "emergency_grade": "B",
    "outlets": [{"id": "DA001", "medium": "gas", "reference_o2": 6,
                 "limits": {"a21026": {"hourly": 35, "standard": "GB 13223-2011 超低排放"}},
                 "stations": [{"mn": MN, "pollutants": ["a21026", "a19001"]}]}]}]}


def _hour(settings: Settings, start: datetime, so2: float) -> None:
    """One hour of valid minute data at `so2` mg/m3 (O2-corrected) and 7 % O2."""
    values = {"a21026": {"avg": so2 * 0.9, "zs_avg": so2, "flag": "N"}, "a19001": {"avg": 7.0, "flag": "N"}}
    with Influx(settings.influxdb) as influx:
        write(influx, minute_lines(Lookup(settings.registry), MN, start, 60, values))


def _patrol(settings: Settings, engine: Any, start: datetime) -> list[dict[str, Any]]:
    """What the service's detection and workflow loops do for the hour starting at `start`."""
    Runner(settings, store=None).evaluate_range(start, start + H, kinds=["exceedance"])
    return workflow.process_alerts(engine, settings, inbox.pending_alerts(engine), start + 2 * H)


def test_exceedance_to_notice_to_rectification_to_recurrence_to_ticket_with_evidence(
        settings_factory: Callable[..., Settings], mqtt_client_factory: Callable[..., Any], tmp_path: Path) -> None:
    settings = settings_factory(REGISTRY)
    engine = engine_from_settings(settings)
    migrate(engine)
    notices: queue.Queue[dict[str, Any]] = queue.Queue()
    sub = mqtt_client_factory(on_message=lambda _c, _u, m: notices.put(json.loads(m.payload)))
    sub.subscribe(f"{settings.broker.topic_prefix}/enterprise/E-power/notice", qos=1)
    channel = MQTTChannel(settings)
    dispatcher = Dispatcher(engine, settings, {"mqtt": channel})

    # 1. A first exceedance: a case opens and the rectification notice reaches the enterprise.
    _hour(settings, T0, so2=52.0)
    (first,) = _patrol(settings, engine, T0)
    case_id = first["case_id"]
    assert dispatcher.run_once(T0 + 2 * H).delivered == 1
    notice = notices.get(timeout=10)
    assert notice["case_id"] == case_id and notice["kind"] == "rectification_notice"
    assert notice["pollutant"] == "a21026" and notice["limit"]["value"] == 35

    # 2. The enterprise reports rectification.
    workflow.answer(engine, settings, "E-power", case_id, "rectification", "脱硫循环泵已更换", [], "A-1", T0 + 3 * H)
    assert queries.get_case(engine, case_id)["state"] == "rectification_reported"

    # 3. It recurs twice within the verification window: the case reopens, then goes to enforcement.
    _hour(settings, T0 + 10 * H, so2=48.0)
    _patrol(settings, engine, T0 + 10 * H)
    assert queries.get_case(engine, case_id)["state"] == "reopened"
    workflow.answer(engine, settings, "E-power", case_id, "rectification", "再次检修", [], "A-2", T0 + 11 * H)
    _hour(settings, T0 + 20 * H, so2=50.0)
    _patrol(settings, engine, T0 + 20 * H)
    case = queries.get_case(engine, case_id)
    assert case["state"] == "escalated"
    (ticket,) = queries.list_tickets(engine, None)
    assert ticket["case_id"] == case_id

    # 4. The ticket's evidence package verifies, and a single changed byte breaks it.
    workflow.build_missing_evidence(engine, settings, T0 + 22 * H)
    ticket = queries.get_ticket(engine, ticket["id"])
    package = Path(ticket["evidence_path"])
    assert verify(package, ticket["evidence_digest"]).ok
    readings = package / "readings.csv"
    data = bytearray(readings.read_bytes())
    assert b"52" in data  # the first exceedance's readings are in it
    data[data.index(b"52")] = ord("3")
    readings.write_bytes(bytes(data))
    result = verify(package, ticket["evidence_digest"])
    assert not result.ok and any("readings.csv" in p for p in result.problems)
    channel.close()
