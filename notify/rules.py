"""The bureau's escalation rules as pure functions: facts in, decisions out, no I/O, no clock.

    on_alert(case, history, event, ctx) -> [Decision]   # an alert opened or joined the case
    on_tick(case, history, now, ctx)    -> [Decision]   # deadlines and verification windows

`case` is the case row (mapping), `history` its events before `event`, `ctx` the facts from outside
the case (positive list, grade, emergency in force, other cases of the same problem, settings).
Findings are judged on event time, so a backfill replaying alerts in order reaches the same cases
as live did. Obligations are not: a case's ack_due_at and deadline_at run from when the enterprise
was told (the notice's confirmed delivery, notify/cases.py sets them), so `on_tick` compares the
clock with delivery-based deadlines and a catch-up never finds anybody overdue before being told.

An "occurrence" of a problem is a case opening or a reopening (a recurrence while a reported
rectification is being verified); hourly alerts that join an open case are the same occurrence.
Dismissed cases (e.g. an approved maintenance explains the data) are not occurrences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Union

from config.schema import NotifySettings
from detect.registry import kinds_in

MINOR = ("info", "minor")
SEVERITY_RANK = {"info": 0, "minor": 1, "major": 2, "critical": 3}
EMERGENCY_GRADES = ("C", "D")  # full reduction measures; A, B and "leading" follow normal rules
OCCURRENCE_EVENTS = ("opened", "reopened")
P1, P2, P3 = "P1", "P2", "P3"


@dataclass(frozen=True)
class Notify:
    kind: str  # rectification_notice | reminder | reopened | closed | ticket
    at: datetime | None = None  # None: at the triggering event's time
    detail: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Escalate:
    reason: str  # repeat | overdue | severe | falsification | recurrence | emergency
    priority: str
    at: datetime | None = None
    detail: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Close:
    verified: bool = True
    at: datetime | None = None


@dataclass(frozen=True)
class Recommend:
    recommendation: str  # no_penalty (轻罚/免罚)
    at: datetime | None = None
    basis: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Reopen:
    at: datetime | None = None


Decision = Union[Notify, Escalate, Close, Recommend, Reopen]


@dataclass(frozen=True)
class Context:
    """What the rules need to know beyond the case itself, all as of the event time."""

    settings: NotifySettings
    positive_listed: bool = False
    grade: str = "C"
    emergency_level: str | None = None  # level of the emergency in force at the event time
    other_occurrences: tuple[datetime, ...] = ()  # occurrences of the same problem in other cases
    previous_verified_at: datetime | None = None  # when the last case of this problem was verified
    pollution_consequence: bool = True  # did the problem pollute (judged on alerts / the center's assessment)
    verify_grace: timedelta = timedelta(0)  # late alerts may still arrive this long after a window


# -- alerts ---------------------------------------------------------------------------------------

def factor(alert: Mapping[str, Any]) -> float | None:
    """value / limit of an exceedance, when both are known."""
    v, lim = alert.get("value"), alert.get("limit")
    if v is None or lim is None or lim <= 0:
        return None
    return float(v) / float(lim)


def immediate_reason(alert: Mapping[str, Any], ctx: Context) -> str | None:
    """Why this alert escalates at once, if it does: falsification, severe, or emergency (C/D)."""
    esc = ctx.settings.escalation
    if falsification(alert.get("kind"), alert.get("severity"), ctx):
        return "falsification"
    f = factor(alert)
    # value/limit means "times over the permit" only for exceedances: an offline alert's value is
    # silent minutes against a grace, a hotspot's a factor over background.
    if alert.get("kind") in kinds_in("exceedance") and f is not None and f >= esc.severe_factor:
        return "severe"
    if ctx.emergency_level and ctx.grade in EMERGENCY_GRADES and is_exceedance(alert):
        return "emergency"
    return None


def falsification(kind: str | None, severity: str | None, ctx: Context) -> bool:
    """A falsification pattern that escalates at once: an immediate kind, at or above its
    `immediate_from` severity where one is set (a minor data revision is not one)."""
    esc = ctx.settings.escalation
    if kind not in esc.immediate_kinds:
        return False
    floor = esc.immediate_from.get(kind)
    return floor is None or SEVERITY_RANK.get(severity or "", 0) >= SEVERITY_RANK[floor]


def is_exceedance(alert: Mapping[str, Any]) -> bool:
    """An emission above its permit limit (what emergency measures are about)."""
    return alert.get("kind") in kinds_in("exceedance")


def is_minor(case: Mapping[str, Any], ctx: Context) -> bool:
    """A minor problem: low severity and not a falsification pattern."""
    return case.get("severity") in MINOR and not falsification(case.get("problem"), case.get("severity"), ctx)


# -- occurrences ----------------------------------------------------------------------------------

def own_occurrences(history: Sequence[Mapping[str, Any]]) -> list[datetime]:
    return [e["at"] for e in history if e["type"] in OCCURRENCE_EVENTS]


def occurrences_within(times: Sequence[datetime], at: datetime, days: int) -> int:
    """How many occurrences fall in the window (at - days, at], on event time."""
    start = at - timedelta(days=days)
    return sum(1 for t in times if start < t <= at)


def is_first(case: Mapping[str, Any], history: Sequence[Mapping[str, Any]], ctx: Context) -> bool:
    """First occurrence: no other case of the problem in the window before it, never reopened."""
    days = ctx.settings.escalation.repeat_days
    opened = case["opened_at"]
    prior = [t for t in ctx.other_occurrences if t < opened]
    return occurrences_within(prior, opened, days) == 0 and len(own_occurrences(history)) <= 1


# -- rules on an alert ----------------------------------------------------------------------------

def on_alert(case: Mapping[str, Any], history: Sequence[Mapping[str, Any]], event: Mapping[str, Any],
             ctx: Context) -> list[Decision]:
    """Decisions when an alert opens the case (event "opened") or joins it ("alert_attached")."""
    state, alert, at = case["state"], event["data"], event["at"]
    if state == "escalated":
        return []  # enforcement has it; more alerts only add evidence
    out: list[Decision] = []
    occurrence = event["type"] == "opened" or state == "rectification_reported"
    if event["type"] == "opened":
        out.append(Notify("rectification_notice"))  # feedback at once, whatever follows
    elif state == "rectification_reported":
        out += [Reopen(), Notify("reopened")]
    esc = _escalation_on_alert(history, alert, at, occurrence, event["type"] == "opened", ctx)
    if esc is not None:
        out.append(esc)
    return out


def _escalation_on_alert(history: Sequence[Mapping[str, Any]], alert: Mapping[str, Any], at: datetime,
                         occurrence: bool, new_case: bool, ctx: Context) -> Escalate | None:
    reason = immediate_reason(alert, ctx)
    if reason is not None:
        return Escalate(reason, P1, detail={"alert_id": alert.get("alert_id"), "factor": factor(alert),
                                            "emergency_level": ctx.emergency_level})
    if not occurrence:
        return None
    esc = ctx.settings.escalation
    if new_case and esc.recurrence_escalates and ctx.previous_verified_at is not None \
            and at - ctx.previous_verified_at <= timedelta(days=esc.repeat_days):
        return Escalate("recurrence", P2, detail={"previous_verified_at": ctx.previous_verified_at})
    times = [*ctx.other_occurrences, *own_occurrences(history), at]
    n = occurrences_within(times, at, esc.repeat_days)
    if n >= esc.repeat_count:
        return Escalate("repeat", P2, detail={"occurrences": n, "days": esc.repeat_days})
    return None


# -- rules on time passing ------------------------------------------------------------------------

def on_tick(case: Mapping[str, Any], history: Sequence[Mapping[str, Any]], now: datetime,
            ctx: Context) -> list[Decision]:
    """Decisions that became due by `now`, each stamped with the event time it became due at."""
    state = case["state"]
    if state in ("notified", "reopened", "acknowledged"):
        return _overdue(case, history, now, ctx)
    if state == "rectification_reported":
        until = case.get("verify_until")
        if until is not None and now > until + ctx.verify_grace:
            return verification_decisions(case, history, ctx)
    return []


def _overdue(case: Mapping[str, Any], history: Sequence[Mapping[str, Any]], now: datetime,
             ctx: Context) -> list[Decision]:
    out: list[Decision] = []
    ack_due, deadline = case.get("ack_due_at"), case.get("deadline_at")
    lead = ctx.settings.reminders
    if case["state"] != "acknowledged" and ack_due is not None:
        if now > ack_due:
            # Positive list: remote handling first, a reminder instead of enforcement for a first
            # minor problem; whether it is fixed in time is judged at the rectification deadline.
            if ctx.positive_listed and is_minor(case, ctx) and is_first(case, history, ctx):
                if not _reminded_since_notice(history):
                    out.append(Notify("reminder", at=ack_due))
            else:
                return [Escalate("overdue", P3, at=ack_due, detail={"missing": "acknowledgement", "due_at": ack_due})]
        else:
            out += _reminder(history, now, ack_due, lead.acknowledge_before_hours, "acknowledgement")
    if deadline is not None:
        if now > deadline:
            out.append(Escalate("overdue", P2, at=deadline, detail={"missing": "rectification", "due_at": deadline}))
        else:
            out += _reminder(history, now, deadline, lead.rectification_before_hours, "rectification")
    return out


def _reminder(history: Sequence[Mapping[str, Any]], now: datetime, due: datetime, hours: float,
              what: str) -> list[Decision]:
    """A reminder `hours` before `due`, once per deadline; none once the deadline has passed (a late
    tick escalates instead of reminding of something already missed)."""
    at = due - timedelta(hours=hours)
    if hours <= 0 or now < at:
        return []
    if _reminded_since_notice(history, what):
        return []
    return [Notify("reminder", at=at, detail={"due": what, "due_at": due})]


def _reminded_since_notice(history: Sequence[Mapping[str, Any]], due: str | None = None) -> bool:
    """A reminder (about `due`: acknowledgement | rectification; None: the overdue one) since the
    notice that started the current deadlines."""
    for e in reversed(history):
        if e["type"] == "notice_decided" and e["data"].get("kind") == "reminder" and e["data"].get("due") == due:
            return True
        if e["type"] in OCCURRENCE_EVENTS or (e["type"] == "notice_decided"
                                             and e["data"].get("kind") in ("rectification_notice", "reopened")):
            return False
    return False


def verification_decisions(case: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                           ctx: Context) -> list[Decision]:
    """The reported rectification held through its window: close, and say whether to waive the penalty."""
    at = case["verify_until"]
    out: list[Decision] = [Close(True, at=at)]
    basis = no_penalty_basis(case, history, ctx)
    if all(basis.values()):
        out.append(Recommend("no_penalty", at=at, basis=basis))
    out.append(Notify("closed", at=at))
    return out


def no_penalty_basis(case: Mapping[str, Any], history: Sequence[Mapping[str, Any]], ctx: Context) -> dict[str, bool]:
    """The 轻罚/免罚 conditions, each named, so the recommendation records why it was made."""
    return {
        "minor": is_minor(case, ctx),
        "first": is_first(case, history, ctx),
        "self_reported": bool(case.get("self_reported")),
        "fixed_in_time": fixed_in_time(case, history),
        "no_pollution_consequence": not ctx.pollution_consequence,
        "never_escalated": not any(e["type"] == "escalated" for e in history),
    }


def fixed_in_time(case: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> bool:
    """The (last) rectification was reported by the deadline."""
    reports = [e["at"] for e in history if e["type"] == "rectification_reported"]
    deadline = case.get("deadline_at")
    return bool(reports) and deadline is not None and reports[-1] <= deadline


def pollution_consequence(alerts: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the problem polluted: the center's latest assessment if any, else any exceedance
    (an emission above its limit) among the alerts, or an alert whose evidence says so."""
    for e in reversed(history):
        if e["type"] == "pollution_assessed":
            return bool(e["data"].get("consequence"))
    return any(bool((a.get("evidence") or {}).get("pollution_consequence", is_exceedance(a))) for a in alerts)
