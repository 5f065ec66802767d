"""The case store: engines from settings, and migrations run from Python (no alembic.ini).

    engine = engine_from_settings(settings)   # SQLite by default, PostgreSQL when store.url says so
    migrate(engine)                           # idempotent: brings the schema to the newest revision

SQLite gets WAL (readers never block the writer), foreign keys on, and a busy timeout so that two
processes on one file wait for each other instead of failing. Times are stored as UTC: SQLite keeps
no zone, so every writer converts to UTC first and every reader attaches it back (core.time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from config.schema import Settings

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain postgresql:// URLs (SQLAlchemy's default driver is psycopg2)."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the pragmas (SQLite) or pool settings (PostgreSQL) the case store relies on."""
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return _sqlite_engine(url, u.database, **kwargs)
    # pre_ping: a PostgreSQL restart must not surface as an error on the next transaction.
    opts: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10, "pool_recycle": 1800}
    opts.update(kwargs)
    return create_engine(url, **opts)


def _sqlite_engine(url: str, database: str | None, **kwargs: Any) -> Engine:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    opts: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    opts.update(kwargs)
    engine = create_engine(url, **opts)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN; emit BEGIN ourselves (below) so a
        # transaction that reads then writes holds the lock from its start (no upgrade deadlock).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Readers (see `reading`) take a deferred BEGIN: in WAL mode they never wait for a writer,
        # so the board and the API stay responsive while detection writes thousands of alerts.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


READ_ONLY = "envwatch_read_only"


def reading(engine: Engine) -> Engine:
    """The same engine (and pool) for read-only work: on SQLite its transactions do not take the
    write lock, so they never queue behind writers. Never write through it: a deferred transaction
    that reads and then writes can fail at once when another writer got there first."""
    return engine.execution_options(**{READ_ONLY: True})


def engine_from_settings(settings: Settings, **kwargs: Any) -> Engine:
    """The engine for settings.store_url() (SQLite under ingest.state_dir unless configured)."""
    return make_engine(settings.store_url(), **kwargs)


def alembic_config(engine: Engine | None = None) -> Any:
    """A programmatic Alembic Config pointing at core/migrations (no alembic.ini needed)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def migrate(target: str | Engine, revision: str = "head") -> None:
    """Upgrade the store at `target` (URL or engine) to `revision`; a no-op when already there."""
    _alembic(target, "upgrade", revision)


def downgrade(target: str | Engine, revision: str) -> None:
    """Downgrade the store to `revision` ("base" drops every table): for development and tests."""
    _alembic(target, "downgrade", revision)


def _alembic(target: str | Engine, direction: str, revision: str) -> None:
    from alembic import command

    engine = make_engine(target) if isinstance(target, str) else target
    cfg = alembic_config(engine)
    try:
        # One transaction: a migration that fails half-way leaves the schema as it was (on
        # PostgreSQL; SQLite DDL is transactional too under pysqlite with our explicit BEGIN).
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, direction)(cfg, revision)
    finally:
        if isinstance(target, str):
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the store is at, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
