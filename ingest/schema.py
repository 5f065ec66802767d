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
                   fields seen=1i, plus the packet's own numeric CP values (e.g. SB1_RS)
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

from config.lookup import StationRef
from config.tables import pollutants
from ingest.model import MobileFix, Packet, Value

MEASUREMENT_PREFIX = "station_"
MOBILE = "mobile"
EVENT = "station_event"
REVISIONS = "revisions"
FLOAT_FIELDS = ("rtd", "avg", "min", "max", "zs_rtd", "zs_avg", "zs_min", "zs_max", "cou")
STRING_FIELDS = ("flag", "eflag")
# Field name -> how station_lines writes it (float or str); fields not listed are not written.
_FIELD_KIND: dict[str, type] = {**dict.fromkeys(FLOAT_FIELDS, float), **dict.fromkeys(STRING_FIELDS, str)}
SPECIES = ("voc", "pm25", "pm10", "no2", "so2", "o3", "co")

# Unit conversions to the table's canonical unit, applied when a station overrides the unit.
_TO_CANONICAL: dict[tuple[str, str], float] = {("m3/h", "m3/s"): 1 / 3600, ("L/s", "m3/s"): 1e-3}
# Cumulative amounts (cou) are volumes, not rates: never scaled by a rate conversion.
_RATE_FIELDS = frozenset({"rtd", "avg", "min", "max"})


def measurement(interval: str) -> str:
    return MEASUREMENT_PREFIX + interval


@lru_cache(maxsize=1 << 16)
def _esc_tag(v: str) -> str:
    # Line protocol tag keys/values: escape comma, equals sign and space. Cached: the same few
    # thousand MNs, codes and ids recur in every packet.
    return v.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


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
    head = f"{measurement(packet.interval)},mn={_esc_tag(packet.mn)},enterprise={ent},outlet={out},medium={medium}"
    original_codes, kinds = packet.original_codes, _FIELD_KIND
    lines = []
    for code, fields in packet.values.items():
        scale = _scale(code, units) if units else 1.0
        parts = []
        for name, v in fields.items():
            kind = kinds.get(name)
            if kind is None:
                continue
            if kind is float:
                if v.__class__ is float and scale == 1.0:  # the common case, without float(v)
                    parts.append(f"{name}={v!r}")
                elif v.__class__ is not str:
                    v = float(v) * scale if scale != 1.0 and name in _RATE_FIELDS else float(v)
                    parts.append(f"{name}={v!r}")
            elif v.__class__ is str and '"' not in v and "\\" not in v:  # nothing to escape
                parts.append(f'{name}="{v}"')
            else:
                parts.append(f'{name}="{_esc_str(str(v))}"')
        if parts:
            orig = original_codes.get(code, code)
            lines.append(f"{head}{_tags(code, orig)}{','.join(parts)}{ts}")
    return lines


@lru_cache(maxsize=1 << 16)
def _tags(code: str, orig: str) -> str:
    """`,pollutant=..,code=.. `: the tags after a station line's head, and the space after them."""
    return f",pollutant={_esc_tag(code)},code={_esc_tag(orig)} "


def _scale(code: str, units: dict[str, str]) -> float:
    sent = units.get(code)
    table = pollutants().get(code)
    if sent is None or table is None or sent == table.unit:
        return 1.0
    return _TO_CANONICAL.get((sent, table.unit), 1.0)


def event_line(packet: Packet, ref: StationRef | None, received: datetime) -> str:
    """One point per non-readings packet, stamped with DataTime if sent, else the receive time."""
    ts = _epoch_s(packet.data_time or received)
    ent = _esc_tag(ref.enterprise.id) if ref else "_unknown"
    fields = ["seen=1i"]
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
