"""Request and response bodies of the API (pydantic), so that /openapi.json describes them.

Responses are built from the store's dicts; models ignore keys they do not declare, which keeps
internal columns (file paths of attachments, evidence folders) out of the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Me(_Out):
    name: str
    role: Literal["operator", "enterprise", "officer"]
    enterprise_id: str | None = None
    officer_id: str | None = None
    language: str


class AlertOut(_Out):
    id: str
    kind: str
    severity: str
    enterprise_id: str
    outlet_id: str
    station_mn: str
    pollutant: str
    window_start: datetime
    window_end: datetime
    detector: str
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    status: str
    first_seen: datetime
    last_seen: datetime
    updated_at: datetime
    resolved_at: datetime | None = None
    case_id: str | None = None
    suppressed_by: str | None = None  # the approved filing (notify/filings.py) that explains it: no case


class CaseSummary(_Out):
    id: str
    enterprise_id: str
    enterprise_name: str = ""
    outlet_id: str
    problem: str
    pollutant: str = ""
    state: str
    severity: str
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    deadline_at: datetime | None = None
    ack_due_at: datetime | None = None
    verify_until: datetime | None = None
    assignee: str | None = None
    emergency: bool = False
    self_reported: bool = False
    recommendation: str | None = None
    dismiss_reason: str | None = None
    version: int
    notice_sent_at: datetime | None = None  # the notice starting the deadlines went to the outbox
    notified_at: datetime | None = None  # its delivery was confirmed: the deadlines run from here
    group_id: str | None = None  # held in a group of findings that share a cause (GET /api/groups)


class CaseEvent(_Out):
    seq: int
    at: datetime
    recorded_at: datetime
    actor: str
    type: str
    data: dict[str, Any]


class NoticeOut(_Out):
    id: str
    case_id: str
    kind: str
    audience: str
    recipient: str
    channel: str
    language: str
    subject: str
    body: str
    payload: dict[str, Any]
    created_at: datetime
    status: str
    attempts: int
    delivered_at: datetime | None = None
    last_error: str | None = None


class AttachmentOut(_Out):
    name: str
    sha256: str | None = None
    size: int | None = None


class AnswerRecord(_Out):
    id: str
    type: str
    text: str
    attachments: list[AttachmentOut] = Field(default_factory=list)
    received_at: datetime


class TicketOut(_Out):
    id: str
    case_id: str
    priority: str
    reason: str
    status: str
    officer: str | None = None
    opened_at: datetime
    accepted_at: datetime | None = None
    closed_at: datetime | None = None
    findings: str | None = None
    outcome: str | None = None
    evidence_digest: str | None = None
    routed_to: str | None = None
    enterprise_id: str | None = None
    outlet_id: str | None = None
    problem: str | None = None


class CaseOut(CaseSummary):
    events: list[CaseEvent]
    alerts: list[dict[str, Any]]
    notices: list[NoticeOut]
    answers: list[AnswerRecord]
    ticket: TicketOut | None = None


class TicketDetail(TicketOut):
    case: CaseOut


class CaseAction(BaseModel):
    """An operator's action on a case (see center/API.md for what each needs)."""

    action: Literal["acknowledge", "assign", "dismiss", "escalate", "note", "verify", "self_reported",
                    "assess_pollution", "route"]
    officer: str | None = Field(None, description="route: the officer (from notify.officers) to send the ticket to")
    reason: str | None = Field(None, description="dismiss: why (required)")
    assignee: str | None = Field(None, description="assign: who (required)")
    priority: Literal["P1", "P2", "P3"] = Field("P2", description="escalate: ticket priority")
    text: str | None = Field(None, description="note: the note (required); assess_pollution: a remark")
    consequence: bool | None = Field(None, description="assess_pollution: did it cause pollution")


class GroupOut(_Out):
    """Findings that share a cause, held until a person confirms or dismisses them."""

    id: str
    kind: str
    window_start: datetime
    window_end: datetime
    status: str  # pending | confirmed | dismissed
    enterprises: int
    stations: int
    created_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str | None = None
    cases: int | None = None
    case_ids: list[str] | None = None


class GroupAction(BaseModel):
    action: Literal["confirm", "dismiss"]
    reason: str | None = Field(None, description="dismiss: why (required)")


class AttachmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    content_base64: str


class AnswerIn(BaseModel):
    """An enterprise's answer to a notice, idempotent by its own `answer_id`."""

    answer_id: str = Field(min_length=1, max_length=32)
    type: Literal["acknowledge", "rectification", "contest"]
    text: str = ""
    attachments: list[AttachmentIn] = Field(default_factory=list)


class AnswerResult(_Out):
    answer_id: str
    status: Literal["accepted", "recorded", "duplicate"]
    accepted: bool | None = None
    case_id: str
    state: str | None = None
    reason: str | None = None


class TicketAction(BaseModel):
    action: Literal["accept", "findings", "close"]
    findings: str | None = Field(None, description="findings: what was found on site (required)")
    outcome: Literal["rectified", "penalized", "no_violation", "referred"] | None = Field(
        None, description="close: the outcome (required)")


class EmergencyIn(BaseModel):
    level: Literal["yellow", "orange", "red"]
    start: datetime
    end: datetime
    note: str = ""


class EmergencyOut(_Out):
    id: str
    level: str
    start: datetime
    end: datetime
    declared_by: str
    declared_at: datetime
    note: str = ""


class IdOut(BaseModel):
    id: str


class PositiveListIn(BaseModel):
    note: str = ""


class PositiveListOut(BaseModel):
    id: str
    positive_list: bool


class LimitOut(_Out):
    hourly: float | None = None
    daily: float | None = None
    unit: str
    standard: str


class OutletOut(BaseModel):
    id: str
    name: str
    medium: str
    limits: dict[str, LimitOut]
    stations: list[str]


class EnterpriseOut(BaseModel):
    id: str
    name: str
    industry: str
    lat: float | None
    lon: float | None
    emergency_grade: str
    positive_list: bool
    outlets: list[OutletOut]


class Summary(BaseModel):
    cases_by_state: dict[str, int]
    open_cases_by_kind: dict[str, int]
    alerts_by_kind: dict[str, int]
    open_alerts_by_kind: dict[str, int]
    alerts_by_severity: dict[str, int]
    tickets_by_status: dict[str, int]
    notices_by_status: dict[str, int]


class ReadingWindow(BaseModel):
    alert_id: str
    kind: str
    pollutant: str
    start: datetime
    end: datetime
    value: float | None = None
    limit: float | None = None


class ReadingSeries(BaseModel):
    measurement: str
    mn: str
    pollutant: str
    field: str
    points: list[tuple[datetime, float]]


class Readings(BaseModel):
    case_id: str
    margin_h: float
    limits: dict[str, LimitOut]
    windows: list[ReadingWindow]
    series: list[ReadingSeries]


class TrackPoint(BaseModel):
    model_config = ConfigDict(extra="allow")  # one float per species (voc, pm25, ...)
    time: datetime
    lat: float | None = None
    lon: float | None = None


class Track(BaseModel):
    device: str
    kind: str
    points: list[TrackPoint]


class EnterpriseRef(BaseModel):
    id: str
    name: str
    lat: float | None = None
    lon: float | None = None


class Hotspot(BaseModel):
    alert: AlertOut
    enterprise: EnterpriseRef | None = None


class Check(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: str
    instance: str
    leader: bool


class ReadyPublic(BaseModel):
    """/readyz for anyone but an operator: ready or not, nothing about the inside."""

    ready: bool
    status: Literal["ok", "not ready"]


class Ready(BaseModel):
    ready: bool
    instance: str
    leader: bool
    checks: dict[str, Check]
