"""Alembic environment for the one migration history of every table (notify's case store, detect's
alerts, watermarks and warnings), driven from core.db.migrate (no alembic.ini).

The caller passes an open connection in config.attributes["connection"] so that migrations run in
its transaction; without one (the alembic CLI), an engine is made from sqlalchemy.url.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

config = context.config


def _target_metadata() -> list[Any]:
    """Every package's table definitions, for autogenerate (the only time they are compared)."""
    from detect.store import metadata as detect_tables
    from detect.warning import metadata as warning_tables
    from notify.tables import metadata as notify_tables

    return [notify_tables, detect_tables, warning_tables]


def _run(connection: Connection) -> None:
    # Batch mode: SQLite cannot ALTER most things; Alembic rebuilds the table instead.
    context.configure(connection=connection, target_metadata=_target_metadata(),
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=_target_metadata(),
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from core.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
