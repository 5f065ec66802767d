"""Delivering the outbox: at least once, with retries, visible failures.

    dispatcher = Dispatcher(engine, settings, default_channels(settings))
    counts = dispatcher.run_once()          # or run_once(now) on event time / in tests

A pass claims the due rows (status `pending`, next_attempt_at <= now) of the channels it has,
delivers each, and then records the outcome: `delivered` only AFTER the channel confirmed (PUBACK,
HTTP 2xx, SMTP accepted); a retryable failure schedules the next attempt with capped exponential
backoff; a permanent failure, or the last allowed attempt, makes the row `failed` (kept, counted,
shown by `outbox_counts`).

Claiming is a lease, portable across SQLite and PostgreSQL: a conditional UPDATE moves the row's
next_attempt_at `lease_s` into the future, so a second dispatcher skips it. A dispatcher that dies
after sending but before recording leaves the lease to expire; the row is then sent again with the
same notice id, which the recipient de-duplicates on. Nothing is lost and the decision (the row)
is never duplicated.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Engine, func, select, update

from config.schema import Settings
from core.time import as_utc
from notify.cases import ConcurrentUpdate, confirm_delivery
from notify.channels import Channel, DeliveryError
from notify.notices import delivered_cases
from notify.tables import notices

log = logging.getLogger(__name__)


@dataclass
class DispatchCounts:
    """What one pass did."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0  # failed this time, scheduled again
    failed: int = 0  # given up: permanent error or attempts exhausted


def backoff(attempt: int, notice_id: str, base_s: float, cap_s: float) -> timedelta:
    """Delay before attempt `attempt + 1`: base * 2**(attempt-1), capped, jittered to 50-100 %.

    The jitter comes from a hash of (id, attempt), not a random generator: spread enough that
    receivers coming back are not hit by every notice at once, yet reproducible in tests.
    """
    delay = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    h = hashlib.sha256(f"{notice_id}:{attempt}".encode()).digest()
    frac = int.from_bytes(h[:4], "big") / 2**32
    return timedelta(seconds=delay * (0.5 + 0.5 * frac))


class Dispatcher:
    """Delivers due outbox rows through the given channels (keyed by channel name)."""

    def __init__(self, engine: Engine, settings: Settings, channels: Mapping[str, Channel], *,
                 batch: int = 100, lease_s: float = 120.0, base_delay_s: float = 5.0, max_delay_s: float = 3600.0,
                 max_attempts: int | None = None,
                 after_send: Callable[[Mapping[str, Any]], None] | None = None) -> None:
        """`after_send` runs between a confirmed send and recording it: the crash point tests use.

        `lease_s` must exceed the longest a channel may take (its timeout); `max_attempts`
        defaults to settings.notify.webhook_max_attempts, for every channel.
        """
        self.engine = engine
        self.settings = settings
        self.channels = dict(channels)
        self.batch = batch
        self.lease = timedelta(seconds=lease_s)
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_attempts = max_attempts or settings.notify.webhook_max_attempts
        self.after_send = after_send

    def run_once(self, now: datetime | None = None) -> DispatchCounts:
        """One pass over the due rows; returns what it did."""
        now = as_utc(now or datetime.now(timezone.utc))
        counts = DispatchCounts()
        for row in self._claim(now):
            counts.claimed += 1
            outcome = self._deliver(row, now)
            setattr(counts, outcome, getattr(counts, outcome) + 1)
        return counts

    # -- steps ----------------------------------------------------------------------------------

    def _claim(self, now: datetime) -> list[dict[str, Any]]:
        """Due rows of our channels, each leased by a conditional UPDATE (lost races are skipped)."""
        query = (select(notices).where(notices.c.status == "pending", notices.c.next_attempt_at <= now,
                                       notices.c.channel.in_(sorted(self.channels)))
                 .order_by(notices.c.next_attempt_at, notices.c.id).limit(self.batch))
        claimed = []
        with self.engine.begin() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            with self.engine.begin() as conn:
                res = conn.execute(update(notices).where(
                    notices.c.id == row["id"], notices.c.status == "pending",
                    notices.c.next_attempt_at == row["next_attempt_at"]).values(next_attempt_at=now + self.lease))
            if res.rowcount == 1:
                claimed.append(row)
        return claimed

    def _deliver(self, row: dict[str, Any], now: datetime) -> str:
        """Send one row, then record the outcome; returns the DispatchCounts field to bump."""
        attempts = row["attempts"] + 1
        try:
            self.channels[row["channel"]].deliver(row)
        except DeliveryError as exc:
            return self._record_failure(row, attempts, now, str(exc), exc.retryable)
        except Exception as exc:  # noqa: BLE001 - a channel bug: keep the row, retry, show the error
            log.exception("channel %s crashed on notice %s", row["channel"], row["id"])
            return self._record_failure(row, attempts, now, f"{type(exc).__name__}: {exc}", True)
        if self.after_send is not None:
            self.after_send(row)
        self._record_delivery(row, now, attempts)
        return "delivered"

    def _record_delivery(self, row: Mapping[str, Any], now: datetime, attempts: int) -> None:
        """Mark the row delivered and, in the same transaction, start the deadlines of the cases
        whose notice it is (notify.cases.confirm_delivery): the enterprise was told now."""
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    conn.execute(update(notices).where(notices.c.id == row["id"]).values(
                        status="delivered", delivered_at=now, attempts=attempts, last_error=None))
                    for case_id, seq in delivered_cases(row):
                        confirm_delivery(conn, self.settings, case_id, seq, now, row["id"], row["channel"])
                return
            except ConcurrentUpdate:  # the case moved meanwhile (an answer): record again
                if attempt == 2:
                    raise

    def _record_failure(self, row: Mapping[str, Any], attempts: int, now: datetime, error: str,
                        retryable: bool) -> str:
        if retryable and attempts < self.max_attempts:
            due = now + backoff(attempts, row["id"], self.base_delay_s, self.max_delay_s)
            self._update(row["id"], attempts=attempts, next_attempt_at=due, last_error=error[:2000])
            log.info("notice %s via %s: attempt %d failed, next at %s: %s", row["id"], row["channel"], attempts,
                     due.isoformat(), error)
            return "retried"
        why = error if not retryable else f"gave up after {attempts} attempts: {error}"
        self._update(row["id"], status="failed", attempts=attempts, last_error=why[:2000])
        log.error("notice %s via %s failed: %s", row["id"], row["channel"], why)
        return "failed"

    def _update(self, notice_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(notices).where(notices.c.id == notice_id).values(**values))


def outbox_counts(engine: Engine) -> dict[str, int]:
    """Rows per status (pending, delivered, failed): what an operator watches."""
    with engine.connect() as conn:
        rows = conn.execute(select(notices.c.status, func.count()).group_by(notices.c.status)).all()
    return {"pending": 0, "delivered": 0, "failed": 0} | {status: n for status, n in rows}


def retry_failed(engine: Engine, now: datetime | None = None, notice_id: str | None = None) -> int:
    """Put failed rows (or one) back to pending, due now: after an operator fixed the cause."""
    stmt = update(notices).where(notices.c.status == "failed")
    if notice_id is not None:
        stmt = stmt.where(notices.c.id == notice_id)
    with engine.begin() as conn:
        res = conn.execute(stmt.values(status="pending", attempts=0,
                                       next_attempt_at=as_utc(now or datetime.now(timezone.utc))))
    return res.rowcount


__all__ = ["DispatchCounts", "Dispatcher", "backoff", "outbox_counts", "retry_failed"]
