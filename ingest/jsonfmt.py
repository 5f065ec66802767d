"""The JSON payloads envwatch accepts besides HJ 212: station readings and mobile (drone/vehicle) fixes.

Station:
    {"mn": "...", "cn": "2051", "st": "31", "data_time": "2026-11-29T10:00:00+08:00",
     "values": {"a21026": {"avg": 12.3, "zs_avg": 15.1, "flag": "N"}}}
    optional: "qn", "flag" (int, HJ 212 Flag bits), "extra" {str: str}. 2005 codes are mapped to
    2017 codes as for HJ 212. A readings CN (2011/2051/2061/2031) needs data_time.
Mobile:
    {"device": "UAV01", "kind": "drone" | "vehicle", "time": "...", "lat": .., "lon": .., "alt": ..,
     "species": {"voc": .., "pm25": .., "pm10": .., "no2": .., "so2": .., "o3": .., "co": ..},
     "wind_dir": deg (0..360), "wind_speed": m/s (>= 0)}

Times are ISO-8601; a naive time means China local time (UTC+08:00). Unknown keys are rejected
(bad_field) so that a misspelt species or field is noticed rather than silently dropped.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from config.tables import code_2005_to_2017
from core.time import china_time
from ingest.model import INTERVALS, MobileFix, Packet, Reason, Rejected, Value

_TEXT_FIELDS = frozenset({"flag", "eflag", "sample_time", "info"})


def _iso_time(v: object) -> datetime:
    # Only ISO-8601 text: pydantic would also take epoch numbers, whose zone is ambiguous here.
    if not isinstance(v, str):
        raise ValueError("time must be an ISO-8601 string")
    return china_time(datetime.fromisoformat(v))


def _printable(v: str) -> str:
    # Rejects control characters and lone surrogates (JSON "\\ud800"), which nothing downstream can encode.
    if not v.isprintable():
        raise ValueError("text must be printable (no control characters or lone surrogates)")
    return v


IsoTime = Annotated[datetime, BeforeValidator(_iso_time)]
Text = Annotated[str, AfterValidator(_printable)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


class _Species(_Model):
    voc: Finite | None = None
    pm25: Finite | None = None
    pm10: Finite | None = None
    no2: Finite | None = None
    so2: Finite | None = None
    o3: Finite | None = None
    co: Finite | None = None


class _Mobile(_Model):
    device: Text = Field(min_length=1, max_length=64)
    kind: Literal["drone", "vehicle"]
    time: IsoTime
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    alt: Finite | None = None
    species: _Species = _Species()
    wind_dir: Annotated[float, Field(ge=0, le=360)] | None = None
    wind_speed: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class _Station(_Model):
    mn: Text = Field(min_length=1, max_length=64)
    cn: str = Field(pattern=r"^[0-9]{1,7}$")
    st: Text | None = None
    qn: Text | None = None
    flag: Annotated[int, Field(ge=0, le=255)] | None = None
    data_time: IsoTime | None = None
    values: dict[Text, dict[Text, Finite | Text]] = Field(default_factory=dict)
    extra: dict[Text, Text] = Field(default_factory=dict)


def decode(raw: bytes) -> Packet | MobileFix:
    """Decode one JSON payload (station readings or a mobile fix). Raises Rejected(bad_json | bad_field)."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Rejected(Reason.BAD_JSON, f"not JSON: {exc}"[:200]) from None
    if not isinstance(obj, dict):
        raise Rejected(Reason.BAD_FIELD, f"JSON payload is a {type(obj).__name__}, not an object")
    try:
        if "device" in obj:
            return _mobile(_Mobile.model_validate(obj))
        if "mn" in obj:
            return _station(_Station.model_validate(obj))
    except ValidationError as exc:
        raise Rejected(Reason.BAD_FIELD, _first_error(exc)) from None
    raise Rejected(Reason.BAD_FIELD, "JSON object has neither `mn` (station) nor `device` (mobile)")


def _first_error(exc: ValidationError) -> str:
    errs = exc.errors(include_url=False, include_input=False)
    first = errs[0]
    where = ".".join(str(x) for x in first["loc"]) or "payload"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"{where}: {first['msg']}{more}"[:300]


def _mobile(m: _Mobile) -> MobileFix:
    species = {k: v for k, v in m.species.model_dump().items() if v is not None}
    return MobileFix(device=m.device, kind=m.kind, time=m.time, lat=m.lat, lon=m.lon, alt=m.alt,
                     species=species, wind_dir=m.wind_dir, wind_speed=m.wind_speed)


def _station(s: _Station) -> Packet:
    if s.cn in INTERVALS and s.data_time is None:
        raise Rejected(Reason.BAD_FIELD, f"cn {s.cn} carries readings but no data_time")
    p = Packet(mn=s.mn, cn=s.cn, st=s.st, qn=s.qn, flag=s.flag, data_time=s.data_time, extra=dict(s.extra))
    mapping = code_2005_to_2017()
    for code, fields in s.values.items():
        if not code or not code.isprintable():
            _reject(f"values: pollutant code {code!r} is empty or not printable")
        new = mapping.get(code)
        if new is not None:
            p.original_codes[new] = code
            code = new
        p.values.setdefault(code, {}).update(_fields(code, fields))
    return p


def _fields(code: str, fields: dict[str, float | str]) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for name, v in fields.items():
        if name in _TEXT_FIELDS:
            out[name] = v if isinstance(v, str) else _reject(f"values.{code}.{name} must be a string")
        elif isinstance(v, float) and math.isfinite(v):
            out[name] = v
        else:
            _reject(f"values.{code}.{name} must be a finite number")
    return out


def _reject(detail: str) -> str:
    raise Rejected(Reason.BAD_FIELD, detail)
