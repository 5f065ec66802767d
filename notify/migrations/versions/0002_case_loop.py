"""Case loop: delivery-time deadlines, grouped findings, routed tickets, formal notice numbers.

cases: notice_sent_at, notified_at, clock_seq (the deadlines run from the notice's delivery),
group_id (findings held in a group until a person confirms them); tickets: routed_to (the officer
the routing rule chose), notice_seq (the ticket notice, decided once its evidence is locked);
new tables case_groups and notice_numbers (〔year〕第NNNN号, unique per year).

Revision ID: 0002_case_loop
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_case_loop"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN (no batch rebuild: that would lose the partial unique index on SQLite).
    op.add_column("cases", sa.Column("notice_sent_at", UTC, nullable=True))
    op.add_column("cases", sa.Column("notified_at", UTC, nullable=True))
    op.add_column("cases", sa.Column("clock_seq", sa.Integer(), nullable=True))
    op.add_column("cases", sa.Column("group_id", sa.String(length=32), nullable=True))
    op.add_column("tickets", sa.Column("routed_to", sa.String(length=64), nullable=True))
    op.add_column("tickets", sa.Column("notice_seq", sa.Integer(), nullable=True))
    op.create_table(
        "case_groups",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("window_start", UTC, nullable=False),
        sa.Column("window_end", UTC, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("enterprises", sa.Integer(), nullable=False),
        sa.Column("stations", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("decided_at", UTC, nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "notice_numbers",
        sa.Column("decision", sa.String(length=160), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("issued_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("decision"),
        sa.UniqueConstraint("year", "seq", name="uq_notice_number"),
    )


def downgrade() -> None:
    op.drop_table("notice_numbers")
    op.drop_table("case_groups")
    for table, column in (("tickets", "notice_seq"), ("tickets", "routed_to"), ("cases", "group_id"),
                          ("cases", "clock_seq"), ("cases", "notified_at"), ("cases", "notice_sent_at")):
        op.drop_column(table, column)  # SQLite >= 3.35 drops columns in place
