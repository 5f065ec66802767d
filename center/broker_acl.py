"""`envwatch broker acl`: a Mosquitto password file, ACL file and config snippet from the config.

Accounts (username -> what it may do; {p} is broker.topic_prefix, {id} broker.client_id and each
of broker.instances):

    {id}            ingest          read {p}/up/#, write {p}/internal/written (what it wrote)
    {id}-answers    answers         read {p}/enterprise/+/answer
    {id}-detect     alert publisher read and write {p}/alerts
    {id}-notify     outbox          write {p}/enterprise/+/notice, {p}/officer/+/ticket
    {id}-check      preflight       read $SYS/broker/version
    {id}-warning    early warning   read {p}/internal/written, write {p}/enterprise/+/notice
    station (MN, Station.password)      write {p}/up/station/{mn}
    device (id, Device.password)        write {p}/up/mobile/{id}
    enterprise (id, contact.mqtt_password)  read {p}/enterprise/{id}/notice, write {p}/enterprise/{id}/answer
    officer (id, Officer.mqtt_password) read {p}/officer/{id}/ticket

The service accounts share broker.password. The listener has `use_username_as_clientid true`:
the broker replaces every client id with the account's name, so a station's account that connects
with the service's client id (or another station's) gets a session of its own name and cannot
take over theirs. Hence one account per connection (ingest.mqtt.connection_id names them), and one
connection per account: a second connection with the same account replaces the first. With
broker.account_per_connection false: the one account broker.username with all the service's
topics, and no binding (a broker configured by hand; sessions can then be taken over).

Anything without a password, with a name Mosquitto cannot take, or with a username already used, is skipped with a
warning line.

The snippet also sets max_packet_size (broker.max_message_bytes), max_queued_messages and
autosave_interval.

Shared subscriptions: Mosquitto 2.0 grants the SUBSCRIBE and checks `read` against the topic of
each message it delivers, without the `$share/{group}/` prefix, so `read {p}/up/#` covers the
ingest's `$share/{group}/{p}/up/#` (tests/test_broker_acl.py shows it on the real broker).

Passwords are stored as Mosquitto 2.0 `$7$` hashes (PBKDF2-SHA512, the format mosquitto_passwd
writes), computed here so that no Mosquitto tools are needed where the config is generated.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from config.schema import Settings
from ingest.mqtt import (ANSWERS, CHECK, DETECT, INGEST, NOTIFY, SERVICE_ROLES, SYS_VERSION_TOPIC, WARNING,
                         connection_id)
from ingest.written import written_topic

log = logging.getLogger(__name__)

PASSWD_FILE, ACL_FILE, CONF_FILE = "passwd", "acl", "mosquitto-envwatch.conf"
# mosquitto_passwd's defaults in 2.0: 101 PBKDF2 iterations, 12-byte salt, SHA-512.
PBKDF2_ITERATIONS, SALT_BYTES = 101, 12
# Messages a disconnected persistent session may queue (per client): a day of a city's stations.
MAX_QUEUED_MESSAGES = 1_000_000
AUTOSAVE_S = 10
# A topic level must not hold MQTT wildcards or separators; a username must not hold ':' (passwd
# separator) or line breaks (both files are line-based).
_BAD_LEVEL = re.compile(r"[+#/\x00\r\n]")
_BAD_USER = re.compile(r"[:\x00\r\n]")


@dataclass(frozen=True)
class Account:
    """One broker user and the topics it may read and write."""

    role: str
    username: str
    password: str = field(repr=False)
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


@dataclass
class AclPlan:
    """The accounts to write, and one warning line per entry that was skipped."""

    accounts: list[Account] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, role: str, username: str | None, password: str | None,
            read: tuple[str, ...] = (), write: tuple[str, ...] = ()) -> None:
        """Add an account unless it cannot be one; then record why."""
        what = f"{role} {username!r}"
        if not username:
            self.warnings.append(f"{role}: no username configured: skipped")
        elif not password:
            self.warnings.append(f"{what}: no password configured: skipped (it cannot connect)")
        elif _BAD_USER.search(username) or (role != "service" and _BAD_LEVEL.search(username)):
            self.warnings.append(f"{what}: name contains a character Mosquitto cannot take here: skipped")
        elif any(a.username == username for a in self.accounts):
            self.warnings.append(f"{what}: username already used by another account: skipped")
        else:
            self.accounts.append(Account(role, username, password, read, write))


def _secret(v: object) -> str | None:
    return v.get_secret_value() if v is not None else None  # type: ignore[attr-defined]


def service_accounts(settings: Settings) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(username, read, write) of every connection of every envwatch instance on this broker.

    Per connection (broker.account_per_connection): for each instance id (broker.client_id and
    broker.instances) one account per role, named as ingest.mqtt.connection_id names the client,
    each with only the topics that connection uses. Otherwise the one account broker.username.
    """
    p, b = settings.broker.topic_prefix, settings.broker
    topics = {INGEST: ((f"{p}/up/#",), (written_topic(p),)),
              ANSWERS: ((f"{p}/enterprise/+/answer",), ()),
              DETECT: ((f"{p}/alerts",), (f"{p}/alerts",)),
              NOTIFY: ((), (f"{p}/enterprise/+/notice", f"{p}/officer/+/ticket")),
              CHECK: ((SYS_VERSION_TOPIC,), ()),
              WARNING: ((written_topic(p),), (f"{p}/enterprise/+/notice",))}
    if not b.account_per_connection:
        read = tuple(t for r in SERVICE_ROLES for t in topics[r][0])
        write = tuple(dict.fromkeys(t for r in SERVICE_ROLES for t in topics[r][1]))
        return [(b.username or "", read, write)]
    ids = dict.fromkeys([b.client_id, *b.instances])
    return [(connection_id(b, role, i), *topics[role]) for i in ids for role in SERVICE_ROLES]


def plan(settings: Settings) -> AclPlan:
    """Every account the config describes, in a stable order (service accounts first)."""
    p, b, out = settings.broker.topic_prefix, settings.broker, AclPlan()
    if b.password is None or not (b.account_per_connection or b.username):
        out.warnings.append("broker.password (and, with account_per_connection false, broker.username) not "
                            "set: no service account, so envwatch itself cannot connect to a broker without "
                            "anonymous access")
    else:
        for username, read, write in service_accounts(settings):
            out.add("service", username, _secret(b.password), read=read, write=write)
    for e in settings.registry.enterprises:
        for o in e.outlets:
            for s in o.stations:
                out.add("station", s.mn, _secret(s.password), write=(f"{p}/up/station/{s.mn}",))
    for d in settings.registry.devices:
        out.add("device", d.id, _secret(d.password), write=(f"{p}/up/mobile/{d.id}",))
    for e in settings.registry.enterprises:
        out.add("enterprise", e.id, _secret(e.contact.mqtt_password),
                read=(f"{p}/enterprise/{e.id}/notice",), write=(f"{p}/enterprise/{e.id}/answer",))
    for off in settings.notify.officers:
        out.add("officer", off.id, _secret(off.mqtt_password), read=(f"{p}/officer/{off.id}/ticket",))
    return out


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A Mosquitto 2.0 password hash: `$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>`."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def passwd_text(accounts: list[Account]) -> str:
    """The password file: one `username:hash` line per account."""
    return "".join(f"{a.username}:{hash_password(a.password)}\n" for a in accounts)


def acl_text(accounts: list[Account]) -> str:
    """The ACL file: a `user` block per account; no anonymous or pattern rules (deny by default)."""
    lines = ["# Generated by `envwatch broker acl`; edit the envwatch config and regenerate instead.\n"]
    for a in accounts:
        lines.append(f"\n# {a.role}\nuser {a.username}\n")
        lines += [f"topic read {t}\n" for t in a.read if t not in a.write]
        lines += [f"topic {'readwrite' if t in a.read else 'write'} {t}\n" for t in a.write]
    return "".join(lines)


def mosquitto_conf(settings: Settings, passwd_path: Path, acl_path: Path, *, bind: str | None = None,
                   server_cert: str | None = None, server_key: str | None = None) -> str:
    """A mosquitto.conf snippet: one listener on broker.port (TLS when broker.tls is set), no anonymous.

    broker.tls holds the clients' side (CA, client certificate); the broker's own certificate and
    key are server_cert / server_key, or placeholders to fill in.
    """
    b = settings.broker
    text = ("# envwatch broker security, generated by `envwatch broker acl`. Include it in mosquitto.conf\n"
            "# (or append it); the files must be readable by the user mosquitto runs as.\n"
            "# Global: the largest packet any client may send (a bigger one is refused before it is read\n"
            "# and its sender disconnected; MQTT v5 clients are told the limit in CONNACK), and the\n"
            "# queue a persistent session (the ingest's) may build while away: the default 1000 drops\n"
            "# the rest silently.\n"
            f"max_packet_size {b.max_message_bytes}\n"
            f"max_queued_messages {MAX_QUEUED_MESSAGES}\n"
            "# With persistence (Debian's mosquitto.conf turns it on), save the sessions every 10 s rather\n"
            "# than every 30 min: after a crash the broker still knows the ingest's subscription.\n"
            f"autosave_interval {AUTOSAVE_S}\n"
            f"listener {b.port}{' ' + bind if bind else ''}\n"
            "allow_anonymous false\n"
            f"password_file {Path(passwd_path).resolve()}\n"
            f"acl_file {Path(acl_path).resolve()}\n")
    if b.account_per_connection:
        text += ("# Each account's client id is its username: no account can take over another's session.\n"
                 "use_username_as_clientid true\n")
    if b.tls is not None:
        ca = Path(b.tls.ca_file).resolve() if b.tls.ca_file else "/etc/mosquitto/ca_certificates/ca.crt"
        text += ("# TLS on this listener: clients verify the broker with broker.tls.ca_file.\n"
                 f"cafile {ca}\n"
                 f"certfile {server_cert or '/etc/mosquitto/certs/server.crt'}\n"
                 f"keyfile {server_key or '/etc/mosquitto/certs/server.key'}\n"
                 "tls_version tlsv1.2\n"
                 "# require_certificate true   # only when every client (stations too) has a certificate\n")
    return text


def _write(path: Path, text: str, mode: int) -> None:
    # Write-then-rename: a broker reloading on SIGHUP never reads a half-written file.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
    os.replace(tmp, path)


def write_acl(settings: Settings, out_dir: Path | str, *, bind: str | None = None,
              server_cert: str | None = None, server_key: str | None = None,
              warn: Callable[[str], None] = log.warning) -> tuple[Path, Path]:
    """Write DIR/passwd (mode 0600), DIR/acl and DIR/mosquitto-envwatch.conf; returns (passwd, acl).

    Every skipped entry is reported through `warn`, one line each.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = plan(settings)
    for w in p.warnings:
        warn(w)
    passwd, acl = out / PASSWD_FILE, out / ACL_FILE
    _write(passwd, passwd_text(p.accounts), 0o600)
    _write(acl, acl_text(p.accounts), 0o644)
    conf = mosquitto_conf(settings, passwd, acl, bind=bind, server_cert=server_cert, server_key=server_key)
    _write(out / CONF_FILE, conf, 0o644)
    return passwd, acl


def cli_acl(settings: Settings, out_dir: Path | str, *, bind: str | None = None,
            server_cert: str | None = None, server_key: str | None = None) -> int:
    """`envwatch broker acl`: write the files, print warnings and a summary; the number of accounts."""
    from rich.console import Console

    err, con = Console(stderr=True, soft_wrap=True), Console(soft_wrap=True)
    passwd, acl = write_acl(settings, out_dir, bind=bind, server_cert=server_cert, server_key=server_key,
                            warn=lambda w: err.print(f"[yellow]warning[/yellow] {w}", highlight=False))
    accounts = plan(settings).accounts
    counts = {r: sum(a.role == r for a in accounts) for r in ("service", "station", "device", "enterprise", "officer")}
    con.print(", ".join(f"{n} {r}" for r, n in counts.items()) + " account(s)", highlight=False)
    con.print(f"wrote {passwd}, {acl}, {Path(out_dir) / CONF_FILE}", highlight=False)
    return len(accounts)
