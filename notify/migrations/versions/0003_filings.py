"""Filings ahead (停产/检修/标定报备) and the alerts they suppress.

Revision ID: 0003_filings
Revises: 0001 (the lead chains it after 0002_case_loop when merging)
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003_filings'
down_revision: str | None = '0002_case_loop'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('filings',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('enterprise_id', sa.String(length=64), nullable=False),
    sa.Column('outlet_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('attachment', sa.JSON(), nullable=True),
    sa.Column('filed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('filed_by', sa.String(length=128), nullable=False),
    sa.Column('after_the_fact', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_by', sa.String(length=128), nullable=True),
    sa.Column('decision_note', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_filings_outlet', 'filings', ['enterprise_id', 'outlet_id', 'status'], unique=False)
    op.create_table('alert_suppressions',
    sa.Column('alert_id', sa.String(length=32), nullable=False),
    sa.Column('filing_id', sa.String(length=32), nullable=False),
    sa.Column('suppressed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['filing_id'], ['filings.id'], ),
    sa.PrimaryKeyConstraint('alert_id')
    )


def downgrade() -> None:
    op.drop_table('alert_suppressions')
    op.drop_index('ix_filings_outlet', table_name='filings')
    op.drop_table('filings')
