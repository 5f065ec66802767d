"""What each party may see of a case: explicit allow-lists per role, in one place.

    views.case_for(role, case)            # GET /api/cases/{id}, GET /api/tickets/{id}
    views.case_summary_for(role, row)     # GET /api/cases, the `case` events of /api/stream
    views.notice_for(role, notice)        # GET /api/notices, a case's notices
    views.enterprise_event(event)         # one history event as the enterprise sees it, or None
    views.enterprise_payload(payload)     # the payload sent to the enterprise's MQTT topic / webhook / e-mail

The enterprise is the supervised party: it sees its own case (the facts, deadlines and state), the
alerts that make it (the facts a notice states, never another detector's internals), the notices and
decisions addressed to it and its own answers. It never sees tickets, ticket events, officers, the
officer's findings, the center's notes and assessments, recommendations not yet told, server file
paths, or anything about another enterprise (a hotspot's candidate list names its neighbours).

Everything is an allow-list: a field or event type added to the store later stays hidden from the
enterprise until it is named here. Officers and operators are the bureau: they see the case whole,
officers without server file paths. Scoping *which* rows a caller gets is notify/queries.py's job
(in SQL); this module decides *what of each row* it gets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Role = str  # operator | enterprise | officer

# -- the enterprise's allow-lists -----------------------------------------------------------------

ENTERPRISE_CASE_FIELDS = (
    "id", "enterprise_id", "enterprise_name", "outlet_id", "problem", "pollutant", "state", "severity", "opened_at",
    "updated_at", "closed_at", "deadline_at", "ack_due_at", "verify_until", "emergency", "self_reported",
    "dismiss_reason", "version")
# The facts of an alert that a notice states (notify.notices._finding), nothing of the detector's workings.
ENTERPRISE_ALERT_FIELDS = (
    "id", "kind", "severity", "enterprise_id", "outlet_id", "station_mn", "pollutant", "window_start", "window_end",
    "value", "limit", "unit", "status", "first_seen", "last_seen", "updated_at", "resolved_at", "case_id")
ENTERPRISE_EVIDENCE_FIELDS = ("factor", "basis", "standard", "valid_minutes", "confidence")
_ALERT_FACTS = ("alert_id", "kind", "severity", "value", "limit", "unit", "pollutant", "window_start", "window_end",
                "emergency_level", "confidence")
_MOVE = ("from", "to")
# event type -> the keys of its data the enterprise sees. A type not named here is not shown at all.
ENTERPRISE_EVENTS: dict[str, tuple[str, ...]] = {
    "opened": (*_ALERT_FACTS, "ack_due_at", "deadline_at"),
    "alert_attached": _ALERT_FACTS,
    "notified": _MOVE,
    "acknowledged": (*_MOVE, "text"),
    "contested": (*_MOVE, "text", "attachments"),
    "rectification_reported": (*_MOVE, "text", "attachments", "verify_until"),
    "answer_received": ("answer_id", "type", "accepted", "state"),
    "verified": _MOVE,
    "reopened": (*_MOVE, "ack_due_at", "deadline_at"),
    "escalated": _MOVE,  # that it went to enforcement; not why, how urgent or to whom
    "dismissed": (*_MOVE, "reason"),
    "enforcement_closed": (*_MOVE, "outcome"),  # the decision, as the closing notice tells it
    "self_reported": (),
    "notice_decided": ("kind", "emergency_level"),  # only notices to the enterprise (ENTERPRISE_NOTICE_KINDS)
}
ENTERPRISE_NOTICE_KINDS = ("rectification_notice", "reminder", "reopened", "closed")
ENTERPRISE_NOTICE_FIELDS = (
    "id", "case_id", "kind", "audience", "recipient", "channel", "language", "subject", "body", "payload",
    "created_at", "status", "attempts", "delivered_at")  # not last_error: it names the center's mail relay
ENTERPRISE_PAYLOAD_FIELDS = (
    "notice_id", "case_id", "enterprise_id", "outlet_id", "kind", "problem", "pollutant", "severity", "findings",
    "findings_total", "limit", "deadline", "emergency", "language", "answer", "event_seq", "formal", "cases")
# One case of a notice that lists several (an enterprise's findings of one detection pass).
ENTERPRISE_PAYLOAD_CASE_FIELDS = ("case_id", "event_seq", "outlet_id", "problem", "deadline", "findings")
ENTERPRISE_FINDING_FIELDS = (
    "alert_id", "kind", "severity", "problem_label", "station_mn", "pollutant", "window_start", "window_end",
    "window_local", "value", "limit", "unit", "factor", "basis", "standard", "valid_minutes", "confidence")
ATTACHMENT_FIELDS = ("name", "sha256", "size")  # never `path`: where the server keeps the file
ANSWER_FIELDS = ("id", "type", "text", "attachments", "received_at")
# Event data keys that are server file paths (evidence_locked's package, attachments' files).
PATH_KEYS = ("path", "evidence_path")


def pick(row: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """The allowed keys of `row` that it has."""
    return {k: row[k] for k in fields if k in row}


def attachments(items: Any) -> list[dict[str, Any]]:
    """Attachments as anyone outside the server sees them: name, digest, size."""
    return [pick(a, ATTACHMENT_FIELDS) for a in items or [] if isinstance(a, Mapping)]


def _actor(actor: str, enterprise_id: str) -> str:
    # The enterprise sees who acted only as "system", itself, or "center" (no operator or officer names).
    return actor if actor in ("system", f"enterprise:{enterprise_id}") else "center"


def enterprise_event(event: Mapping[str, Any], enterprise_id: str) -> dict[str, Any] | None:
    """One history event as the enterprise sees it; None for events it must not see."""
    keys = ENTERPRISE_EVENTS.get(event.get("type", ""))
    data = event.get("data") or {}
    if keys is None or (event["type"] == "notice_decided" and data.get("kind") not in ENTERPRISE_NOTICE_KINDS):
        return None
    shown = pick(data, keys)
    if "attachments" in shown:
        shown["attachments"] = attachments(shown["attachments"])
    return {"seq": event["seq"], "at": event["at"], "recorded_at": event.get("recorded_at", event["at"]),
            "actor": _actor(str(event.get("actor", "")), enterprise_id), "type": event["type"], "data": shown}


def enterprise_alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    """An alert of the enterprise's own case: the facts a notice states (a hotspot's candidate list is dropped)."""
    out = pick(alert, ENTERPRISE_ALERT_FIELDS)
    out["evidence"] = pick(alert.get("evidence") or {}, ENTERPRISE_EVIDENCE_FIELDS)
    return out


def _findings(items: Any) -> list[dict[str, Any]]:
    return [pick(f, ENTERPRISE_FINDING_FIELDS) for f in items or [] if isinstance(f, Mapping)]


def enterprise_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A notice payload as it may leave the center for the enterprise (MQTT, webhook, e-mail, the API)."""
    out = pick(payload, ENTERPRISE_PAYLOAD_FIELDS)
    if "findings" in out:
        out["findings"] = _findings(out["findings"])
    if "cases" in out:
        out["cases"] = [{**pick(c, ENTERPRISE_PAYLOAD_CASE_FIELDS), "findings": _findings(c.get("findings"))}
                        for c in out["cases"] or [] if isinstance(c, Mapping)]
    if isinstance(out.get("answer"), Mapping):
        out["answer"] = pick(out["answer"], ("mqtt_topic", "http_path"))
    return out


def _strip_paths(value: Any) -> Any:
    """`value` without server file paths, at any depth (officers' view of events and answers)."""
    if isinstance(value, Mapping):
        return {k: _strip_paths(v) for k, v in value.items() if k not in PATH_KEYS}
    if isinstance(value, list):
        return [_strip_paths(v) for v in value]
    return value


# -- per role -------------------------------------------------------------------------------------

def case_summary_for(role: Role, row: Mapping[str, Any]) -> dict[str, Any]:
    """A case row (list, stream) as `role` sees it."""
    return pick(row, ENTERPRISE_CASE_FIELDS) if role == "enterprise" else dict(row)


def notice_for(role: Role, notice: Mapping[str, Any]) -> dict[str, Any]:
    """An outbox row as `role` sees it (notify.queries scopes an enterprise to its own notices)."""
    if role != "enterprise":
        return dict(notice)
    out = pick(notice, ENTERPRISE_NOTICE_FIELDS)
    out["payload"] = enterprise_payload(notice.get("payload") or {})
    return out


def case_for(role: Role, case: Mapping[str, Any]) -> dict[str, Any]:
    """A full case (notify.queries.get_case) as `role` sees it."""
    if role == "operator":
        return dict(case)
    if role == "officer":
        return _strip_paths(case)
    ent = case["enterprise_id"]
    out = case_summary_for(role, case)
    out["events"] = [e for e in (enterprise_event(ev, ent) for ev in case.get("events") or []) if e is not None]
    out["alerts"] = [enterprise_alert(a) for a in case.get("alerts") or []]
    out["notices"] = [notice_for(role, n) for n in case.get("notices") or []
                      if n.get("audience") == "enterprise" and n.get("recipient") == ent]
    out["answers"] = [{**pick(a, ANSWER_FIELDS), "attachments": attachments(a.get("attachments"))}
                      for a in case.get("answers") or [] if a.get("enterprise_id", ent) == ent]
    out["ticket"] = None
    return out
