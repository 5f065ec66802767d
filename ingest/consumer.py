"""The ingest: MQTT messages in, InfluxDB points out, every rejected payload kept as a dead letter.

Threads and the path of one message (at-least-once, group commit):

    paho network thread   on_message: stamp and queue the message (no decoding: that thread also
                          sends our acks and keep-alives, and must not fall behind)
    commit thread         collect messages for up to batch_interval_s or batch_size lines; decode
                          and validate each (`Pipeline`); then ONE durable step: append all lines to
                          the DiskBuffer and all rejections to DeadLetters; only then ack them all
    writer thread         drain the DiskBuffer into InfluxDB in batches of batch_size lines and
                          delete a chunk only after InfluxDB accepted it

So a message is acked only when its outcome is on disk, and a line leaves the disk only when it
is in InfluxDB. A crash anywhere re-delivers (persistent MQTT session: clean_start=False plus a
session expiry) or re-writes (buffer); both are harmless because a point is identified by
measurement, tags and timestamp, so writing it twice leaves one point.

Failure handling:
    InfluxDB unavailable   the writer retries forever with capped exponential back-off; the
                           consumer keeps acking into the buffer.
    InfluxDB rejects data  the writer bisects the batch: good lines land, each refused line becomes
                           a dead letter (topic "influxdb", reason bad_field, detail = server text).
    buffer over max bytes  backpressure: the commit thread stops taking messages, nothing is acked,
                           so the broker holds at most receive_maximum in flight and queues the rest
                           until the writer has drained the buffer.
    disk refuses writes    (full, I/O error) the same backpressure: the commit thread retries its
                           batch every second without acking, the writer keeps written chunks
                           until it can delete them; both resume by themselves when space returns.
                           Ingest.problem() and the disk_paused/disk_errors counters show it.
    a thread dies          (a bug) the process logs it and exits with status 70 (EXIT_THREAD_DIED)
                           so that its supervisor restarts it; nothing acked is lost.

Topics: stations publish to {prefix}/up/station/{mn}, drones and vehicles to
{prefix}/up/mobile/{device}. Payloads are self-describing; the topic is a cross-check only, so a
station cannot publish for another (broker ACLs are per topic) -> bad_field.
Several workers split the stream by broker.partitions (each a plain subscription to its share of
the station and device topics, kept by the broker across restarts) or, opt-in, through the shared
subscription $share/{group}/{prefix}/up/# (lost by Mosquitto across a restart: see the README);
each needs its own client_id (its session and its buffer file are keyed by it).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import islice
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from config.lookup import Lookup
from config.schema import Settings
from ingest.buffer import DiskBuffer, Synchronous, buffer_path
from ingest.deadletter import DeadLetter, DeadLetters, deadletter_path
from core.influx import Influx, InfluxRejected, InfluxUnavailable
from ingest.model import Reason
from ingest.offload import DecodeProcess, Job
from ingest.pipeline import SPLIT_TIMEOUT_S, Batch, Message, Pipeline
from ingest.revisions import RevisionGuard
from core.mqtt import make_client, probe
from ingest.topics import ingest_topics, shared_subscription_warning
from ingest.late import marker_lines
from ingest.written import written_payload, written_topic

log = logging.getLogger("envwatch.ingest")

SESSION_EXPIRY_S = 24 * 3600  # the broker keeps our session (and queues for us) a day after we vanish
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
STATUS_EVERY_S = 10.0
SUBSCRIBE_CHUNK = 100  # topic filters per SUBSCRIBE packet (partitioned workers have one per station)
DISK_RETRY_S = 1.0  # while the disk refuses writes, each thread tries again this often
EXIT_THREAD_DIED = 70  # process exit status when an ingest thread died (EX_SOFTWARE)
INFLUX_TOPIC = "influxdb"  # the dead-letter topic of lines InfluxDB refused
# HTTP statuses of a write that InfluxDB refused because of the lines themselves (parse error,
# field type conflict, body too large): only these are bisected and dead-lettered.
DATA_REFUSED = frozenset({400, 413, 422})
# InfluxDB 1.x: 'field type conflict: input field "zs_max" on measurement "station_minute" is type ...'
CONFLICT_FIELD = re.compile(r'input field "((?:[^"\\]|\\.)*)" on measurement')


# --------------------------------------------------------------------------------------------
# counters


class Counters:
    """Thread-safe running counts of the ingest; `snapshot()` is what the status line and the demo show."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n: Counter[str] = Counter()
        self._dead: Counter[str] = Counter()
        self._events: Counter[str] = Counter()
        self._disk: dict[str, str] = {}  # thread -> why the disk refused its last write
        self.buffer_depth = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._n[name] += n

    def dead(self, reasons: list[str]) -> None:
        with self._lock:
            self._dead.update(reasons)

    def events(self, kinds: Counter[str]) -> None:
        with self._lock:
            self._events.update(kinds)

    def disk(self, who: str, problem: str | None) -> bool:
        """Record whether `who`'s last write to disk failed (and why); True if that changed."""
        with self._lock:
            before = self._disk.get(who)
            if problem is None:
                self._disk.pop(who, None)
            else:
                self._disk[who] = problem
                self._n["disk_errors"] += 1
            return (before is None) != (problem is None)

    @property
    def disk_problem(self) -> str | None:
        with self._lock:
            return self._disk_text()

    def _disk_text(self) -> str | None:
        return "; ".join(f"{k}: {v}" for k, v in sorted(self._disk.items())) or None

    def snapshot(self) -> dict[str, Any]:
        """The counts as plain ints and dicts:

        messages_in       MQTT messages received (re-deliveries included)
        acked             messages committed (lines buffered or dead-lettered) and acknowledged
        lines_buffered    line-protocol lines appended to the disk buffer
        readings_written  lines InfluxDB accepted or already held (a batch retried after an outage counts again)
        influx_retries    failed write attempts (InfluxDB down or refusing the request)
        disk_errors       failed writes to the buffer or dead-letter files (disk full, I/O error)
        disk_paused       1 while the disk refuses writes: nothing is acked until it takes them again
        disk_problem      why (text), or None
        buffer_depth      lines waiting in the disk buffer
        dead_letters      {reason: n} for payloads and refused lines kept as dead letters
        events            {kind: n}: heartbeat, status, alarm, restart, answer, other, and mobile fixes
        """
        with self._lock:
            out: dict[str, Any] = {k: self._n[k] for k in
                                   ("messages_in", "acked", "lines_buffered", "readings_written", "influx_retries",
                                    "disk_errors")}
            out["disk_paused"] = int(bool(self._disk))
            out["disk_problem"] = self._disk_text()
            out["buffer_depth"] = self.buffer_depth
            out["dead_letters"] = dict(self._dead)
            out["events"] = dict(self._events)
        return out


# --------------------------------------------------------------------------------------------
# the ingest


class Ingest:
    """One ingest worker: MQTT consumer, commit loop and InfluxDB writer. Started once.

        ing = Ingest(settings); ing.start(); ...; ing.stop()     # or ing.run() until SIGINT/SIGTERM
        with Ingest(settings) as ing: ...                        # start() / stop()

    `buffer_synchronous="FULL"` makes each group commit survive power loss, not only a crash of
    the process (see ingest.buffer), for one fsync per batch.
    """

    def __init__(self, settings: Settings, lookup: Lookup | None = None, *,
                 split_timeout_s: float = SPLIT_TIMEOUT_S, backoff_max_s: float = BACKOFF_MAX_S,
                 buffer_synchronous: Synchronous = "NORMAL",
                 on_thread_death: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        # What to do when a thread of ours dies of an unexpected error: by default end the process
        # (exit EXIT_THREAD_DIED) so that its supervisor restarts it, rather than run on half-dead.
        self.on_thread_death = on_thread_death or _exit_process
        self._thread_died: str | None = None
        self.backoff_max_s = backoff_max_s  # longest wait between InfluxDB retries
        self.buffer_synchronous = buffer_synchronous
        self.lookup = lookup or Lookup(settings.registry)
        self._counters = Counters()
        self._split_timeout_s = split_timeout_s
        self._pipeline = Pipeline(settings, self.lookup, split_timeout_s)
        self._decoder: DecodeProcess | None = None  # ingest.decode_process: the Pipeline in a child
        self._queue: queue.Queue[Message] = queue.Queue()
        self._stopping = threading.Event()  # no more batches; flush and leave
        self._writer_stop = threading.Event()  # writer: leave once the buffer is empty or at the deadline
        self._pending = threading.Event()  # the buffer got lines
        self._drained = threading.Event()  # the buffer went below max_bytes
        self._subscribed = threading.Event()
        self._subacks_due: set[int] = set()  # SUBSCRIBE packets of the current connection not yet granted
        self._threads: list[threading.Thread] = []
        self._client: mqtt.Client | None = None
        self.buffer: DiskBuffer | None = None
        self.deadletters: DeadLetters | None = None
        self.influx: Influx | None = None
        self._database_ready = False  # ensure_database() done (writer thread only)

    # -- public surface ------------------------------------------------------------------------

    @property
    def topic_filters(self) -> list[str]:
        """What this worker subscribes to (ingest.topics.ingest_topics)."""
        return ingest_topics(self.settings.broker, self.lookup.stations, self.lookup.devices)

    @property
    def topic_filter(self) -> str:
        """The subscription in one line, for the log."""
        b, topics = self.settings.broker, self.topic_filters
        if b.partitions == 1:
            return topics[0]
        return f"{len(topics)} station and device topics (partition {b.partition} of {b.partitions})"

    def start(self) -> None:
        """Open the buffer and dead-letter store, connect (in the background) and start the threads."""
        state = Path(self.settings.ingest.state_dir)
        self.buffer = DiskBuffer(buffer_path(state, self.settings.broker.client_id),
                                 self.settings.ingest.buffer_max_bytes, self.buffer_synchronous)
        self.deadletters = DeadLetters(deadletter_path(state), self.settings.ingest.deadletter_max_bytes)
        self.influx = Influx(self.settings.influxdb)
        self._revisions = RevisionGuard(self.influx)
        self._counters.buffer_depth = self.buffer.depth
        if self.settings.ingest.decode_process:
            self._decoder = DecodeProcess(self.settings, self._split_timeout_s)
        self._threads = [threading.Thread(target=self._guarded(self._commit_loop), name="ingest-commit", daemon=True),
                         threading.Thread(target=self._guarded(self._write_loop), name="ingest-writer", daemon=True)]
        for t in self._threads:
            t.start()
        self._client = self._connect()

    def wait_subscribed(self, timeout: float = 10.0) -> bool:
        """Block until the broker has granted our subscription (first connect), or timeout."""
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Commit and ack what was received, disconnect, and write what InfluxDB takes within `timeout`.

        Anything not written in time stays in the disk buffer for the next start; messages received
        after the last commit are not acked, so the broker delivers them again next time.
        """
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._drained.set()  # wake a commit loop waiting on backpressure
        commit, writer = self._threads or (None, None)
        if commit is not None:
            commit.join(max(0.1, deadline - time.monotonic()))
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        self._writer_stop.set()
        self._pending.set()
        if writer is not None:
            writer.join(max(0.1, deadline - time.monotonic()))
        self._close()
        self._threads = []

    def __enter__(self) -> "Ingest":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def problem(self) -> str | None:
        """Why this worker is not taking messages now (a dead thread, a disk refusing writes), or None."""
        return self._thread_died or self._counters.disk_problem

    def counters(self) -> dict[str, Any]:
        """A snapshot of the running counts (see Counters.snapshot)."""
        if self.buffer is not None:
            self._counters.buffer_depth = self.buffer.depth
        return self._counters.snapshot()

    def run(self, status_every_s: float = STATUS_EVERY_S) -> None:
        """Run until SIGINT or SIGTERM, printing a one-line status every `status_every_s`."""
        from rich.console import Console

        console = Console()
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        self.start()
        console.print(f"ingest {self.settings.broker.client_id}: consuming {self.topic_filter} on "
                      f"{self.settings.broker.host}:{self.settings.broker.port}, writing to "
                      f"{self.settings.influxdb.url} database {self.settings.influxdb.database}")
        if self.wait_subscribed(30):
            console.print(f"subscribed to {self.topic_filter}", highlight=False)
        else:  # keeps trying in the background; say so rather than sit silent
            log.warning("not subscribed after 30s: is the broker at %s:%s up and accepting client %r?",
                        self.settings.broker.host, self.settings.broker.port, self.settings.broker.client_id)
        while not done.wait(status_every_s):
            console.print(status_line(self.counters()), highlight=False, markup=False)
        console.print("stopping: committing and writing what is pending ...")
        self.stop(timeout=30)
        console.print(status_line(self.counters()), highlight=False, markup=False)

    # -- MQTT ------------------------------------------------------------------------------------

    def _connect(self) -> mqtt.Client:
        b = self.settings.broker
        c = make_client(b, b.client_id, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        c.reconnect_delay_set(0.2, 5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        # Unacked QoS 1 messages the broker may have in flight to us: what lets a batch fill up
        # while the previous one is being committed.
        props.ReceiveMaximum = self.settings.ingest.receive_maximum
        # connect_async + loop_start: a broker that is down at start is retried, not fatal.
        c.connect_async(b.host, b.port, b.keepalive, clean_start=False, properties=props)
        c.loop_start()
        return c

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("MQTT connect to %s:%s refused: %s", self.settings.broker.host, self.settings.broker.port, rc)
            return
        log.info("MQTT connected (session present: %s)", flags.session_present)
        # Re-subscribing on a resumed session is harmless and covers a broker that lost it (Mosquitto
        # does not restore shared subscriptions after a restart).
        topics = self.topic_filters
        self._subacks_due.clear()
        if not topics:
            log.warning("partition %d of %d holds no station or device: nothing to subscribe to",
                        self.settings.broker.partition, self.settings.broker.partitions)
            self._subscribed.set()
        for i in range(0, len(topics), SUBSCRIBE_CHUNK):
            _rc, mid = client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics[i:i + SUBSCRIBE_CHUNK]])
            self._subacks_due.add(mid)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        if any(c.is_failure for c in codes):
            log.error("subscription to %s refused: %s", self.topic_filter, codes)
            return
        self._subacks_due.discard(mid)
        if not self._subacks_due:
            self._subscribed.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not self._stopping.is_set():
            log.warning("MQTT disconnected (%s); reconnecting", rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
        self._queue.put(Message(m.topic, bytes(m.payload), m.mid, m.qos, datetime.now(timezone.utc)))
        self._counters.add("messages_in")

    # -- commit loop -----------------------------------------------------------------------------

    def _commit_loop(self) -> None:
        if self._decoder is not None:
            self._commit_loop_offloaded(self._decoder)
            return
        while not self._stopping.is_set():
            if self._backpressure():
                continue
            if not self._commit_retrying(self._collect()):
                return
        if self.buffer is not None and not self.buffer.full:
            self._commit(self._collect(block=False))

    def _commit_loop_offloaded(self, decoder: DecodeProcess) -> None:
        """The same loop with decoding in the child: batch k+1 is collected while k is decoded.
        Batches take at most half of receive_maximum, so the broker can send k+1 while k is unacked."""
        cap = max(1, self.settings.ingest.receive_maximum // 2)
        pending: Job | None = None
        while not self._stopping.is_set():
            if self._backpressure():
                continue
            job = decoder.submit(self._take_list(True, cap))
            if pending is not None and not self._commit_retrying(decoder.result(pending)):
                return
            pending = job
        if pending is not None and not self._commit_retrying(decoder.result(pending)):
            return
        if self.buffer is not None and not self.buffer.full:
            self._commit(decoder.result(decoder.submit(self._take_list(False, cap))))

    def _backpressure(self) -> bool:
        """True (after a short wait) while the buffer is full: take nothing, ack nothing."""
        if self.buffer is None or not self.buffer.full:
            return False
        self._drained.clear()
        self._drained.wait(0.5)
        return True

    def _commit_retrying(self, batch: Batch) -> bool:
        """Commit, retrying while the disk refuses; False if stopping first (nothing acked).

        While it retries nothing is acked and nothing more is taken: the broker holds the rest
        (backpressure), and the batch is committed as soon as the disk takes it again.
        """
        while not self._commit(batch):  # disk full, I/O error: keep the batch, retry
            if self._stopping.wait(DISK_RETRY_S):
                return False  # not acked: the broker delivers these again next time
        return True

    def _take_list(self, block: bool, cap: int) -> list[Message]:
        return list(islice(self._take(block, self.settings.ingest.batch_interval_s), cap))

    def _collect(self, block: bool = True) -> Batch:
        """Messages for up to batch_interval_s after the first, until batch_size lines, or until
        receive_maximum messages: the broker sends no more before we ack, so waiting is useless."""
        ing = self.settings.ingest
        batch = Batch()
        self._pipeline.expire(batch)
        for n, msg in enumerate(self._take(block, ing.batch_interval_s), 1):
            self._pipeline.feed(msg, batch)
            if len(batch.lines) >= ing.batch_size or n >= ing.receive_maximum:
                break
        return batch

    def _take(self, block: bool, window_s: float) -> Iterator[Message]:
        try:
            # Short first wait so that stop() and split-packet expiry are noticed promptly.
            yield self._queue.get(timeout=0.2) if block else self._queue.get_nowait()
        except queue.Empty:
            return
        deadline = time.monotonic() + window_s
        while True:
            left = deadline - time.monotonic()
            try:
                yield self._queue.get(timeout=left) if block and left > 0 else self._queue.get_nowait()
            except queue.Empty:
                return

    def _commit(self, batch: Batch) -> bool:
        """The one durable step of a batch, then its acks. False if the disk refused (retry)."""
        if not batch.done:
            return True
        assert self.buffer is not None and self.deadletters is not None
        try:
            self.buffer.append(batch.lines)
            self.deadletters.add_many(batch.dead)
        except (sqlite3.Error, OSError) as exc:
            # A retry may append the lines twice: harmless, they are the same points.
            self._disk_fault("commit", exc, f"{len(batch.done)} messages wait unacked")
            return False
        self._disk_ok("commit")
        client = self._client
        for m in batch.done:
            if client is not None and m.qos > 0:
                client.ack(m.mid, m.qos)
        c = self._counters
        c.add("lines_buffered", len(batch.lines))
        c.add("acked", len(batch.done))
        c.dead([str(d.reason) for d in batch.dead])
        c.events(batch.events)
        c.buffer_depth = self.buffer.depth
        if batch.lines:
            self._pending.set()
        return True

    # -- writer ----------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        assert self.buffer is not None
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                ids, lines = self.buffer.peek(self.settings.ingest.batch_size)
            except (sqlite3.Error, OSError) as exc:
                self._disk_fault("writer", exc, "cannot read the buffer")
                if self._writer_stop.wait(DISK_RETRY_S):
                    return
                continue
            if not ids:
                if self._writer_stop.is_set():
                    return
                self._pending.wait(0.5)
                self._pending.clear()
                continue
            problem = self._try_write(lines)
            if problem is None:
                backoff = BACKOFF_FIRST_S
                if not self._remove_retrying(ids):
                    return  # stopping: the written chunks stay; writing them again is harmless
                self._counters.buffer_depth = self.buffer.depth
                if not self.buffer.full:
                    self._drained.set()
                continue
            self._counters.add("influx_retries")
            log.warning("%s; retrying in %.1fs (%d lines waiting in the buffer)", problem, backoff, self.buffer.depth)
            if self._writer_stop.wait(backoff):
                return  # stopping: what is not written stays in the buffer for next time
            backoff = min(backoff * 2, self.backoff_max_s)

    def _remove_retrying(self, ids: list[int]) -> bool:
        """Delete written chunks, retrying while the disk refuses (a full disk fails the COMMIT);
        False if stopping first."""
        assert self.buffer is not None
        while True:
            try:
                self.buffer.remove(ids)
            except (sqlite3.Error, OSError) as exc:
                self._disk_fault("writer", exc, "written lines stay in the buffer")
                if self._writer_stop.wait(DISK_RETRY_S):
                    return False
                continue
            self._disk_ok("writer")
            return True

    def _disk_fault(self, who: str, exc: BaseException, consequence: str) -> None:
        problem = f"{type(exc).__name__}: {exc}"
        if self._counters.disk(who, problem):  # log the change, not every retry
            log.error("disk refuses writes under %s (%s): %s; acks paused, retrying every %gs until "
                      "it takes them again", self.settings.ingest.state_dir, who, problem, DISK_RETRY_S)
            log.error("(%s)", consequence)

    def _disk_ok(self, who: str) -> None:
        if self._counters.disk(who, None):
            log.warning("disk takes writes again under %s (%s): resuming", self.settings.ingest.state_dir, who)

    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        """`target` as a thread body whose unexpected death ends the process (on_thread_death)."""
        def body() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - a thread dying silently is what this prevents
                name = threading.current_thread().name
                self._thread_died = f"thread {name} died: {type(exc).__name__}: {exc}"
                log.critical("ingest %s; stopping the process (exit status %d) so that its supervisor "
                             "restarts it: unacked messages come again from the broker, buffered lines "
                             "from the disk", self._thread_died, EXIT_THREAD_DIED, exc_info=exc)
                self.on_thread_death(self._thread_died)
        return body

    def _try_write(self, lines: list[str]) -> str | None:
        """Write `lines`, bisecting out refused ones; None when done, else why to retry later."""
        assert self.influx is not None
        try:
            if not self._database_ready:
                self.influx.ensure_database()
                self._database_ready = True
            # First values stay: re-sent points that differ become revisions (ingest/revisions.py).
            screened = self._revisions.screen(lines)
            self._write_bisect(screened.lines)
            self._revisions.remember(screened)
            self._counters.add("readings_written", screened.dropped - screened.revisions)  # as if written
            # Late-data markers for detection (ingest/late.py); if this fails the batch is
            # retried, lines included (rewriting the same points is harmless).
            self.influx.write(marker_lines(screened.lines, time.time()), precision="ns")
        except InfluxUnavailable as exc:
            return f"InfluxDB unavailable ({exc})"
        except (sqlite3.Error, OSError) as exc:  # a refused line could not be dead-lettered
            self._disk_fault("writer", exc, "the batch stays in the buffer")
            return f"cannot store a dead letter ({type(exc).__name__}: {exc})"
        except InfluxRejected as exc:
            # Not the data's fault (authentication, a missing database or bucket): nothing to
            # dead-letter; keep the lines and retry, so that fixing the server is enough.
            self._database_ready = False
            return f"InfluxDB refused the request ({exc}); check the influxdb settings"
        except Exception:  # noqa: BLE001 - the writer must outlive a surprise; the lines stay buffered
            log.exception("unexpected error while writing to InfluxDB")
            return "unexpected error"
        return None

    def _write_bisect(self, lines: list[str]) -> None:
        """Write `lines`; where InfluxDB refuses some as bad data, halve until each is isolated.

        Costs about 2*k*log2(n) writes for k bad lines among n; rewriting the good ones is harmless
        (same points), including after an InfluxDB 1.x "partial write" that already stored them.
        Refusals that are not about the data (401, 403, 404) propagate: see _try_write.
        """
        assert self.influx is not None and self.deadletters is not None
        try:
            self.influx.write(lines)
        except InfluxRejected as exc:
            if exc.status not in DATA_REFUSED:
                raise
            if len(lines) == 1:
                self._refused_line(lines[0], exc.server_message)
                return
            half = len(lines) // 2
            self._write_bisect(lines[:half])
            self._write_bisect(lines[half:])
            return
        self._counters.add("readings_written", len(lines))
        self._announce_written(lines)

    def _announce_written(self, lines: list[str]) -> None:
        """Tell the early warning (detect/warning.py) which minute readings are now in InfluxDB."""
        payload, client = written_payload(lines), self._client
        if payload is not None and client is not None:
            client.publish(written_topic(self.settings.broker.topic_prefix), payload, qos=1)

    def _refused_line(self, line: str, message: str) -> None:
        """Dead-letter a line InfluxDB refused; for a field type conflict, only the field named in
        the refusal (as a one-field line), and write the line's other fields again."""
        assert self.deadletters is not None
        conflict = CONFLICT_FIELD.search(message)
        split = split_fields(line, conflict.group(1)) if conflict else None
        if split is not None:
            rest, alone = split
            self.deadletters.add(DeadLetter(INFLUX_TOPIC, Reason.BAD_FIELD, message, alone.encode()))
            self._counters.dead([Reason.BAD_FIELD.value])
            self._write_bisect([rest])
            return
        self.deadletters.add(DeadLetter(INFLUX_TOPIC, Reason.BAD_FIELD, message, line.encode()))
        self._counters.dead([Reason.BAD_FIELD.value])

    def _close(self) -> None:
        if any(t.is_alive() for t in self._threads):
            # A thread still busy (a slow InfluxDB request) keeps its resources; it is a daemon,
            # and whatever it has not finished is still in the buffer or at the broker.
            log.warning("ingest threads still busy at stop; leaving them to exit with the process")
            return
        for res in (self.buffer, self.deadletters, self.influx, self._decoder):
            if res is not None:
                res.close()
        self.buffer = self.deadletters = self.influx = self._decoder = None


def split_fields(line: str, name: str) -> tuple[str, str] | None:
    """(the line without field `name`, the line with only that field), or None if the line has
    no such field or no other one. Lines are ours (ingest.schema): key, fields, timestamp."""
    key_end = _unescaped_space(line)
    ts_at = line.rfind(" ")
    if key_end < 0 or ts_at <= key_end:
        return None
    key, ts = line[:key_end], line[ts_at:]
    fields = _field_items(line[key_end + 1:ts_at])
    keep = [f for f in fields if f.split("=", 1)[0] != name]
    if not keep or len(keep) == len(fields):
        return None
    alone = [f for f in fields if f.split("=", 1)[0] == name]
    return f"{key} {','.join(keep)}{ts}", f"{key} {','.join(alone)}{ts}"


def _unescaped_space(line: str) -> int:
    i = 0
    while True:
        i = line.find(" ", i)
        if i <= 0 or line[i - 1] != "\\":
            return i
        i += 1


def _field_items(text: str) -> list[str]:
    """`a=1.0,flag="x,y"` -> ['a=1.0', 'flag="x,y"']: commas inside quoted strings kept."""
    items, start, quoted, i = [], 0, False, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            items.append(text[start:i])
            start = i + 1
        i += 1
    items.append(text[start:])
    return items


def _exit_process(why: str) -> None:
    """End the whole process now with EXIT_THREAD_DIED (after flushing the logs): what a dead
    ingest thread does by default, so that systemd or docker restart the worker."""
    for h in logging.getLogger().handlers + log.handlers:
        h.flush()
    print(f"envwatch ingest: {why}; exiting with status {EXIT_THREAD_DIED}", file=sys.stderr, flush=True)
    os._exit(EXIT_THREAD_DIED)


def status_line(c: dict[str, Any]) -> str:
    """One line of counts for the terminal."""
    dead = ", ".join(f"{k} {v}" for k, v in sorted(c["dead_letters"].items())) or "0"
    events = ", ".join(f"{k} {v}" for k, v in sorted(c["events"].items())) or "0"
    disk = f"  DISK PAUSED ({c['disk_problem']})" if c.get("disk_paused") else ""
    return (f"in {c['messages_in']}  acked {c['acked']}  written {c['readings_written']}  "
            f"buffer {c['buffer_depth']}  retries {c['influx_retries']}  dead [{dead}]  events [{events}]{disk}")


def run(settings: Settings) -> None:
    """`envwatch ingest`: run one worker until SIGINT/SIGTERM."""
    if not logging.getLogger().handlers:
        from rich.logging import RichHandler

        # Warnings from libraries; our own progress at INFO (httpx would log every write at INFO).
        logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(show_path=False)])
        for name in ("envwatch", "ingest"):
            logging.getLogger(name).setLevel(logging.INFO)
    if settings.broker.shared_group:
        warning = shared_subscription_warning(settings.broker, probe(settings.broker)[1])
        if warning:
            log.warning("%s", warning)
    Ingest(settings).run()

