"""Prometheus metrics at GET /metrics, in a registry of the app's own (several apps per test process).

Ingest (this instance's worker, from Ingest.counters(); absent when the app runs without one):
    envwatch_ingest_messages_total              MQTT messages received (re-deliveries included)
    envwatch_ingest_acked_total                 messages committed and acknowledged
    envwatch_ingest_readings_written_total      line-protocol lines InfluxDB accepted
    envwatch_ingest_influx_retries_total        failed InfluxDB write attempts
    envwatch_ingest_dead_letters_total{reason}  payloads kept as dead letters, by reason
    envwatch_ingest_events_total{kind}          station events and mobile fixes, by kind
    envwatch_ingest_buffer_depth                lines waiting in the disk buffer
    envwatch_ingest_disk_errors_total           failed writes to the buffer / dead-letter files
    envwatch_ingest_disk_paused                 1 while the disk refuses writes (acks paused)
Detection (timed by this instance's scheduler; lag read from the shared store):
    envwatch_detect_job_duration_seconds{job}   histogram of scheduled runs
    envwatch_detect_job_cpu_seconds_total{job}  CPU time of the schedule's thread in those runs (the
                                                live cost of detection: rate() of it is a share of a core)
    envwatch_detect_job_failures_total{job}     runs that raised
    envwatch_detect_job_lag_seconds{job}        now - the job's watermark (end of the last window evaluated)
Store (shared by all instances, read at scrape time):
    envwatch_alerts{kind,status}                alerts
    envwatch_cases{state}                       cases
    envwatch_notices{status}                    outbox rows pending / delivered / failed
    envwatch_delivery_failures                  notices given up on (status failed)
    envwatch_delivery_retrying                  notices pending after at least one failed attempt
Process (prometheus_client's own collectors, in the app's registry):
    process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, process_start_time_seconds, ...
    python_info{implementation,major,minor,patchlevel,version}
Service:
    envwatch_leader                             1 while this instance runs the detectors and the outbox
    envwatch_store_up                           0 when the store could not be read for this scrape
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from detect.queries import alerts_by_kind_status, watermarks
from notify import queries as q

log = logging.getLogger(__name__)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_INGEST_COUNTERS = (("messages_in", "messages", "MQTT messages received"),
                    ("acked", "acked", "messages committed and acknowledged"),
                    ("readings_written", "readings_written", "lines InfluxDB accepted"),
                    ("influx_retries", "influx_retries", "failed InfluxDB write attempts"),
                    ("disk_errors", "disk_errors", "failed writes to the buffer or dead-letter files"))


class Metrics:
    """The registry and the instruments the service's loops update."""

    def __init__(self, engine: Engine, ingest_counters: Callable[[], dict[str, Any]] | None = None,
                 is_leader: Callable[[], bool] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.job_duration = Histogram("envwatch_detect_job_duration_seconds", "duration of scheduled detector runs",
                                      ["job"], buckets=JOB_BUCKETS, registry=self.registry)
        self.job_failures = Counter("envwatch_detect_job_failures", "scheduled detector runs that raised", ["job"],
                                    registry=self.registry)
        self.job_cpu = Counter("envwatch_detect_job_cpu_seconds", "CPU time of scheduled detector runs", ["job"],
                               registry=self.registry)
        self.registry.register(_StateCollector(engine, ingest_counters, is_leader))
        # CPU, memory and file descriptors of this process (from /proc), and the Python version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def observe_job(self, job: str, seconds: float, ok: bool, cpu_s: float = 0.0) -> None:
        self.job_duration.labels(job).observe(seconds)
        self.job_cpu.labels(job).inc(cpu_s)
        if not ok:
            self.job_failures.labels(job).inc()
        else:
            self.job_failures.labels(job)  # present at 0, so the series exists before the first failure

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Reads the ingest counters and the store at scrape time."""

    def __init__(self, engine: Engine, ingest_counters: Callable[[], dict[str, Any]] | None,
                 is_leader: Callable[[], bool] | None) -> None:
        self.engine, self.ingest_counters, self.is_leader = engine, ingest_counters, is_leader

    def collect(self) -> Iterator[Metric]:
        if self.ingest_counters is not None:
            yield from _ingest(self.ingest_counters())
        leader = GaugeMetricFamily("envwatch_leader", "1 while this instance runs detection and the outbox")
        leader.add_metric([], 1.0 if self.is_leader is None or self.is_leader() else 0.0)
        yield leader
        up = GaugeMetricFamily("envwatch_store_up", "1 when the store answered this scrape")
        try:
            families = list(_store(self.engine))
        except SQLAlchemyError:
            log.warning("metrics: the store could not be read", exc_info=True)
            families = []
        up.add_metric([], 1.0 if families else 0.0)
        yield up
        yield from families


def _ingest(c: dict[str, Any]) -> Iterator[Metric]:
    for key, name, doc in _INGEST_COUNTERS:
        m = CounterMetricFamily(f"envwatch_ingest_{name}", doc)
        m.add_metric([], float(c.get(key, 0)))
        yield m
    dead = CounterMetricFamily("envwatch_ingest_dead_letters", "payloads kept as dead letters", labels=["reason"])
    for reason, n in sorted(c.get("dead_letters", {}).items()):
        dead.add_metric([reason], float(n))
    yield dead
    events = CounterMetricFamily("envwatch_ingest_events", "station events and mobile fixes", labels=["kind"])
    for kind, n in sorted(c.get("events", {}).items()):
        events.add_metric([kind], float(n))
    yield events
    depth = GaugeMetricFamily("envwatch_ingest_buffer_depth", "lines waiting in the disk buffer")
    depth.add_metric([], float(c.get("buffer_depth", 0)))
    yield depth
    paused = GaugeMetricFamily("envwatch_ingest_disk_paused", "1 while the disk refuses writes (acks paused)")
    paused.add_metric([], float(c.get("disk_paused", 0)))
    yield paused


def _store(engine: Engine) -> Iterator[Metric]:
    alerts = GaugeMetricFamily("envwatch_alerts", "alerts in the store", labels=["kind", "status"])
    for (kind, status), n in sorted(alerts_by_kind_status(engine).items()):
        alerts.add_metric([kind, status], n)
    cases = GaugeMetricFamily("envwatch_cases", "cases in the store", labels=["state"])
    for state, n in sorted(q.cases_by_state(engine).items()):
        cases.add_metric([state], n)
    yield alerts
    yield cases
    yield from _outbox(engine)
    yield _lags(engine)


def _outbox(engine: Engine) -> Iterator[Metric]:
    by_status, retrying = q.notice_counts(engine)
    fam = GaugeMetricFamily("envwatch_notices", "outbox rows by status", labels=["status"])
    for status in sorted({"pending", "delivered", "failed", *by_status}):
        fam.add_metric([status], float(by_status.get(status, 0)))
    yield fam
    failed = GaugeMetricFamily("envwatch_delivery_failures", "notices given up on (status failed)")
    failed.add_metric([], float(by_status.get("failed", 0)))
    yield failed
    retry = GaugeMetricFamily("envwatch_delivery_retrying", "notices pending after a failed attempt")
    retry.add_metric([], float(retrying))
    yield retry


def _lags(engine: Engine) -> Metric:
    now = datetime.now(timezone.utc)
    fam = GaugeMetricFamily("envwatch_detect_job_lag_seconds", "now - end of the last window evaluated", labels=["job"])
    for job, pos in watermarks(engine).items():
        fam.add_metric([job], (now - pos).total_seconds())
    return fam


router = APIRouter(tags=["service"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text exposition format."""
    started = time.perf_counter()
    body = request.app.state.metrics.render()
    log.debug("metrics rendered in %.3fs", time.perf_counter() - started)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
