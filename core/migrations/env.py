"""Alembic environment for the case store, driven from core.db.migrate (no alembic.ini).

The caller passes an open connection in config.attributes["connection"] so that migrations run in
its transaction; without one (the alembic CLI), an engine is made from sqlalchemy.url.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from notify.tables import metadata

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    # Batch mode: SQLite cannot ALTER most things; Alembic rebuilds the table instead.
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
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
