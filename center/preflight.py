"""Start-up checks: is each dependency (broker, InfluxDB, case store) there, and if not, what to do.

    problems = check_dependencies(settings)            # one Problem per dependency, ok or not
    require_dependencies(settings)                     # raises DependencyError listing what is missing

Each failed check says which dependency, where, why, and what to do, e.g.
"InfluxDB at http://127.0.0.1:8086 not reachable (connection refused): start it (`envwatch services
up`) or fix influxdb.url". The same checks can back the readiness endpoint.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from config.schema import BrokerSettings, InfluxSettings, Settings

START_HINT = "start it (`envwatch services up`)"
log = logging.getLogger("envwatch.preflight")


@dataclass(frozen=True)
class Problem:
    """The outcome of one dependency check; `detail` names the dependency and, if not ok, the remedy."""

    name: str
    ok: bool
    detail: str


class DependencyError(RuntimeError):
    """Raised by require_dependencies; the message lists every failed check."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("missing dependencies:\n" + "\n".join(f"  {p.name}: {p.detail}" for p in problems))


def _why(exc: BaseException) -> str:
    """A short reason for a network error, the words an operator recognises."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError, httpx.TimeoutException)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and isinstance(exc, (httpx.HTTPError, OSError)) and cause is not exc:
        # httpx wraps httpcore's error, which wraps the socket's: the innermost names the cause.
        inner = _why(cause)
        if inner in ("connection refused", "timed out", "host name not found"):
            return inner
    if isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower():
        return "connection refused"
    return str(exc) or type(exc).__name__


def check_broker(broker: BrokerSettings, timeout_s: float = 5.0) -> Problem:
    """TCP to broker.host:port, then an MQTT CONNECT with the configured credentials and TLS.

    Also reads the broker's version ($SYS/broker/version) and logs a warning, repeated in the
    detail, when the configured subscription would lose readings on it.
    """
    from ingest.mqtt import (CHECK, MQTTConfigError, connection_id, per_connection_login, probe,
                             shared_subscription_warning)

    where = f"MQTT broker at {broker.host}:{broker.port}"
    try:
        socket.create_connection((broker.host, broker.port), timeout=timeout_s).close()
    except OSError as exc:
        return Problem("broker", False, f"{where} not reachable ({_why(exc)}): {START_HINT} "
                                        "or fix broker.host / broker.port")
    try:
        reason, version = probe(broker, timeout_s)
    except MQTTConfigError as exc:
        return Problem("broker", False, f"{where}: {exc}")
    if reason is None:
        who = connection_id(broker, CHECK) if per_connection_login(broker) else broker.username or "anonymous"
        detail = f"{where} ({version or 'version not published'}): connected as {who}{' over TLS' if broker.tls else ''}"
        warning = shared_subscription_warning(broker, version)
        if warning:
            log.warning("%s", warning)
            detail += f"; WARNING: {warning}"
        return Problem("broker", True, detail)
    if "authoriz" in reason or "user name or password" in reason:
        hint = ("check broker.username / broker.password and the broker's password file "
                "(`envwatch broker acl` writes it; with account_per_connection each connection logs "
                "in as its client id)")
    elif "SSL" in reason or "CERTIFICATE" in reason or "CONNACK" in reason:
        hint = "check broker.tls (ca_file, cert_file, key_file) and whether this port speaks TLS"
    else:
        hint = "check the broker's log"
    return Problem("broker", False, f"{where} refused the MQTT connection ({reason}): {hint}")


def _influx_headers(s: InfluxSettings) -> dict[str, str]:
    return {"Authorization": f"Token {s.token.get_secret_value()}"} if s.token else {}


def _influx_auth(s: InfluxSettings) -> httpx.BasicAuth | None:
    if not s.username:
        return None
    return httpx.BasicAuth(s.username, s.password.get_secret_value() if s.password else "")


def check_influxdb(s: InfluxSettings, timeout_s: float = 5.0) -> Problem:
    """GET /ping, then whether the configured database (1.x, 3.x) or bucket (2.x) exists."""
    url = s.url.rstrip("/")
    where = f"InfluxDB at {url}"
    with httpx.Client(timeout=timeout_s, auth=_influx_auth(s), headers=_influx_headers(s)) as http:
        try:
            ping = http.get(f"{url}/ping")
        except httpx.HTTPError as exc:
            return Problem("influxdb", False, f"{where} not reachable ({_why(exc)}): {START_HINT} or fix influxdb.url")
        if ping.status_code not in (200, 204):
            return Problem("influxdb", False, f"{where} answered /ping with HTTP {ping.status_code}: "
                                              "is influxdb.url an InfluxDB server?")
        version = ping.headers.get("X-Influxdb-Version", "?")
        try:
            found, hint = _database_exists(http, url, s, version)
        except httpx.HTTPError as exc:
            return Problem("influxdb", False, f"{where} failed to list databases ({_why(exc)})")
        except PermissionError as exc:
            return Problem("influxdb", False, f"{where} refused the credentials ({exc}): fix influxdb.username / "
                                              "influxdb.password / influxdb.token")
    if found is None or found:
        state = "exists" if found else "will be created by the ingest"
        return Problem("influxdb", True, f"{where} (version {version}), database {s.database!r} {state}")
    return Problem("influxdb", False, f"{where}: database {s.database!r} does not exist: {hint} "
                                      "or fix influxdb.database")


def _database_exists(http: httpx.Client, url: str, s: InfluxSettings, version: str) -> tuple[bool | None, str]:
    """True/False; None when missing but 1.x, where the ingest creates it (CREATE DATABASE)."""
    major = version.strip().lower().removeprefix("v")[:1] if s.api == "auto" else s.api[-1]
    if major == "2":
        r = http.get(f"{url}/api/v2/buckets", params={"name": s.database, **({"org": s.org} if s.org else {})})
        _raise_auth(r)
        return bool(r.json().get("buckets")), f"create it (`influx bucket create -n {s.database} -o {s.org}`)"
    r = http.get(f"{url}/query", params={"q": "SHOW DATABASES"})
    _raise_auth(r)
    names = {v[0] for res in r.json().get("results", []) for ser in res.get("series", []) for v in ser.get("values", [])}
    if s.database in names:
        return True, ""
    if major == "1":
        return None, ""
    return False, f"create it (`influxdb3 create database {s.database}`)"


def _raise_auth(r: httpx.Response) -> None:
    if r.status_code in (401, 403):
        raise PermissionError(f"HTTP {r.status_code}")
    r.raise_for_status()


def check_store(settings: Settings) -> Problem:
    """Connect to the case store through the same engine the service uses, and run SELECT 1."""
    from notify.store import current_revision, make_engine

    try:
        url = make_url(settings.store_url())
    except Exception as exc:  # noqa: BLE001 - sqlalchemy.exc.ArgumentError and friends
        return Problem("store", False, f"store.url is not a database URL ({exc}): fix store.url")
    shown, sqlite = url.render_as_string(hide_password=True), url.get_backend_name() == "sqlite"
    engine = None
    try:
        engine = make_engine(settings.store_url())
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        revision = current_revision(engine)
    except Exception as exc:  # noqa: BLE001 - bad URL, missing driver, server down: report, do not crash
        why = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        hint = ("check that ingest.state_dir is a writable directory or fix store.url" if sqlite
                else "start PostgreSQL or fix store.url")
        return Problem("store", False, f"case store {shown} not usable ({why}): {hint}")
    finally:
        if engine is not None:
            engine.dispose()
    state = f"at revision {revision}" if revision else "empty (the schema is created when the service starts)"
    return Problem("store", True, f"case store {shown}: {state}")


def check_dependencies(settings: Settings, timeout_s: float = 5.0) -> list[Problem]:
    """One Problem per dependency, in the order broker, influxdb, store; all are checked."""
    return [check_broker(settings.broker, timeout_s), check_influxdb(settings.influxdb, timeout_s),
            check_store(settings)]


def require_dependencies(settings: Settings, timeout_s: float = 5.0) -> list[Problem]:
    """check_dependencies, raising DependencyError with every failed check's message if any failed."""
    problems = check_dependencies(settings, timeout_s)
    failed = [p for p in problems if not p.ok]
    if failed:
        raise DependencyError(failed)
    return problems


def cli_check(settings: Settings) -> int:
    """`envwatch check`: one line per dependency; exit status 0 when all are there, else 1."""
    from rich.console import Console

    con = Console(highlight=False, soft_wrap=True)
    problems = check_dependencies(settings)
    for p in problems:
        con.print(f"{'[green]ok[/green]' if p.ok else '[red]missing[/red]'} {p.name}: {p.detail}")
    return 0 if all(p.ok for p in problems) else 1
