"""A local PostgreSQL 15 cluster for the tests and the demo, as our own child process.

In the style of devtools.devservices: everything (data directory, unix socket, log, pid file) lives
under one state directory, TCP is bound to 127.0.0.1 only, so instances coexist with each other and
with a system-wide cluster.

    svc = start_postgres(Path(tempfile.mkdtemp()), free_port())   # waits until pg_isready says yes
    svc.url   # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
    svc.stop(); svc.restart(); svc.kill()

initdb and postgres refuse to run as root: as root both run as the `postgres` user (setpriv execs
the server in place, so the pid we hold is the postmaster's own). The state directory is then
handed to that user, so it must be reachable by it: use a fresh directory under /tmp, not one
inside a root-only tree such as pytest's tmp_path. The state directory itself is chowned to `postgres`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devtools.devservices import HOST, STOP_TIMEOUT_S, Service, ServiceError

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
READY_TIMEOUT_S = 60.0
RUN_AS = "postgres"


def pg_binary(name: str) -> str:
    """Path of a PostgreSQL server binary (they are not on PATH on Debian)."""
    for d in PG_BIN_DIRS:
        p = Path(d) / name
        if os.access(p, os.X_OK):
            return str(p)
    found = shutil.which(name)
    if not found:
        raise ServiceError(f"{name} not found in {', '.join(PG_BIN_DIRS)}: apt-get install postgresql")
    return found


def _as_user() -> pwd.struct_passwd | None:
    """The account to run as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError as exc:
        raise ServiceError(f"running as root needs a `{RUN_AS}` user (apt-get install postgresql)") from exc


def _pg_isready(port: int, socket_dir: Path) -> bool:
    # TCP alone is not enough: the server accepts connections while still "starting up".
    r = subprocess.run([pg_binary("pg_isready"), "-q", "-h", HOST, "-p", str(port), "-U", "postgres"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


@dataclass
class PostgresService(Service):
    """A Service whose url is a SQLAlchemy URL and whose stop is PostgreSQL's fast shutdown."""

    database: str = "postgres"
    user: str = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def socket_dir(self) -> Path:
        return self.state_dir / "socket"

    def wait_ready(self, timeout_s: float | None = None) -> None:
        super().wait_ready(timeout_s or READY_TIMEOUT_S)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        # SIGTERM is "smart" shutdown, which waits for every client (pooled connections) to go;
        # SIGINT is "fast": roll back open transactions, disconnect, checkpoint, exit.
        self._signal(signal.SIGINT, timeout_s)


def _chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, user.pw_uid, user.pw_gid)


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Every ancestor must be searchable by the server's user, or initdb fails obscurely."""
    for parent in path.parents:
        st = parent.stat()
        if not (st.st_mode & 0o001 or (st.st_uid == user.pw_uid and st.st_mode & 0o100)):
            raise ServiceError(f"{path} is not reachable by user {user.pw_name} ({parent} is mode "
                               f"{st.st_mode & 0o777:o}); put the state directory under /tmp")


def _initdb(data: Path, user: pwd.struct_passwd | None, log: Path) -> None:
    argv = [pg_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
            "--no-locale", "--no-sync"]
    kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    with open(log, "ab") as out:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                           cwd=data.parent, **kw)  # type: ignore[arg-type]
    if r.returncode != 0:
        raise ServiceError(f"initdb failed (code {r.returncode}); log {log}:\n"
                           + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))


def postgres_service(state_dir: Path, port: int, fsync: bool = True, detached: bool = False) -> PostgresService:
    """A not-yet-started cluster under state_dir/postgres (initdb runs now if there is no cluster).

    fsync=False trades crash safety of the whole machine for speed; a killed server (kill -9)
    still recovers from its WAL either way.
    """
    d = Path(state_dir).resolve() / "postgres"
    data, sock = d / "data", d / "socket"
    sock.mkdir(parents=True, exist_ok=True)
    user = _as_user()
    if user is not None:
        # The state directory is the service's own: hand it over (a fresh mkdtemp is root-only).
        os.chown(d.parent, user.pw_uid, user.pw_gid)
        _check_reachable(d, user)
        _chown_tree(d, user)
    if not (data / "PG_VERSION").exists():
        _initdb(data, user, d / "postgres.log")
    argv = [pg_binary("postgres"), "-D", str(data), "-p", str(port), "-c", f"listen_addresses={HOST}",
            "-c", f"unix_socket_directories={sock}", "-c", f"fsync={'on' if fsync else 'off'}",
            "-c", "logging_collector=off", "-c", "max_connections=100"]
    if user is not None:
        # setpriv execs in place (runuser would fork and keep itself as the process we signal).
        argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *argv]
    return PostgresService("postgres", port, argv, d, lambda p: _pg_isready(p, sock), detached)


def start_postgres(state_dir: Path, port: int, fsync: bool = True) -> PostgresService:
    """Start PostgreSQL on 127.0.0.1:port with its cluster under state_dir; returns once it accepts queries."""
    svc = postgres_service(state_dir, port, fsync=fsync)
    svc.start()
    return svc
