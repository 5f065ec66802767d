"""Tamper-evident readings: the first value received for a point stays, a different re-send becomes a revision.

A point of the readings is (interval, station, pollutant, DataTime): measurement station_<interval>
with tags mn and pollutant and the timestamp. InfluxDB keeps the last field values written to a
point, so a station re-sending a past hour with other values would silently rewrite history.
The ingest writer therefore screens every batch before it writes it (`RevisionGuard.screen`):

    not stored yet (a new reading, back-fill 补发)     written as is
    stored with the same values (replay, QoS 1 redelivery)  dropped: nothing changes
    stored with other values (a revision)              the readings keep the first values; the
                                                       differing fields go to the `revisions`
                                                       measurement (see ingest/schema.py), once
                                                       per distinct revised value
    stored without some of the fields sent             those fields are added (nothing is overwritten)

Knowing what is stored: one InfluxQL request per batch reads the batch's points back (one
statement per measurement and time range, each restricted to the stations with keys in it; see
_ranges), so the answer is right with any number of workers and across restarts. An in-process
memory of points this worker wrote or read recently (first values never change) lets a batch
whose points are all known skip the request: replays and redeliveries cost no lookup. Nothing
is ever taken as "not stored" without asking InfluxDB: a worker's memory of its own writes
cannot know what another worker (a shared subscription), `envwatch deadletters replay` or the
worker before a restart wrote.
Limit: two shared-subscription workers that receive two versions of the same point in the same
write cycle (well under a second apart) both see "not stored", and InfluxDB keeps the later one.
With broker.partitions (or one worker) a station's messages all reach one worker, whose single
writer thread screens batch after batch: the race cannot happen for one station.

Two versions of one point in the same batch: the first in buffer order is the first value.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from core.influx import Influx, ident, literal, rfc3339, tag_in
from ingest.schema import EVENT, MEASUREMENT_PREFIX, REVISIONS

log = logging.getLogger("envwatch.ingest")

# Points whose first values a worker remembers (~0.5 kB each, so ~25 MB): replays and QoS 1
# redeliveries of what the worker wrote recently need no lookup.
MEMORY_POINTS = 50_000
Key = tuple[str, str, str, int]  # (measurement, mn, pollutant, epoch seconds)
# Statements per measurement when reading a batch's points back (each a time range and its stations).
_MAX_STATEMENTS = 32
_MAX_STATIONS_PER_STATEMENT = 400  # as detect/source.py: InfluxDB compiles each regular expression
# A station's times closer than this are read back as one range (a live batch's few DataTimes, a
# catch-up's consecutive minutes or hours).
_DENSE_GAP_S = 3600
_FIELD = re.compile(r'([^=,\s]+)=("(?:[^"\\]|\\.)*"|[^,]*)')
_UNESCAPE_TAG = re.compile(r"\\([\\, =])")
_UNESCAPE_STR = re.compile(r'\\([\\"])')
_HEAD = re.compile(r"(?:[^\\ ]|\\.)*")  # up to the first unescaped space
_COMMA = re.compile(r"(?<!\\),")


@dataclass(slots=True)
class _Line:
    """A readings line cut into what the screen needs; raw = field name -> value text as sent."""

    key: Key
    head: str  # measurement and tags, as in the line
    raw: dict[str, str]
    ts: str


@dataclass(slots=True)
class Screened:
    """What to write for a batch, and what the guard learns once it is written (`RevisionGuard.remember`)."""

    lines: list[str]
    revisions: int = 0  # revision lines among `lines`
    dropped: int = 0  # readings lines of the batch not written: identical to what is stored, or revisions
    known: dict[Key, dict[str, Any] | str] = field(default_factory=dict)  # key -> first values, or the line


@dataclass(frozen=True, slots=True)
class Revision:
    """One stored revision: a re-sent value that differs from the first one received."""

    interval: str
    mn: str
    enterprise: str
    outlet: str
    pollutant: str
    time: datetime  # the reading's DataTime (UTC)
    field: str  # avg, zs_avg, flag, ...
    first: float | str | None
    revised: float | str | None
    received_at: datetime  # when the ingest writer compared it with what was stored


class RevisionGuard:
    """Screens the readings of a batch against what InfluxDB already holds (one per ingest worker)."""

    def __init__(self, influx: Influx, memory_points: int = MEMORY_POINTS) -> None:
        self.influx = influx
        self.memory_points = memory_points
        # Points known stored (FIFO): their first values, or the line that wrote them (parsed when needed).
        self._memory: dict[Key, dict[str, Any] | str] = {}

    def screen(self, lines: list[str], now: datetime | None = None) -> Screened:
        """The lines to write instead of `lines`. Raises InfluxUnavailable when the lookup cannot run.

        A point never received costs a key (no field parsing): the line is written as it came.
        """
        keys = [_key(ln) for ln in lines]
        wanted = {k for k in keys if k is not None}
        if not wanted:
            return Screened(lines)
        state: dict[Key, dict[str, Any] | str] = self._known(wanted, lines, keys)  # first values, or a line
        out: list[str] = []
        revised: list[tuple[_Line, dict[str, tuple[Any, str]]]] = []
        dropped = 0
        for ln, k in zip(lines, keys):
            if k is None:
                out.append(ln)
                continue
            first = state.get(k)
            if first is None:  # the common case: a point never received
                state[k] = ln
                out.append(ln)
                continue
            if first == ln:  # the very same line again
                dropped += 1
                continue
            if isinstance(first, str):
                first = state[k] = _values(_parse(first).raw)
            p = _parse(ln)
            new, changed = _compare(p.raw, first)
            if new:
                out.append(p.head + " " + ",".join(f"{f}={p.raw[f]}" for f in new) + " " + p.ts)
                first.update({f: _value(p.raw[f]) for f in new})
            else:
                dropped += 1
            if changed:
                revised.append((p, changed))
        screened = Screened(out, dropped=dropped, known={k: state[k] for k in wanted})
        if revised:
            received = int((now or datetime.now(timezone.utc)).timestamp())
            lines_rev = self._revision_lines(revised, received)
            screened.lines += lines_rev
            screened.revisions = len(lines_rev)
            if lines_rev:
                log.warning("%d re-sent readings differ from the first values received; kept as revisions "
                            "(stations %s)", len(lines_rev), ", ".join(sorted({p.key[1] for p, _ in revised})[:10]))
        return screened

    def remember(self, screened: Screened) -> None:
        """Call once the screened lines are written: later batches need no lookup for these points."""
        if self.memory_points <= 0:
            return
        mem = self._memory
        for k, v in screened.known.items():
            mem.pop(k, None)
            mem[k] = v
        while len(mem) > self.memory_points:
            del mem[next(iter(mem))]

    # -- lookup ---------------------------------------------------------------------------------

    def _known(self, keys: set[Key], lines: list[str], line_keys: list[Key | None]) -> dict[Key, dict[str, Any] | str]:
        """First values of the stored points among `keys` (dicts are copies: the caller updates them).

        Only the fields the batch sends are read back (InfluxDB opens one iterator per series and
        field): a stored point with none of them cannot be overwritten by the batch.
        """
        mem = self._memory
        out: dict[Key, dict[str, Any] | str] = {}
        missing = set()
        # A remembered point is known only for the fields remembered: another worker may have
        # added a field since, so a line sending one the memory lacks is looked up.
        sent: dict[Key, set[str]] = {}
        for ln, k in zip(lines, line_keys):
            if k is not None and k in mem:
                sent.setdefault(k, set()).update(_field_names(ln))
        for k in keys:
            v = mem.get(k)
            if v is None or not sent[k] <= (set(_field_names(v)) if isinstance(v, str) else v.keys()):
                missing.add(k)
            else:
                out[k] = v if isinstance(v, str) else dict(v)
        if missing:
            fields: dict[str, set[str]] = {}
            for ln, k in zip(lines, line_keys):
                if k in missing:
                    fields.setdefault(k[0], set()).update(_field_names(ln))
            for k, v in _read_points(self.influx, missing, fields).items():
                out.setdefault(k, v)
        return out

    def _revision_lines(self, revised: list[tuple[_Line, dict[str, tuple[Any, str]]]], received: int) -> list[str]:
        """Revision lines, minus those already stored (the same revised value sent again)."""
        stored = _stored_revisions(self.influx, {p.key for p, _ in revised})
        out, seen = [], set()
        for p, changed in revised:
            body = ",".join(f"{k}={raw}" for k, (_, raw) in sorted(changed.items()))
            rev = hashlib.sha256(body.encode()).hexdigest()[:12]
            if (p.key, rev) in stored or (p.key, rev) in seen:
                continue
            seen.add((p.key, rev))
            measurement, _, tags = p.head.partition(",")
            interval = measurement.removeprefix(MEASUREMENT_PREFIX)
            fields = [f"{k}={raw}" for k, (_, raw) in sorted(changed.items())]
            fields += [f"first_{k}={_raw(first)}" for k, (first, _) in sorted(changed.items())]
            out.append(f"{REVISIONS},{tags},interval={interval},rev={rev} {','.join(fields)},"
                       f"received_at={received}i {p.ts}")
        return out


# -- line protocol --------------------------------------------------------------------------------


def _key(line: str) -> Key | None:
    """The point a readings line writes; None for other lines (events, mobile)."""
    if not line.startswith(MEASUREMENT_PREFIX) or line.startswith(_EVENT_HEAD):
        return None
    if "\\" in line:
        return _parse(line).key
    sp = line.index(" ")  # a handful of C-level finds: this runs for every line written
    return (line[:line.index(",")], _tag(line, ",mn=", sp), _tag(line, ",pollutant=", sp),
            int(line[line.rindex(" ") + 1:]))


def _tag(line: str, prefix: str, end: int) -> str:
    i = line.find(prefix, 0, end)
    if i < 0:
        return ""
    i += len(prefix)
    j = line.find(",", i, end)
    return line[i:j if j >= 0 else end]


_EVENT_HEAD = EVENT + ","


def _field_names(line: str) -> list[str]:
    """The field names of a readings line; a string value holding `,x=` may add a stray name
    (selecting a field that does not exist is harmless), never drop one."""
    if "\\" in line:
        return list(_parse(line).raw)
    return _FIELD_NAME.findall(line, line.index(" "), line.rindex(" "))


_FIELD_NAME = re.compile(r'[ ,]([^=," ]+)=')


def _values(raw: dict[str, str]) -> dict[str, Any]:
    return {k: _value(v) for k, v in raw.items()}


def _parse(line: str) -> _Line:
    if "\\" in line:
        head = _HEAD.match(line).group(0)  # type: ignore[union-attr]
        tags = [_UNESCAPE_TAG.sub(r"\1", t) for t in _COMMA.split(head)]
    else:
        head = line[:line.index(" ")]
        tags = head.split(",")
    rest = line[len(head) + 1:]
    body, _, ts = rest.rpartition(" ")
    tag = dict(t.split("=", 1) for t in tags[1:])
    raw = {m.group(1): m.group(2) for m in _FIELD.finditer(body)}
    return _Line((tags[0], tag.get("mn", ""), tag.get("pollutant", ""), int(ts)), head, raw, ts)


def _value(raw: str) -> Any:
    """A field's value as InfluxDB returns it: str for a quoted string, else float."""
    if raw.startswith('"'):
        return _UNESCAPE_STR.sub(r"\1", raw[1:-1])
    return float(raw.rstrip("i"))


def _raw(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(float(value))


def _compare(raw: dict[str, str], stored: dict[str, Any] | None) -> tuple[list[str], dict[str, tuple[Any, str]]]:
    """(fields to write: not stored yet, {field: (first value, revised text)} for those that differ)."""
    if stored is None:
        return list(raw), {}
    new, changed = [], {}
    for k, text in raw.items():
        first = stored.get(k)
        if first is None:
            new.append(k)
        elif not _same(first, _value(text)):
            changed[k] = (first, text)
    return new, changed


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return float(a) == float(b)


# -- InfluxQL -------------------------------------------------------------------------------------


def _statements(keys: Iterable[Key], *, source: str, target: str | None = None, select: str = "*",
                where: str = "", group: Iterable[str] = ("mn", "pollutant")) -> list[str]:
    """Statements on `target` (default: `source`) covering `keys` of measurement `source`: one per
    time range (and chunk of stations), restricted to the stations with a key in that range."""
    group_by = ", ".join(ident(g) for g in group)
    out = []
    for lo, hi, stations in _ranges(keys):
        mns = sorted(stations)
        for i in range(0, len(mns), _MAX_STATIONS_PER_STATEMENT):
            cond = [f"time >= {lo}s", f"time <= {hi}s", tag_in("mn", mns[i:i + _MAX_STATIONS_PER_STATEMENT])]
            out.append(f"SELECT {select} FROM {ident(target or source)} WHERE {' AND '.join(cond + ([where] if where else []))} "
                       f"GROUP BY {group_by}")
    return out


def _ranges(keys: Iterable[Key]) -> list[tuple[int, int, set[str]]]:
    """(first time, last time, stations) to read back so that every key is covered.

    A statement's fixed cost (InfluxDB matching the stations' regular expression against its
    index) is most of what a read-back costs, so: each station's times are cut into runs at gaps
    over _DENSE_GAP_S, and runs that start in the same hour and end in the same hour share one
    range (a live batch: one range for all its stations; a catch-up: one per station or group of
    stations in the same hours), each station reading at most an hour either side of its own run.
    Beyond _MAX_STATEMENTS such ranges: runs of times split at the widest gaps (_clusters).
    """
    by_mn: dict[str, list[int]] = {}
    for k in keys:
        by_mn.setdefault(k[1], []).append(k[3])
    ranges: dict[tuple[int, int], tuple[int, int, set[str]]] = {}
    for mn, times in by_mn.items():
        times.sort()
        start = 0
        for i in range(1, len(times) + 1):
            if i < len(times) and times[i] - times[i - 1] <= _DENSE_GAP_S:
                continue
            lo, hi = times[start], times[i - 1]
            start = i
            b = (lo // _DENSE_GAP_S, hi // _DENSE_GAP_S)
            r = ranges.get(b)
            ranges[b] = (min(lo, r[0]), max(hi, r[1]), r[2] | {mn}) if r else (lo, hi, {mn})
    if len(ranges) <= _MAX_STATEMENTS:
        return sorted(ranges.values(), key=lambda r: r[:2])
    by_time: dict[int, set[str]] = {}
    for mn, times in by_mn.items():
        for t in times:
            by_time.setdefault(t, set()).add(mn)
    return [(c[0], c[-1], set().union(*(by_time[t] for t in c))) for c in _clusters(sorted(by_time))]


def _clusters(times: list[int]) -> list[list[int]]:
    """At most _MAX_STATEMENTS runs of sorted times, split at the widest gaps: each time exactly
    when there are few (a live batch holds a few DataTimes), else the least span read for nothing."""
    if len(times) <= _MAX_STATEMENTS:
        return [[t] for t in times]
    gaps = sorted(range(1, len(times)), key=lambda i: times[i] - times[i - 1], reverse=True)
    cuts = sorted(gaps[:_MAX_STATEMENTS - 1])
    return [times[a:b] for a, b in zip([0, *cuts], [*cuts, len(times)])]


def _read_points(influx: Influx, keys: set[Key], fields: dict[str, set[str]]) -> dict[Key, dict[str, Any]]:
    """The stored `fields` (per measurement) of the readings' points around `keys` (one request)."""
    stmts = [st for m, ks in _by_measurement(keys).items()
             for st in _statements(ks, source=m, select=", ".join(ident(f) for f in sorted(fields[m])))]
    out: dict[Key, dict[str, Any]] = {}
    for s in influx.query(";".join(stmts), epoch="s"):
        fields = [(i, c) for i, c in enumerate(s.columns) if c not in _TAG_COLUMNS]
        mn, pollutant = s.tags.get("mn", ""), s.tags.get("pollutant", "")
        for row in s.values:
            stored = out.setdefault((s.name, mn, pollutant, int(row[0])), {})
            for i, c in fields:
                if row[i] is not None:
                    stored.setdefault(c, row[i])  # two series at one key (tags changed since): the first
    return out


def _by_measurement(keys: Iterable[Key]) -> dict[str, list[Key]]:
    out: dict[str, list[Key]] = {}
    for k in sorted(keys):
        out.setdefault(k[0], []).append(k)
    return out


_TAG_COLUMNS = frozenset({"time", "mn", "enterprise", "outlet", "medium", "pollutant", "code"})


def _stored_revisions(influx: Influx, keys: set[Key]) -> set[tuple[Key, str]]:
    """(key, rev) of the revisions already stored for `keys` (one request)."""
    stmts = []
    for m, ks in _by_measurement(keys).items():
        interval = literal(m.removeprefix(MEASUREMENT_PREFIX))
        stmts += _statements(ks, source=m, target=REVISIONS, select='"received_at"', where=f'"interval" = {interval}',
                             group=("mn", "pollutant", "interval", "rev"))
    return {((MEASUREMENT_PREFIX + s.tags.get("interval", ""), s.tags.get("mn", ""), s.tags.get("pollutant", ""),
              int(row[0])), s.tags.get("rev", ""))
            for s in influx.query(";".join(stmts), epoch="s") for row in s.values}


# -- reading revisions back (for detect/ and evidence) --------------------------------------------


def read_revisions(influx: Influx, start: datetime, end: datetime, *, by: str = "time",
                   mns: Iterable[str] | None = None) -> list[Revision]:
    """The stored revisions, one per revised field, sorted by station, pollutant, time, received_at.

    by="time": readings whose DataTime is in [start, end); by="received": revisions received in
    [start, end) whatever the time of the reading they revise.
    """
    if by == "time":
        cond = [f"time >= {literal(rfc3339(start))}", f"time < {literal(rfc3339(end))}"]
    elif by == "received":
        cond = [f'"received_at" >= {int(start.timestamp())}', f'"received_at" < {int(end.timestamp())}']
    else:
        raise ValueError(f"by must be 'time' or 'received', not {by!r}")
    wanted = sorted(set(mns)) if mns is not None else None
    if wanted == []:
        return []
    if wanted is not None:
        cond.append(tag_in("mn", wanted))
    series = influx.query(f"SELECT * FROM {ident(REVISIONS)} WHERE {' AND '.join(cond)}", epoch="s")
    out = []
    for s in series:
        for row in s.values:
            rec = dict(zip(s.columns, row))
            for name in sorted(rec):
                if not name.startswith("first_") or rec[name] is None:
                    continue
                f = name.removeprefix("first_")
                out.append(Revision(
                    interval=rec.get("interval") or "", mn=rec.get("mn") or "", enterprise=rec.get("enterprise") or "",
                    outlet=rec.get("outlet") or "", pollutant=rec.get("pollutant") or "",
                    time=datetime.fromtimestamp(int(rec["time"]), timezone.utc), field=f, first=_number(rec[name]),
                    revised=_number(rec.get(f)), received_at=datetime.fromtimestamp(int(rec["received_at"] or 0), timezone.utc)))
    out.sort(key=lambda r: (r.mn, r.pollutant, r.interval, r.time, r.received_at, r.field))
    return out


def _number(v: Any) -> Any:
    """Floats as floats (JSON gives 40.0 back as 40); strings and None unchanged."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
