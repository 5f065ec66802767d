"""The service's leader-only loops: scheduled detection, the case workflow, the outbox.

Each loop is a thread that runs on every instance but does its work only while the instance holds
the lease (center/lease.py), checked before every pass; so a follower that becomes leader starts
working at its next pass, without threads being started or stopped on leadership changes.

    DetectLoop     every detect_tick_s: Runner.run_job for each detector (timed into the metrics)
    WorkflowLoop   open alerts not yet in a case -> workflow.process_alerts; every workflow_tick_s
                   workflow.tick (deadlines, verification). Reads the store rather than trusting an
                   in-memory queue, so a new leader takes over what the old one had not processed.
    OutboxLoop     Dispatcher.run_once, again at once while there is work
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import Engine

from center.api_stream import Broadcaster
from center.metrics import Metrics
from config.schema import Settings
from detect.runner import Runner, job_name
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


class DetectLoop(Loop):
    name = "detect"

    def __init__(self, runner: Runner, metrics: Metrics, is_leader: IsLeader, tick_s: float,
                 reevaluate_every_s: float) -> None:
        super().__init__(is_leader, tick_s)
        self.runner, self.metrics, self.reevaluate_every_s = runner, metrics, reevaluate_every_s

    def step(self) -> bool:
        for det in self.runner.detectors:
            if self.stopping.is_set() or not self.is_leader():
                break
            started, ok = time.perf_counter(), False
            try:
                report = self.runner.run_job(det, reevaluate_every_s=int(self.reevaluate_every_s))
                ok = True
                if report.windows:
                    log.info("%s: %d windows, changes %s", job_name(det), report.windows, dict(report.changes))
            except Exception:  # noqa: BLE001 - one failing detector must not keep the others from running
                log.exception("%s failed; the next tick retries (its watermark stays)", job_name(det))
            finally:
                self.metrics.observe_job(job_name(det), time.perf_counter() - started, ok)
        return False


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
