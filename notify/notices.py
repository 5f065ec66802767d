"""Deciding to send a notice: render it and put one row per channel in the outbox.

    ids = enqueue(conn, settings, case_row, event_row, "rectification_notice")

The workflow calls `enqueue` inside the transaction that records the event, so the event and the
decision to send commit together or not at all. The outbox row's `decision` is a deterministic key
`{case_id}:{event_seq}:{kind}:{channel}` (officer notices add `:{officer_id}`, as a ticket may go
to several officers); re-running the same decision after a crash inserts nothing new. The row's `id`,
a hash of the decision, is what recipients de-duplicate on. notify/outbox.py delivers the rows.

Kinds: rectification_notice, reminder, reopened, closed (to the enterprise) and ticket (to officers).
Text comes from Jinja2 templates in notify/templates/{language}/{kind}.txt, each with a `subject`
and a `body` block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy import Connection, func, insert, select

from config.schema import Enterprise, Officer, Outlet, Settings
from config.tables import pollutants
from core.time import CHINA_TZ, as_utc
from notify import views
from notify.channels import channels_for
from notify.tables import case_alerts, case_events, notice_numbers, notices, tickets

KINDS = ("rectification_notice", "reminder", "reopened", "closed", "ticket")
ENTERPRISE_KINDS = KINDS[:4]
TEMPLATE_ONLY = ("rectification_bundle",)  # one notice listing several cases of one enterprise
LANGUAGES = ("zh-CN", "en")
MAX_FINDINGS = 20  # findings listed in a notice (most recent first); the payload says how many in all
TEMPLATES = Path(__file__).with_name("templates")

def problem_labels() -> dict[str, dict[str, str]]:
    """{language: {kind: how a notice names the problem}}, from the detectors' tags (detect.registry)."""
    from detect.registry import detector_classes

    return {lang: {k: cls.problem[lang] for k, cls in detector_classes().items()} for lang in LANGUAGES}


def problem_label(language: str, kind: str) -> str:
    """How a notice in `language` names the problem of alert kind `kind` (the kind itself if unknown)."""
    from detect.registry import detector_classes

    cls = detector_classes().get(kind)
    return cls.problem.get(language, kind) if cls is not None else kind


def notice_id(decision: str) -> str:
    """The id recipients de-duplicate on: a short, deterministic hash of the decision key."""
    return hashlib.sha256(decision.encode()).hexdigest()[:24]


def answer_topic(settings: Settings, enterprise_id: str) -> str:
    """Where an enterprise publishes its answers (acknowledge, rectification, contest)."""
    return f"{settings.broker.topic_prefix}/enterprise/{enterprise_id}/answer"


def answer_http_path(case_id: str) -> str:
    """The HTTP API path an enterprise POSTs its answers to."""
    return f"/api/cases/{case_id}/answers"


def local_time(t: datetime | None) -> str:
    """A time as people in China read it, Beijing time: 'YYYY-MM-DD HH:MM'. The texts say once,
    at the top, that their times are Beijing time (北京时间)."""
    if t is None:
        return ""
    return as_utc(t).astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")


EVENT_WORDS: dict[str, dict[str, str]] = {
    "zh-CN": {"opened": "立案", "alert_attached": "新增监测发现", "notified": "发出整改通知", "notice_decided": "决定发送通知",
              "notice_delivered": "通知送达企业", "acknowledged": "企业确认收到", "contested": "企业申辩（附自证材料）",
              "rectification_reported": "企业报告整改完成", "verified": "整改经核实，结案", "reopened": "问题复发，案件重开",
              "escalated": "移交执法", "dismissed": "撤销", "assigned": "指定承办人", "enforcement_closed": "执法办结",
              "ticket_opened": "开具执法工单", "ticket_routed": "工单改派", "evidence_locked": "证据包封存",
              "ticket_accepted": "执法人员受理", "ticket_findings_recorded": "记录现场检查情况", "ticket_closed": "工单办结",
              "answer_received": "收到企业答复（未改变案件状态）", "self_reported": "认定企业主动报告",
              "pollution_assessed": "评估污染后果", "recommendation": "提出处理建议", "note": "备注",
              "center_acknowledged": "监控中心已阅"},
    "en": {"opened": "case opened", "alert_attached": "further finding", "notified": "rectification notice issued",
           "notice_decided": "notice decided", "notice_delivered": "notice delivered to the enterprise",
           "acknowledged": "acknowledged by the enterprise", "contested": "contested with evidence",
           "rectification_reported": "rectification reported", "verified": "rectification verified, closed",
           "reopened": "recurred, case reopened", "escalated": "handed to enforcement", "dismissed": "dismissed",
           "assigned": "assignee named", "enforcement_closed": "enforcement closed", "ticket_opened": "ticket opened",
           "ticket_routed": "ticket routed", "evidence_locked": "evidence package locked",
           "ticket_accepted": "ticket accepted", "ticket_findings_recorded": "on-site findings recorded",
           "ticket_closed": "ticket closed", "answer_received": "answer received (case unchanged)",
           "self_reported": "marked self-reported", "pollution_assessed": "pollution assessed",
           "recommendation": "recommendation made", "note": "note", "center_acknowledged": "read by the center"},
}


def actor_words(actor: str, language: str, settings: Settings | None = None) -> str:
    """Who did it, as a reader names them: an officer's or enterprise's name; the rules as such."""
    kind, _, who = actor.partition(":")
    zh = language == "zh-CN"
    if actor == "system" or not who:
        return "系统（自动规则）" if zh and actor == "system" else ("system (automatic rule)" if actor == "system" else actor)
    if settings is not None:
        if kind == "officer":
            who = next((o.name for o in settings.notify.officers if o.id == who), who)
        elif kind == "enterprise":
            who = next((e.name for e in settings.registry.enterprises if e.id == who), who)
    label = {"center": ("监控中心", "center"), "officer": ("执法人员", "officer"),
             "enterprise": ("企业", "enterprise")}.get(kind, (kind, kind))
    return f"{label[0 if zh else 1]} {who}"


def _iso(t: datetime | None) -> str | None:
    return None if t is None else as_utc(t).isoformat().replace("+00:00", "Z")


# -- rendering ------------------------------------------------------------------------------------

@cache
def _env() -> jinja2.Environment:
    # Plain text: no autoescape. StrictUndefined: a missing fact is a bug, not an empty line.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["num"] = _num
    return env


def _num(v: Any) -> str:
    """Numbers as officials write them: no float noise, at most 3 decimals."""
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return f"{float(v):.3f}".rstrip("0").rstrip(".")
    return str(v)


def render(kind: str, language: str, context: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) of a notice kind in a language, from notify/templates/{language}/{kind}.txt."""
    if kind not in KINDS and kind not in TEMPLATE_ONLY:
        raise ValueError(f"unknown notice kind {kind!r}; known: {', '.join(KINDS)}")
    if language not in LANGUAGES:
        raise ValueError(f"no templates for language {language!r}; available: {', '.join(LANGUAGES)}")
    tmpl = _env().get_template(f"{language}/{kind}.txt")
    ctx = tmpl.new_context(dict(context))
    subject = "".join(tmpl.blocks["subject"](ctx)).strip()
    body = "".join(tmpl.blocks["body"](ctx)).strip() + "\n"
    return subject, body


# -- the facts a notice states -------------------------------------------------------------------

def _mapping(row: Any) -> dict[str, Any]:
    return dict(row._mapping) if hasattr(row, "_mapping") else dict(row)


def _enterprise(settings: Settings, enterprise_id: str) -> Enterprise | None:
    return next((e for e in settings.registry.enterprises if e.id == enterprise_id), None)


def _outlet(ent: Enterprise | None, outlet_id: str) -> Outlet | None:
    return next((o for o in ent.outlets if o.id == outlet_id), None) if ent else None


def enterprise_language(settings: Settings, ent: Enterprise | None) -> str:
    """The contact's language when set explicitly, else the deployment's default."""
    if ent is not None and "language" in ent.contact.model_fields_set:
        return ent.contact.language
    return settings.notify.language


def _alerts(conn: Connection, case_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(case_alerts.c.alert).where(case_alerts.c.case_id == case_id)).scalars().all()
    return sorted((dict(a) for a in rows), key=lambda a: (a.get("window_start") or "", a.get("id") or ""),
                  reverse=True)


def _finding(alert: Mapping[str, Any], language: str) -> dict[str, Any]:
    ev = alert.get("evidence") or {}
    start, end = (datetime.fromisoformat(alert[k]) for k in ("window_start", "window_end"))
    return {
        "alert_id": alert.get("id"), "kind": alert.get("kind"), "severity": alert.get("severity"),
        "problem_label": problem_label(language, alert.get("kind", "")),
        "station_mn": alert.get("station_mn"), "pollutant": alert.get("pollutant"),
        "window_start": _iso(start), "window_end": _iso(end),
        "window_local": _local_range(start, end),
        "value": alert.get("value"), "limit": alert.get("limit"), "unit": alert.get("unit", ""),
        "factor": ev.get("factor"), "basis": ev.get("basis"), "standard": ev.get("standard"),
        "valid_minutes": ev.get("valid_minutes"), "confidence": ev.get("confidence"),
    }


def _local_range(start: datetime, end: datetime) -> str:
    """'2025-03-01 09:00 – 10:00' (Beijing time); the end's date only when it differs."""
    a, b = local_time(start), local_time(end)
    return f"{a} – {b[11:] if a[:10] == b[:10] else b}"


def _limit(outlet: Outlet | None, problem: str, pollutant: str, alerts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The permit limit the case is about: the registry's, else what the latest alert recorded."""
    period = "daily" if problem == "daily_exceedance" else "hourly"
    lim = outlet.limits.get(pollutant) if outlet else None
    if lim is not None:
        value = getattr(lim, period) if getattr(lim, period) is not None else (lim.hourly or lim.daily)
        period = period if getattr(lim, period) is not None else ("hourly" if lim.hourly else "daily")
        return {"value": value, "unit": lim.unit, "standard": lim.standard, "period": period,
                "o2_reference": outlet.reference_o2 if outlet else None}
    latest = next((a for a in alerts if (a.get("evidence") or {}).get("standard")), None)
    if latest is None:
        return None
    return {"value": latest.get("limit"), "unit": latest.get("unit", ""), "standard": latest["evidence"]["standard"],
            "period": period, "o2_reference": None}


def _pollutant_name(code: str, language: str) -> str:
    p = pollutants().get(code)
    if p is None:
        return code
    return f"{p.zh if language == 'zh-CN' else p.en} ({code})"


def pollutant_label(code: str, language: str) -> str:
    """A pollutant's name without its code (charts, short labels)."""
    p = pollutants().get(code)
    return code if p is None else (p.zh if language == "zh-CN" else p.en)


def _ticket(conn: Connection, case_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    row = conn.execute(select(tickets).where(tickets.c.case_id == case_id)).first()
    t = _mapping(row) if row is not None else {}
    data = event.get("data") or {}
    keys = ("id", "priority", "reason", "officer", "evidence_path", "evidence_digest", "evidence_id")
    out = {k: t.get(k) for k in keys}
    out.update({k: data[k] for k in keys if data.get(k) is not None})
    if data.get("ticket_id"):
        out["id"] = data["ticket_id"]
    if out.get("evidence_path") and not out.get("evidence_id"):
        out["evidence_id"] = Path(out["evidence_path"]).name
    return out


def _case_facts(settings: Settings, case: Mapping[str, Any], language: str) -> dict[str, Any]:
    """The case itself, with the names people know (enterprise, outlet, pollutant, problem)."""
    ent = _enterprise(settings, case["enterprise_id"])
    outlet = _outlet(ent, case["outlet_id"])
    code = case.get("pollutant") or ""
    return {
        "id": case["id"], "enterprise_id": case["enterprise_id"],
        "enterprise_name": ent.name if ent else case["enterprise_id"],
        "outlet_id": case["outlet_id"], "outlet_name": (outlet.name or outlet.id) if outlet else case["outlet_id"],
        "problem": case["problem"], "problem_label": problem_label(language, case["problem"]),
        "pollutant": code, "pollutant_name": _pollutant_name(code, language) if code else "",
        "severity": case.get("severity"), "state": case.get("state"), "opened_local": local_time(case.get("opened_at")),
        "recommendation": case.get("recommendation"), "dismiss_reason": case.get("dismiss_reason"),
        "emergency": bool(case.get("emergency")),
    }


def build_context(conn: Connection, settings: Settings, case: Mapping[str, Any], event: Mapping[str, Any],
                  kind: str, language: str, number: str = "") -> dict[str, Any]:
    """Everything a template may say about a case, in the given language."""
    ent = _enterprise(settings, case["enterprise_id"])
    outlet = _outlet(ent, case["outlet_id"])
    alerts = _alerts(conn, case["id"])
    data = dict(event.get("data") or {})
    return {
        "kind": kind, "language": language, "case": _case_facts(settings, case, language),
        "findings": [_finding(a, language) for a in alerts[:MAX_FINDINGS]], "findings_total": len(alerts),
        "limit": _limit(outlet, case["problem"], case.get("pollutant") or "", alerts),
        "deadline": _iso(case.get("deadline_at")), "deadline_local": local_time(case.get("deadline_at")),
        "ack_due_local": local_time(case.get("ack_due_at")), "verify_until_local": local_time(case.get("verify_until")),
        "emergency": bool(case.get("emergency")), "emergency_level": data.get("emergency_level"),
        "event": {"seq": event["seq"], "type": event.get("type"), "data": data, "at_local": local_time(event.get("at"))},
        "answer": {"mqtt_topic": answer_topic(settings, case["enterprise_id"]),
                   "http_path": answer_http_path(case["id"]), "case_id": case["id"]},
        "ticket": _ticket(conn, case["id"], event) if kind == "ticket" else None,
        "history": _history(conn, settings, case["id"], language) if kind == "ticket" else [],
        "formal": formal(settings, case["problem"], ent.industry if ent else "", language, number,
                         event.get("recorded_at") or event.get("at")),
    }


def formal(settings: Settings, problem: str, industry: str, language: str, number: str,
           issued: datetime | None) -> dict[str, Any]:
    """The formal parts of a 通知: issuer, document number, date, legal basis, contact (configured)."""
    f = settings.notify.formal
    zh = language == "zh-CN"
    basis = f.legal_basis if zh else f.legal_basis_en
    day = as_utc(issued or datetime.now(timezone.utc)).astimezone(CHINA_TZ)
    return {"authority": f.authority if zh else f.authority_en, "number": number,
            "date": f"{day.year}年{day.month}月{day.day}日" if zh else day.strftime("%d %B %Y"),
            "legal_basis": basis.get(problem) or basis.get(industry) or basis.get("default", ""),
            "contact": f.contact if zh else (f.contact_en or f.contact)}


def _history(conn: Connection, settings: Settings, case_id: str, language: str) -> list[dict[str, Any]]:
    """The case's events, oldest first, in words, with who did them, as an officer reads them."""
    rows = conn.execute(select(case_events.c.seq, case_events.c.at, case_events.c.actor, case_events.c.type)
                        .where(case_events.c.case_id == case_id).order_by(case_events.c.seq)).all()
    words = EVENT_WORDS[language]
    return [{"seq": r.seq, "at_local": local_time(r.at), "actor": actor_words(r.actor, language, settings),
             "type": words.get(r.type, r.type)} for r in rows
            if r.type != "notice_decided"]  # the decisions to notify are the outbox's business


def _payload(nid: str, ctx: Mapping[str, Any]) -> dict[str, Any]:
    c = ctx["case"]
    out = {"notice_id": nid, "case_id": c["id"], "enterprise_id": c["enterprise_id"], "outlet_id": c["outlet_id"],
           "kind": ctx["kind"], "problem": c["problem"], "pollutant": c["pollutant"], "severity": c["severity"],
           "findings": ctx["findings"], "findings_total": ctx["findings_total"], "limit": ctx["limit"],
           "deadline": ctx["deadline"], "emergency": ctx["emergency"], "language": ctx["language"],
           "answer": {"mqtt_topic": ctx["answer"]["mqtt_topic"], "http_path": ctx["answer"]["http_path"]},
           "event_seq": ctx["event"]["seq"], "formal": ctx["formal"]}
    if ctx["ticket"] is not None:
        out["ticket"] = ctx["ticket"]
    return out


# -- recipients and the outbox -------------------------------------------------------------------

def _recipients(settings: Settings, case: Mapping[str, Any], event: Mapping[str, Any],
                kind: str) -> list[tuple[str, str, str, str]]:
    """(audience, recipient, channel, language) for every message this decision sends."""
    if kind == "ticket":
        return [("officer", o.id, ch, settings.notify.language)
                for o in _officers(settings, case, event) for ch in _officer_channels(settings, o)]
    ent = _enterprise(settings, case["enterprise_id"])
    lang = enterprise_language(settings, ent)
    return [("enterprise", case["enterprise_id"], ch, lang) for ch in channels_for(settings, "enterprise", ent)]


def _officers(settings: Settings, case: Mapping[str, Any], event: Mapping[str, Any]) -> list[Officer]:
    """The officer the ticket is routed to (the event names it); with none, every configured officer.

    Never the case's assignee: that is center staff, not the ticket's addressee.
    """
    wanted = (event.get("data") or {}).get("officer")
    officers = settings.notify.officers
    if wanted:
        named = [o for o in officers if o.id == wanted]
        return named or [Officer(id=wanted, name=wanted)]
    return list(officers)


def _officer_channels(settings: Settings, officer: Officer) -> list[str]:
    return channels_for(settings, "officer", officer)


def _insert_ignoring_duplicates(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: a decision already in the outbox stays as it is."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"the outbox supports SQLite and PostgreSQL, not {conn.dialect.name}")
    conn.execute(insert(notices).values(rows).on_conflict_do_nothing())


def doc_number(conn: Connection, settings: Settings, decision: str, issued: datetime) -> str:
    """The document number of a formal notice, e.g. 环监通〔2026〕第0001号: one per decision (the same
    over every channel and on a re-run), a sequence per year (Beijing time) that the store keeps
    unique (two writers racing on one number collide on uq_notice_number and retry)."""
    row = conn.execute(select(notice_numbers.c.year, notice_numbers.c.seq)
                       .where(notice_numbers.c.decision == decision)).first()
    if row is None:
        year = as_utc(issued).astimezone(CHINA_TZ).year
        last = conn.execute(select(func.max(notice_numbers.c.seq)).where(notice_numbers.c.year == year)).scalar()
        row = (year, (last or 0) + 1)
        conn.execute(insert(notice_numbers).values(decision=decision, year=year, seq=row[1], issued_at=as_utc(issued)))
    return f"{settings.notify.formal.number_prefix}〔{row[0]}〕第{row[1]:04d}号"


def enqueue(conn: Connection, settings: Settings, case_row: Any, event_row: Any, kind: str,
            now: datetime | None = None, also: list[tuple[Any, Any]] | None = None) -> list[str]:
    """Decide to send `kind` for this case event: one outbox row per recipient channel.

    Runs in the caller's transaction (commit is the caller's). Returns the notice ids of the
    decision, including ones an earlier run already inserted. The rows are due at once: their
    next_attempt_at is the earlier of the event time and the wall clock, so both live operation
    and a dispatcher replaying event time pick them up. Enterprise notices get a document number.
    `also`: further (case, event) of the same enterprise and pass, listed in the same notice.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}; known: {', '.join(KINDS)}")
    case, event = _mapping(case_row), _mapping(event_row)
    recorded = as_utc(now or datetime.now(timezone.utc))
    due = min(recorded, as_utc(event["at"])) if event.get("at") else recorded
    number = ""
    if kind in ENTERPRISE_KINDS:
        number = doc_number(conn, settings, f"{case['id']}:{event['seq']}:{kind}", recorded)
    others = [(_mapping(c), _mapping(e)) for c, e in (also or [])]
    template = "rectification_bundle" if others else kind
    rows, contexts = [], {}
    for audience, recipient, channel, lang in _recipients(settings, case, event, kind):
        decision = f"{case['id']}:{event['seq']}:{kind}:{channel}" + (f":{recipient}" if audience == "officer" else "")
        if lang not in contexts:
            ctx = build_context(conn, settings, case, event, kind, lang, number)
            if others:
                ctx["cases"] = [ctx] + [build_context(conn, settings, c, e, kind, lang, number) for c, e in others]
            contexts[lang] = ctx
        subject, body = render(template, lang, contexts[lang])
        nid = notice_id(decision)
        # What leaves the center for an enterprise is its allow-listed view (notify.views), whatever the context holds.
        payload = _payload(nid, contexts[lang])
        if others:
            payload["cases"] = [{"case_id": c["case"]["id"], "event_seq": c["event"]["seq"], "outlet_id": c["case"]["outlet_id"],
                                 "problem": c["case"]["problem"], "deadline": c["deadline"], "findings": c["findings"]}
                                for c in contexts[lang]["cases"]]
        rows.append({"id": nid, "decision": decision, "case_id": case["id"], "kind": kind, "audience": audience,
                     "recipient": recipient, "channel": channel, "language": lang, "subject": subject, "body": body,
                     "payload": views.enterprise_payload(payload) if audience == "enterprise" else payload,
                     "created_at": recorded, "status": "pending",
                     "attempts": 0, "next_attempt_at": due})
    if rows:
        _insert_ignoring_duplicates(conn, rows)
    return [r["id"] for r in rows]


def delivered_cases(row: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(case id, event seq) whose deadlines this delivered notice starts: every case it lists."""
    if row.get("audience") != "enterprise" or row.get("kind") not in ("rectification_notice", "reopened"):
        return []
    payload = row.get("payload") or {}
    listed = payload.get("cases")
    if listed:
        return [(c["case_id"], int(c["event_seq"])) for c in listed]
    return [(row["case_id"], int(payload.get("event_seq", row["decision"].split(":")[1])))]


__all__ = ["KINDS", "delivered_cases", "doc_number", "formal", "actor_words", "pollutant_label", "LANGUAGES", "answer_http_path", "answer_topic", "build_context", "enqueue",
           "enterprise_language", "local_time", "notice_id", "render"]
