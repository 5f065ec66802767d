"""One cause, one item: findings that share a cause are held in a group until a person decides.

When many stations are short of data, or offline, in the same window (a city-wide network gap, a
catch-up crossing China midnight), the findings say more about the monitoring network than about
each enterprise. A detection pass whose findings of one kind and window reach
notify.grouping.min_enterprises distinct enterprises, or min_station_share of all registered
stations (and at least two enterprises), opens their cases in one group, which sends nothing to the
enterprises until a person confirms it (then each enterprise gets one notice listing its findings)
or dismisses it with a reason (then every case closes as dismissed with that reason).
Alertmanager's grouping (group_by kind and window; one notification per group) is the model.

    groups = assign_groups(conn, settings, alerts, now)   # alert id -> group id, before ingesting
    confirm(engine, settings, group_id, at, actor); dismiss(engine, settings, group_id, at, actor, reason)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, inspect, select, update

from config.schema import Settings
from detect.base import Alert
from notify.store import utc, with_utc_times
from notify.tables import case_alerts, case_groups, cases

_TIMES = ("window_start", "window_end", "created_at", "decided_at")


class GroupError(ValueError):
    """No such group, or a group already decided."""


def group_id_for(kind: str, start: datetime, end: datetime) -> str:
    """Deterministic: the same window and kind make the same group on every run and instance."""
    return "G" + hashlib.sha256(f"group|{kind}|{utc(start).isoformat()}|{utc(end).isoformat()}".encode()).hexdigest()[:23]


def station_count(settings: Settings) -> int:
    return sum(len(o.stations) for e in settings.registry.enterprises for o in e.outlets)


def assign_groups(conn: Connection, settings: Settings, alerts: Iterable[Alert], now: datetime) -> dict[str, str]:
    """Alert id -> group id for the alerts of this pass that share a cause (see the module doc).

    Alerts of a kind and window whose group is still pending join it, however few they are.
    """
    g = settings.notify.grouping
    if not g.enabled:
        return {}
    buckets: dict[tuple[str, datetime, datetime], list[Alert]] = {}
    for a in alerts:
        if a.kind in g.kinds:
            buckets.setdefault((a.kind, utc(a.window_start), utc(a.window_end)), []).append(a)
    total = max(1, station_count(settings))
    out: dict[str, str] = {}
    for (kind, start, end), items in buckets.items():
        gid = group_id_for(kind, start, end)
        row = conn.execute(select(case_groups.c.status).where(case_groups.c.id == gid)).first()
        # Counted over the alert store too: a catch-up's findings of one window may come in several passes.
        stored = _stored(conn, kind, start, end)
        ents = {a.enterprise_id for a in items} | {e for e, _ in stored}
        stations = {a.station_mn for a in items} | {m for _, m in stored}
        big = len(ents) >= 2 and (len(ents) >= g.min_enterprises or len(stations) / total >= g.min_station_share)
        if row is None and big:
            conn.execute(insert(case_groups).values(id=gid, kind=kind, window_start=start, window_end=end,
                                                    status="pending", enterprises=len(ents), stations=len(stations),
                                                    created_at=utc(now)))
        elif row is None or row.status != "pending":
            continue
        out.update({a.id: gid for a in items})
    return out


def _stored(conn: Connection, kind: str, start: datetime, end: datetime) -> set[tuple[str, str]]:
    """(enterprise, station) of the stored open alerts of a kind and window not yet in any case
    (the alerts this pass and the next ones will bring)."""
    from detect.store import alerts_table as alerts_t

    if not inspect(conn).has_table(alerts_t.name):  # a case store without the alert store beside it
        return set()
    attached = select(case_alerts.c.alert_id).where(case_alerts.c.alert_id == alerts_t.c.id).exists()
    rows = conn.execute(select(alerts_t.c.enterprise_id, alerts_t.c.station_mn).where(
        alerts_t.c.kind == kind, alerts_t.c.window_start == start, alerts_t.c.window_end == end,
        alerts_t.c.status == "open", ~attached)).all()
    return {(r.enterprise_id, r.station_mn) for r in rows}


def get_group(conn: Connection, group_id: str) -> dict[str, Any]:
    m = conn.execute(select(case_groups).where(case_groups.c.id == group_id)).mappings().first()
    if m is None:
        raise GroupError(f"no group {group_id!r}")
    out = with_utc_times(m, _TIMES)
    out["case_ids"] = list(conn.execute(select(cases.c.id).where(cases.c.group_id == group_id)
                                        .order_by(cases.c.enterprise_id, cases.c.id)).scalars())
    return out


def list_groups(conn: Connection, status: str | None = None) -> list[dict[str, Any]]:
    """Groups, newest window first, each with how many cases it holds."""
    n = (select(func.count()).select_from(cases).where(cases.c.group_id == case_groups.c.id)
         .scalar_subquery().label("cases"))
    q = select(case_groups, n).order_by(case_groups.c.window_end.desc(), case_groups.c.id)
    if status:
        q = q.where(case_groups.c.status == status)
    return [with_utc_times(m, _TIMES) for m in conn.execute(q).mappings()]


def decide(conn: Connection, group_id: str, status: str, at: datetime, actor: str, reason: str | None) -> dict[str, Any]:
    """Mark a pending group confirmed or dismissed (once)."""
    res = conn.execute(update(case_groups).where(case_groups.c.id == group_id, case_groups.c.status == "pending")
                       .values(status=status, decided_at=utc(at), decided_by=actor, reason=reason))
    if res.rowcount != 1:
        g = get_group(conn, group_id)
        raise GroupError(f"group {group_id} is already {g['status']}")
    return get_group(conn, group_id)
