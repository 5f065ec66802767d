"""Facts from outside a case that the rules weigh: emergencies, the positive list, other cases.

    declare_emergency(conn, "orange", start, end, "center:wang", note)   # 重污染天气应急
    set_positive_list(conn, "E1", False, at, "center:li", "removed after inspection")
    build_context(conn, settings, case, at, history) -> rules.Context

Everything is looked up as of an event time, so replaying history finds what was true then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, and_, insert, select

from config.schema import Settings
from notify import rules
from core.time import as_utc, utc
from notify.tables import case_alerts, case_events, cases, emergencies, positive_list

EMERGENCY_LEVELS = ("yellow", "orange", "red")  # 预警等级, lowest first


def declare_emergency(conn: Connection, level: str, start: datetime, end: datetime, by: str, note: str = "",
                      declared_at: datetime | None = None) -> str:
    """Record a heavy-pollution emergency over [start, end); returns its id (same period, same id)."""
    if level not in EMERGENCY_LEVELS:
        raise ValueError(f"unknown emergency level {level!r}; use one of {', '.join(EMERGENCY_LEVELS)}")
    start, end = utc(start), utc(end)
    if end <= start:
        raise ValueError(f"emergency ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    eid = hashlib.sha256(f"{level}|{start.isoformat()}|{end.isoformat()}".encode()).hexdigest()[:24]
    if conn.execute(select(emergencies.c.id).where(emergencies.c.id == eid)).first() is None:
        conn.execute(insert(emergencies).values(id=eid, level=level, start=start, end=end, declared_by=by,
                                                declared_at=utc(declared_at or datetime.now(timezone.utc)), note=note))
    return eid


def emergency_at(conn: Connection, at: datetime) -> dict[str, Any] | None:
    """The highest-level emergency in force at `at`, if any."""
    t = utc(at)
    rows = conn.execute(select(emergencies).where(emergencies.c.start <= t, emergencies.c.end > t)).mappings().all()
    if not rows:
        return None
    best = max(rows, key=lambda r: (EMERGENCY_LEVELS.index(r["level"]), r["id"]))
    return {**best, "start": as_utc(best["start"]), "end": as_utc(best["end"])}


def list_emergencies(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(emergencies).order_by(emergencies.c.start)).mappings().all()
    return [{**r, "start": as_utc(r["start"]), "end": as_utc(r["end"])} for r in rows]


def set_positive_list(conn: Connection, enterprise_id: str, listed: bool, changed_at: datetime, by: str,
                      note: str = "") -> None:
    """Put an enterprise on (or take it off) the positive list from `changed_at` on."""
    conn.execute(insert(positive_list).values(enterprise_id=enterprise_id, listed=listed,
                                              changed_at=utc(changed_at), changed_by=by, note=note))


def positive_listed_at(conn: Connection, settings: Settings, enterprise_id: str, at: datetime) -> bool:
    """Listed at `at`: the latest change made by then, else what the configuration says."""
    row = conn.execute(select(positive_list.c.listed).where(positive_list.c.enterprise_id == enterprise_id,
                                                            positive_list.c.changed_at <= utc(at))
                       .order_by(positive_list.c.changed_at.desc(), positive_list.c.id.desc()).limit(1)).first()
    if row is not None:
        return bool(row.listed)
    ent = next((e for e in settings.registry.enterprises if e.id == enterprise_id), None)
    return bool(ent and ent.positive_list)


def grade_of(settings: Settings, enterprise_id: str) -> str:
    """Emergency performance grade; an enterprise missing from the registry counts as C (full measures)."""
    ent = next((e for e in settings.registry.enterprises if e.id == enterprise_id), None)
    return ent.emergency_grade if ent else "C"


def _same_problem(case: Mapping[str, Any]) -> Any:
    return and_(cases.c.enterprise_id == case["enterprise_id"], cases.c.outlet_id == case["outlet_id"],
                cases.c.problem == case["problem"], cases.c.id != case["id"])


def other_occurrences(conn: Connection, case: Mapping[str, Any], at: datetime) -> tuple[datetime, ...]:
    """Openings and reopenings, up to `at`, of the same problem in other cases (dismissed ones excluded)."""
    q = (select(case_events.c.at).join(cases, cases.c.id == case_events.c.case_id)
         .where(_same_problem(case), cases.c.state != "dismissed", case_events.c.type.in_(rules.OCCURRENCE_EVENTS),
                case_events.c.at <= utc(at)))
    return tuple(sorted(as_utc(t) for t in conn.execute(q).scalars()))  # type: ignore[misc]


def previous_verified_at(conn: Connection, case: Mapping[str, Any], at: datetime) -> datetime | None:
    """When the latest earlier case of the same problem closed verified (its rectification held)."""
    t = conn.execute(select(cases.c.closed_at).where(_same_problem(case), cases.c.state == "verified",
                                                     cases.c.closed_at <= utc(at))
                     .order_by(cases.c.closed_at.desc()).limit(1)).scalar()
    return as_utc(t)


def build_context(conn: Connection, settings: Settings, case: Mapping[str, Any], at: datetime,
                  history: Sequence[Mapping[str, Any]]) -> rules.Context:
    """Everything the rules need about the world outside `case`, as of event time `at`."""
    emergency = emergency_at(conn, at)
    alerts = conn.execute(select(case_alerts.c.alert).where(case_alerts.c.case_id == case["id"])).scalars().all()
    return rules.Context(
        settings=settings.notify,
        positive_listed=positive_listed_at(conn, settings, case["enterprise_id"], at),
        grade=grade_of(settings, case["enterprise_id"]),
        emergency_level=emergency["level"] if emergency else None,
        other_occurrences=other_occurrences(conn, case, at),
        previous_verified_at=previous_verified_at(conn, case, at),
        pollution_consequence=rules.pollution_consequence([dict(a) for a in alerts], history),
        verify_grace=timedelta(seconds=settings.detect.settle_s),
    )
