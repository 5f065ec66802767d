"""Helpers for the case-workflow tests: settings, alerts, and real stores (SQLite and PostgreSQL).

    store_engine   fixture, parametrized ["sqlite", "postgresql"]: a migrated, empty store
    sqlite_engine  fixture: the same on SQLite only (for the many rule tests)
    pg_cluster     session fixture: one PostgreSQL cluster (devtools.pgservice) for the whole run

Import the fixtures into a test module: `from tests.casekit import store_engine  # noqa: F401`.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, func, select

from devtools.devservices import free_port
from devtools.pgservice import PostgresService, start_postgres
from config.loader import from_mapping
from config.schema import Settings
from detect.base import Alert
from core.db import make_engine, migrate
from core.time import as_utc
from notify.tables import case_events, cases, metadata, notices, tickets

T0 = datetime(2025, 1, 6, 0, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
D = timedelta(days=1)
S = timedelta(seconds=1)

_cluster: dict[str, Any] = {}


def _outlet(oid: str = "O1") -> dict[str, Any]:
    return {"id": oid, "name": f"outlet {oid}", "medium": "gas", "reference_o2": 6,
            "limits": {"a21026": {"hourly": 35, "standard": "GB 13223-2011"}},
            "stations": [{"mn": f"MN-{uuid.uuid4().hex[:10]}", "pollutants": ["a21026"]}]}


REGISTRY: dict[str, Any] = {"enterprises": [
    {"id": "E1", "name": "Plant one", "emergency_grade": "C", "outlets": [_outlet()]},
    {"id": "ED", "name": "Plant D", "emergency_grade": "D", "outlets": [_outlet()]},
    {"id": "EA", "name": "Plant A", "emergency_grade": "A", "outlets": [_outlet()]},
    {"id": "EL", "name": "Plant leading", "emergency_grade": "leading", "outlets": [_outlet()]},
    {"id": "EP", "name": "Positive plant", "emergency_grade": "B", "positive_list": True, "outlets": [_outlet()]},
]}


def make_settings(state_dir: Path, **notify: Any) -> Settings:
    """Settings with the test registry; `notify` keys override notify settings (escalation deep-merged)."""
    n: dict[str, Any] = {"deadline_hours": {"default": 72, "exceedance": 24}, "acknowledge_hours": 4, "verify_hours": 72}
    esc = notify.pop("escalation", {})
    n.update(notify)
    n["escalation"] = esc
    return from_mapping({"registry": REGISTRY, "notify": n, "ingest": {"state_dir": str(state_dir)},
                         "detect": {"settle_s": 300}}, source="casekit", env={})


def alert(start: datetime, kind: str = "exceedance", severity: str = "minor", enterprise: str = "E1",
          outlet: str = "O1", value: float | None = 40.0, limit: float | None = 35.0, hours: int = 1,
          pollutant: str = "a21026", **evidence: Any) -> Alert:
    """An alert over [start, start + hours)."""
    return Alert(kind=kind, severity=severity, enterprise_id=enterprise, outlet_id=outlet, station_mn="MN1",
                 pollutant=pollutant, window_start=start, window_end=start + hours * H, detector="test",
                 value=value, limit=limit, unit="mg/m3", evidence=dict(evidence))


# -- stores ---------------------------------------------------------------------------------------

def pg_service() -> PostgresService:
    """The run's PostgreSQL cluster, started on first use (state under a fresh /tmp directory)."""
    if "svc" not in _cluster or not _cluster["svc"].running():
        d = Path(tempfile.mkdtemp(prefix="envwatch-pg-"))
        _cluster["dir"] = d
        _cluster["svc"] = start_postgres(d, free_port(), fsync=False)
    return _cluster["svc"]


TEMPLATE = "envwatch_migrated"


def _admin(sql: str) -> None:
    admin = sa.create_engine(pg_service().url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        admin.dispose()


def _pg_url(name: str) -> str:
    return pg_service().url.rsplit("/", 1)[0] + f"/{name}"


def pg_database(migrated: bool = True) -> str:
    """A fresh database on the run's cluster; returns its SQLAlchemy URL.

    Migrated databases are copies of one template that `migrate` ran on once (test_pg_store runs
    the migrations themselves on empty databases).
    """
    name = f"t_{uuid.uuid4().hex[:12]}"
    if migrated and not _cluster.get("template"):
        _admin(f'CREATE DATABASE "{TEMPLATE}"')
        migrate(_pg_url(TEMPLATE))
        _cluster["template"] = True
    _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{TEMPLATE}"' if migrated else ""))
    return _pg_url(name)


def drop_pg_database(url: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresService]:
    svc = pg_service()
    yield svc
    svc.stop()
    shutil.rmtree(_cluster.get("dir", ""), ignore_errors=True)
    _cluster.clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cases.sqlite'}"
        migrate(url)
    else:
        request.getfixturevalue("pg_cluster")
        url = _shared_pg_database()
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _shared_pg_database() -> str:
    """One migrated database for the run, emptied before each test (CREATE DATABASE costs ~0.5 s)."""
    if "shared" not in _cluster:
        _cluster["shared"] = pg_database()
    url = _cluster["shared"]
    engine = make_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    engine.dispose()
    return url


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'cases.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


# -- looking ----------------------------------------------------------------------------------------

def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def all_cases(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(m) for m in conn.execute(select(cases).order_by(cases.c.opened_at, cases.c.id)).mappings()]


def event_types(engine: Engine, case_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(case_events.c.type).where(case_events.c.case_id == case_id)
                                 .order_by(case_events.c.seq)).scalars())


def decided(engine: Engine, case_id: str) -> list[str]:
    """Notice kinds decided for a case, in order."""
    with engine.connect() as conn:
        rows = conn.execute(select(case_events.c.data).where(case_events.c.case_id == case_id,
                                                             case_events.c.type == "notice_decided")
                            .order_by(case_events.c.seq)).scalars()
        return [r["kind"] for r in rows]


def escalations(engine: Engine, case_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(case_events.c.at, case_events.c.data).where(
            case_events.c.case_id == case_id, case_events.c.type == "escalated").order_by(case_events.c.seq))
        return [{"at": as_utc(r.at), **r.data} for r in rows]


__all__ = ["D", "H", "REGISTRY", "S", "T0", "alert", "all_cases", "count", "decided", "escalations", "event_types",
           "drop_pg_database", "make_settings", "notices", "pg_cluster", "pg_database", "sqlite_engine", "store_engine", "tickets"]
