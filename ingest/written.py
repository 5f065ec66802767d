"""The "written" notification: which minute readings the ingest has just put into InfluxDB.

After each write InfluxDB accepted, the ingest publishes the batch's minute lines (measurement
station_minute, line protocol exactly as written, one per line, UTF-8) on the internal topic
`{prefix}/internal/written`, QoS 1. Consumers (the early warning, detect/warning.py) thus see
each reading once it is durable, without polling InfluxDB. Only the service account may read or
write `{prefix}/internal/#` (center/broker_acl.py): a station cannot forge one.

    payload = written_payload(lines)          # None when the batch holds no minute reading
    for r in parse_written(payload): ...      # WrittenMinute(mn, enterprise, outlet, pollutant, ts, fields)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingest.schema import measurement

MINUTE_HEAD = measurement("minute") + ","
_FIELD = re.compile(r'([^=,\s\\]+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')
# Line protocol escapes only `,` `=` and space in tags, and only `"` and `\` in string fields.
_UNESCAPE_TAG = re.compile(r"\\([,= ])")
_UNESCAPE_STRING = re.compile(r'\\(["\\])')


def written_topic(prefix: str) -> str:
    return f"{prefix}/internal/written"


def written_payload(lines: list[str]) -> bytes | None:
    """The message for a batch InfluxDB accepted: its station_minute lines, or None if it has none."""
    minute = [ln for ln in lines if ln.startswith(MINUTE_HEAD)]
    return "\n".join(minute).encode() if minute else None


@dataclass(frozen=True, slots=True)
class WrittenMinute:
    """One minute reading of one channel as written: tags, epoch seconds and fields (float or str)."""

    mn: str
    enterprise: str
    outlet: str
    pollutant: str
    ts: int
    fields: dict[str, float | str]


def _split_unescaped(s: str, sep: str) -> list[str]:
    """Split on `sep` where it is not preceded by a backslash escape."""
    out, cur, i = [], [], 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            cur.append(s[i:i + 2])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def parse_line(line: str) -> WrittenMinute | None:
    """One station_minute line back into its parts; None for anything else or anything malformed."""
    if not line.startswith(MINUTE_HEAD):
        return None
    try:
        if "\\" not in line:  # the common case: nothing escaped, plain splits (a tag holds no space)
            rest, ts = line.rsplit(" ", 1)
            head, body = rest.split(" ", 1)
            tags = dict(kv.split("=", 1) for kv in head.split(",")[1:])
        else:
            parts = _split_unescaped(line, " ")
            if len(parts) != 3:
                return None
            head, body, ts = parts
            tags = dict(_UNESCAPE_TAG.sub(r"\1", kv).split("=", 1) for kv in _split_unescaped(head, ",")[1:])
        stamp = int(ts)
    except ValueError:
        return None
    fields: dict[str, float | str] = {}
    for name, raw in _FIELD.findall(body):
        if raw.startswith('"'):
            fields[name] = _UNESCAPE_STRING.sub(r"\1", raw[1:-1]) if "\\" in raw else raw[1:-1]
        else:
            try:
                fields[name] = float(raw.rstrip("i"))
            except ValueError:
                continue
    if "mn" not in tags or "pollutant" not in tags or not fields:
        return None
    return WrittenMinute(tags["mn"], tags.get("enterprise", ""), tags.get("outlet", ""), tags["pollutant"], stamp,
                         fields)


def parse_written(payload: bytes) -> list[WrittenMinute]:
    """Every minute reading of a written message (malformed lines are skipped)."""
    out = []
    for line in payload.decode("utf-8", errors="replace").split("\n"):
        r = parse_line(line)
        if r is not None:
            out.append(r)
    return out
