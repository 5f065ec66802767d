"""Filings ahead (停产/检修/标定报备): planned stops an enterprise announces, and the findings they explain.

    file(engine, settings, enterprise_id, outlet_id, kind, start, end, reason, attachment, actor, now)
    decide(engine, filing_id, approve, actor, note, now)       # the center: pending -> approved | rejected
    list_filings(engine, scope, status=None), get(engine, filing_id, scope)
    admit(engine, alerts, now) -> alerts that may open cases   # the hook before cases are opened
    suppressed(alert_id_column)                                 # SQL: the alert is suppressed

An approved filing works like a silence in Alertmanager or Grafana: it names who filed it, who
approved it, when and why, and it expires at its end. An alert it explains is still stored and
shown (marked suppressed with the filing's id, the row in `alert_suppressions` saying when), but
opens no case and sends no notice. Only findings a planned stop causes are explained, and only for
the filed outlet and while the period overlaps the alert's window:

    offline, zero_while_operating, insufficient_valid_data (hourly)   any filing kind
    insufficient_valid_data (a China day)   when the filed hours make up the missing valid hours
    flag_abuse                              maintenance or calibration filings, when every counted
                                            hour is filed and no hour was marked stopped while running

A filing whose period starts before it was filed is flagged `after_the_fact`; it still needs the
center's approval like any other. Exceedances are never explained by a filing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import ColumnElement, Engine, func, insert, select, update

from config.schema import Settings
from detect.base import Alert
from notify.store import reading, utc, with_utc_times
from notify.tables import FILING_KINDS, alert_suppressions, case_alerts, filings

ALL = FILING_KINDS
# Which filing kinds explain which findings (see the module docstring).
EXPLAINS: dict[str, tuple[str, ...]] = {"offline": ALL, "zero_while_operating": ALL, "insufficient_valid_data": ALL,
                                        "flag_abuse": ("maintenance", "calibration")}
STATUSES = ("pending", "approved", "rejected")
MAX_REASON = 2000
MAX_NAME = 120
HOUR = timedelta(hours=1)
_TIMES = ("start", "end", "filed_at", "decided_at")


class FilingError(ValueError):
    """A filing that cannot be taken as given (unknown outlet, bad period, ...): the caller's to fix."""


class FilingNotFound(LookupError):
    """No filing with that id within the caller's scope."""


class FilingConflict(RuntimeError):
    """The filing's status does not allow the decision (it was decided already)."""


# -- filing and deciding ---------------------------------------------------------------------------

def file(engine: Engine, settings: Settings, enterprise_id: str, outlet_id: str, kind: str, start: datetime,
         end: datetime, reason: str, attachment: tuple[str, bytes] | None, actor: str, now: datetime) -> dict[str, Any]:
    """Record a filing (status pending); ids are checked against the registry, the period against the settings."""
    _check(settings, enterprise_id, outlet_id, kind, start, end, reason, now)
    if attachment is not None:
        shown_name(attachment[0])  # refused before anything is written
    fid = f"FL{utc(now):%Y%m%d}{uuid.uuid4().hex[:12]}"
    row = {"id": fid, "enterprise_id": enterprise_id, "outlet_id": outlet_id, "kind": kind, "start": utc(start),
           "end": utc(end), "reason": reason.strip(), "filed_at": utc(now), "filed_by": actor,
           "after_the_fact": start < now, "status": "pending", "decision_note": "",
           "attachment": _store_attachment(settings, fid, attachment) if attachment else None}
    with engine.begin() as conn:
        conn.execute(insert(filings).values(**row))
    return get(engine, fid, None)  # type: ignore[return-value]


def _check(settings: Settings, enterprise_id: str, outlet_id: str, kind: str, start: datetime, end: datetime,
           reason: str, now: datetime) -> None:
    ent = next((e for e in settings.registry.enterprises if e.id == enterprise_id), None)
    if ent is None:
        raise FilingError(f"no enterprise {enterprise_id!r} in the registry")
    if outlet_id not in {o.id for o in ent.outlets}:
        raise FilingError(f"enterprise {enterprise_id!r} has no outlet {outlet_id!r} in the registry; "
                          f"its outlets: {', '.join(o.id for o in ent.outlets)}")
    if kind not in FILING_KINDS:
        raise FilingError(f"kind {kind!r}: use one of {', '.join(FILING_KINDS)}")
    if start.tzinfo is None or end.tzinfo is None:
        raise FilingError("start and end need a time zone (e.g. +08:00)")
    if end <= start:
        raise FilingError("the period must end after it starts")
    cfg = settings.notify.filings
    if end - start > timedelta(days=cfg.max_days):
        raise FilingError(f"a filing may cover at most {cfg.max_days:g} days; file a longer stop in parts")
    if start < now - timedelta(days=cfg.max_back_days):
        raise FilingError(f"a filing may start at most {cfg.max_back_days:g} days before it is filed")
    if not reason or not reason.strip() or len(reason) > MAX_REASON:
        raise FilingError(f"a reason of 1..{MAX_REASON} characters is needed")


def shown_name(name: str) -> str:
    """The attachment's name as shown and offered for download: its last path part, never a path."""
    base = PurePosixPath(name.replace("\\", "/")).name[:MAX_NAME]
    if base in ("", ".", ".."):
        raise FilingError(f"unusable attachment name {name!r}")
    return base


def _store_attachment(settings: Settings, filing_id: str, attachment: tuple[str, bytes]) -> dict[str, Any]:
    """Write the file under a name the server makes (its digest); the client's name is only shown."""
    name, data = attachment
    limit = settings.notify.filings.max_attachment_bytes
    if len(data) > limit:
        raise FilingError(f"the attachment is larger than {limit} bytes")
    shown = shown_name(name)
    digest = hashlib.sha256(data).hexdigest()
    folder = Path(settings.ingest.state_dir) / "filings" / filing_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / digest
    path.write_bytes(data)
    return {"name": shown, "sha256": digest, "size": len(data), "path": str(path)}


def decide(engine: Engine, filing_id: str, approve: bool, actor: str, note: str, now: datetime) -> dict[str, Any]:
    """Approve or reject a pending filing; FilingConflict when it was decided already."""
    if not approve and not note.strip():
        raise FilingError("a rejection needs a note saying why")
    with engine.begin() as conn:
        status = conn.execute(select(filings.c.status).where(filings.c.id == filing_id)).scalar()
        if status is None:
            raise FilingNotFound(filing_id)
        done = conn.execute(update(filings).where(filings.c.id == filing_id, filings.c.status == "pending").values(
            status="approved" if approve else "rejected", decided_at=utc(now), decided_by=actor,
            decision_note=note.strip())).rowcount
    if not done:
        raise FilingConflict(f"filing {filing_id} is {status}: only a pending filing can be decided")
    return get(engine, filing_id, None)  # type: ignore[return-value]


# -- reading ---------------------------------------------------------------------------------------

def phase(row: Mapping[str, Any], now: datetime) -> str:
    """pending | rejected | scheduled | active | expired: the filing's state as a silence's."""
    if row["status"] != "approved":
        return str(row["status"])
    return "scheduled" if now < row["start"] else "active" if now < row["end"] else "expired"


def _select(scope: str | None) -> Any:
    n = (select(func.count()).where(alert_suppressions.c.filing_id == filings.c.id)
         .scalar_subquery().label("suppressed_alerts"))
    q = select(filings, n)
    return q if scope is None else q.where(filings.c.enterprise_id == scope)


def _dict(m: Mapping[str, Any]) -> dict[str, Any]:
    return with_utc_times(m, _TIMES)


def list_filings(engine: Engine, scope: str | None, status: str | None = None, enterprise: str | None = None,
                 limit: int = 200) -> list[dict[str, Any]]:
    """Filings, newest first; `scope` limits them to one enterprise (its own)."""
    q = _select(scope).order_by(filings.c.filed_at.desc(), filings.c.id).limit(max(1, min(limit, 1000)))
    if status:
        q = q.where(filings.c.status == status)
    if enterprise:
        q = q.where(filings.c.enterprise_id == enterprise)
    with reading(engine).connect() as conn:
        return [_dict(m) for m in conn.execute(q).mappings()]


def get(engine: Engine, filing_id: str, scope: str | None) -> dict[str, Any] | None:
    with reading(engine).connect() as conn:
        m = conn.execute(_select(scope).where(filings.c.id == filing_id)).mappings().first()
    return _dict(m) if m else None


def suppressed(alert_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """SQL condition: the alert with this id is suppressed by a filing (for `WHERE ~suppressed(...)`)."""
    return select(alert_suppressions.c.alert_id).where(alert_suppressions.c.alert_id == alert_id).exists()


def suppressing_filing(alert_id: ColumnElement[Any]) -> Any:
    """SQL scalar: the id of the filing that suppressed the alert, or NULL (a column for alert lists)."""
    return (select(alert_suppressions.c.filing_id).where(alert_suppressions.c.alert_id == alert_id)
            .limit(1).scalar_subquery().label("suppressed_by"))


# -- suppression -----------------------------------------------------------------------------------

def admit(engine: Engine, alerts: Iterable[Alert], now: datetime) -> list[Alert]:
    """The alerts that may open cases; those an approved filing explains are recorded as suppressed.

    An alert already in a case stays there (a filing approved later does not undo a case); an alert
    suppressed earlier stays suppressed.
    """
    alerts = list(alerts)
    candidates = [a for a in alerts if a.kind in EXPLAINS]
    if not candidates:
        return alerts
    ids = [a.id for a in candidates]
    outlets = {(a.enterprise_id, a.outlet_id) for a in candidates}
    with engine.begin() as conn:
        done = set(conn.execute(select(alert_suppressions.c.alert_id).where(alert_suppressions.c.alert_id.in_(ids)))
                   .scalars())
        in_case = set(conn.execute(select(case_alerts.c.alert_id).where(case_alerts.c.alert_id.in_(ids))).scalars())
        approved = [_dict(m) for m in conn.execute(select(filings).where(
            filings.c.status == "approved", filings.c.enterprise_id.in_({e for e, _ in outlets}))).mappings()]
        by_outlet: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for f in approved:
            by_outlet.setdefault((f["enterprise_id"], f["outlet_id"]), []).append(f)
        for a in candidates:
            if a.id in done or a.id in in_case:
                continue
            fid = explaining(a, by_outlet.get((a.enterprise_id, a.outlet_id), []))
            if fid is not None:
                conn.execute(insert(alert_suppressions).values(alert_id=a.id, filing_id=fid, suppressed_at=utc(now)))
                done.add(a.id)
    return [a for a in alerts if a.id not in done]


def explaining(alert: Alert, approved: list[dict[str, Any]]) -> str | None:
    """The id of the approved filing (of the alert's outlet) that explains `alert`, or None."""
    fits = [f for f in approved if f["kind"] in EXPLAINS.get(alert.kind, ())
            and f["start"] < alert.window_end and alert.window_start < f["end"]]
    if not fits:
        return None
    fits.sort(key=lambda f: (f["start"], f["id"]))
    ev = alert.evidence or {}
    if alert.kind == "flag_abuse":
        if ev.get("f_while_operating_hours"):
            return None  # a stop mark while the process ran is falsification, which no filing explains
        hours = [_parse(h) for h in ev.get("counted_hours", [])]
        return fits[0]["id"] if all(_filed_hours(h, h + HOUR, fits) >= 1 for h in hours) else None
    if alert.kind == "insufficient_valid_data" and alert.window_end - alert.window_start > HOUR:
        missing = float(ev.get("min_valid_hours", 24)) - float(ev.get("valid_hours", 0))
        return fits[0]["id"] if _filed_hours(alert.window_start, alert.window_end, fits) >= missing else None
    return fits[0]["id"]


def _filed_hours(start: datetime, end: datetime, fits: list[dict[str, Any]]) -> float:
    """Hours of [start, end) that the filings cover (their union, so overlapping filings count once)."""
    spans = sorted((max(start, f["start"]), min(end, f["end"])) for f in fits)
    total, reach = timedelta(0), start
    for s, e in spans:
        s = max(s, reach)
        if e > s:
            total += e - s
            reach = e
    return total / HOUR


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
