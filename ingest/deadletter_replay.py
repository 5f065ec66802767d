"""`envwatch deadletters replay`: payloads rejected before a fix (a station registered late, a key
corrected, a decoder fixed) go through the current decoder and registry again.

Each stored dead letter is fed, byte-exact and with its original topic and receive time, to the
ingest's own Pipeline (the checks and line protocol of the live path, split packets reassembled
across letters). Those that pass now go through the writer's revision screen (ingest/revisions.py:
a point already stored keeps its first values, a differing replay becomes a revision), are written
to InfluxDB and marked replayed (table
dead_letter_replay, next to dead_letter in the same file); the row itself stays as evidence of what
was received. Those that still fail keep their row with the new reason and detail. Replayed letters
are never fed again, so a second run writes nothing twice; re-writing a point would be harmless anyway.
Left alone (counted as skipped): lines InfluxDB itself refused (topic 'influxdb') and answers of
enterprises, which are not readings, and payloads of which only a prefix was kept (too large).

    replay(settings, reason=None, on_letter=None) -> Outcome
    letters(settings, reason, limit)  -> rows for `deadletters list --json/--csv`
    counts(settings)                  -> {reason: n}
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from config.lookup import Lookup
from config.schema import Settings
from ingest.consumer import DATA_REFUSED, INFLUX_TOPIC
from ingest.pipeline import Batch, Message, Pipeline
from ingest.deadletter import DeadLetters, deadletter_path, escape_raw
from core.influx import Influx, InfluxRejected, InfluxUnavailable
from ingest.revisions import RevisionGuard

FIELDS = ("id", "received_at", "reason", "topic", "detail", "raw", "size", "sha256", "replayed_at")
WRITE_EVERY = 500  # letters whose lines go to InfluxDB in one request

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letter_replay (
    id          INTEGER PRIMARY KEY,   -- dead_letter.id
    replayed_at TEXT NOT NULL          -- ISO-8601 UTC, when its readings were written
);
"""


@dataclass(slots=True)
class Outcome:
    """What one replay did: letters written (now passed), still failing by new reason, skipped."""

    written: int = 0
    lines: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    already: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "lines": self.lines, "still_failing": self.failed,
                "skipped": self.skipped, "already_replayed": self.already}


class _Store:
    """The dead-letter file seen by the replay: pending letters, marks, new reasons."""

    def __init__(self, path: Path) -> None:
        self.letters = DeadLetters(path)  # WAL, busy timeout and the dead_letter table, as the ingest has them
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(_SCHEMA)

    def _where(self, reason: str | None) -> tuple[str, tuple[Any, ...]]:
        sql = "FROM dead_letter d LEFT JOIN dead_letter_replay r ON r.id = d.id WHERE r.id IS NULL"
        return (sql + " AND d.reason = ?", (reason,)) if reason is not None else (sql, ())

    def pending_count(self, reason: str | None) -> int:
        sql, args = self._where(reason)
        return self.db.execute("SELECT COUNT(*) " + sql, args).fetchone()[0]

    def pending(self, reason: str | None, page: int = WRITE_EVERY) -> Iterator[tuple[int, str, str, bytes, int | None]]:
        """The letters not yet replayed, oldest first, read a page at a time (payloads may be 64 KiB each)."""
        sql, args = self._where(reason)
        last = 0
        while True:
            rows = self.db.execute("SELECT d.id, d.received_at, d.topic, d.raw, d.size " + sql
                                   + " AND d.id > ? ORDER BY d.id LIMIT ?", (*args, last, page)).fetchall()
            if not rows:
                return
            for i, at, t, raw, size in rows:
                yield i, at, t, bytes(raw), size
            last = rows[-1][0]

    def replayed_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM dead_letter_replay").fetchone()[0]

    def mark(self, ids: list[int]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR IGNORE INTO dead_letter_replay (id, replayed_at) VALUES (?, ?)",
                                [(i, now) for i in ids])

    def still_failing(self, rows: list[tuple[int, str, str]]) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("UPDATE dead_letter SET reason = ?, detail = ? WHERE id = ?",
                                [(reason, detail, i) for i, reason, detail in rows])

    def close(self) -> None:
        self.db.close()
        self.letters.close()


def replay(settings: Settings, reason: str | None = None, on_letter: Callable[[int], None] | None = None,
           on_total: Callable[[int], None] | None = None) -> Outcome:
    """Re-feed the not yet replayed dead letters (of `reason`, or all). Raises InfluxUnavailable when InfluxDB
    does not answer: nothing is marked then, and the next run tries the same letters again."""
    path = deadletter_path(settings.ingest.state_dir)
    out = Outcome()
    if not path.exists():
        return out
    store = _Store(path)
    try:
        total = store.pending_count(reason)
        out.already = store.replayed_count()
        if on_total is not None:
            on_total(total)
        pipeline = Pipeline(settings, Lookup(settings.registry))
        influx = Influx(settings.influxdb)
        influx.ensure_database()
        guard = RevisionGuard(influx)
        passed: list[tuple[list[int], list[str]]] = []  # (letter ids, their lines), written together
        failing: list[tuple[int, str, str]] = []
        up = f"{settings.broker.topic_prefix}/up/"
        # Letters replayed during this run leave the "pending" set: the pages continue after the last id read.
        for n, (letter_id, received_at, topic, raw, size) in enumerate(store.pending(reason), 1):
            if not topic.startswith(up) or topic == INFLUX_TOPIC or (size is not None and size > len(raw)):
                out.skipped += 1
            else:
                batch = Batch()
                received = datetime.fromisoformat(received_at)
                pipeline.feed(Message(topic, raw, letter_id, 0, received), batch)
                _sort(batch, passed, failing)
            if len(passed) >= WRITE_EVERY:
                _write(guard, store, passed, failing, out)
                passed = []
            if on_letter is not None:
                on_letter(n)
        expired = Batch()  # the parts of split packets that are still incomplete
        pipeline.expire(expired, now=float("inf"))
        _sort(expired, passed, failing)
        _write(guard, store, passed, failing, out)
        store.still_failing(failing)
        for _, r, _ in failing:
            out.failed[r] = out.failed.get(r, 0) + 1
    finally:
        store.close()
    return out


def _sort(batch: Batch, passed: list[tuple[list[int], list[str]]], failing: list[tuple[int, str, str]]) -> None:
    """A one-message batch (or an expiry): rejected messages pair with their dead letters, in order."""
    if batch.dead:
        failing += [(m.mid, str(d.reason), d.detail) for m, d in zip(batch.done, batch.dead, strict=True)]
    elif batch.done:
        passed.append(([m.mid for m in batch.done], batch.lines))


def _write(guard: RevisionGuard, store: _Store, passed: list[tuple[list[int], list[str]]],
           failing: list[tuple[int, str, str]], out: Outcome) -> None:
    """Write the lines of `passed` through the revision screen (one request; one per letter when InfluxDB
    refuses some data) and mark those letters replayed."""

    def put(lines: list[str]) -> int:
        screened = guard.screen(lines)
        guard.influx.write(screened.lines)
        guard.remember(screened)
        return len(screened.lines)

    try:
        written = put([line for _, lines in passed for line in lines])
        groups = passed
    except InfluxRejected as exc:
        if exc.status not in DATA_REFUSED:
            raise
        groups, written = [], 0
        for ids, lines in passed:
            try:
                written += put(lines)
                groups.append((ids, lines))
            except InfluxRejected as one:
                if one.status not in DATA_REFUSED:
                    raise
                failing += [(i, "bad_field", one.server_message) for i in ids]
    store.mark([i for ids, _ in groups for i in ids])
    out.written += sum(len(ids) for ids, _ in groups)
    out.lines += written


def _rows(settings: Settings, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    path = deadletter_path(settings.ingest.state_dir)
    if not path.exists():
        return []
    store = _Store(path)
    try:
        return store.db.execute(sql, args).fetchall()
    finally:
        store.close()


def letters(settings: Settings, reason: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest dead letters as plain rows (raw as escaped text), with when each was replayed."""
    where, args = ("WHERE d.reason = ?", (reason,)) if reason else ("", ())
    rows = _rows(settings, "SELECT d.id, d.received_at, d.reason, d.topic, d.detail, d.raw, d.size, d.sha256, "
                           "r.replayed_at "
                           f"FROM dead_letter d LEFT JOIN dead_letter_replay r ON r.id = d.id {where} "
                           "ORDER BY d.id DESC LIMIT ?", (*args, limit))
    return [dict(zip(FIELDS, (*row[:5], escape_raw(bytes(row[5]), limit=1 << 20), *row[6:]))) for row in rows]


def counts(settings: Settings) -> dict[str, int]:
    """Dead letters per reason, those replayed since counted apart as 'replayed'."""
    rows = _rows(settings, "SELECT CASE WHEN r.id IS NULL THEN d.reason ELSE 'replayed' END AS k, COUNT(*) "
                           "FROM dead_letter d LEFT JOIN dead_letter_replay r ON r.id = d.id GROUP BY k ORDER BY k", ())
    return {k: n for k, n in rows}


def replay_cli(settings: Settings, reason: str | None, progress: bool, as_json: bool, console: Console,
               err: Console) -> None:
    """`envwatch deadletters replay`: a progress bar on stderr, then one summary line (or JSON)."""
    import json
    import sys

    from rich.progress import Progress

    path = deadletter_path(settings.ingest.state_dir)
    if not path.exists():
        err.print(f"no dead letters: {path} does not exist (the ingest has not run with this state_dir)",
                  markup=False, highlight=False)
        return
    try:
        if progress:
            with Progress(console=err, transient=False) as bar:
                task = bar.add_task("replay dead letters", total=None)
                outcome = replay(settings, reason, on_letter=lambda n: bar.update(task, completed=n),
                                 on_total=lambda total: bar.update(task, total=total))
        else:
            outcome = replay(settings, reason)
    except InfluxUnavailable as exc:
        err.print(f"InfluxDB at {settings.influxdb.url} does not answer ({exc}); nothing was marked, run again "
                  "when it is up", markup=False, highlight=False)
        sys.exit(1)
    if as_json:
        print(json.dumps(outcome.as_dict(), ensure_ascii=False))
        return
    still = ", ".join(f"{r} {n}" for r, n in sorted(outcome.failed.items())) or "none"
    console.print(f"replayed {outcome.written} dead letters ({outcome.lines} lines written); still failing: {still}; "
                  f"skipped {outcome.skipped} (InfluxDB refusals, answers, truncated payloads); "
                  f"{outcome.already} replayed before",
                  markup=False, highlight=False)
