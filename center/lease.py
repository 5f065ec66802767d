"""Leadership between service instances: only the leader runs detection, the workflow and the outbox.

PostgreSQL: a session-level advisory lock, `pg_try_advisory_lock(KEY)`, held on one dedicated
connection for as long as the instance leads. Chosen over a lease row with an expiry because the
server releases the lock the moment the holder's session ends: a SIGKILLed leader's socket is closed
by its kernel, PostgreSQL ends the session at once, and the follower's next attempt (every
lease_ttl_s/3) wins, well within 30 s, with no clock involved. A leader host that vanishes without
closing its socket is covered by TCP keepalives asked of the server for this session (the session
is dropped after about lease_ttl_s of silence). The leader checks its connection every
lease_ttl_s/3 and steps down as soon as the connection fails, before anybody else can win.

A brief overlap (the old leader finishing a job while the new one starts) is harmless: alerts,
cases and notices are idempotent by deterministic ids and unique keys, and outbox rows are claimed
by conditional UPDATE (notify/outbox.py).

SQLite: one file, one host: the single instance is the leader (SingleLease).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
LOCK_NAME = "envwatch:leader"


def lock_key(name: str = LOCK_NAME) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, derived from a readable name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Lease(Protocol):
    def is_leader(self) -> bool: ...
    def start(self) -> "Lease": ...
    def stop(self) -> None: ...


class SingleLease:
    """SQLite: always the leader."""

    def is_leader(self) -> bool:
        return True

    def start(self) -> "SingleLease":
        return self

    def stop(self) -> None:
        pass


def psycopg_conninfo(url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (postgresql+psycopg://... -> postgresql://...)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class AdvisoryLease:
    """Holds pg_try_advisory_lock on its own connection while leading; re-tries every ttl/3."""

    def __init__(self, url: str, ttl_s: float = 15.0, key: int | None = None,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.conninfo = psycopg_conninfo(url)
        self.ttl_s = ttl_s
        self.key = lock_key() if key is None else key
        self.on_change = on_change
        self._leader = threading.Event()
        self._stop = threading.Event()
        self._conn: Any = None
        self._thread: threading.Thread | None = None

    def is_leader(self) -> bool:
        return self._leader.is_set()

    def start(self) -> "AdvisoryLease":
        self._step()  # decide at once, so a lone instance leads from its first second
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Step down and release the lock (closing the session releases it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.ttl_s)
        self._demote("stopping")

    def wait_leader(self, timeout: float) -> bool:
        return self._leader.wait(timeout)

    # -- internals ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            self._step()

    def _step(self) -> None:
        try:
            if self.is_leader():
                self._conn.execute("SELECT 1")
            else:
                self._try_acquire()
        except Exception as exc:  # noqa: BLE001 - any failure of the session means we may have lost the lock
            self._demote(f"lease connection failed: {type(exc).__name__}: {exc}")

    def _connect(self) -> Any:
        import psycopg

        idle = max(1, int(self.ttl_s / 3))
        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=max(2, int(self.ttl_s)),
                               keepalives=1, keepalives_idle=idle, keepalives_interval=idle, keepalives_count=3,
                               application_name="envwatch-lease")
        # The server's side: drop this session (releasing the lock) when the peer goes silent.
        for name, value in (("tcp_keepalives_idle", idle), ("tcp_keepalives_interval", idle),
                            ("tcp_keepalives_count", 3)):
            conn.execute(f"SET {name} = {int(value)}")
        return conn

    def _try_acquire(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        won = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
        if won:
            self._leader.set()
            log.info("became leader (advisory lock %d)", self.key)
            self._notify(True)

    def _demote(self, why: str) -> None:
        was = self.is_leader()
        self._leader.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
                pass
        if was:
            log.warning("stepped down as leader: %s", why)
            self._notify(False)

    def _notify(self, leader: bool) -> None:
        if self.on_change is not None:
            try:
                self.on_change(leader)
            except Exception:  # noqa: BLE001 - a handler's bug must not cost the lease thread
                log.exception("leadership change handler failed")


def lease_for(store_url: str, ttl_s: float) -> AdvisoryLease | SingleLease:
    """The lease fitting the store: advisory lock on PostgreSQL, a single leader on SQLite."""
    if make_url(store_url).get_backend_name() == "postgresql":
        return AdvisoryLease(store_url, ttl_s)
    return SingleLease()
