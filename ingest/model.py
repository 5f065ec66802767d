"""What the decoders produce: packets, mobile fixes and rejections. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

Value = float | str


class Reason(StrEnum):
    """Why a payload was rejected. The first eight are the decoders'; the rest are ingest's."""

    NO_HEADER = "no_header"
    BAD_LENGTH = "bad_length"
    LENGTH_MISMATCH = "length_mismatch"
    CRC_MISMATCH = "crc_mismatch"
    BAD_FIELD = "bad_field"
    DECRYPT_FAILED = "decrypt_failed"
    BAD_JSON = "bad_json"
    TOO_LARGE = "too_large"
    UNKNOWN_STATION = "unknown_station"
    UNKNOWN_DEVICE = "unknown_device"
    BAD_TIME = "bad_time"
    INCOMPLETE_SPLIT = "incomplete_split"


class Rejected(Exception):
    """A payload that cannot be used, with a machine-readable reason and a human detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class Kind(StrEnum):
    """What a packet is for, from its CN."""

    READINGS = "readings"  # 2011 real-time, 2051 minute, 2061 hourly, 2031 daily
    HEARTBEAT = "heartbeat"  # 8013 (field practice, not in the standard)
    STATUS = "status"  # 2021 equipment status, 9015 connection state (field practice)
    ALARM = "alarm"  # 2072 (2005)
    RESTART = "restart"  # 2081
    ANSWER = "answer"  # 9011..9014
    OTHER = "other"  # anything else well-formed: counted, not an error


# CN -> interval name of a readings packet; also the InfluxDB measurement suffix.
INTERVALS: dict[str, str] = {"2011": "rtd", "2051": "minute", "2061": "hour", "2031": "day"}


@dataclass(slots=True)
class Packet:
    """One decoded HJ 212 (or JSON station) packet.

    `values` maps a pollutant code (2017 code where a 2005 code was sent) to its fields, named in
    snake case: rtd, avg, min, max, zs_rtd, zs_avg, zs_min, zs_max, cou, flag, eflag, ...
    Numbers are floats; flags and other text stay strings.
    """

    mn: str
    cn: str
    st: str | None = None
    qn: str | None = None
    pw: str | None = None
    flag: int | None = None
    pnum: int | None = None
    pno: int | None = None
    data_time: datetime | None = None  # aware; HJ 212 DataTime is UTC+08:00
    values: dict[str, dict[str, Value]] = field(default_factory=dict)
    original_codes: dict[str, str] = field(default_factory=dict)  # 2017 code -> code as sent
    extra: dict[str, str] = field(default_factory=dict)  # CP keys outside pollutants (HeartbeatTime..)
    encrypted: bool = False

    @property
    def edition(self) -> int | None:
        """0 = HJ/T 212-2005, 1 = HJ 212-2017, 2 = HJ 212-2025; None when no Flag was sent."""
        return None if self.flag is None else self.flag >> 2

    @property
    def ack_requested(self) -> bool:
        return bool(self.flag and self.flag & 1)

    @property
    def split(self) -> bool:
        return bool(self.flag and self.flag & 2)

    @property
    def kind(self) -> Kind:
        return cn_kind(self.cn)

    @property
    def interval(self) -> str | None:
        return INTERVALS.get(self.cn)


def cn_kind(cn: str) -> Kind:
    if cn in INTERVALS:
        return Kind.READINGS
    return {
        "8013": Kind.HEARTBEAT, "2021": Kind.STATUS, "9015": Kind.STATUS, "2072": Kind.ALARM,
        "2081": Kind.RESTART, "9011": Kind.ANSWER, "9012": Kind.ANSWER, "9013": Kind.ANSWER,
        "9014": Kind.ANSWER,
    }.get(cn, Kind.OTHER)


@dataclass(slots=True)
class MobileFix:
    """One drone or survey-vehicle sample: position, species concentrations, optional wind."""

    device: str
    kind: str  # drone | vehicle
    time: datetime  # aware
    lat: float
    lon: float
    alt: float | None = None
    species: dict[str, float] = field(default_factory=dict)  # voc, pm25, pm10, no2, so2, o3, co
    wind_dir: float | None = None  # degrees the wind blows FROM, 0 = north
    wind_speed: float | None = None  # m/s


Decoded = Packet | MobileFix
