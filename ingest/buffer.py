"""The ingest's disk buffer: line-protocol lines that are durable but not yet in InfluxDB.

Why it exists: an MQTT message is acknowledged only once its lines are safe on disk here, so the
broker may forget it; InfluxDB can then be slow, restarted or down for hours without the ingest
losing a reading or holding thousands of unacknowledged messages at the broker.

Storage is SQLite in WAL mode; each row is one *chunk* (the lines of one group commit), so an
append is a single INSERT and a commit, whatever the number of lines.

Durability of `append` once it returns:
    synchronous="NORMAL" (default): survives a crash or `kill -9` of the process (the WAL frame is
        written to the OS before the commit returns); the last commits may be lost on power loss
        or a kernel crash.
    synchronous="FULL": also survives power loss (fsync of the WAL on every commit), at the cost of
        one fsync per group commit.

One file per worker process: two workers must not drain the same rows, so the file name carries
the MQTT client id (see `buffer_path`). A worker restarted with the same client id finds its
predecessor's rows and writes them first.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Literal

Synchronous = Literal["NORMAL", "FULL"]
WAL_MAX_BYTES = 4 << 20  # the write-ahead log is checkpointed and truncated at about this size

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    n_lines INTEGER NOT NULL,
    body    TEXT    NOT NULL   -- the lines joined by \\n
)
"""


def _utf8_len(text: str) -> int:
    """len(text.encode()) without encoding ASCII text (isascii() is a flag lookup)."""
    return len(text) if text.isascii() else len(text.encode())


def _marks(n: int) -> str:
    return ",".join("?" * n)


def bound_wal(db: sqlite3.Connection, max_bytes: int = WAL_MAX_BYTES) -> None:
    """Keep a WAL-mode file's write-ahead log near `max_bytes`: checkpoint every that many bytes
    of pages (SQLite's default, 1000 pages, is 16 MB with our 16 KiB pages) and truncate the log
    back to that size after a checkpoint (by default it never shrinks)."""
    page = int(db.execute("PRAGMA page_size").fetchone()[0])
    db.execute(f"PRAGMA wal_autocheckpoint={max(1, max_bytes // page)}")
    db.execute(f"PRAGMA journal_size_limit={max_bytes}")


def buffer_path(state_dir: str | Path, client_id: str) -> Path:
    """Where the worker with MQTT `client_id` keeps its buffer (client id made file-name safe)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", client_id)
    return Path(state_dir) / f"buffer-{safe}.sqlite"


class DiskBuffer:
    """A durable FIFO of line-protocol lines, read in batches and removed once written.

    Thread-safe: the consumer's commit thread appends while the writer thread peeks and removes.
    `size_bytes` is the size of the lines held (what `max_bytes` bounds), not of the file, which
    SQLite reuses but does not shrink.
    """

    def __init__(self, path: str | Path, max_bytes: int, synchronous: Synchronous = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a commit is exactly one append.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # A new file gets 16 KiB pages (an existing one keeps its own): a chunk of a few thousand
        # lines is ~100 overflow pages instead of ~400, which appending and deleting walk one by
        # one (-35% CPU for 5000-line chunks, no cost for small ones).
        self._db.execute("PRAGMA page_size=16384")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=10000")
        bound_wal(self._db)
        self._db.execute(_SCHEMA)
        row = self._db.execute("SELECT COALESCE(SUM(n_lines), 0), COALESCE(SUM(length(CAST(body AS BLOB))), 0) "
                               "FROM chunk").fetchone()
        # Kept in memory: one process owns the file, and SUM() over the table per call would cost.
        self._depth, self._size = int(row[0]), int(row[1])
        # (lines, bytes) of the chunks peek() returned, so that remove() need not read their
        # bodies again to measure them.
        self._peeked: dict[int, tuple[int, int]] = {}

    def append(self, lines: list[str]) -> None:
        """Store `lines` as one chunk; durable (see module doc) once this returns.

        Lines must not contain a newline (line protocol cannot carry one either): ValueError.
        """
        if not lines:
            return
        body = "\n".join(lines)
        if body.count("\n") != len(lines) - 1:
            raise ValueError("a line-protocol line contains a newline")
        size = _utf8_len(body)
        with self._lock:
            self._db.execute("INSERT INTO chunk (n_lines, body) VALUES (?, ?)", (len(lines), body))
            self._depth += len(lines)
            self._size += size

    def peek(self, max_lines: int) -> tuple[list[int], list[str]]:
        """The oldest chunks, whole, up to `max_lines` lines (at least one chunk if any): (ids, lines)."""
        lines: list[str] = []
        with self._lock:
            ids = self._oldest(max_lines)
            if ids:
                # The oldest chunks are those up to the last id taken.
                for cid, n, body in self._db.execute(
                        "SELECT id, n_lines, body FROM chunk WHERE id <= ? ORDER BY id", (ids[-1],)):
                    lines += body.split("\n")
                    self._peeked[cid] = (n, _utf8_len(body))
        return ids, lines

    def _oldest(self, max_lines: int) -> list[int]:
        # Ids and line counts only: a chunk's body is read when it is taken, not to find out that
        # it would not fit (n_lines comes before body in a row, so the scan stays off its pages).
        ids: list[int] = []
        total = 0
        cur = self._db.execute("SELECT id, n_lines FROM chunk ORDER BY id")
        for cid, n in cur:
            if ids and total + n > max_lines:
                break
            ids.append(cid)
            total += n
        cur.close()
        return ids

    def remove(self, ids: list[int]) -> None:
        """Delete chunks (after InfluxDB accepted their lines). Unknown ids are ignored."""
        if not ids:
            return
        with self._lock:
            peeked = {cid: self._peeked[cid] for cid in ids if cid in self._peeked}
            others = [cid for cid in ids if cid not in peeked]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = sum(lines for lines, _ in peeked.values())
                size = sum(size for _, size in peeked.values())
                if others:  # not peeked by this process (or already removed): measure in SQL
                    more_n, more_size = self._db.execute(
                        f"SELECT COALESCE(SUM(n_lines), 0), COALESCE(SUM(length(CAST(body AS BLOB))), 0) "
                        f"FROM chunk WHERE id IN ({_marks(len(others))})", others).fetchone()
                    n, size = n + int(more_n), size + int(more_size)
                self._db.execute(f"DELETE FROM chunk WHERE id IN ({_marks(len(ids))})", ids)
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL at COMMIT does): a second
                # ROLLBACK would raise "no transaction is active" and hide the real error.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            for cid in peeked:
                del self._peeked[cid]
            self._depth -= n
            self._size -= size

    @property
    def depth(self) -> int:
        """Lines held."""
        return self._depth

    @property
    def size_bytes(self) -> int:
        """UTF-8 bytes of the lines held."""
        return self._size

    @property
    def full(self) -> bool:
        """Whether the consumer must stop taking messages until the writer drains (backpressure)."""
        return self._size >= self.max_bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "DiskBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
