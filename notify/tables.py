"""The case store's tables (SQLAlchemy Core), one definition for SQLite and PostgreSQL.

Alembic migrations in core/migrations are generated from this metadata; change a table here,
then add a migration. Times are stored as timezone-aware UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, Boolean, Column, DateTime, ForeignKey, Index, Integer, MetaData,
                        String, Table, Text, TypeDecorator, UniqueConstraint, text)

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMP WITH TIME ZONE that always reads back aware UTC.

    SQLite keeps no zone and hands back naive datetimes (written in UTC); PostgreSQL hands back the
    session's zone. Every row read from these tables therefore carries +00:00, so whatever the API
    or a screen serializes says which clock it is on. (detect.store.UTCDateTime stores naive UTC in
    a plain DATETIME column; the case store keeps TIMESTAMP WITH TIME ZONE, hence a type of its own.)
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UTC_TIME = UTCDateTime()

# States a case can be in; CLOSED_STATES end it, so a new alert of the same problem opens a new case.
CASE_STATES = ("open", "notified", "acknowledged", "rectification_reported", "verified", "reopened",
               "escalated", "dismissed")
CLOSED_STATES = ("verified", "dismissed")
_NOT_CLOSED = text(f"state NOT IN ({', '.join(repr(s) for s in CLOSED_STATES)})")

cases = Table(
    "cases", metadata,
    Column("id", String(32), primary_key=True),
    Column("enterprise_id", String(64), nullable=False),
    Column("outlet_id", String(64), nullable=False),  # "" for enterprise-wide problems (hotspot)
    Column("problem", String(64), nullable=False),  # the alert kind that defines the problem type
    Column("pollutant", String(32), nullable=False, server_default=""),
    Column("state", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("opened_at", UTC_TIME, nullable=False),  # event time of the first alert
    Column("updated_at", UTC_TIME, nullable=False),
    Column("closed_at", UTC_TIME),
    Column("deadline_at", UTC_TIME),  # rectification deadline
    Column("ack_due_at", UTC_TIME),
    Column("verify_until", UTC_TIME),  # a reported rectification holds if no recurrence until then
    Column("assignee", String(64)),
    Column("emergency", Boolean, nullable=False, server_default=text("false")),
    Column("self_reported", Boolean, nullable=False, server_default=text("false")),
    Column("recommendation", String(32)),  # e.g. no_penalty (轻罚/免罚 list)
    Column("dismiss_reason", Text),
    Column("version", Integer, nullable=False, server_default=text("1")),
    # Obligations run on delivery time (see notify/cases.py): when the notice that starts the
    # deadlines was handed to the outbox, when its delivery was confirmed, and which decision it was.
    Column("notice_sent_at", UTC_TIME),
    Column("notified_at", UTC_TIME),  # confirmed delivery (or sent, where delivery cannot be confirmed)
    Column("clock_seq", Integer),  # seq of the notice_decided event whose delivery starts the clock
    Column("group_id", String(32)),  # a grouped item (one cause, many findings): held until confirmed
)
# At most one open case per (enterprise, outlet, problem): the database enforces it, so two
# instances racing on the same alert cannot both open a case.
Index("uq_open_case", cases.c.enterprise_id, cases.c.outlet_id, cases.c.problem, unique=True,
      sqlite_where=_NOT_CLOSED, postgresql_where=_NOT_CLOSED)

case_alerts = Table(
    "case_alerts", metadata,
    Column("case_id", String(32), ForeignKey("cases.id"), primary_key=True),
    Column("alert_id", String(32), primary_key=True),
    Column("attached_at", UTC_TIME, nullable=False),
    Column("alert", JSON, nullable=False),  # the alert as exported, frozen at attach time
)

# Append-only history. `digest` chains each event to the previous one of the same case:
# sha256(prev_digest + canonical JSON of the event), so any later edit breaks the chain.
case_events = Table(
    "case_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_id", String(32), ForeignKey("cases.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", UTC_TIME, nullable=False),  # event time (what the rules reason on)
    Column("recorded_at", UTC_TIME, nullable=False),  # wall clock when stored
    Column("actor", String(128), nullable=False),  # system | center:<user> | enterprise:<id> | officer:<id>
    Column("type", String(48), nullable=False),
    Column("data", JSON, nullable=False),
    Column("prev_digest", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    UniqueConstraint("case_id", "seq", name="uq_case_event_seq"),
)

# The outbox: a row is the decision to send one message on one channel. `decision` is a
# deterministic key (case, event seq, channel), so re-deciding after a crash inserts nothing new;
# `id` is what the recipient de-duplicates on.
notices = Table(
    "notices", metadata,
    Column("id", String(32), primary_key=True),
    Column("decision", String(160), nullable=False, unique=True),
    Column("case_id", String(32), ForeignKey("cases.id"), nullable=False),
    Column("kind", String(32), nullable=False),  # rectification_notice | reminder | reopened | ticket | closed
    Column("audience", String(16), nullable=False),  # enterprise | officer
    Column("recipient", String(128), nullable=False),  # enterprise id or officer id
    Column("channel", String(16), nullable=False),  # mqtt | webhook | email
    Column("language", String(8), nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("payload", JSON, nullable=False),  # machine-readable notice
    Column("created_at", UTC_TIME, nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTC_TIME, nullable=False),
    Column("delivered_at", UTC_TIME),
    Column("last_error", Text),
)
Index("ix_notices_pending", notices.c.status, notices.c.next_attempt_at)

answers = Table(
    "answers", metadata,
    Column("id", String(32), primary_key=True),  # the enterprise's own id for the answer: idempotent
    Column("case_id", String(32), ForeignKey("cases.id"), nullable=False),
    Column("enterprise_id", String(64), nullable=False),
    Column("type", String(32), nullable=False),  # acknowledge | rectification | contest
    Column("text", Text, nullable=False, server_default=""),
    Column("attachments", JSON, nullable=False),  # [{name, sha256, size, path}]
    Column("received_at", UTC_TIME, nullable=False),
)

tickets = Table(
    "tickets", metadata,
    Column("id", String(32), primary_key=True),
    Column("case_id", String(32), ForeignKey("cases.id"), nullable=False, unique=True),
    Column("priority", String(16), nullable=False),  # P1 (urgent) .. P3
    Column("reason", String(32), nullable=False),  # repeat | overdue | severe | falsification | recurrence | emergency | manual
    Column("status", String(16), nullable=False),  # open | accepted | findings_recorded | closed
    Column("officer", String(64)),
    Column("opened_at", UTC_TIME, nullable=False),
    Column("accepted_at", UTC_TIME),
    Column("closed_at", UTC_TIME),
    Column("findings", Text),
    Column("outcome", String(64)),
    Column("evidence_path", Text),
    Column("evidence_digest", String(64)),
    Column("routed_to", String(64)),  # the officer the routing rule (or an operator's override) chose
    Column("notice_seq", Integer),  # seq of the ticket's notice_decided event (sent after evidence is locked)
)

emergencies = Table(
    "emergencies", metadata,
    Column("id", String(32), primary_key=True),
    Column("level", String(16), nullable=False),  # yellow | orange | red (预警等级)
    Column("start", UTC_TIME, nullable=False),
    Column("end", UTC_TIME, nullable=False),
    Column("declared_by", String(128), nullable=False),
    Column("declared_at", UTC_TIME, nullable=False),
    Column("note", Text, nullable=False, server_default=""),
)

# Positive-list changes made at run time (the config gives the initial list); newest row wins.
positive_list = Table(
    "positive_list", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("enterprise_id", String(64), nullable=False),
    Column("listed", Boolean, nullable=False),
    Column("changed_at", UTC_TIME, nullable=False),
    Column("changed_by", String(128), nullable=False),
    Column("note", Text, nullable=False, server_default=""),
)

# One cause, many findings (e.g. a city-wide data gap): their cases are held in one group until a
# person confirms (notices go out) or dismisses them (closed with the reason).
case_groups = Table(
    "case_groups", metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("window_start", UTC_TIME, nullable=False),
    Column("window_end", UTC_TIME, nullable=False),
    Column("status", String(16), nullable=False),  # pending | confirmed | dismissed
    Column("enterprises", Integer, nullable=False),
    Column("stations", Integer, nullable=False),
    Column("created_at", UTC_TIME, nullable=False),
    Column("decided_at", UTC_TIME),
    Column("decided_by", String(128)),
    Column("reason", Text),
)

# Document numbers of formal notices (〔2026〕第0001号): one per notice decision, a sequence per year.
notice_numbers = Table(
    "notice_numbers", metadata,
    Column("decision", String(160), primary_key=True),  # {case_id}:{event seq}:{kind} (same over channels)
    Column("year", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("issued_at", UTC_TIME, nullable=False),
    UniqueConstraint("year", "seq", name="uq_notice_number"),
)

# Filings ahead (停产/检修/标定报备): an enterprise announces a planned shutdown, maintenance or
# calibration of one outlet; the center approves or rejects it. An approved period suppresses the
# findings it explains (notify/filings.py), like a silence in Alertmanager: who, when, why, until.
FILING_KINDS = ("shutdown", "maintenance", "calibration")
filings = Table(
    "filings", metadata,
    Column("id", String(32), primary_key=True),
    Column("enterprise_id", String(64), nullable=False),
    Column("outlet_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # shutdown | maintenance | calibration
    Column("start", UTC_TIME, nullable=False),
    Column("end", UTC_TIME, nullable=False),
    Column("reason", Text, nullable=False),
    Column("attachment", JSON),  # {name, sha256, size, path}: path made by the server
    Column("filed_at", UTC_TIME, nullable=False),
    Column("filed_by", String(128), nullable=False),
    Column("after_the_fact", Boolean, nullable=False),  # its period started before it was filed
    Column("status", String(16), nullable=False),  # pending | approved | rejected
    Column("decided_at", UTC_TIME),
    Column("decided_by", String(128)),
    Column("decision_note", Text, nullable=False, server_default=""),
)
Index("ix_filings_outlet", filings.c.enterprise_id, filings.c.outlet_id, filings.c.status)

# One row per alert an approved filing explains: the alert stays stored (and visible), opens no case.
alert_suppressions = Table(
    "alert_suppressions", metadata,
    Column("alert_id", String(32), primary_key=True),
    Column("filing_id", String(32), ForeignKey("filings.id"), nullable=False),
    Column("suppressed_at", UTC_TIME, nullable=False),)
