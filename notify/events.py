"""The case's append-only history, chained so that any later edit is detectable.

Each event's digest is sha256(prev_digest + canonical JSON of the event), where the canonical JSON
has sorted keys, no whitespace, UTF-8 text and ISO-8601 UTC times ("...Z"). The first event of a
case chains to GENESIS. `verify_chain` recomputes the chain and names the first event that does not
fit, so the evidence package can prove the history it carries is the history that was recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone
from typing import Any

from sqlalchemy import Connection, insert, select

from core.time import as_utc, utc
from notify.tables import case_events

GENESIS = "0" * 64
SYSTEM = "system"  # the actor of what envwatch does by itself (rules, deadlines, escalation)


class TransitionError(ValueError):
    """A case or ticket change not allowed in its current state (or one that does not exist)."""

DIGESTED = ("case_id", "seq", "at", "recorded_at", "actor", "type", "data")


def iso(t: datetime) -> str:
    """ISO-8601 UTC with a Z, microseconds only when present: the one time format we digest."""
    return as_utc(t).isoformat().replace("+00:00", "Z")  # type: ignore[union-attr]


def jsonable(v: Any) -> Any:
    """Event data as plain JSON (times as ISO UTC), so what we digest is what the DB keeps."""
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [jsonable(x) for x in v]
    return v


def canonical(event: Mapping[str, Any]) -> str:
    """The canonical JSON text of an event's digested fields."""
    doc = {k: event[k] for k in DIGESTED}
    doc["at"], doc["recorded_at"] = iso(doc["at"]), iso(doc["recorded_at"])
    doc["data"] = jsonable(doc["data"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_digest(prev_digest: str, event: Mapping[str, Any]) -> str:
    """sha256 hex of prev_digest followed by the event's canonical JSON."""
    return hashlib.sha256((prev_digest + canonical(event)).encode("utf-8")).hexdigest()


def append_event(conn: Connection, case_id: str, at: datetime, actor: str, type: str,
                 data: Mapping[str, Any] | None = None, recorded_at: datetime | None = None) -> dict[str, Any]:
    """Append one event to a case's history in the caller's transaction; returns the stored row.

    `at` is the event time the rules reason on; `recorded_at` is the wall clock (defaults to now:
    it is the only place the workflow reads the clock, and no rule looks at it). Two writers racing
    on one case collide on the (case_id, seq) unique constraint instead of forking the chain.
    """
    last = conn.execute(select(case_events.c.seq, case_events.c.digest).where(case_events.c.case_id == case_id)
                        .order_by(case_events.c.seq.desc()).limit(1)).first()
    seq, prev = (last.seq + 1, last.digest) if last else (1, GENESIS)
    row: dict[str, Any] = {"case_id": case_id, "seq": seq, "at": utc(at), "actor": actor, "type": type,
                           "recorded_at": utc(recorded_at or datetime.now(timezone.utc)),
                           "data": jsonable(dict(data or {})), "prev_digest": prev}
    row["digest"] = event_digest(prev, row)
    row["id"] = conn.execute(insert(case_events).values(**row).returning(case_events.c.id)).scalar_one()
    return row


def events_of(conn: Connection, case_id: str) -> list[dict[str, Any]]:
    """A case's events in order, times as aware UTC."""
    rows = conn.execute(select(case_events).where(case_events.c.case_id == case_id)
                        .order_by(case_events.c.seq)).mappings().all()
    return [{**r, "at": as_utc(r["at"]), "recorded_at": as_utc(r["recorded_at"])} for r in rows]


def verify_chain(rows: Iterable[Mapping[str, Any]]) -> int | None:
    """The seq of the first event that breaks the chain (edited, missing, reordered), or None.

    `rows` are one case's events in seq order, as stored (mappings with the table's columns).
    """
    prev = GENESIS
    for expected_seq, row in enumerate(rows, start=1):
        if row["seq"] != expected_seq or row["prev_digest"] != prev:
            return row["seq"]
        try:
            digest = event_digest(prev, row)
        except (TypeError, ValueError):  # data no longer valid JSON, times unreadable, ...
            return row["seq"]
        if digest != row["digest"]:
            return row["seq"]
        prev = row["digest"]
    return None
