"""The InfluxDB schema envwatch writes, owned here and read by detect/ and center/.

Station readings, one measurement per HJ 212 interval (CN):
    station_rtd (2011), station_minute (2051), station_hour (2061), station_day (2031)
    tags   mn, enterprise, outlet, medium (gas|water), pollutant (2017 code), code (code as sent)
    fields rtd avg min max zs_rtd zs_avg zs_min zs_max cou (float), flag eflag (string)
One series per (station, pollutant) per interval; the timestamp is DataTime converted to UTC,
in seconds. The ingest writes a point's fields once: the first values received stay (ingest/revisions.py),
so writing the same reading again changes nothing and re-delivery is harmless.

Revisions: a re-sent reading whose values differ from the first ones received (ingest/revisions.py).
    revisions  tags   the reading's tags, plus interval (rtd|minute|hour|day) and rev (digest of the
                      revised values: each distinct revised value of a point is its own series)
               fields for each field that differs: <field> (revised value) and first_<field> (the
                      value kept in the readings); received_at (integer, epoch seconds)
               time   the reading's DataTime

Mobile samples (drones, survey vehicles):
    mobile  tags device, kind (drone|vehicle)
            fields lat lon alt wind_dir wind_speed, and one float per species (voc pm25 pm10 no2 so2 o3 co)

Station events (heartbeats, status, alarms, restarts): counted and kept for the offline detector.
    station_event  tags mn, enterprise, kind (heartbeat|status|alarm|restart|answer|other), cn
                   fields seen=1i, time_source (string, see below), plus the packet's own numeric
                   CP values (e.g. SB1_RS)
    The timestamp is the packet's own time (hj212.event_time): DataTime, else AlarmTime (2072),
    RestartTime (2081) or SystemTime, else the QN (YYYYMMDDhhmmsszzz, the time the logger made
    the packet; not for answers, whose QN is the request's); time_source names which
    (data_time|alarm_time|restart_time|system_time|qn). Only a packet with none of them is
    stamped with the time the ingest received it, time_source "arrival".
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

from config.lookup import StationRef
from config.tables import pollutant_codes, pollutants
from ingest.hj212 import field_suffix
from ingest.model import MobileFix, Packet, Reason, Rejected, Value

MEASUREMENT_PREFIX = "station_"
MOBILE = "mobile"
EVENT = "station_event"
REVISIONS = "revisions"
FLOAT_FIELDS = ("rtd", "avg", "min", "max", "zs_rtd", "zs_avg", "zs_min", "zs_max", "cou")
STRING_FIELDS = ("flag", "eflag")
# Field name -> how station_lines writes it (float or str); fields not listed are not written.
_FIELD_KIND: dict[str, type] = {**dict.fromkeys(FLOAT_FIELDS, float), **dict.fromkeys(STRING_FIELDS, str)}
SPECIES = ("voc", "pm25", "pm10", "no2", "so2", "o3", "co")
# Values out of their pollutant's plausible range (config/tables/pollutants.yaml) are written as
# `<field>_implausible`, never in the fields detectors judge, and named in the `implausible` field.
_JUDGED = frozenset({"rtd", "avg", "min", "max", "zs_rtd", "zs_avg", "zs_min", "zs_max"})
IMPLAUSIBLE_SUFFIX = "_implausible"
# pollutant and code tag of the one catch-all series per station and interval that holds, as
# the string field `other`, the values of codes in neither the code table nor the station's registry entry.
OTHER = "_other"

# Unit conversions to the table's canonical unit, applied when a station overrides the unit.
_TO_CANONICAL: dict[tuple[str, str], float] = {("m3/h", "m3/s"): 1 / 3600, ("L/s", "m3/s"): 1e-3}
# Cumulative amounts (cou) are volumes, not rates: never scaled by a rate conversion.
_RATE_FIELDS = frozenset({"rtd", "avg", "min", "max"})


def measurement(interval: str) -> str:
    return MEASUREMENT_PREFIX + interval


@lru_cache(maxsize=1 << 16)
def _esc_tag(v: str) -> str:
    """A tag key or value (or field key) in line protocol: comma, equals sign and space escaped
    with a backslash, and nothing else: InfluxDB stores any other backslash as it is (escaping
    it too stored it doubled). A backslash at the end or before one of those three characters
    cannot be written exactly at all: Rejected (bad_field), so that the payload is dead-lettered
    raw rather than refused later as a line. Cached: the same MNs and codes recur in every packet."""
    if "\\" in v and (v.endswith("\\") or any(f"\\{c}" in v for c in ", =")):
        raise Rejected(Reason.BAD_FIELD, f"identifier {v[:70]!r} ends with a backslash or has one before "
                                         f"',', '=' or ' ': InfluxDB line protocol cannot store it")
    return v.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _esc_str(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', r"\"")


_EPOCH_S: dict[datetime, int] = {}  # memo of _epoch_s


def _epoch_s(t: datetime) -> int:
    # Memoised: packets share DataTimes (the decoder even shares the datetime objects, whose hash
    # is cached) and timestamp() costs ~20 lookups. Only fixed-offset times are stored: equal ones
    # are the same instant, whereas with zoneinfo the two 01:30 of a DST change compare equal.
    s = _EPOCH_S.get(t)
    if s is None:
        s = int(t.astimezone(timezone.utc).timestamp())
        if type(t.tzinfo) is timezone:
            if len(_EPOCH_S) >= 8192:
                _EPOCH_S.clear()
            _EPOCH_S[t] = s
    return s


def _field(name: str, v: Value) -> str:
    if isinstance(v, str):
        return f'{name}="{_esc_str(v)}"'
    return f"{name}={float(v)!r}"


def station_lines(packet: Packet, ref: StationRef | None) -> list[str]:
    """Line protocol for a readings packet (one line per pollutant with at least one field).

    Hand-written rather than influxdb_client.Point: this is the ingest hot path, and Point's
    per-field type dispatch costs several times more per reading (see bench/ingest.py).
    """
    if packet.interval is None or packet.data_time is None:
        return []
    ts = f" {_epoch_s(packet.data_time)}"
    ent = _esc_tag(ref.enterprise.id) if ref else "_unknown"
    out = _esc_tag(ref.outlet.id) if ref else "_unknown"
    medium = ref.outlet.medium if ref else ("water" if packet.st == "32" else "gas")
    units = ref.station.units if ref else {}
    known = _known_codes(ref)
    head = f"{measurement(packet.interval)},mn={_esc_tag(packet.mn)},enterprise={ent},outlet={out},medium={medium}"
    original_codes, kinds, ranges = packet.original_codes, _FIELD_KIND, _RANGES
    lines = []
    other: list[str] = []
    for code, fields in packet.values.items():
        if code not in known:
            other += _other_items(original_codes.get(code, code), fields)
            continue
        scale = _scale(code, units) if units else 1.0
        lo, hi = ranges.get(code, _ANY)
        parts = []
        implausible = []
        for name, v in fields.items():
            kind = kinds.get(name)
            if kind is None:
                continue
            if kind is float:
                if v.__class__ is str:
                    continue
                if v.__class__ is not float or scale != 1.0:
                    v = float(v) * scale if scale != 1.0 and name in _RATE_FIELDS else float(v)
                if not lo <= v <= hi and name in _JUDGED:
                    implausible.append(name)
                    name += IMPLAUSIBLE_SUFFIX  # kept, but never in a field a detector judges
                parts.append(f"{name}={v!r}")
            elif v.__class__ is str and '"' not in v and "\\" not in v:  # nothing to escape
                parts.append(f'{name}="{v}"')
            else:
                parts.append(f'{name}="{_esc_str(str(v))}"')
        if implausible:
            parts.append(f'implausible="{",".join(implausible)}"')
        if parts:
            orig = original_codes.get(code, code)
            lines.append(f"{head}{_tags(code, orig)}{','.join(parts)}{ts}")
    if other:
        lines.append(f'{head}{_tags(OTHER, OTHER)}other="{_esc_str(",".join(other))}"{ts}')
    return lines


def _other_items(code: str, fields: dict[str, Value]) -> list[str]:
    """`code-Suffix=value` items, HJ 212 style, for the catch-all series."""
    out = []
    for name, v in fields.items():
        text = v if isinstance(v, str) else repr(float(v))
        out.append(f"{code}-{field_suffix(name)}={text}")
    return out


_KNOWN: dict[int, tuple[object, frozenset[str]]] = {}  # id(station) -> (station, its codes | the table's)


def _known_codes(ref: StationRef | None) -> frozenset[str]:
    """Codes that get a series of their own: the code table's and the station's registered ones."""
    if ref is None:
        return pollutant_codes()
    hit = _KNOWN.get(id(ref.station))
    if hit is None or hit[0] is not ref.station:
        if len(_KNOWN) > 65536:
            _KNOWN.clear()
        hit = _KNOWN[id(ref.station)] = (ref.station, pollutant_codes() | frozenset(ref.station.pollutants))
    return hit[1]


@lru_cache(maxsize=1 << 16)
def _tags(code: str, orig: str) -> str:
    """`,pollutant=..,code=.. `: the tags after a station line's head, and the space after them."""
    return f",pollutant={_esc_tag(code)},code={_esc_tag(orig)} "


def _plausible_ranges() -> dict[str, tuple[float, float]]:
    return {code: p.plausible for code, p in pollutants().items() if p.plausible is not None}


_RANGES = _plausible_ranges()
_ANY = (float("-inf"), float("inf"))


def _scale(code: str, units: dict[str, str]) -> float:
    sent = units.get(code)
    table = pollutants().get(code)
    if sent is None or table is None or sent == table.unit:
        return 1.0
    return _TO_CANONICAL.get((sent, table.unit), 1.0)


def event_line(packet: Packet, ref: StationRef | None, received: datetime,
               at: tuple[datetime, str] | None = None) -> str:
    """One point per non-readings packet, stamped `at` = (time, its source: see TIME_SOURCES);
    by default DataTime if sent, else the receive time ("arrival")."""
    when, source = at or ((packet.data_time, "data_time") if packet.data_time else (received, "arrival"))
    ts = _epoch_s(when)
    ent = _esc_tag(ref.enterprise.id) if ref else "_unknown"
    fields = ["seen=1i", f'time_source="{source}"']
    for code, vals in packet.values.items():
        for name, v in vals.items():
            if not isinstance(v, str):
                fields.append(_field(_esc_tag(f"{code}_{name}"), v))
    return (f"{EVENT},mn={_esc_tag(packet.mn)},enterprise={ent},kind={packet.kind.value},"
            f"cn={_esc_tag(packet.cn)} {','.join(fields)} {ts}")


def mobile_line(fix: MobileFix) -> str:
    fields = [_field("lat", fix.lat), _field("lon", fix.lon)]
    for name in ("alt", "wind_dir", "wind_speed"):
        v = getattr(fix, name)
        if v is not None:
            fields.append(_field(name, v))
    fields += [_field(_esc_tag(k), v) for k, v in fix.species.items()]
    return f"{MOBILE},device={_esc_tag(fix.device)},kind={_esc_tag(fix.kind)} {','.join(fields)} {_epoch_s(fix.time)}"
