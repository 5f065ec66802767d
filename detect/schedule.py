"""The detectors' schedule in the service: one APScheduler job per detector kind.

    schedule = DetectSchedule(runner, is_leader=lease.is_leader, metrics=metrics, recheck_s=600).start()
    schedule.run_now()      # e.g. when this instance becomes leader
    schedule.stop()

Each kind's job (`detect:{kind}`) fires when its windows settle: at every window end (the class's
`period_s`, aligned to China midnight) plus its settle time (`detect.settle_s`, or the class's
`settle_s` when longer, e.g. offline's grace), on the clock (a cron trigger); between those,
`recheck_s` after each fire, for late data (with `detect.incremental` a look at ingest's
markers, without it a re-run of the recent windows);
and once at start, to resume from the stored watermarks. A run is `Runner.run_job` for the kind,
done only while this instance holds the lease (center/lease.py), checked at every run, and timed
into the metrics (center/metrics.py) when given: its wall time, and its CPU time on this thread
(the live cost of detection; the process's other threads are not counted).

Job settings, and why:
    coalesce            runs missed while the process stood still (a suspended host, a long run of
                        the kind before) are one run, not one per missed time: that one run judges
                        every window due since the watermark anyway
    max_instances=1     a kind never runs twice at once (its watermark has one writer)
    misfire_grace_time  the kind's period: a run later than that is dropped, the next one covers it
Runs go one at a time through one daemon thread (`SerialExecutor`), as the old hand-made loop
did: detection takes at most one core from the ingest and the HTTP service, and a run still going
when the service stops is abandoned with the process (nothing is lost: its windows are judged
again from the watermark, and alert ids are deterministic).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from detect.base import Detector
from detect.runner import Runner, align_down, job_name

log = logging.getLogger(__name__)
IsLeader = Callable[[], bool]


class JobMetrics(Protocol):
    def observe_job(self, job: str, seconds: float, ok: bool, cpu_s: float = 0.0) -> None: ...


def settle_trigger(period_s: int, settle_s: int, now: datetime) -> CronTrigger:
    """Fire at every window end plus `settle_s`, on the clock: a cron trigger, not an interval one,
    whose next fire would follow the previous fire (the first run at start, a new leader's run)
    instead of the windows. Periods divide an hour or a day, as windows do (China midnight)."""
    first = align_down(now, period_s) + timedelta(seconds=settle_s)
    utc = dict(second=first.second, timezone=timezone.utc)
    if 3600 % period_s == 0 and period_s % 60 == 0:
        step = period_s // 60
        return CronTrigger(minute=f"{first.minute % step}-59/{step}" if step < 60 else first.minute, **utc)
    if 86400 % period_s == 0 and period_s % 3600 == 0:
        step = period_s // 3600
        return CronTrigger(hour=f"{first.hour % step}-23/{step}" if step < 24 else first.hour, minute=first.minute, **utc)
    raise ValueError(f"period_s {period_s}: a detector's period must divide an hour (in minutes) or a day (in hours)")


def trigger_for(period_s: int, settle_s: int, recheck_s: float, now: datetime) -> BaseTrigger:
    """Fire at every window end plus `settle_s`, and `recheck_s` after each fire (none if 0 or not
    shorter than the period)."""
    settles = settle_trigger(period_s, settle_s, now)
    if not recheck_s or recheck_s >= period_s:
        return settles
    first = align_down(now, period_s) + timedelta(seconds=settle_s)
    return OrTrigger([settles, IntervalTrigger(seconds=recheck_s, start_date=first, timezone=timezone.utc)])


class SerialExecutor(BaseExecutor):
    """Runs the submitted jobs one after the other on one daemon thread (APScheduler's pool
    executors use the standard library's workers, which hold the interpreter's exit until the
    job ends: a first pass over days of data would hold a stopping service for minutes)."""

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._queue: queue.SimpleQueue[tuple[Any, list[datetime]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="detect-schedule", daemon=True)
        self._thread.start()

    def shutdown(self, wait: bool = True) -> None:
        self._queue.put(None)
        if wait:
            self._thread.join()

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        self._queue.put((job, run_times))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            job, run_times = item
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException:  # noqa: BLE001 - reported to the scheduler, as its pool executors do
                self._run_job_error(job.id, *sys.exc_info()[1:])
            else:
                self._run_job_success(job.id, events)


class DetectSchedule:
    """The service's detection: a BackgroundScheduler with one job per detector kind of `runner`."""

    def __init__(self, runner: Runner, is_leader: IsLeader, metrics: JobMetrics | None = None,
                 recheck_s: float = 600.0) -> None:
        self.runner, self.is_leader, self.metrics, self.recheck_s = runner, is_leader, metrics, recheck_s
        self.scheduler = BackgroundScheduler(executors={"default": SerialExecutor()}, timezone=timezone.utc)
        self._stopping = threading.Event()
        self._busy = threading.Lock()  # held during a run: stop() waits for it

    def start(self, paused: bool = False) -> "DetectSchedule":
        now = datetime.now(timezone.utc)
        for det in self.runner.detectors:
            self.scheduler.add_job(
                self.run, trigger_for(det.period_s, self.runner.settle_s(det), self.recheck_s, now), args=[det],
                id=job_name(det), name=job_name(det), next_run_time=now,
                coalesce=True, max_instances=1, misfire_grace_time=det.period_s)
        self.scheduler.start(paused=paused)
        return self

    def run_now(self) -> None:
        """Every kind's job at once (a new leader does not wait for the next window to settle)."""
        now = datetime.now(timezone.utc)
        for job in self.scheduler.get_jobs():
            job.modify(next_run_time=now)

    def stop(self, timeout: float = 30.0) -> None:
        """No new runs; wait up to `timeout` for a run still going (then leave it to the process's end)."""
        self._stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._busy.acquire(timeout=timeout):
            self._busy.release()
        else:
            log.warning("detect: a run still going after %.0f s is left to end with the process", timeout)

    def run(self, detector: Detector) -> None:
        """One scheduled run of one kind, if this instance leads; a failure is logged and timed, and
        the next fire retries (the watermark stays)."""
        if self._stopping.is_set() or not self.is_leader():
            return
        with self._busy:
            started, cpu, ok = time.perf_counter(), time.thread_time(), False
            try:
                # A re-run is due when the last one is half a recheck old: a recheck fires one
                # interval after the previous, give or take the scheduler's latency.
                report = self.runner.run_job(detector, reevaluate_every_s=int(self.recheck_s / 2))
                ok = True
                if report.windows:
                    log.info("%s: %d windows, changes %s", job_name(detector), report.windows, dict(report.changes))
            except Exception:  # noqa: BLE001 - one failing kind must not stop the schedule
                log.exception("%s failed; the next run retries (its watermark stays)", job_name(detector))
            finally:
                if self.metrics is not None:
                    self.metrics.observe_job(job_name(detector), time.perf_counter() - started, ok,
                                             time.thread_time() - cpu)
