"""detect's tables join the one history: alerts, watermarks and the early-warning `warnings`.

They were made by `create_all` beside this history; a database made that way already has them,
so each is created only when missing (adopting the existing ones as they are).

Revision ID: 0004_detect_tables
Revises: 0003_filings
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004_detect_tables'
down_revision: str | None = '0003_filings'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _missing(name: str) -> bool:
    return not sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if _missing('alerts'):
        op.create_table('alerts',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=64), nullable=False),
        sa.Column('severity', sa.String(length=16), nullable=False),
        sa.Column('enterprise_id', sa.String(length=128), nullable=False),
        sa.Column('outlet_id', sa.String(length=128), nullable=False),
        sa.Column('station_mn', sa.String(length=64), nullable=False),
        sa.Column('pollutant', sa.String(length=64), nullable=False),
        sa.Column('window_start', sa.DateTime(), nullable=False),
        sa.Column('window_end', sa.DateTime(), nullable=False),
        sa.Column('detector', sa.String(length=128), nullable=False),
        sa.Column('value', sa.Float(), nullable=True),
        sa.Column('limit_value', sa.Float(), nullable=True),
        sa.Column('unit', sa.String(length=32), nullable=False),
        sa.Column('evidence', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('first_seen', sa.DateTime(), nullable=False),
        sa.Column('last_seen', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.Column('resolved_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id')
        )
        op.create_index('ix_alerts_kind_window_end', 'alerts', ['kind', 'window_end'], unique=False)
        op.create_index('ix_alerts_window_start', 'alerts', ['window_start'], unique=False)
        op.create_index('ix_alerts_status', 'alerts', ['status'], unique=False)
    if _missing('watermarks'):
        op.create_table('watermarks',
        sa.Column('job', sa.String(length=128), nullable=False),
        sa.Column('position', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('job')
        )
    if _missing('warnings'):
        op.create_table('warnings',
        sa.Column('id', sa.String(length=300), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('level', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('enterprise_id', sa.String(length=128), nullable=False),
        sa.Column('outlet_id', sa.String(length=128), nullable=False),
        sa.Column('station_mn', sa.String(length=64), nullable=False),
        sa.Column('pollutant', sa.String(length=32), nullable=False),
        sa.Column('window_start', sa.DateTime(), nullable=False),
        sa.Column('window_end', sa.DateTime(), nullable=False),
        sa.Column('value', sa.Float(), nullable=True),
        sa.Column('limit_value', sa.Float(), nullable=True),
        sa.Column('unit', sa.String(length=16), nullable=True),
        sa.Column('evidence', sa.JSON(), nullable=True),
        sa.Column('first_seen', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id')
        )
        op.create_index('ix_warnings_enterprise_status', 'warnings', ['enterprise_id', 'status'], unique=False)


def downgrade() -> None:
    op.drop_table('warnings')
    op.drop_table('watermarks')
    op.drop_table('alerts')
