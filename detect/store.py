"""Durable alerts and job watermarks (SQLAlchemy 2.x Core; SQLite by default, PostgreSQL-ready).

Tables (created by the one migration history, core/migrations; 0004 adopts databases made before it):
    alerts      id PK, the Alert's fields (limit as `limit_value`), evidence JSON,
                status open|resolved, first_seen, last_seen, updated_at, resolved_at
    watermarks  job PK, position (all windows ending at or before it were evaluated), updated_at

Alerts are never deleted. `upsert_alerts` reports what changed so only changes get published;
`resolve_missing` closes open alerts that a re-evaluation of their window no longer produces.
The upsert is select-then-insert/update in one transaction: portable across dialects and it
tells new from updated from unchanged, which ON CONFLICT alone cannot. Times are stored as
naive UTC (SQLite has no time zone type) and returned aware. The engine is core.db's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import (JSON, Column, DateTime, Float, Index, MetaData, String, Table, TypeDecorator, and_, select,
                        update)
from sqlalchemy.engine import Engine

from core.db import make_engine, migrate
from detect.base import Alert

metadata = MetaData()
_CHUNK = 500


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC out; stored naive UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the alert store")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None else None


alerts_table = Table(
    "alerts", metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("enterprise_id", String(128), nullable=False),
    Column("outlet_id", String(128), nullable=False),
    Column("station_mn", String(64), nullable=False),
    Column("pollutant", String(64), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("detector", String(128), nullable=False),
    Column("value", Float),
    Column("limit_value", Float),
    Column("unit", String(32), nullable=False, default=""),
    Column("evidence", JSON, nullable=False),
    Column("status", String(16), nullable=False, default="open"),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime),
    Index("ix_alerts_kind_window_end", "kind", "window_end"),
    Index("ix_alerts_window_start", "window_start"),
    Index("ix_alerts_status", "status"),
)

watermarks_table = Table(
    "watermarks", metadata,
    Column("job", String(128), primary_key=True),
    Column("position", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Columns whose change makes an alert "updated" (the id already covers what it is about).
_CONTENT = ("severity", "station_mn", "detector", "value", "limit_value", "unit", "evidence")


class Change(StrEnum):
    NEW = "new"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    RESOLVED = "resolved"


@dataclass(slots=True)
class StoredAlert:
    """An alert with its life cycle."""

    alert: Alert
    status: str
    first_seen: datetime
    last_seen: datetime
    updated_at: datetime
    resolved_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        d = self.alert.to_json()
        d.update(status=self.status, first_seen=_iso(self.first_seen), last_seen=_iso(self.last_seen),
                 updated_at=_iso(self.updated_at), resolved_at=_iso(self.resolved_at) if self.resolved_at else None)
        return d


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _jsonable(evidence: dict[str, Any]) -> dict[str, Any]:
    """Evidence as it will read back (numpy scalars -> numbers, tuples -> lists, datetimes -> ISO)."""
    def default(o: Any) -> Any:
        if hasattr(o, "item"):
            return o.item()
        if isinstance(o, datetime):
            return _iso(o)
        return str(o)
    return json.loads(json.dumps(evidence, default=default, sort_keys=True))


def _row(a: Alert) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "severity": a.severity, "enterprise_id": a.enterprise_id,
            "outlet_id": a.outlet_id, "station_mn": a.station_mn, "pollutant": a.pollutant,
            "window_start": a.window_start, "window_end": a.window_end, "detector": a.detector,
            "value": None if a.value is None else float(a.value),
            "limit_value": None if a.limit is None else float(a.limit), "unit": a.unit, "evidence": _jsonable(a.evidence)}


def alert_of(m: Mapping[str, Any]) -> Alert:
    """The Alert back from its stored row (a mapping of the alerts table's columns): the one converter."""
    return Alert(kind=m["kind"], severity=m["severity"], enterprise_id=m["enterprise_id"], outlet_id=m["outlet_id"],
                 station_mn=m["station_mn"], pollutant=m["pollutant"], window_start=m["window_start"],
                 window_end=m["window_end"], detector=m["detector"], value=m["value"], limit=m["limit_value"],
                 unit=m["unit"], evidence=dict(m["evidence"] or {}))


def _alert(r: Any) -> StoredAlert:
    m = r._mapping
    return StoredAlert(alert_of(m), m["status"], m["first_seen"], m["last_seen"], m["updated_at"], m["resolved_at"])


class AlertStore:
    """Alerts and watermarks on one database. Thread-safe (one transaction per call)."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine

    def create(self) -> "AlertStore":
        """Bring the database to the newest schema (core.db.migrate: the one history for every table)."""
        migrate(self.engine)
        return self

    def close(self) -> None:
        self.engine.dispose()

    # -- alerts -----------------------------------------------------------------------------

    def upsert_alerts(self, alerts: Iterable[Alert], now: datetime | None = None) -> list[tuple[Alert, Change]]:
        """Insert new alerts, update changed ones (reopening resolved ones), touch last_seen of the rest."""
        now = now or datetime.now(timezone.utc)
        unique = {a.id: a for a in alerts}  # the same id twice in one batch: the last one stands
        result: list[tuple[Alert, Change]] = []
        t = alerts_table
        with self.engine.begin() as conn:
            ids = list(unique)
            existing = {}
            for i in range(0, len(ids), _CHUNK):
                for r in conn.execute(select(t).where(t.c.id.in_(ids[i:i + _CHUNK]))):
                    existing[r.id] = r
            new_rows, touched = [], []
            for aid, a in unique.items():
                row, old = _row(a), existing.get(aid)
                if old is None:
                    new_rows.append(row | {"status": "open", "first_seen": now, "last_seen": now, "updated_at": now})
                    result.append((a, Change.NEW))
                elif old.status != "open" or any(getattr(old, c) != row[c] for c in _CONTENT):
                    conn.execute(update(t).where(t.c.id == aid).values(
                        **{c: row[c] for c in _CONTENT}, status="open", resolved_at=None, last_seen=now, updated_at=now))
                    result.append((a, Change.UPDATED))
                else:
                    touched.append(aid)
                    result.append((a, Change.UNCHANGED))
            if new_rows:
                conn.execute(t.insert(), new_rows)
            for i in range(0, len(touched), _CHUNK):
                conn.execute(update(t).where(t.c.id.in_(touched[i:i + _CHUNK])).values(last_seen=now))
        return result

    def resolve_missing(self, kind: str, start: datetime, end: datetime, found_ids: Iterable[str],
                        now: datetime | None = None) -> list[StoredAlert]:
        """Resolve open alerts of `kind` owned by (start, end] (window_end in it) that are not in found_ids."""
        now = now or datetime.now(timezone.utc)
        found = set(found_ids)
        t = alerts_table
        with self.engine.begin() as conn:
            rows = conn.execute(select(t).where(and_(t.c.kind == kind, t.c.status == "open", t.c.window_end > start,
                                                     t.c.window_end <= end))).all()
            gone = [r for r in rows if r.id not in found]
            for i in range(0, len(gone), _CHUNK):
                conn.execute(update(t).where(t.c.id.in_([r.id for r in gone[i:i + _CHUNK]]))
                             .values(status="resolved", resolved_at=now, updated_at=now))
        out = []
        for r in gone:
            s = _alert(r)
            s.status, s.resolved_at, s.updated_at = "resolved", now, now
            out.append(s)
        return out

    def get(self, alert_id: str) -> StoredAlert | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(alerts_table).where(alerts_table.c.id == alert_id)).first()
        return _alert(r) if r is not None else None

    def alerts(self, start: datetime | None = None, end: datetime | None = None, kinds: Sequence[str] | None = None,
               status: str | None = None) -> Iterator[StoredAlert]:
        """Alerts whose window overlaps [start, end), oldest window first (then kind, id: a stable order)."""
        t = alerts_table
        q = select(t)
        if start is not None:
            q = q.where(t.c.window_end > start)
        if end is not None:
            q = q.where(t.c.window_start < end)
        if kinds:
            q = q.where(t.c.kind.in_(list(kinds)))
        if status:
            q = q.where(t.c.status == status)
        q = q.order_by(t.c.window_start, t.c.kind, t.c.id)
        with self.engine.connect() as conn:
            for r in conn.execution_options(yield_per=1000).execute(q):
                yield _alert(r)

    # -- watermarks -------------------------------------------------------------------------

    def watermark(self, job: str) -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(select(watermarks_table.c.position).where(watermarks_table.c.job == job)).scalar()

    def set_watermark(self, job: str, position: datetime) -> None:
        """Record that every window of `job` ending at or before `position` was evaluated (never moves back)."""
        t = watermarks_table
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            old = conn.execute(select(t.c.position).where(t.c.job == job)).scalar()
            if old is None:
                conn.execute(t.insert().values(job=job, position=position, updated_at=now))
            elif position > old:
                conn.execute(update(t).where(t.c.job == job).values(position=position, updated_at=now))
