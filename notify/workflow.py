"""The case workflow as the service and the CLI use it: one call, one or more transactions.

    process_alerts(engine, settings, alerts, now)     # alerts -> cases, notices, tickets
    tick(engine, settings, now)                       # deadlines and verification windows
    answer(engine, settings, enterprise_id, case_id, type, text, attachments, answer_id, at)
    act(engine, settings, case_id, action, at, actor, **kw)   # the center: dismiss, assign, ...
    officer_action(engine, settings, ticket_id, action, officer, at, **kw)

It only writes: every read (cases, tickets, notices, answers, groups) is notify/queries.py's. A new
case action goes to notify/cases.py (`transition`/`record`) and gets its entry point here.

Each alert is its own transaction, so a crash loses at most the alert being processed, which the
next run processes again (alerts are idempotent by id). Evidence packages are built after commit,
outside any lock, and retried on every tick until they exist.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from config import ids
from config.schema import Settings
from detect.base import Alert
from notify import attachments as attachment_files
from notify import cases, context, filings, rules, ticketing, tickets
from notify import groups as groups_mod
from core.time import utc
from notify.events import TransitionError
from notify.tables import answers
from notify.tables import tickets as tickets_t

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRIES = 3
MAX_ANSWER_ID = answers.c.id.type.length or 32  # the enterprise's own id, de-duplicated on
ANSWER_ACTIONS = {"acknowledge": "acknowledge", "rectification": "report_rectification", "contest": "contest"}


class AnswerError(ValueError):
    """An answer that cannot be taken: unknown case, another enterprise's case, unknown type."""


def _retrying(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work` in a transaction; on a race with another writer (unique key, version), run it again."""
    for attempt in range(RETRIES):
        try:
            with engine.begin() as conn:
                return work(conn)
        except (IntegrityError, cases.ConcurrentUpdate):
            if attempt == RETRIES - 1:
                raise
            log.info("write conflict, retrying (%d)", attempt + 1)
    raise AssertionError("unreachable")


def process_alerts(engine: Engine, settings: Settings, alerts: Iterable[Alert], now: datetime,
                   evidence: bool = True) -> list[dict[str, Any]]:
    """Open or join cases for `alerts` (event-time order), then settle everything due by `now`.

    Findings sharing a cause are held in a group (notify.groups); an enterprise with several new
    findings in this pass gets one notice listing them (sent after the last alert is in).
    """
    alerts = filings.admit(engine, alerts, now)  # those an approved filing explains open no case
    ordered = cases.sort_alerts(alerts)
    groups = _retrying(engine, lambda conn: groups_mod.assign_groups(conn, settings, ordered, now))
    deferred: list[dict[str, Any]] = []

    def one(conn: Connection, a: Alert) -> dict[str, Any]:
        mine: list[dict[str, Any]] = []  # this attempt's notices only (a retried attempt starts afresh)
        out = cases.ingest_alerts(conn, settings, [a], now, groups, mine)[0]
        deferred.extend(mine)
        return out

    out = [_retrying(engine, lambda conn, a=a: one(conn, a)) for a in ordered]
    if deferred:
        _retrying(engine, lambda conn: cases.enqueue_pass(conn, settings, deferred, now))
    tick(engine, settings, now, evidence=evidence)
    return out


def tick(engine: Engine, settings: Settings, now: datetime, evidence: bool = True) -> list[dict[str, Any]]:
    """Reminders, overdue answers and rectifications, verification windows; then the evidence still
    missing, and the ticket notices (each once its evidence is locked; with evidence=False at once)."""
    def settle(conn: Connection) -> list[dict[str, Any]]:
        unqueued = cases.unqueued_notices(conn)
        if unqueued:
            cases.enqueue_pass(conn, settings, unqueued, now)
        return cases.tick(conn, settings, now)

    done = _retrying(engine, settle)
    if evidence:
        build_missing_evidence(engine, settings, now)
    send_ticket_notices(engine, settings, now, wait=evidence)
    return done


def build_missing_evidence(engine: Engine, settings: Settings, now: datetime) -> int:
    """Build evidence packages for tickets that have none yet; returns how many were built."""
    with engine.connect() as conn:
        ids = conn.execute(select(tickets_t.c.id).where(tickets_t.c.evidence_digest.is_(None))).scalars().all()
    built = 0
    for tid in ids:
        built += tickets.attach_evidence(engine, settings, tid, now)
    return built


def send_ticket_notices(engine: Engine, settings: Settings, now: datetime, wait: bool = True) -> int:
    """Ticket notices not yet sent: a ticket whose evidence could not be built for
    notify.evidence_wait_s (wall clock) goes without it, so no officer is left untold; with
    wait=False (no evidence builder) at once."""
    with engine.connect() as conn:
        rows = [dict(m) for m in conn.execute(select(tickets_t).where(tickets_t.c.notice_seq.is_(None))).mappings()]
    sent = 0
    for t in rows:
        def work(conn: Connection, t: dict[str, Any] = t) -> bool:
            if wait:
                opened = tickets.ticket_opened_recorded_at(conn, t)
                wall = max(utc(now), datetime.now(timezone.utc))
                if opened is not None and (wall - opened).total_seconds() < settings.notify.evidence_wait_s:
                    return False
            return tickets.send_ticket_notice(conn, settings, t["id"]) is not None
        sent += _retrying(engine, work)
    return sent


# -- answers from enterprises ---------------------------------------------------------------------

def answer(engine: Engine, settings: Settings, enterprise_id: str, case_id: str, type: str, text: str,
           attachments: Iterable[Any], answer_id: str, at: datetime) -> dict[str, Any]:
    """Take an enterprise's answer (idempotent by answer_id) and move the case accordingly.

    `attachments` are objects with .name and .content (stored by this call), or mappings
    {name, sha256, size, path} of files already stored (kept as given). An answer the case's state does not allow
    (e.g. the case is already with enforcement) is kept and recorded in the history as
    `answer_received` with accepted=False; the result says why. Ids are checked against their
    patterns (config/ids.py) and the limits of notify.answers before anything else; attachment
    files are written only once the answer is known to be new and the enterprise's own case.
    """
    if type not in ANSWER_ACTIONS:
        raise AnswerError(f"answer type {type!r}: use one of {', '.join(ANSWER_ACTIONS)}")
    if not answer_id or len(answer_id) > MAX_ANSWER_ID:
        raise AnswerError(f"answer id must be 1..{MAX_ANSWER_ID} characters, got {len(answer_id or '')}")
    items = list(attachments)
    try:
        ids.check("answer", answer_id, "answer_id")
        ids.check("case", case_id, "case_id")
        attachment_files.check_answer(text, [_size(a) for a in items], settings.notify.answers)
        pending = [a if isinstance(a, Mapping) else attachment_files.pending_of(a.name, a.content) for a in items]
    except ValueError as exc:  # InvalidId, LimitExceeded, an unusable file name
        raise AnswerError(str(exc)) from exc

    def work(conn: Connection) -> dict[str, Any]:
        prior = conn.execute(select(answers).where(answers.c.id == answer_id)).mappings().first()
        if prior is not None:
            if prior["enterprise_id"] != enterprise_id:
                raise AnswerError(f"answer id {answer_id!r} is already used by another enterprise")
            return {"answer_id": answer_id, "status": "duplicate", "case_id": prior["case_id"]}
        case = _case_of(conn, case_id, enterprise_id)
        # Validated and authorized: only now does anything reach the disk (content-addressed, so a
        # retry after a write conflict rewrites nothing).
        files = [_stored(a) if isinstance(a, Mapping) else attachment_files.store(settings, [a])[0] for a in pending]
        cases.tick(conn, settings, at)  # settle what fell due before the answer
        conn.execute(insert(answers).values(id=answer_id, case_id=case_id, enterprise_id=enterprise_id, type=type,
                                            text=text, attachments=files, received_at=utc(at)))
        return _apply_answer(conn, settings, case, type, text, files, answer_id, at)

    return _retrying(engine, work)


def _size(item: Any) -> int:
    return int(item.get("size") or 0) if isinstance(item, Mapping) else len(item.content)


def _stored(item: Mapping[str, Any]) -> dict[str, Any]:
    """An attachment the caller stored itself (its metadata, e.g. a replay): kept as given."""
    return {k: item.get(k) for k in ("name", "sha256", "size", "path")}


def _case_of(conn: Connection, case_id: str, enterprise_id: str) -> dict[str, Any]:
    try:
        case = cases.load_case(conn, case_id)
    except TransitionError as exc:
        raise AnswerError(str(exc)) from exc
    if case["enterprise_id"] != enterprise_id:
        raise AnswerError(f"case {case_id} is not a case of enterprise {enterprise_id}")
    return case


def _apply_answer(conn: Connection, settings: Settings, case: Mapping[str, Any], type: str, text: str,
                  files: list[dict[str, Any]], answer_id: str, at: datetime) -> dict[str, Any]:
    actor = f"enterprise:{case['enterprise_id']}"
    state = cases.load_case(conn, case["id"])["state"]
    action = ANSWER_ACTIONS[type]
    if state not in cases.TRANSITIONS[action][0]:
        cases.append_event(conn, case["id"], at, actor, "answer_received",
                           {"answer_id": answer_id, "type": type, "accepted": False, "state": state})
        return {"answer_id": answer_id, "status": "recorded", "accepted": False, "case_id": case["id"],
                "state": state, "reason": f"the case is {state}; a {type} answer does not change it"}
    if action == "report_rectification":
        after = cases.report_rectification(conn, settings, case["id"], at, actor, text, files)
    elif action == "contest":
        after = cases.contest(conn, case["id"], at, actor, text, files)
    else:
        after = cases.acknowledge(conn, case["id"], at, actor, text)
    return {"answer_id": answer_id, "status": "accepted", "accepted": True, "case_id": case["id"], "state": after["state"]}


# -- the center's and the officers' actions -------------------------------------------------------

def act(engine: Engine, settings: Settings, case_id: str, action: str, at: datetime, actor: str,
        **kw: Any) -> dict[str, Any]:
    """A center action on a case: dismiss(reason), assign(assignee), escalate(priority), verify,
    self_reported, assess_pollution(consequence, note), acknowledge(text) and note(text) (the center's
    marks, history only). Returns the case after."""

    def work(conn: Connection) -> dict[str, Any]:
        if action == "dismiss":
            return cases.dismiss(conn, case_id, at, actor, kw["reason"])
        if action == "assign":
            return cases.assign(conn, case_id, at, actor, kw["assignee"])
        if action == "verify":
            return cases.verify(conn, case_id, at, actor)
        if action == "escalate":
            cases.apply_decisions(conn, settings, case_id, [rules.Escalate("manual", kw.get("priority", "P2"),
                                                                           detail={"by": actor})], at, actor=actor)
        elif action == "route":
            t = ticketing.ticket_of_case(conn, case_id)
            if t is None:
                raise TransitionError(f"case {case_id} has no ticket to route; escalate it first")
            tickets.route(conn, settings, t["id"], kw["officer"], at, actor)
        elif action == "self_reported":
            cases.mark_self_reported(conn, case_id, at, actor)
        elif action == "assess_pollution":
            cases.assess_pollution(conn, case_id, at, actor, bool(kw["consequence"]), kw.get("note", ""))
        elif action in cases.CENTER_MARKS:
            cases.mark(conn, case_id, at, actor, action, kw.get("text", ""))
        else:
            raise TransitionError(f"unknown center action {action!r}")
        return cases.load_case(conn, case_id)

    return _retrying(engine, work)


def officer_action(engine: Engine, settings: Settings, ticket_id: str, action: str, officer: str, at: datetime,
                   **kw: Any) -> dict[str, Any]:
    """accept | record_findings(findings) | close(outcome) on a ticket; returns the ticket after."""
    def work(conn: Connection) -> dict[str, Any]:
        if action == "accept":
            return tickets.accept(conn, ticket_id, officer, at)
        if action == "record_findings":
            return tickets.record_findings(conn, ticket_id, officer, kw["findings"], at)
        if action == "close":
            return tickets.close(conn, ticket_id, officer, kw["outcome"], at)
        raise ticketing.TicketError(f"unknown ticket action {action!r}")

    return _retrying(engine, work)


def route_ticket(engine: Engine, settings: Settings, ticket_id: str, officer: str, at: datetime,
                 actor: str) -> dict[str, Any]:
    """An operator sends a ticket to another configured officer (TicketError for a non-officer)."""
    return _retrying(engine, lambda conn: tickets.route(conn, settings, ticket_id, officer, at, actor))


# -- grouped findings -----------------------------------------------------------------------------

def confirm_group(engine: Engine, settings: Settings, group_id: str, at: datetime, actor: str) -> dict[str, Any]:
    """A person confirms the grouped findings: each enterprise gets one notice listing its cases,
    with deadlines from then (from delivery, once confirmed)."""
    def work(conn: Connection) -> dict[str, Any]:
        g = groups_mod.decide(conn, group_id, "confirmed", at, actor, None)
        deferred: list[dict[str, Any]] = []
        for cid in g["case_ids"]:
            if cases.load_case(conn, cid)["state"] == "open":
                cases.apply_decisions(conn, settings, cid, [rules.Notify("rectification_notice")], at,
                                      actor=actor, deferred=deferred)
        cases.enqueue_pass(conn, settings, deferred, at)
        return g
    return _retrying(engine, work)


def dismiss_group(engine: Engine, settings: Settings, group_id: str, at: datetime, actor: str,
                  reason: str) -> dict[str, Any]:
    """A person dismisses the grouped findings (e.g. a network artefact): every case closes with the reason."""
    if not reason or not reason.strip():
        raise groups_mod.GroupError(f"dismissing group {group_id} needs a reason")

    def work(conn: Connection) -> dict[str, Any]:
        g = groups_mod.decide(conn, group_id, "dismissed", at, actor, reason)
        for cid in g["case_ids"]:
            if cases.load_case(conn, cid)["state"] in cases.ACTIVE:
                cases.dismiss(conn, cid, at, actor, f"group {group_id}: {reason}")
        return g
    return _retrying(engine, work)


def declare_emergency(engine: Engine, level: str, start: datetime, end: datetime, by: str, note: str = "") -> str:
    with engine.begin() as conn:
        return context.declare_emergency(conn, level, start, end, by, note)


def set_positive_list(engine: Engine, enterprise_id: str, listed: bool, at: datetime, by: str, note: str = "") -> None:
    with engine.begin() as conn:
        context.set_positive_list(conn, enterprise_id, listed, at, by, note)
