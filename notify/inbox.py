"""notify's inbox: the alerts detect stored that the case workflow has not taken in yet.

The detect → notify hand-off. Detection only writes alerts; the service's workflow loop (and
tests) call `process_pending`, which reads the open alerts not attached to any case and not
suppressed by a filing (oldest window first) and passes them to `workflow.process_alerts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from config.schema import Settings
from detect.base import Alert
from detect.store import alert_of, alerts_table
from notify import filings, workflow
from core.db import reading
from notify.tables import case_alerts

BATCH = 500


@dataclass
class Intake:
    """What one `process_pending` call took in: the number of alerts read and the workflow's outcomes."""

    taken: int
    outcomes: list[dict[str, Any]]


def pending_alerts(engine: Engine, limit: int = BATCH) -> list[Alert]:
    """Open alerts not attached to any case yet: what the workflow still has to take in."""
    attached = select(case_alerts.c.alert_id).where(case_alerts.c.alert_id == alerts_table.c.id).exists()
    q = (select(alerts_table).where(alerts_table.c.status == "open", ~attached, ~filings.suppressed(alerts_table.c.id))
         .order_by(alerts_table.c.window_end, alerts_table.c.id).limit(limit))
    with reading(engine).connect() as conn:
        return [alert_of(m) for m in conn.execute(q).mappings()]


def process_pending(engine: Engine, settings: Settings, now: datetime, limit: int = BATCH,
                    **kwargs: Any) -> Intake:
    """Take up to `limit` pending alerts into the workflow (kwargs go to workflow.process_alerts)."""
    alerts = pending_alerts(engine, limit)
    outcomes = workflow.process_alerts(engine, settings, alerts, now, **kwargs) if alerts else []
    return Intake(len(alerts), outcomes)
