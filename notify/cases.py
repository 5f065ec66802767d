"""The case state machine: alerts open or join cases; people and rules move them along.

    open ──notify──> notified
    notified | reopened ──acknowledge──> acknowledged
    notified | acknowledged | reopened ──contest (自证, an answer with evidence)──> acknowledged
    notified | acknowledged | reopened ──report_rectification──> rectification_reported
    rectification_reported ──verify (window passed, no recurrence)──> verified (closed)
    rectification_reported ──reopen (recurrence within the window)──> reopened
    open | notified | acknowledged | rectification_reported | reopened ──escalate──> escalated
    open | notified | acknowledged | rectification_reported | reopened ──dismiss(reason)──> dismissed
    escalated ──close_enforcement(outcome)──> verified, or dismissed when outcome = no_violation
    assign: any state but verified/dismissed, state unchanged

Two clocks. Findings run on event time (an alert's window end), so a backfill opens the same cases
as live operation. Obligations run on delivery time: deciding a rectification or reopened notice
sets the deadlines provisionally from when it was sent (the processing time, never the data time),
and the outbox's confirmed delivery (`confirm_delivery`) resets them from the delivery; a case is
overdue only after that period, and a notice whose delivery is failing and being retried holds its
case's deadlines until it is delivered or given up.

Every change goes through `record` (state changes through `transition`, which checks the state
machine and calls it): it appends a chained event (notify.events) and bumps the row's `version`,
so a writer that raced another one fails instead of overwriting it. The one row change without an
event of its own is a deferred notice's clock (`start_clock`): the `notice_decided` event it belongs
to is already recorded and the case's `clock_seq` names it. All times are event times handed in by the
caller; nothing here reads the clock (the event's recorded_at aside).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from config.schema import Settings
from detect.base import Alert
from notify import rules
from notify.context import build_context, emergency_at
from notify.events import SYSTEM, TransitionError, append_event, events_of, jsonable
from notify.notices import enqueue as enqueue_notice
from core.time import as_utc, utc, with_utc_times
from notify.ticketing import open_ticket
from notify.tables import CASE_STATES, CLOSED_STATES, case_alerts, case_events, case_groups, cases, notices

# States a notice or an answer still moves (neither closed nor handed to enforcement).
ACTIVE = tuple(s for s in CASE_STATES if s not in (*CLOSED_STATES, "escalated"))
# action -> (states it is allowed from, state it leads to; None keeps the state)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "notify": (("open",), "notified"),
    "acknowledge": (("notified", "reopened"), "acknowledged"),
    "contest": (("notified", "acknowledged", "reopened"), "acknowledged"),  # an answer, with evidence
    "report_rectification": (("notified", "acknowledged", "reopened"), "rectification_reported"),
    "verify": (("rectification_reported",), "verified"),
    "reopen": (("rectification_reported",), "reopened"),
    "escalate": (ACTIVE, "escalated"),
    "dismiss": (ACTIVE, "dismissed"),
    "assign": ((*ACTIVE, "escalated"), None),
    "close_enforcement": (("escalated",), None),  # to verified or dismissed, by the ticket's outcome
}
EVENT_TYPES = {"notify": "notified", "acknowledge": "acknowledged", "contest": "contested",
               "report_rectification": "rectification_reported", "verify": "verified", "reopen": "reopened",
               "escalate": "escalated", "dismiss": "dismissed", "assign": "assigned",
               "close_enforcement": "enforcement_closed"}
class ConcurrentUpdate(RuntimeError):
    """The case changed under us (another writer); reload and retry."""


# -- reading --------------------------------------------------------------------------------------

_TIMES = ("opened_at", "updated_at", "closed_at", "deadline_at", "ack_due_at", "verify_until", "notice_sent_at",
          "notified_at")


def case_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    """A case row as a dict, times aware UTC (also notify.queries' rows)."""
    return with_utc_times(m, _TIMES)


def load_case(conn: Connection, case_id: str) -> dict[str, Any]:
    """The case row as a dict (times aware UTC); TransitionError when there is no such case."""
    m = conn.execute(select(cases).where(cases.c.id == case_id)).mappings().first()
    if m is None:
        raise TransitionError(f"no case {case_id!r}")
    return case_dict(m)


def open_case_for(conn: Connection, enterprise_id: str, outlet_id: str, problem: str) -> dict[str, Any] | None:
    """The one case of (enterprise, outlet, problem) not yet closed, if any."""
    m = conn.execute(select(cases).where(cases.c.enterprise_id == enterprise_id, cases.c.outlet_id == outlet_id,
                                         cases.c.problem == problem, cases.c.state.not_in(CLOSED_STATES))
                     ).mappings().first()
    return case_dict(m) if m else None


def alerts_of(conn: Connection, case_id: str) -> list[dict[str, Any]]:
    """The alerts attached to a case, as frozen at attach time, oldest window first."""
    rows = conn.execute(select(case_alerts.c.alert).where(case_alerts.c.case_id == case_id)).scalars().all()
    return sorted((dict(a) for a in rows), key=lambda a: (a.get("window_end", ""), a.get("id", "")))


# -- transitions ----------------------------------------------------------------------------------

def record(conn: Connection, case: Mapping[str, Any], type: str, at: datetime, actor: str,
           data: Mapping[str, Any] | None = None, **values: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one way a case changes: set `values` on its row, bump its version, append event `type`.

    `case` is the row as read in this transaction; ConcurrentUpdate when another writer changed it
    since. Returns (case after, event).
    """
    after = _update(conn, case, type, values)
    return after, append_event(conn, case["id"], at, actor, type, dict(data or {}))


def _update(conn: Connection, case: Mapping[str, Any], what: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Set `values` and bump the version, if the row is still the version `case` was read at."""
    values = {**values, "version": case["version"] + 1}
    res = conn.execute(update(cases).where(cases.c.id == case["id"], cases.c.version == case["version"])
                       .values(**values))
    if res.rowcount != 1:
        raise ConcurrentUpdate(f"case {case['id']} changed while {what} was recorded")
    return {**case, **values}


def transition(conn: Connection, case_id: str, action: str, at: datetime, actor: str,
               data: Mapping[str, Any] | None = None, to: str | None = None,
               **updates: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply `action` at event time `at`: validate, update the row, append the event.

    Returns (case after, event). `updates` are further columns to set (deadlines, reason, ...).
    """
    if action not in TRANSITIONS:
        raise TransitionError(f"unknown action {action!r}; known: {', '.join(TRANSITIONS)}")
    case = load_case(conn, case_id)
    allowed, target = TRANSITIONS[action]
    if case["state"] not in allowed:
        raise TransitionError(f"case {case_id}: cannot {action} a case that is {case['state']} "
                              f"(allowed from: {', '.join(allowed)})")
    new_state = to or target or case["state"]
    values: dict[str, Any] = {"state": new_state, "updated_at": max(utc(at), case["updated_at"]), **updates}
    if new_state in CLOSED_STATES:
        values["closed_at"] = utc(at)
    return record(conn, case, EVENT_TYPES[action], at, actor, {"from": case["state"], "to": new_state, **(data or {})},
                  **values)


def acknowledge(conn: Connection, case_id: str, at: datetime, actor: str, text: str = "") -> dict[str, Any]:
    """The enterprise has read the notice."""
    return transition(conn, case_id, "acknowledge", at, actor, {"text": text})[0]


def contest(conn: Connection, case_id: str, at: datetime, actor: str, text: str,
            attachments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The enterprise contests with evidence (自证); the center decides: dismiss, or let it run."""
    return transition(conn, case_id, "contest", at, actor, {"text": text, "attachments": attachments or []})[0]


def report_rectification(conn: Connection, settings: Settings, case_id: str, at: datetime, actor: str,
                         text: str = "", attachments: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The enterprise says it fixed the problem; it holds if it does not recur for verify_hours."""
    until = utc(at) + timedelta(hours=settings.notify.verify_hours)
    return transition(conn, case_id, "report_rectification", at, actor,
                      {"text": text, "attachments": attachments or [], "verify_until": until},
                      verify_until=until)[0]


def verify(conn: Connection, case_id: str, at: datetime, actor: str = SYSTEM) -> dict[str, Any]:
    """The rectification held: the case closes as verified."""
    return transition(conn, case_id, "verify", at, actor)[0]


def reopen(conn: Connection, settings: Settings, case_id: str, at: datetime, actor: str = SYSTEM,
           data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The problem recurred during verification: the deadlines start again with the reopened notice."""
    return transition(conn, case_id, "reopen", at, actor, dict(data or {}),
                      ack_due_at=None, deadline_at=None, verify_until=None, notified_at=None)[0]


def escalate(conn: Connection, case_id: str, at: datetime, reason: str, priority: str, actor: str = SYSTEM,
             detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Hand the case to enforcement (the ticket is opened by the caller, notify.tickets)."""
    return transition(conn, case_id, "escalate", at, actor,
                      {"reason": reason, "priority": priority, **jsonable(dict(detail or {}))})[0]


def dismiss(conn: Connection, case_id: str, at: datetime, actor: str, reason: str) -> dict[str, Any]:
    """Close without action, e.g. an approved shutdown or maintenance report explains the data."""
    if not reason or not reason.strip():
        raise TransitionError(f"case {case_id}: dismissing needs a reason")
    return transition(conn, case_id, "dismiss", at, actor, {"reason": reason}, dismiss_reason=reason)[0]


def assign(conn: Connection, case_id: str, at: datetime, actor: str, assignee: str) -> dict[str, Any]:
    """Name the center staff member responsible for the case (never the ticket's addressee: tickets are
    routed to officers, notify.ticketing.route_officer)."""
    if not assignee:
        raise TransitionError(f"case {case_id}: assign needs an assignee")
    return transition(conn, case_id, "assign", at, actor, {"assignee": assignee}, assignee=assignee)[0]


def close_enforcement(conn: Connection, case_id: str, at: datetime, actor: str, outcome: str) -> dict[str, Any]:
    """Enforcement is done: `no_violation` dismisses the case, any other outcome closes it verified."""
    to = "dismissed" if outcome == "no_violation" else "verified"
    extra = {"dismiss_reason": f"enforcement: {outcome}"} if to == "dismissed" else {}
    return transition(conn, case_id, "close_enforcement", at, actor, {"outcome": outcome}, to=to, **extra)[0]


def mark_self_reported(conn: Connection, case_id: str, at: datetime, actor: str) -> dict[str, Any]:
    """Record that the enterprise reported the problem itself (a 轻罚/免罚 condition)."""
    return record(conn, load_case(conn, case_id), "self_reported", at, actor, self_reported=True)[0]


def assess_pollution(conn: Connection, case_id: str, at: datetime, actor: str, consequence: bool,
                     note: str = "") -> None:
    """The center's judgement whether the problem caused pollution (overrides the alerts' default)."""
    record(conn, load_case(conn, case_id), "pollution_assessed", at, actor, {"consequence": consequence, "note": note})


CENTER_MARKS = {"acknowledge": "center_acknowledged", "note": "note"}


def mark(conn: Connection, case_id: str, at: datetime, actor: str, what: str, text: str = "") -> dict[str, Any]:
    """The center's own marks on a case (read it: `acknowledge`; a `note`): history only, no state
    change (the enterprise's acknowledgement is its answer, a different thing)."""
    if what not in CENTER_MARKS:
        raise TransitionError(f"unknown mark {what!r}; known: {', '.join(CENTER_MARKS)}")
    return record(conn, load_case(conn, case_id), CENTER_MARKS[what], at, actor, {"text": text})[0]


def deadlines(settings: Settings, problem: str, at: datetime) -> tuple[datetime, datetime]:
    """(acknowledgement due, rectification deadline) for an enterprise told at `at`."""
    n = settings.notify
    hours = n.deadline_hours.get(problem, n.deadline_hours.get("default", 72))
    return at + timedelta(hours=n.acknowledge_hours), at + timedelta(hours=hours)


def start_clock(conn: Connection, settings: Settings, case_id: str, sent: datetime, seq: int) -> dict[str, Any]:
    """The notice decided at event `seq` was handed to the outbox at `sent`: provisional deadlines
    from then, until its delivery is confirmed (`confirm_delivery`)."""
    case = load_case(conn, case_id)
    ack, deadline = deadlines(settings, case["problem"], utc(sent))
    # No event of its own: the notice_decided event at `seq` records the decision this clock belongs to.
    return _update(conn, case, "the notice's clock", {"notice_sent_at": utc(sent), "notified_at": None,
                                                      "clock_seq": seq, "ack_due_at": ack, "deadline_at": deadline})


def confirm_delivery(conn: Connection, settings: Settings, case_id: str, seq: int, delivered_at: datetime,
                     notice_id: str, channel: str) -> bool:
    """The outbox confirmed delivery of the notice decided at event `seq`: the deadlines run from
    now on (never from before it was sent). Only the first confirmed channel counts; a delivery of an
    older notice, or of a case already closed or escalated, changes nothing. True when it counted."""
    case = load_case(conn, case_id)
    if case["clock_seq"] != seq or case["notified_at"] is not None or case["state"] not in ACTIVE:
        return False
    told = max(utc(delivered_at), case["notice_sent_at"] or utc(delivered_at))
    ack, deadline = deadlines(settings, case["problem"], told)
    record(conn, case, "notice_delivered", told, SYSTEM,
           {"notice_id": notice_id, "channel": channel, "event_seq": seq, "ack_due_at": ack, "deadline_at": deadline},
           notified_at=told, ack_due_at=ack, deadline_at=deadline)
    return True


def unqueued_notices(conn: Connection) -> list[dict[str, Any]]:
    """Notices decided in a pass that ended before handing them to the outbox (a crash between the
    alerts' transactions and enqueue_pass): their cases are notified without deadlines. The
    next tick queues them, so nobody is held to a notice that was never sent."""
    rows = conn.execute(select(cases.c.id, cases.c.enterprise_id).where(
        cases.c.state.in_(("notified", "reopened")), cases.c.ack_due_at.is_(None))).all()
    out = []
    for cid, ent in rows:  # (a held case is still open: never among them)
        for e in reversed(events_of(conn, cid)):
            if e["type"] == "notice_decided" and e["data"].get("kind") in ("rectification_notice", "reopened"):
                out.append({"case_id": cid, "seq": e["seq"], "kind": e["data"]["kind"], "enterprise_id": ent,
                            "at": e["at"]})
                break
    return out


def delivery_in_progress(conn: Connection, case: Mapping[str, Any]) -> bool:
    """The notice that starts the case's deadlines is failing and being retried (not yet delivered,
    not given up): its deadlines wait, nobody is overdue for a notice that has not arrived."""
    if case.get("clock_seq") is None or case.get("notified_at") is not None:
        return False
    prefix = f"{case['id']}:{case['clock_seq']}:"
    rows = conn.execute(select(notices.c.status, notices.c.attempts).where(
        notices.c.case_id == case["id"], notices.c.audience == "enterprise",
        notices.c.decision.startswith(prefix, autoescape=True))).all()
    return any(r.status == "pending" and r.attempts > 0 for r in rows) and not any(
        r.status == "delivered" for r in rows)


# -- alerts ---------------------------------------------------------------------------------------

def alert_time(alert: Alert) -> datetime:
    """An alert's event time: when its window closed (the finding exists from then on)."""
    return utc(alert.window_end)


def case_id_for(alert: Alert) -> str:
    """Deterministic: the case that an alert opens has the same id on every run and instance."""
    return hashlib.sha256(f"case|{alert.id}".encode()).hexdigest()[:24]


def alert_facts(alert: Alert) -> dict[str, Any]:
    """What an event records about an alert (the full alert is kept in case_alerts).

    `confidence` where the detector states one (multivariate_anomaly: "low" from a cold start), so
    the notice, the board and the ticket can say how far the finding can be trusted."""
    facts = {"alert_id": alert.id, "kind": alert.kind, "severity": alert.severity, "value": alert.value,
             "limit": alert.limit, "unit": alert.unit, "pollutant": alert.pollutant,
             "window_start": alert.window_start, "window_end": alert.window_end}
    if alert.evidence.get("confidence") is not None:
        facts["confidence"] = alert.evidence["confidence"]
    return facts


def attach(conn: Connection, case_id: str, alert: Alert, at: datetime) -> None:
    conn.execute(insert(case_alerts).values(case_id=case_id, alert_id=alert.id, attached_at=utc(at),
                                            alert=alert.to_json()))


def create_case(conn: Connection, settings: Settings, alert: Alert, emergency_level: str | None,
                group_id: str | None = None) -> dict[str, Any]:
    """Insert a new case for `alert` in state open (deadlines come with its notice); records "opened".

    `group_id`: the finding shares a cause with many others; the case is held in that group.
    """
    at = alert_time(alert)
    cid = case_id_for(alert)
    conn.execute(insert(cases).values(
        id=cid, enterprise_id=alert.enterprise_id, outlet_id=alert.outlet_id, problem=alert.kind,
        pollutant=alert.pollutant, state="open", severity=alert.severity, opened_at=at, updated_at=at,
        emergency=emergency_level is not None, group_id=group_id,
        self_reported=bool(alert.evidence.get("self_reported")), version=1))
    attach(conn, cid, alert, at)
    append_event(conn, cid, at, SYSTEM, "opened", {**alert_facts(alert), "emergency_level": emergency_level,
                                                    **({"group_id": group_id} if group_id else {})})
    return load_case(conn, cid)


def join_case(conn: Connection, case: Mapping[str, Any], alert: Alert, emergency_level: str | None) -> dict[str, Any]:
    """Attach `alert` to an open case: raise its severity and emergency mark if need be; no notice."""
    at = alert_time(alert)
    attach(conn, case["id"], alert, at)
    values: dict[str, Any] = {"updated_at": max(at, case["updated_at"])}
    if rules.SEVERITY_RANK.get(alert.severity, 0) > rules.SEVERITY_RANK.get(case["severity"], 0):
        values["severity"] = alert.severity
    if emergency_level is not None:
        values["emergency"] = True
    if alert.evidence.get("self_reported"):
        values["self_reported"] = True
    record(conn, case, "alert_attached", at, SYSTEM, {**alert_facts(alert), "emergency_level": emergency_level}, **values)
    return load_case(conn, case["id"])


def sort_alerts(alerts: Iterable[Alert]) -> list[Alert]:
    """Event-time order (ties by id): the order a live run would have seen them in."""
    return sorted(alerts, key=lambda a: (alert_time(a), a.id))


# -- rules applied: alerts in, time passing -------------------------------------------------------

def ingest_alerts(conn: Connection, settings: Settings, alerts: Iterable[Alert], now: datetime,
                  groups: Mapping[str, str] | None = None, deferred: list[dict[str, Any]] | None = None,
                  ) -> list[dict[str, Any]]:
    """Open or join cases for `alerts` in event-time order; returns one outcome per alert.

    Before each alert, deadlines that fell due earlier are settled (`tick` at the alert's time),
    exactly as a live run ticking in between would have. Alerts already attached to a case are
    skipped (re-processing is idempotent); alerts stamped after `now` are refused (a window that has
    not closed yet cannot have a finding). `now` is when this runs: notices decided now are sent now,
    and their deadlines run from then (or from their delivery), never from the data time.
    `groups` maps alert ids to the group holding them (notify.groups); `deferred` collects the
    enterprise notices of this pass, for one notice per enterprise (enqueue_pass).
    """
    out: list[dict[str, Any]] = []
    for alert in sort_alerts(alerts):
        at = alert_time(alert)
        if at > utc(now):
            out.append({"alert_id": alert.id, "status": "future", "case_id": None})
            continue
        tick(conn, settings, at)
        out.append(ingest_alert(conn, settings, alert, now, (groups or {}).get(alert.id), deferred))
    return out


def held(conn: Connection, case: Mapping[str, Any]) -> bool:
    """The case waits in a group that nobody has confirmed yet: no notice, no escalation."""
    if not case.get("group_id"):
        return False
    status = conn.execute(select(case_groups.c.status).where(case_groups.c.id == case["group_id"])).scalar()
    return status == "pending"


def ingest_alert(conn: Connection, settings: Settings, alert: Alert, now: datetime | None = None,
                 group_id: str | None = None, deferred: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One alert: skip if seen, else open a case or join the open one, then apply the rules."""
    prior = conn.execute(select(case_alerts.c.case_id).where(case_alerts.c.alert_id == alert.id)).scalar()
    if prior is not None:
        return {"alert_id": alert.id, "status": "duplicate", "case_id": prior}
    at = alert_time(alert)
    case = open_case_for(conn, alert.enterprise_id, alert.outlet_id, alert.kind)
    if case is not None and case["state"] == "rectification_reported" and at > case["verify_until"]:
        # The verification window ended before this alert: the rectification held, this is a new case.
        history = events_of(conn, case["id"])
        apply_decisions(conn, settings, case["id"], rules.verification_decisions(
            case, history, build_context(conn, settings, case, case["verify_until"], history)), at, now)
        case = None
    emergency = emergency_at(conn, at)
    level = emergency["level"] if emergency else None
    status = "opened" if case is None else "attached"
    case = create_case(conn, settings, alert, level, group_id) if case is None else join_case(conn, case, alert, level)
    if held(conn, case):
        return {"alert_id": alert.id, "status": status, "case_id": case["id"], "decisions": [],
                "group_id": case["group_id"]}
    *history, event = events_of(conn, case["id"])
    ctx = build_context(conn, settings, case, at, history)
    decisions = rules.on_alert(case, history, event, ctx)
    apply_decisions(conn, settings, case["id"], decisions, at, now, deferred=deferred)
    return {"alert_id": alert.id, "status": status, "case_id": case["id"],
            "decisions": [type(d).__name__.lower() for d in decisions]}


def tick(conn: Connection, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Apply what fell due by `now`: reminders, overdue acknowledgements and rectifications,
    verifications.

    Each decision is stamped with the time it fell due (not `now`), so ticking often or rarely
    records the same history. A case whose notice is still being retried waits (delivery_in_progress).
    """
    now = utc(now)
    grace = timedelta(seconds=settings.detect.settle_s)
    r = settings.notify.reminders
    ack_soon = now + timedelta(hours=r.acknowledge_before_hours)
    rect_soon = now + timedelta(hours=r.rectification_before_hours)
    c = cases.c
    due = (select(cases).where(
        ((c.state.in_(("notified", "reopened"))) & (c.ack_due_at < ack_soon))
        | ((c.state.in_(("notified", "acknowledged", "reopened"))) & (c.deadline_at < rect_soon))
        | ((c.state == "rectification_reported") & (c.verify_until < now - grace)))
        .order_by(c.opened_at, c.id))
    out = []
    for m in conn.execute(due).mappings().all():
        case = case_dict(m)
        if case["state"] != "rectification_reported" and delivery_in_progress(conn, case):
            continue
        history = events_of(conn, case["id"])
        ctx = build_context(conn, settings, case, _first_due(case, now), history)
        decisions = rules.on_tick(case, history, now, ctx)
        if decisions:
            apply_decisions(conn, settings, case["id"], decisions, now)
            out.append({"case_id": case["id"], "decisions": [type(d).__name__.lower() for d in decisions]})
    return out


def _first_due(case: Mapping[str, Any], now: datetime) -> datetime:
    times = [t for t in (case["ack_due_at"], case["deadline_at"], case["verify_until"]) if t is not None and t < now]
    return min(times, default=now)


def apply_decisions(conn: Connection, settings: Settings, case_id: str, decisions: Iterable[rules.Decision],
                    at: datetime, now: datetime | None = None, actor: str = SYSTEM,
                    deferred: list[dict[str, Any]] | None = None) -> None:
    """Carry out the rules' decisions in order, each at its own event time (default `at`).

    `now` is when this runs (default `at`): a notice that starts deadlines is sent then. `actor` is
    who caused the decisions: SYSTEM for the rules, the person for a manual escalation.
    """
    sent = max(utc(at), utc(now)) if now is not None else utc(at)
    for d in decisions:
        _APPLY[type(d)](conn, settings, case_id, d, d.at or at, actor, sent, deferred)


def _apply_reopen(conn: Connection, settings: Settings, case_id: str, d: rules.Reopen, when: datetime, actor: str,
                  sent: datetime, deferred: list[dict[str, Any]] | None) -> None:
    reopen(conn, settings, case_id, when, actor)


def _apply_notify(conn: Connection, settings: Settings, case_id: str, d: rules.Notify, when: datetime, actor: str,
                  sent: datetime, deferred: list[dict[str, Any]] | None) -> None:
    if d.kind == "rectification_notice" and load_case(conn, case_id)["state"] == "open":
        transition(conn, case_id, "notify", when, actor)
    starts_clock = d.kind in ("rectification_notice", "reopened")
    if starts_clock and deferred is None:
        # The deadlines are stated in the notice: set them before it is rendered. (Deferred
        # notices get theirs when the pass hands them to the outbox, enqueue_pass.)
        start_clock(conn, settings, case_id, max(sent, utc(when)), _next_seq(conn, case_id))
    decide_notice(conn, settings, case_id, when, d.kind, jsonable(d.detail), actor=actor,
                  deferred=deferred if starts_clock else None)


def _apply_escalate(conn: Connection, settings: Settings, case_id: str, d: rules.Escalate, when: datetime,
                    actor: str, sent: datetime, deferred: list[dict[str, Any]] | None) -> None:
    _escalate(conn, settings, case_id, d, when, actor)


def _apply_close(conn: Connection, settings: Settings, case_id: str, d: rules.Close, when: datetime, actor: str,
                 sent: datetime, deferred: list[dict[str, Any]] | None) -> None:
    verify(conn, case_id, when, actor)


def _apply_recommend(conn: Connection, settings: Settings, case_id: str, d: rules.Recommend, when: datetime,
                     actor: str, sent: datetime, deferred: list[dict[str, Any]] | None) -> None:
    record(conn, load_case(conn, case_id), "recommendation", when, actor,
           {"recommendation": d.recommendation, "basis": d.basis}, recommendation=d.recommendation)


# Each kind of decision the rules make, and how it is carried out.
_APPLY: dict[type, Callable[..., None]] = {rules.Reopen: _apply_reopen, rules.Notify: _apply_notify,
                                           rules.Escalate: _apply_escalate, rules.Close: _apply_close,
                                           rules.Recommend: _apply_recommend}


def _next_seq(conn: Connection, case_id: str) -> int:
    """The seq the next event of the case will get (the notice decision that start_clock names)."""
    last = conn.execute(select(case_events.c.seq).where(case_events.c.case_id == case_id)
                        .order_by(case_events.c.seq.desc()).limit(1)).scalar()
    return (last or 0) + 1


def _escalate(conn: Connection, settings: Settings, case_id: str, d: rules.Escalate, at: datetime,
              actor: str = SYSTEM) -> None:
    """Escalate and open the ticket, addressed to the routed officer. The ticket notice is decided
    once the evidence package is locked (notify.tickets.send_ticket_notice), so it can carry it."""
    if load_case(conn, case_id)["state"] == "escalated":
        return  # one escalation per case; later reasons are in the events already
    case = escalate(conn, case_id, at, d.reason, d.priority, actor=actor, detail=d.detail)
    open_ticket(conn, settings, case, d.reason, d.priority, at, actor=actor)


def enqueue_pass(conn: Connection, settings: Settings, deferred: list[dict[str, Any]], sent: datetime) -> list[str]:
    """The enterprise notices decided in one detection pass (decide_notice with `deferred`): one
    notice per enterprise and kind, listing every case it concerns (the first case's decision keys
    the outbox rows). Each case's deadlines start now, at `sent` (never before its decision), until
    delivery is confirmed."""
    for d in deferred:
        start_clock(conn, settings, d["case_id"], max(as_utc(sent), as_utc(d["at"])), d["seq"])

    by_ent: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in deferred:
        by_ent.setdefault((d["enterprise_id"], d["kind"]), []).append(d)
    ids: list[str] = []
    for (_ent, kind), items in sorted(by_ent.items()):
        pairs = []
        for d in sorted(items, key=lambda d: d["case_id"]):
            ev = conn.execute(select(case_events).where(case_events.c.case_id == d["case_id"],
                                                        case_events.c.seq == d["seq"])).mappings().one()
            pairs.append((load_case(conn, d["case_id"]), ev))
        (case, event), rest = pairs[0], pairs[1:]
        ids += enqueue_notice(conn, settings, case, event, kind, also=rest)
    return ids


def decide_notice(conn: Connection, settings: Settings, case_id: str, at: datetime, kind: str,
                  data: Mapping[str, Any] | None = None, actor: str = SYSTEM,
                  deferred: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Record the decision to send a notice of `kind` and hand it to the outbox, in one transaction.

    The event is the decision (its seq makes the outbox key); notify.notices renders and queues
    the messages. With `deferred`, the rendering waits for the end of the detection pass, so an
    enterprise with several findings gets one notice listing them (enqueue_pass).
    """
    case = load_case(conn, case_id)
    extra: dict[str, Any] = {"kind": kind, **(data or {})}
    emergency = emergency_at(conn, at) if case["emergency"] else None
    if emergency is not None:
        extra["emergency_level"] = emergency["level"]
    case, ev = record(conn, case, "notice_decided", at, actor, extra)
    if deferred is not None:
        deferred.append({"case_id": case_id, "seq": ev["seq"], "kind": kind, "enterprise_id": case["enterprise_id"],
                         "at": utc(at)})
    else:
        enqueue_notice(conn, settings, case, ev, kind)
    return ev
