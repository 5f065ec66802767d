"""The case store on both databases, real servers: migrations, engine settings, concurrent
writers, the local PostgreSQL service surviving restarts and crashes, and the issue's end-to-end
case flow (first exceedance -> notice; rectification; two recurrences -> enforcement ticket)."""

from __future__ import annotations

import threading
from datetime import timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select

from devtools.pgservice import PostgresService
from config.loader import from_mapping
from notify import queries, workflow
from notify.events import verify_chain
from core.db import current_revision, downgrade, engine_from_settings, make_engine, migrate, normalize_url
from detect.store import alerts_table
from detect.store import metadata as detect_tables
from detect.warning import metadata as warning_tables
from notify.tables import case_events, metadata, notices
from tests.casekit import (H, T0, alert, all_cases, decided, drop_pg_database, make_settings,  # noqa: F401
                           pg_cluster, pg_database, store_engine)


def _all_tables() -> sa.MetaData:
    """Every package's table definitions in one MetaData: one migration history builds them all."""
    merged = sa.MetaData()
    for tables in (metadata, detect_tables, warning_tables):
        for t in tables.sorted_tables:
            t.to_metadata(merged)
    return merged


def _head() -> str:
    """The newest revision in core/migrations (one head: migrations form a chain)."""
    from alembic.script import ScriptDirectory

    from core.db import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path):
    """The URL of an empty database (not migrated) on each dialect."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sub' / 'empty.sqlite'}"  # parent directory created by the store
        return
    request.getfixturevalue("pg_cluster")
    url = pg_database(migrated=False)
    yield url
    drop_pg_database(url)


def test_migrations_build_exactly_the_tables_and_are_idempotent(empty_url: str) -> None:
    migrate(empty_url)
    migrate(empty_url)  # already at head: nothing to do
    engine = make_engine(empty_url)
    try:
        assert current_revision(engine) == _head()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), _all_tables())
            assert diff == []
            names = set(sa.inspect(conn).get_table_names())
        assert names >= {t.name for t in _all_tables().sorted_tables}
    finally:
        engine.dispose()


def test_migrate_adopts_detect_tables_made_by_create_all(tmp_path: Path) -> None:
    """A store made before 0004: notify's tables by Alembic, alerts/watermarks/warnings by create_all."""
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    migrate(url, "0003_filings")
    engine = make_engine(url)
    try:
        detect_tables.create_all(engine)
        warning_tables.create_all(engine)
        with engine.begin() as conn:
            conn.execute(alerts_table.insert().values(
                id="a1", kind="exceedance", severity="minor", enterprise_id="E1", outlet_id="O1", station_mn="MN",
                pollutant="a21026", window_start=T0, window_end=T0 + H, detector="d", unit="", evidence={},
                status="open", first_seen=T0, last_seen=T0, updated_at=T0))
        migrate(engine)
        assert current_revision(engine) == _head()
        with engine.connect() as conn:
            assert conn.execute(select(alerts_table.c.id)).scalars().all() == ["a1"]
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(empty_url: str) -> None:
    migrate(empty_url)
    downgrade(empty_url, "base")
    engine = make_engine(empty_url)
    try:
        assert current_revision(engine) is None
        with engine.connect() as conn:
            assert "cases" not in sa.inspect(conn).get_table_names()
        migrate(engine)
        assert current_revision(engine) == _head()
    finally:
        engine.dispose()


def test_sqlite_engine_runs_wal_with_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    with pytest.raises(sa.exc.IntegrityError):  # an event for a case that does not exist
        with engine.begin() as conn:
            conn.execute(case_events.insert().values(case_id="nope", seq=1, at=T0, recorded_at=T0, actor="x",
                                                     type="t", data={}, prev_digest="0", digest="0"))
    engine.dispose()


def test_urls_and_settings_choose_the_store(tmp_path: Path, pg_cluster: PostgresService) -> None:
    assert normalize_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert normalize_url("sqlite:///x.sqlite") == "sqlite:///x.sqlite"
    default = make_settings(tmp_path / "st")
    assert engine_from_settings(default).url.database == str(tmp_path / "st" / "envwatch.sqlite")
    url = pg_database(migrated=False)
    s = from_mapping({"store": {"url": url.replace("+psycopg", "")}}, source="t", env={})
    engine = engine_from_settings(s)
    try:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        migrate(engine)
        assert current_revision(engine) == _head()
    finally:
        engine.dispose()
        drop_pg_database(url)


def test_times_round_trip_as_utc(store_engine: Engine, tmp_path: Path) -> None:
    beijing = timezone(timedelta(hours=8))
    settings = make_settings(tmp_path)
    local = T0.astimezone(beijing)
    cid = workflow.process_alerts(store_engine, settings, [alert(local)], local + H, evidence=False)[0]["case_id"]
    case = queries.get_case(store_engine, cid)
    assert case["opened_at"] == T0 + H and case["opened_at"].utcoffset() == timedelta(0)
    # SQL comparisons on times agree with Python's on both dialects (tick relies on them).
    assert queries.list_cases(store_engine, None, state="notified")[0]["id"] == cid


def test_two_instances_racing_on_the_same_alerts_make_one_case(store_engine: Engine, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    alerts = [alert(T0 + i * H) for i in range(6)] + [alert(T0, enterprise="EA", value=90.0)]
    other = make_engine(store_engine.url.render_as_string(hide_password=False))  # a second process's engine
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def instance(engine: Engine) -> None:
        try:
            start.wait()
            workflow.process_alerts(engine, settings, alerts, T0 + 7 * H, evidence=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=instance, args=(e,)) for e in (store_engine, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.dispose()
    assert errors == []
    assert len(all_cases(store_engine)) == 2
    for case in all_cases(store_engine):
        got = queries.get_case(store_engine, case["id"])
        assert len(got["alerts"]) == (6 if case["enterprise_id"] == "E1" else 1)
        assert verify_chain(got["events"]) is None
        assert decided(store_engine, case["id"]).count("rectification_notice") == 1


def test_the_issue_scenario_recurring_twice_goes_to_enforcement(store_engine: Engine, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    cid = workflow.process_alerts(store_engine, settings, [alert(T0)], T0 + H, evidence=False)[0]["case_id"]
    assert decided(store_engine, cid) == ["rectification_notice"]
    with store_engine.connect() as conn:
        kinds = set(conn.execute(select(notices.c.kind).where(notices.c.case_id == cid)).scalars())
    assert kinds == {"rectification_notice"}  # a row in the outbox, for delivery
    workflow.answer(store_engine, settings, "E1", cid, "rectification", "replaced the bag filter", [], "r1", T0 + 5 * H)
    workflow.process_alerts(store_engine, settings, [alert(T0 + 20 * H)], T0 + 21 * H, evidence=False)
    workflow.answer(store_engine, settings, "E1", cid, "rectification", "adjusted dosing", [], "r2", T0 + 23 * H)
    workflow.process_alerts(store_engine, settings, [alert(T0 + 40 * H)], T0 + 41 * H, evidence=False)
    case = queries.get_case(store_engine, cid)
    assert case["state"] == "escalated" and case["ticket"]["reason"] == "repeat"
    assert [n["kind"] for n in case["notices"] if n["audience"] == "enterprise"].count("reopened") == 2
    assert verify_chain(case["events"]) is None
    assert [t["case_id"] for t in queries.list_tickets(store_engine, None)] == [cid]


def test_postgres_survives_restart_and_kill(pg_cluster: PostgresService, tmp_path: Path) -> None:
    url = pg_database()
    settings = make_settings(tmp_path)
    engine = make_engine(url)  # pool_pre_ping: pooled connections to the old server are replaced
    try:
        cid = workflow.process_alerts(engine, settings, [alert(T0)], T0 + H, evidence=False)[0]["case_id"]
        pg_cluster.restart()
        workflow.answer(engine, settings, "E1", cid, "acknowledge", "", [], "a1", T0 + 2 * H)
        pg_cluster.kill()  # a crash: committed work must come back from the WAL
        assert not pg_cluster.running()
        pg_cluster.start()
        case = queries.get_case(engine, cid)
        assert case["state"] == "acknowledged" and verify_chain(case["events"]) is None
    finally:
        if not pg_cluster.running():
            pg_cluster.start()
        engine.dispose()
        drop_pg_database(url)


def test_postgres_service_is_on_loopback_with_its_own_socket(pg_cluster: PostgresService) -> None:
    assert pg_cluster.host == "127.0.0.1" and pg_cluster.url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    assert any(p.name.startswith(".s.PGSQL.") for p in pg_cluster.socket_dir.iterdir())
    engine = sa.create_engine(pg_cluster.url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW listen_addresses").scalar() == "127.0.0.1"
        assert conn.exec_driver_sql("SHOW server_version_num").scalar() >= "150000"
    engine.dispose()


def test_sqlite_readers_do_not_wait_for_a_writer(tmp_path) -> None:
    """A read through `reading` proceeds while another connection holds the write lock."""
    from sqlalchemy import text as sql

    from core.db import make_engine, migrate, reading

    engine = make_engine(f"sqlite:///{tmp_path}/store.sqlite")
    migrate(engine)
    with engine.begin() as writer:  # BEGIN IMMEDIATE: holds the write lock until the block ends
        writer.execute(sql("INSERT INTO positive_list (enterprise_id, listed, changed_at, changed_by) "
                           "VALUES ('E1', 1, '2026-01-01 00:00:00', 't')"))
        with reading(engine).connect() as reader:
            # Without the deferred BEGIN this would wait for the writer (and time out after 30 s).
            assert reader.execute(sql("SELECT count(*) FROM positive_list")).scalar_one() == 0
