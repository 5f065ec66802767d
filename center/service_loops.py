"""The service's leader-only loops: the case workflow and the outbox (detection: detect/schedule.py).

Each loop is a thread that runs on every instance but does its work only while the instance holds
the lease (center/lease.py), checked before every pass; so a follower that becomes leader starts
working at its next pass, without threads being started or stopped on leadership changes.

    WorkflowLoop   open alerts not yet in a case -> workflow.process_alerts; every workflow_tick_s
                   workflow.tick (deadlines, verification). Reads the store rather than trusting an
                   in-memory queue, so a new leader takes over what the old one had not processed.
    OutboxLoop     Dispatcher.run_once, again at once while there is work

Why these two are not APScheduler jobs like detection: they are wake-on-work loops (a pass that
found a full batch runs again at once, a new leader is woken), with nothing to align to a clock.
A job would need rescheduling from inside itself for "again at once" and a trip through the
scheduler's job store for every wake-up, for the same behaviour as an Event.wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import Engine

from center.api_stream import Broadcaster
from config.schema import Settings
from notify import inbox, workflow
from notify.outbox import Dispatcher

log = logging.getLogger(__name__)
IsLeader = Callable[[], bool]


class Loop:
    """A daemon thread calling `step()` while leader, then waiting `interval_s` or until woken."""

    name = "loop"

    def __init__(self, is_leader: IsLeader, interval_s: float) -> None:
        self.is_leader = is_leader
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Loop":
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self.stopping.is_set():
            again = False
            if self.is_leader():
                try:
                    again = self.step()
                except Exception:  # noqa: BLE001 - a failing pass (store or InfluxDB away) must not end the loop
                    log.exception("%s: pass failed; retrying", self.name)
            if not again:
                self.wake.wait(self.interval_s)
                self.wake.clear()

    def step(self) -> bool:
        """One pass; True to run the next one at once."""
        raise NotImplementedError


class WorkflowLoop(Loop):
    name = "workflow"

    def __init__(self, engine: Engine, settings: Settings, broadcaster: Broadcaster, is_leader: IsLeader,
                 poll_s: float, tick_s: float) -> None:
        super().__init__(is_leader, poll_s)
        self.engine, self.settings, self.broadcaster, self.tick_s = engine, settings, broadcaster, tick_s
        self.names = {e.id: e.name for e in settings.registry.enterprises}
        self._last_tick = 0.0

    def step(self) -> bool:
        now = datetime.now(timezone.utc)
        intake = inbox.process_pending(self.engine, self.settings, now)
        if intake.taken:
            self._last_tick = time.monotonic()  # process_alerts ticks too
            self.broadcaster.cases_changed(self.engine, [o.get("case_id") for o in intake.outcomes], self.names)
            # Future-stamped alerts stay unprocessed: do not spin on them.
            return any(o.get("status") != "future" for o in intake.outcomes) and intake.taken >= inbox.BATCH
        if time.monotonic() - self._last_tick >= self.tick_s:
            done = workflow.tick(self.engine, self.settings, now)
            self._last_tick = time.monotonic()
            self.broadcaster.cases_changed(self.engine, [d["case_id"] for d in done], self.names)
        return False


class OutboxLoop(Loop):
    name = "outbox"

    def __init__(self, dispatcher: Dispatcher, is_leader: IsLeader, interval_s: float) -> None:
        super().__init__(is_leader, interval_s)
        self.dispatcher = dispatcher

    def step(self) -> bool:
        counts = self.dispatcher.run_once()
        if counts.failed:
            log.warning("outbox: %d notices failed for good (see GET /api/notices?status=failed)", counts.failed)
        return counts.claimed > 0
