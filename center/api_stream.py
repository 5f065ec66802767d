"""Live events for the board: an in-process broadcaster, a store poller, and GET /api/stream (SSE).

    broadcaster.alerts_changed(engine, ids)    # the detection loop, right after storing alerts
    broadcaster.cases_changed(engine, ids)     # the workflow loop and the API, after a case moved
    StorePoller(engine, broadcaster).start()   # every ~2 s: whatever changed in the store, any instance

Each event is sent once, whoever noticed it first: alerts are keyed by (id, updated_at), cases by
(id, seq of their last history event). Publishers are threads; subscribers are SSE responses on
the server's event loop, reached with call_soon_threadsafe. The last EVENT_BUFFER events are kept
so that a browser reconnecting with Last-Event-ID misses nothing this instance saw.

Each event has an audience. The center's subscribers get `center` events (every alert and case
change). An enterprise gets only `enterprise` events of its own cases: the case as notify.views lets
it see it, keyed by the last history event it may see, so an internal change (a ticket accepted, a
note, findings) sends it nothing at all, not even that something happened. Its own early warnings
reach it as `warning` events (the same facts its notice topic gets).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine

from center import api_queries as q
from center.api_models import AlertOut, CaseSummary
from center.auth import Principal, authenticate
from notify import views

log = logging.getLogger(__name__)
EVENT_BUFFER = 1000
SEEN_KEYS = 20_000
KEEPALIVE_S = 15.0
POLL_OVERLAP = timedelta(seconds=10)  # re-read this far back: commits land out of clock order
_EVENT_ID = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    name: str  # alert | case | warning
    enterprise_id: str
    data: dict[str, Any]
    audience: str = "center"  # center | enterprise

    def for_scope(self, scope: str | None) -> bool:
        """Whether a subscriber limited to enterprise `scope` (None: the center) gets this event."""
        if scope is None:
            return self.audience == "center"
        return self.audience == "enterprise" and self.enterprise_id == scope

    def encode(self) -> bytes:
        body = json.dumps(self.data, ensure_ascii=False, default=str)
        return f"id: {self.id}\nevent: {self.name}\ndata: {body}\n\n".encode()


class Broadcaster:
    """Fan-out of alert and case events to SSE subscribers; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._recent: deque[Event] = deque(maxlen=EVENT_BUFFER)
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._subs: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Event | None]]] = set()
        self.published = 0

    # -- publishing (any thread) ----------------------------------------------------------------

    def publish(self, key: tuple[Any, ...], name: str, enterprise_id: str, data: dict[str, Any],
                audience: str = "center") -> bool:
        """Send one event unless `key` was sent already; True when sent."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > SEEN_KEYS:
                self._seen.popitem(last=False)
            self._seq += 1
            ev = Event(self._seq, name, enterprise_id, data, audience)
            self._recent.append(ev)
            subs = list(self._subs)
            self.published += 1
        for loop, queue in subs:
            loop.call_soon_threadsafe(_offer, queue, ev)
        return True

    def alert(self, alert: dict[str, Any]) -> bool:
        """One alert row (api_queries.alert_dict) as an `alert` event."""
        change = "resolved" if alert["status"] == "resolved" else (
            "new" if alert["first_seen"] == alert["updated_at"] else "updated")
        data = {"change": change, "alert": AlertOut.model_validate(alert).model_dump(mode="json")}
        return self.publish(("alert", alert["id"], alert["updated_at"]), "alert", alert["enterprise_id"], data)

    def case(self, case: dict[str, Any], last: dict[str, Any] | None,
             enterprise_last: dict[str, Any] | None = None) -> bool:
        """One case row with its last history event as a `case` event for the center, and with the last
        event the enterprise may see (api_queries.last_enterprise_event) as one for the enterprise."""
        sent = self.publish(("case", case["id"], last["seq"] if last else 0), "case", case["enterprise_id"],
                            _case_data(case, last))
        if enterprise_last is not None:
            mine = _case_data(views.case_summary_for("enterprise", case), enterprise_last)
            self.publish(("case:enterprise", case["id"], enterprise_last["seq"]), "case", case["enterprise_id"], mine,
                         audience="enterprise")
        return sent

    def warning(self, warning: dict[str, Any]) -> bool:
        """One early warning (detect/warning.py) as a `warning` event: not an alert, never a case.
        Addressed to its enterprise too (the same facts its notice topic gets)."""
        key, data = ("warning", warning["id"], warning["status"], warning["level"]), {"change": warning["status"],
                                                                                      "warning": warning}
        sent = self.publish(key, "warning", warning["enterprise_id"], data)
        self.publish(("warning:enterprise", *key[1:]), "warning", warning["enterprise_id"], data, audience="enterprise")
        return sent

    def alerts_changed(self, engine: Engine, ids: Iterable[str]) -> None:
        for aid in dict.fromkeys(ids):
            row = q.get_alert(engine, aid)
            if row is not None:
                self.alert(row)

    def cases_changed(self, engine: Engine, ids: Iterable[str], names: dict[str, str] | None = None) -> None:
        for cid in dict.fromkeys(i for i in ids if i):
            row = q.case_row(engine, cid, None)
            if row is not None:
                row["enterprise_name"] = (names or {}).get(row["enterprise_id"], "")
                self.case(row, q.last_event(engine, cid), q.last_enterprise_event(engine, cid))

    # -- subscribing (event loop) ---------------------------------------------------------------

    def subscribe(self, after: int | None) -> tuple[asyncio.Queue[Event | None], list[Event]]:
        """A queue of new events, and the buffered events after id `after` (for Last-Event-ID)."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=EVENT_BUFFER)
        with self._lock:
            self._subs.add((asyncio.get_running_loop(), queue))
            backlog = [e for e in self._recent if after is not None and e.id > after]
        return queue, backlog

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        with self._lock:
            self._subs = {s for s in self._subs if s[1] is not queue}

    def close(self) -> None:
        """End every stream (service shutdown: lets the HTTP server finish promptly)."""
        with self._lock:
            subs, self._subs = list(self._subs), set()
        for loop, queue in subs:
            try:
                loop.call_soon_threadsafe(_offer, queue, None)
            except RuntimeError:  # loop already closed
                pass


def _case_data(case: dict[str, Any], last: dict[str, Any] | None) -> dict[str, Any]:
    seq = last["seq"] if last else 0
    return {"change": "opened" if seq <= 1 else "changed", "event_type": last["type"] if last else None,
            "case": CaseSummary.model_validate(case).model_dump(mode="json")}


def _offer(queue: asyncio.Queue[Event | None], ev: Event | None) -> None:
    try:
        queue.put_nowait(ev)
    except asyncio.QueueFull:  # a stalled client: end its stream, it reconnects with Last-Event-ID
        queue._queue.clear()  # type: ignore[attr-defined]
        queue.put_nowait(None)


class StorePoller:
    """Feeds the broadcaster from the store, so changes made by another instance appear too."""

    def __init__(self, engine: Engine, broadcaster: Broadcaster, names: dict[str, str] | None = None,
                 interval_s: float = 2.0) -> None:
        self.engine, self.broadcaster, self.names, self.interval_s = engine, broadcaster, names or {}, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since = datetime.now(timezone.utc)

    def start(self) -> "StorePoller":
        self._thread = threading.Thread(target=self._run, name="sse-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def poll_once(self) -> None:
        now = datetime.now(timezone.utc)
        since = self._since - POLL_OVERLAP
        for row in q.alerts_updated_since(self.engine, since):
            self.broadcaster.alert(row)
        self.broadcaster.cases_changed(self.engine, [r["case_id"] for r in q.case_changes_since(self.engine, since)],
                                       self.names)
        self._since = now

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the store may be briefly away; the next poll catches up
                log.warning("event poller: store not readable; retrying", exc_info=True)


# -- the endpoint -----------------------------------------------------------------------------------

router = APIRouter(tags=["live"])


def stream_user(request: Request, access_token: str | None = Query(
        None, description="the token, for EventSource (which cannot send headers)")) -> Principal:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else access_token
    principal = authenticate(request, token)
    if principal.role == "officer":
        from fastapi import HTTPException

        raise HTTPException(403, detail="the live stream is for operators and enterprises; officers use "
                                        "GET /api/tickets")
    return principal


def last_event_id(request: Request) -> int | None:
    """The `Last-Event-ID` a reconnecting browser sends: an event id we gave out (ASCII digits) or
    nothing; 400 for anything else (str.isdigit() alone would take '²', which int() refuses)."""
    last = request.headers.get("last-event-id", "").strip()
    if not last:
        return None
    if not _EVENT_ID.fullmatch(last):
        raise HTTPException(400, detail=f"Last-Event-ID {last[:40]!r} is not an event id (1-18 ASCII digits); "
                                        "reconnect without it to get new events only")
    return int(last)


@router.get("/api/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "events `alert`, `case` and `warning`, see center/API.md"}})
async def stream(request: Request, principal: Principal = Depends(stream_user)) -> StreamingResponse:
    """Server-sent events of new and changed alerts and cases (an enterprise: its own cases, as it may see them)."""
    broadcaster: Broadcaster = request.app.state.broadcaster
    queue, backlog = broadcaster.subscribe(last_event_id(request))
    return StreamingResponse(_events(broadcaster, queue, backlog, principal.scope), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(broadcaster: Broadcaster, queue: asyncio.Queue[Event | None], backlog: list[Event],
                  scope: str | None) -> AsyncIterator[bytes]:
    try:
        yield b": connected\n\n"  # lets the client (and proxies) see the stream is open
        for ev in backlog:
            if ev.for_scope(scope):
                yield ev.encode()
        while True:
            try:
                ev = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if ev is None:
                return
            if ev.for_scope(scope):
                yield ev.encode()
    finally:
        broadcaster.unsubscribe(queue)
