"""Local Mosquitto and InfluxDB 1.x for the demo and the tests, as our own child processes.

Everything a service writes (config, data, log, pid file) lives under one state directory, and
every socket is bound to 127.0.0.1, so several instances (one per test session, one for the
demo) coexist with each other and with any system-wide service on the default ports.

    svc = start_influxd(Path("/tmp/x"), free_port())   # waits until GET /ping answers 204
    svc.url, svc.pid; svc.stop(); svc.restart(); svc.kill()

`ensure_up` / `ensure_down` back `envwatch services up/down`: detached processes found again
through pid files, so a second `up` reuses what is running.
"""

from __future__ import annotations

import atexit
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT_S = {"mosquitto": 15.0, "influxd": 60.0}
STOP_TIMEOUT_S = 20.0
_INSTALL_HINT = {"mosquitto": "apt-get install mosquitto", "influxd": "apt-get install influxdb"}
_handed_out: set[int] = set()


class ServiceError(RuntimeError):
    """A local service could not be found, started or stopped; the message says which and why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (not handed out before by this process)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        # The kernel may hand the same ephemeral port out twice in a row; two services must not share.
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise ServiceError("no free TCP port on 127.0.0.1")


def _port_bindable(port: int, host: str = HOST) -> bool:
    """True when this process could listen on host:port now (`envwatch run`/`demo` check theirs with it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _tcp_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _influx_pings(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=1.0)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().status == 204
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _pid_runs(pid: int, binary: str) -> bool:
    """Whether `pid` is alive and runs `binary` (a recycled pid belongs to something else)."""
    if not _pid_alive(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return True
    return Path(argv0).name == binary


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
    if not found:
        raise ServiceError(f"{name} not found: run `make install` ({_INSTALL_HINT[name]})")
    return found


@dataclass
class Service:
    """One running server: where it listens, its process, and how to stop or restart it."""

    name: str  # mosquitto | influxd
    port: int
    argv: list[str]
    state_dir: Path  # this service's own directory (config, data, log, pid file)
    ready: Callable[[int], bool] = field(repr=False)
    detached: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _pid: int | None = field(default=None, repr=False)  # when found via pid file, not started by us
    host: str = HOST

    @property
    def url(self) -> str:
        scheme = "mqtt" if self.name == "mosquitto" else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else self._pid

    @property
    def log_path(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self._pid is not None and _pid_runs(self._pid, Path(self.argv[0]).name)

    def start(self) -> "Service":
        """Launch the process and block until it serves; raises ServiceError with the log's tail."""
        if self.running():
            return self
        if not _port_bindable(self.port):
            # Without this check the readiness probe could succeed against someone else's server.
            raise ServiceError(f"{self.name}: port {self.host}:{self.port} is already in use by another process")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.state_dir, start_new_session=self.detached)
        self._pid = None
        self.pid_path.write_text(f"{self.proc.pid}\n")
        if not self.detached:
            _children.append(self)
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_s or READY_TIMEOUT_S[self.name])
        while time.monotonic() < deadline:
            if not self.running():
                code = self.proc.returncode if self.proc else "?"
                raise ServiceError(f"{self.name} exited (code {code}) before serving on {self.host}:{self.port}; "
                                   f"log {self.log_path}:\n{_tail(self.log_path)}")
            if self.ready(self.port):
                return
            time.sleep(0.05)
        raise ServiceError(f"{self.name} did not serve on {self.host}:{self.port} within "
                           f"{timeout_s or READY_TIMEOUT_S[self.name]:.0f}s; log {self.log_path}:\n"
                           f"{_tail(self.log_path)}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM and wait (SIGKILL if it does not exit in time). A stopped service stays stopped."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as the service's data is concerned."""
        self._signal(signal.SIGKILL, STOP_TIMEOUT_S)

    def restart(self) -> "Service":
        """Stop if running, then start again on the same port with the same data."""
        self.stop()
        return self.start()

    def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        pid = self.pid
        if pid is None or not self.running():
            self._forget()
            return
        os.kill(pid, sig)
        if not self._wait_exit(timeout_s):
            os.kill(pid, signal.SIGKILL)
            self._wait_exit(STOP_TIMEOUT_S)
        self._forget()

    def _wait_exit(self, timeout_s: float) -> bool:
        if self.proc is not None:
            try:
                self.proc.wait(timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                return True
            time.sleep(0.05)
        return False

    def _forget(self) -> None:
        self.pid_path.unlink(missing_ok=True)
        if self in _children:
            _children.remove(self)


# Attached (non-detached) services die with the Python process that started them.
_children: list[Service] = []


@atexit.register
def _stop_children() -> None:
    for svc in list(_children):
        try:
            svc.stop(timeout_s=5)
        except OSError:
            pass


def _user_line() -> str:
    # Started as root, mosquitto drops to user `mosquitto`, which cannot write our state dir.
    return f"user {pwd.getpwuid(os.getuid()).pw_name}\n"


def mosquitto_service(state_dir: Path, port: int, extra_conf: str = "", detached: bool = False) -> Service:
    """A not-yet-started Mosquitto whose config and persistence live under state_dir/mosquitto."""
    d = Path(state_dir).resolve() / "mosquitto"
    (d / "data").mkdir(parents=True, exist_ok=True)
    conf = d / "mosquitto.conf"
    conf.write_text(
        _user_line()
        + f"listener {port} {HOST}\n"
        "allow_anonymous true\n"
        # QoS 1 persistent sessions (the ingest's) must survive a broker restart...
        "persistence true\n"
        f"persistence_location {d / 'data'}/\n"
        "autosave_interval 1\n"
        # ...and must not drop messages while the ingest is away (outage backlog).
        "max_inflight_messages 1000\n"
        "max_queued_messages 1000000\n"
        "max_queued_bytes 0\n"
        "set_tcp_nodelay true\n"
        # A log file (flushed per line, unlike redirected stdout) so that errors show in the tail.
        f"log_dest file {d / 'mosquitto.log'}\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
        "connection_messages true\n"
        + extra_conf + ("\n" if extra_conf and not extra_conf.endswith("\n") else ""))
    return Service("mosquitto", port, [_binary("mosquitto"), "-c", str(conf)], d, _tcp_answers, detached)


def influxd_service(state_dir: Path, port: int, detached: bool = False) -> Service:
    """A not-yet-started influxd 1.x whose config, meta, data and WAL live under state_dir/influxd."""
    d = Path(state_dir).resolve() / "influxd"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "influxdb.conf"
    rpc_port = _config_rpc_port(conf) or free_port()
    conf.write_text(f"""\
reporting-disabled = true
# The RPC (backup/restore) listener, default :8088, moved so that instances coexist.
bind-address = "{HOST}:{rpc_port}"

[meta]
  dir = "{d / 'meta'}"
  logging-enabled = false

[data]
  dir = "{d / 'data'}"
  wal-dir = "{d / 'wal'}"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  # No _internal database: it would write every 10 s and show up in SHOW DATABASES.
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  max-body-size = 0

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  log-enabled = false
""")
    return Service("influxd", port, [_binary("influxd"), "run", "-config", str(conf)], d, _influx_pings, detached)


def _config_rpc_port(conf: Path) -> int | None:
    """The RPC port of an existing config, so a restart or re-`up` keeps it."""
    try:
        for line in conf.read_text().splitlines():
            if line.startswith("bind-address"):
                return int(line.rsplit(":", 1)[1].strip('" '))
    except (OSError, ValueError):
        pass
    return None


def start_mosquitto(state_dir: Path, port: int, extra_conf: str = "") -> Service:
    """Start Mosquitto on 127.0.0.1:port with persistence under state_dir; returns once it accepts TCP."""
    return mosquitto_service(state_dir, port, extra_conf).start()


def start_influxd(state_dir: Path, port: int) -> Service:
    """Start influxd 1.x on 127.0.0.1:port with all data under state_dir; returns once /ping gives 204."""
    return influxd_service(state_dir, port).start()


def _ensure(svc: Service) -> str:
    """Reuse the service recorded in its pid file if it still serves on the port, else start it."""
    binary = Path(svc.argv[0]).name
    try:
        pid = int(svc.pid_path.read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and _pid_runs(pid, binary):
        if svc.ready(svc.port):
            svc._pid = pid
            return f"{svc.name} running on {svc.host}:{svc.port} (pid {pid}, reused)"
        # Ours, but not serving on the requested port (other port, or hung): replace it.
        svc._pid = pid
        svc.stop()
    svc.pid_path.unlink(missing_ok=True)
    svc.start()
    return f"{svc.name} running on {svc.host}:{svc.port} (pid {svc.pid}, started; log {svc.log_path})"


def ensure_up(state_dir: Path, mqtt_port: int = 1883, influx_port: int = 8086) -> Iterator[str]:
    """Make sure a detached Mosquitto and influxd serve on the given ports; one status line each."""
    state_dir = Path(state_dir)
    yield _ensure(mosquitto_service(state_dir, mqtt_port, detached=True))
    # The influx config is rewritten with its port; keep the running one's config if reused.
    yield _ensure(influxd_service(state_dir, influx_port, detached=True))


def ensure_down(state_dir: Path) -> Iterator[str]:
    """Stop the services `ensure_up` started in state_dir; one status line each."""
    for name in ("mosquitto", "influxd"):
        d = Path(state_dir).resolve() / name
        try:
            pid = int((d / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            yield f"{name} not running (no pid file in {d})"
            continue
        if not _pid_runs(pid, name):
            (d / f"{name}.pid").unlink(missing_ok=True)
            yield f"{name} not running (stale pid {pid})"
            continue
        svc = Service(name, 0, [name], d, lambda _p: False, detached=True, _pid=pid)
        svc.stop()
        yield f"{name} stopped (pid {pid})"
