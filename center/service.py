"""`envwatch run --config FILE`: the whole system as one service.

    exit_code = run(settings)                 # blocks until SIGTERM / SIGINT; 0 after a clean stop
    python -m center.service --config FILE    # the same, without the CLI

What runs, in order of start:
    preflight      broker, InfluxDB and case store must answer (center/preflight.py), else exit 2
                   with one line per missing dependency
    store          migrated (Alembic) plus the detection tables, under a PostgreSQL advisory lock so
                   that instances starting together do not race
    ingest         this instance's MQTT -> InfluxDB worker (shared subscription: instances split it)
    answers        enterprise answers over MQTT -> workflow.answer (every instance; idempotent)
    lease          leadership (center/lease.py); the leader alone runs detection (one APScheduler
                   job per detector kind, detect/schedule.py) and the two loops of
                   center/service_loops.py: case workflow, outbox
    warnings       the early warning (detect/warning.py) on the ingest's written topic; every
                   instance keeps its state, the leader alone stores and sends warnings
    http           uvicorn serving center.app.create_app on center.host:center.port

Running two instances on one PostgreSQL store: give each its own broker.client_id and
ingest.state_dir (the ingest's session and disk buffer are keyed by them) and its own center.port.

Intervals are ServiceOptions; the environment can change them (ENVWATCH_RUN_REEVALUATE_EVERY_S,
ENVWATCH_RUN_WORKFLOW_POLL_S, ENVWATCH_RUN_WORKFLOW_TICK_S, ENVWATCH_RUN_OUTBOX_INTERVAL_S,
ENVWATCH_RUN_EVENTS_POLL_S), e.g. for a demo at high speed-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Engine, text

from config.schema import Settings

log = logging.getLogger("envwatch.service")
MIGRATION_LOCK = "envwatch:migrate"


@dataclass(frozen=True)
class ServiceOptions:
    """Timing of the service's loops (seconds)."""

    # Between the settles of its windows, each detector kind looks for late data this often
    # (detect/schedule.py: its due windows are judged as they settle, not on a tick).
    reevaluate_every_s: float = 600.0
    workflow_poll_s: float = 5.0  # new alerts -> cases
    workflow_tick_s: float = 60.0  # deadlines and verification windows
    outbox_interval_s: float = 2.0
    events_poll_s: float = 2.0  # the store poller behind GET /api/stream
    preflight: bool = True

    @classmethod
    def from_env(cls, env: Any = None) -> "ServiceOptions":
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for f in fields(cls):
            value = env.get(f"ENVWATCH_RUN_{f.name.upper()}")
            if value is not None and f.name != "preflight":
                kw[f.name] = float(value)
        return cls(**kw)


class StartupError(RuntimeError):
    """The service cannot start; the message says which dependency or setting and what to do."""


def prepare_store(engine: Engine) -> None:
    """Migrate the store to the newest schema (cases, alerts, watermarks, warnings: one history); idempotent."""
    from core.db import migrate

    if engine.dialect.name != "postgresql":
        migrate(engine)
        return
    from center.lease import lock_key

    # Serialise instances starting together: CREATE TABLE races otherwise fail one of them.
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(MIGRATION_LOCK)})
        try:
            migrate(engine)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(MIGRATION_LOCK)})
            conn.commit()


class Service:
    """All parts of one instance; start() then stop()."""

    def __init__(self, settings: Settings, options: ServiceOptions | None = None) -> None:
        self.settings = settings
        self.options = options or ServiceOptions()
        self.instance_id = settings.center.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self._closers: list[tuple[str, Any]] = []  # (name, zero-argument stop), stopped in reverse
        self.server: Any = None

    def start(self) -> "Service":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        s, o = self.settings, self.options
        if o.preflight:  # first, before the heavy imports: a missing dependency is reported in a second
            _preflight(s)
        from center.api_stream import Broadcaster
        from center.lease import lease_for
        from ingest.consumer import Ingest
        from core.influx import Influx
        from core.db import engine_from_settings

        self.engine = engine_from_settings(s)
        self._closers.append(("store", self.engine.dispose))
        prepare_store(self.engine)
        self.influx = Influx(s.influxdb)
        self._closers.append(("influx", self.influx.close))
        # Detection queries a database the ingest would only create on its first write.
        self.influx.ensure_database()
        self.broadcaster = Broadcaster()
        self.ingest = Ingest(s)
        self.ingest.start()
        self._closers.append(("ingest", lambda: self.ingest.stop(timeout=10)))
        self._start_answers()
        self.lease = lease_for(s.store_url(), s.center.lease_ttl_s)
        self._start_loops()
        self._start_warnings()
        self.lease.start()
        self._closers.append(("lease", self.lease.stop))
        self._start_http()
        log.info("envwatch instance %s serving http://%s:%d (leader: %s)", self.instance_id, s.center.host,
                 s.center.port, self.lease.is_leader())

    def _start_answers(self) -> None:
        from notify.answers_mqtt import AnswerSubscriber

        sub = AnswerSubscriber(self.settings, on_answer=self._on_answer, on_invalid=self._on_invalid_answer)
        self._closers.append(("answers", sub.close))

    def _on_invalid_answer(self, topic: str, payload: bytes, why: str) -> None:
        """An answer that is malformed or refused: kept byte-exact as a dead letter with why
        (`envwatch deadletters list --reason invalid_answer`)."""
        from ingest.deadletter import DeadLetter

        log.warning("answer on %s refused: %s", topic, why)
        if self.ingest.deadletters is not None:
            self.ingest.deadletters.add(DeadLetter(topic, "invalid_answer", why, payload))

    def _on_answer(self, a: Any) -> None:
        from notify import workflow
        from notify.answers_mqtt import InvalidAnswer

        try:
            result = workflow.answer(self.engine, self.settings, a.enterprise_id, a.case_id, a.type, a.text,
                                     a.attachments, a.answer_id, a.received_at)
        except workflow.AnswerError as exc:
            # Acked and kept as a dead letter: resending will not make it valid. No state change.
            raise InvalidAnswer(f"answer {a.answer_id} refused: {exc}") from exc
        log.info("answer %s from %s: %s", a.answer_id, a.enterprise_id, result.get("status"))
        self.broadcaster.cases_changed(self.engine, [a.case_id], self._names())

    def _names(self) -> dict[str, str]:
        return {e.id: e.name for e in self.settings.registry.enterprises}

    def _start_loops(self) -> None:
        from center.metrics import Metrics
        from center.service_loops import OutboxLoop, WorkflowLoop
        from detect.publish import AlertPublisher
        from detect.runner import Runner
        from detect.schedule import DetectSchedule
        from detect.store import AlertStore
        from notify.channels import default_channels
        from notify.outbox import Dispatcher

        s, o, leader = self.settings, self.options, self.lease.is_leader
        self.metrics = Metrics(self.engine, self.ingest.counters, leader)
        self.publisher = AlertPublisher(s.broker, timeout_s=5).start()
        self._closers.append(("alert publisher", self.publisher.close))
        runner = Runner(s, influx=self.influx, store=AlertStore(self.engine), publish=self._on_alerts)
        channels = default_channels(s)
        self._closers.append(("channels", lambda: [c.close() for c in channels.values() if hasattr(c, "close")]))
        self.workflow_loop = WorkflowLoop(self.engine, s, self.broadcaster, leader, o.workflow_poll_s,
                                          o.workflow_tick_s)
        loops = [self.workflow_loop, OutboxLoop(Dispatcher(self.engine, s, channels), leader, o.outbox_interval_s)]
        self.detect_schedule = DetectSchedule(runner, leader, self.metrics, o.reevaluate_every_s)
        if hasattr(self.lease, "on_change"):  # a new leader starts at once instead of at its next tick
            self.lease.on_change = lambda now_leader: self._lead_now(loops) if now_leader else None
        self.detect_schedule.start()
        self._closers.append(("detect schedule", self.detect_schedule.stop))
        for lp in loops:
            lp.start()
            self._closers.append((lp.name, lp.stop))

    def _lead_now(self, loops: list[Any]) -> None:
        self.detect_schedule.run_now()
        for lp in loops:
            lp.wake.set()

    def _start_warnings(self) -> None:
        """The early warning: fed by the ingest's written messages; only the leader emits."""
        if not self.settings.detect.warning.enabled:
            return
        from detect.source import ReadingSource
        from detect.warning import WarningEngine

        def broadcast(changes: list[dict[str, Any]]) -> None:
            for w in changes:
                self.broadcaster.warning(w)

        engine = WarningEngine(self.settings, self.engine, source=ReadingSource(self.influx), on_change=broadcast,
                               is_leader=self.lease.is_leader)
        engine.start()
        self._closers.append(("warnings", engine.stop))

    def _on_alerts(self, payload: list[dict[str, Any]]) -> None:
        """The runner stored changed alerts: tell MQTT, the live board, and the workflow loop."""
        self.publisher(payload)
        self.broadcaster.alerts_changed(self.engine, [a["id"] for a in payload])
        self.workflow_loop.wake.set()

    def _start_http(self) -> None:
        import uvicorn

        from center.app import create_app

        c = self.settings.center
        app = create_app(self.settings, self.engine, influx=self.influx, broadcaster=self.broadcaster,
                         metrics=self.metrics, ingest=self.ingest, is_leader=self.lease.is_leader,
                         instance_id=self.instance_id, poll_s=self.options.events_poll_s)
        config = uvicorn.Config(app, host=c.host, port=c.port, log_config=None, access_log=False,
                                timeout_graceful_shutdown=5, lifespan="on")
        self.server = uvicorn.Server(config)
        thread = threading.Thread(target=self.server.run, name="http", daemon=True)
        thread.start()
        while not self.server.started and thread.is_alive():
            thread.join(0.05)
        if not self.server.started:
            raise StartupError(f"HTTP: cannot listen on {c.host}:{c.port} (in use? see the log above); "
                               "free the port or change center.port")
        self._closers.append(("http", lambda: self._stop_http(thread)))

    def _stop_http(self, thread: threading.Thread) -> None:
        self.broadcaster.close()  # ends the live streams, which would hold the server open
        self.server.should_exit = True
        thread.join(15)

    def stop(self) -> None:
        """Stop everything started, newest first: HTTP, lease, loops, publishers, ingest, store."""
        while self._closers:
            name, close = self._closers.pop()
            try:
                close()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("stopping %s failed", name)


def _preflight(settings: Settings) -> None:
    from center.preflight import DependencyError, require_dependencies

    try:
        require_dependencies(settings)
    except DependencyError as exc:
        raise StartupError(str(exc)) from exc


def run(settings: Settings, options: ServiceOptions | None = None) -> int:
    """Run the service until SIGTERM or SIGINT; returns the process exit code (0 clean, 2 cannot start)."""
    from center.logs import configure_logging

    configure_logging(json=settings.center.log_json)
    for noisy in ("alembic", "uvicorn.error"):  # migration steps and uvicorn's banner: we log our own line
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    service = Service(settings, options or ServiceOptions.from_env())
    try:
        try:
            service.start()
        except Exception as exc:  # noqa: BLE001 - say what is missing; a traceback only for the unexpected
            if not isinstance(exc, StartupError):
                log.exception("envwatch cannot start")
            else:
                log.error("envwatch cannot start: %s", exc)
            return 2
        stop.wait()
        log.info("stopping (signal received)")
        service.stop()
        log.info("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """`python -m center.service --config FILE`."""
    from config import ConfigError, load

    p = argparse.ArgumentParser(prog="envwatch run", description="Run the envwatch service")
    p.add_argument("--config", "-c", default=None, help="YAML config (or $ENVWATCH_CONFIG)")
    args = p.parse_args(argv)
    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(f"configuration invalid: {exc}")
        return 2
    return run(settings)


if __name__ == "__main__":
    raise SystemExit(main())
