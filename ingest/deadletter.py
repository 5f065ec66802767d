"""Dead letters: every payload the ingest could not use, byte-exact, with why.

Nothing that reaches the ingest is dropped silently: a payload is either turned into lines for
InfluxDB or stored here (raw bytes, topic, reason, human detail), in the same group commit that
lets the consumer acknowledge it. A payload longer than `max_raw_bytes` (ingest.deadletter_max_bytes,
64 KiB) keeps only that prefix, with the full payload's size and SHA-256, so that a flood of
megabyte payloads cannot fill the disk; every other payload is kept byte-exact (size and SHA-256
are stored for all). Operators read them with `envwatch deadletters list/count`;
a fixed decoder can re-publish them later from `raw`.

One SQLite file, {state_dir}/deadletters.sqlite, shared by all ingest workers of a deployment:
WAL mode lets them write concurrently (one writer at a time, readers never block) and
busy_timeout makes a worker wait for another's commit instead of failing.

Delivery is at-least-once like the rest of the ingest: a worker killed between this commit and
its MQTT acknowledgement gets the message again and records it twice. Rows are evidence of bad
input, not measurements, so a rare duplicate is preferable to a lost one.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from config.schema import Settings
from ingest.buffer import bound_wal
from ingest.model import Reason

FILE_NAME = "deadletters.sqlite"
MAX_RAW_BYTES = 64 * 1024  # default prefix kept of an oversized payload (ingest.deadletter_max_bytes)
RAW_SHOWN = 120  # characters of the escaped raw payload shown by `deadletters list`

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letter (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,   -- ISO-8601 UTC, when the ingest received the payload
    topic       TEXT NOT NULL,   -- MQTT topic; 'influxdb' for lines InfluxDB refused
    reason      TEXT NOT NULL,   -- an ingest.model.Reason value
    detail      TEXT NOT NULL,
    raw         BLOB NOT NULL,   -- the payload, or its first max_raw_bytes when it was longer
    size        INTEGER,         -- bytes of the whole payload (NULL in rows of older versions)
    sha256      TEXT             -- hex SHA-256 of the whole payload
);
CREATE INDEX IF NOT EXISTS dead_letter_reason ON dead_letter (reason, id);
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected payload. `id` is set once stored."""

    topic: str
    reason: Reason | str
    detail: str
    raw: bytes
    received_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    id: int | None = None
    size: int | None = None  # of the whole payload, when read back from the store
    sha256: str | None = None

    @property
    def truncated(self) -> bool:
        """Whether `raw` is only a prefix of what was received (see `size`)."""
        return self.size is not None and self.size > len(self.raw)


def deadletter_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / FILE_NAME


class DeadLetters:
    """The dead-letter store. Thread-safe: the consumer's commit thread and the InfluxDB writer
    thread share it, and a lock keeps their transactions on the one connection apart."""

    def __init__(self, path: str | Path, max_raw_bytes: int = MAX_RAW_BYTES) -> None:
        self.path = Path(path)
        self.max_raw_bytes = max_raw_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        bound_wal(self._db)
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(dead_letter)")}
        for col, kind in (("size", "INTEGER"), ("sha256", "TEXT")):  # files of older versions
            if col not in have:
                self._db.execute(f"ALTER TABLE dead_letter ADD COLUMN {col} {kind}")
        self._lock = threading.Lock()

    def add_many(self, letters: Iterable[DeadLetter]) -> int:
        """Store all `letters` in one transaction; returns how many. Durable once it returns."""
        cap = self.max_raw_bytes
        rows = [(_iso_utc(d.received_at), d.topic, str(d.reason), d.detail, bytes(d.raw[:cap]), len(d.raw),
                 hashlib.sha256(d.raw).hexdigest()) for d in letters]
        if not rows:
            return 0
        with self._lock, self._db:  # the connection as context manager: COMMIT, or ROLLBACK on error
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO dead_letter (received_at, topic, reason, detail, raw, size, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def add(self, letter: DeadLetter) -> None:
        self.add_many([letter])

    def count_by_reason(self) -> dict[str, int]:
        """Number of dead letters per reason (only reasons that occur)."""
        with self._lock:
            rows = self._db.execute("SELECT reason, COUNT(*) FROM dead_letter GROUP BY reason ORDER BY reason")
            return {r: n for r, n in rows.fetchall()}

    def list(self, reason: Reason | str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first, optionally only those of one reason."""
        sql = "SELECT id, received_at, topic, reason, detail, raw, size, sha256 FROM dead_letter"
        args: tuple[object, ...] = ()
        if reason is not None:
            sql += " WHERE reason = ?"
            args = (str(reason),)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [DeadLetter(topic=t, reason=_reason(r), detail=d, raw=bytes(raw),
                           received_at=datetime.fromisoformat(at), id=i, size=size, sha256=sha)
                for i, at, t, r, d, raw, size, sha in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "DeadLetters":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _iso_utc(t: datetime) -> str:
    if t.tzinfo is None:  # naive means UTC here, as everywhere in the ingest
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _reason(value: str) -> Reason | str:
    # A newer version may have stored a reason this one does not know: keep the text.
    try:
        return Reason(value)
    except ValueError:
        return value


def escape_raw(raw: bytes, limit: int = RAW_SHOWN) -> str:
    """A payload as one printable line: UTF-8 where valid, \\xNN, \\r, \\n, \\0 escapes, truncated."""
    text = raw.decode("utf-8", "backslashreplace")
    out = "".join(_escape_char(c) for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _escape_char(c: str) -> str:
    if c == "\r":
        return "\\r"
    if c == "\n":
        return "\\n"
    if c == "\t":
        return "\\t"
    if not c.isprintable():
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
    return c


def _open_existing(settings: Settings, console: Console) -> DeadLetters | None:
    path = deadletter_path(settings.ingest.state_dir)
    if not path.exists():
        console.print(f"no dead letters: {path} does not exist (the ingest has not run with this state_dir)")
        return None
    return DeadLetters(path)


def cli_list(settings: Settings, reason: str | None = None, limit: int = 20, console: Console | None = None) -> None:
    """`envwatch deadletters list`: the newest dead letters as a table."""
    console = console or Console()
    if reason is not None and reason not in {r.value for r in Reason}:
        Console(stderr=True).print(f"[red]unknown reason {reason!r}[/red]; one of: "
                                   + ", ".join(r.value for r in Reason))
        sys.exit(2)
    store = _open_existing(settings, console)
    if store is None:
        return
    with store:
        letters = store.list(reason=reason, limit=limit)
    table = Table(title=f"dead letters, newest first (at most {limit})", caption=str(store.path))
    for col in ("id", "received (UTC)", "reason"):
        table.add_column(col, no_wrap=True)
    for col, ratio in (("topic", 2), ("detail", 3), ("raw", 4)):
        table.add_column(col, overflow="fold", ratio=ratio)
    for d in letters:
        # Text(), not markup: payloads and details may contain '[' that rich would interpret.
        raw = escape_raw(d.raw) + (f" [first {len(d.raw)} of {d.size} bytes, sha256 {d.sha256}]"
                                   if d.truncated else "")
        table.add_row(str(d.id), d.received_at.strftime("%Y-%m-%d %H:%M:%S"), Text(str(d.reason)),
                      Text(d.topic), Text(d.detail), Text(raw))
    console.print(table)


def cli_count(settings: Settings, console: Console | None = None) -> None:
    """`envwatch deadletters count`: dead letters per reason, and the total."""
    console = console or Console()
    store = _open_existing(settings, console)
    if store is None:
        return
    with store:
        counts = store.count_by_reason()
    table = Table(title="dead letters by reason", caption=str(store.path))
    table.add_column("reason")
    table.add_column("count", justify="right")
    for r, n in counts.items():
        table.add_row(Text(r), str(n))
    table.add_row(Text("total", style="bold"), str(sum(counts.values())))
    console.print(table)
