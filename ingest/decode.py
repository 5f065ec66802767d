"""One entry point for every payload ingest receives, its JSON rendering, and `envwatch decode`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from ingest import hj212, jsonfmt
from ingest.model import MobileFix, Packet, Reason, Rejected

if TYPE_CHECKING:
    from config import Settings

KeyFor = Callable[[str], "bytes | None"]
_WS = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class Decoder:
    """A payload format: `claims(raw)` says a payload is in it; `decode(raw, key_for)` reads it
    (raising Rejected). A new format: one entry in DECODERS."""

    name: str
    claims: Callable[[bytes], bool]
    decode: Callable[[bytes, "KeyFor | None"], "Packet | MobileFix"]


# The one registry of payload formats, tried in order; HJ 212 first: almost all traffic.
DECODERS: tuple[Decoder, ...] = (
    Decoder("hj212", lambda raw: raw[:2] == b"##", hj212.decode),
    Decoder("json", lambda raw: raw.lstrip(_WS)[:1] == b"{", lambda raw, _key_for: jsonfmt.decode(raw)),
)
# What no format claims is read as HJ 212, whose reasons say what is wrong with the frame.
FALLBACK = DECODERS[0]


def decode_payload(raw: bytes, key_for: KeyFor | None = None, max_bytes: int = 65536) -> Packet | MobileFix:
    """Decode one payload with the first format of DECODERS that claims it (JSON if its first
    non-blank byte is `{`, HJ 212 otherwise).

    Raises Rejected (too_large, or the decoders' reasons); never anything else.
    """
    if len(raw) > max_bytes:
        raise Rejected(Reason.TOO_LARGE, f"payload of {len(raw)} bytes exceeds {max_bytes}")
    for d in DECODERS:
        if d.claims(raw):
            return d.decode(raw, key_for)
    return FALLBACK.decode(raw, key_for)


def _iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.isoformat(timespec="milliseconds" if t.microsecond else "seconds")


def to_json(result: Packet | MobileFix | Rejected) -> dict[str, Any]:
    """The `envwatch decode` object for a decoded packet, a mobile fix or a rejection."""
    if isinstance(result, Rejected):
        return {"ok": False, "reason": result.reason.value, "detail": result.detail}
    if isinstance(result, MobileFix):
        return {
            "ok": True, "type": "mobile", "device": result.device, "kind": result.kind,
            "time": _iso(result.time), "lat": result.lat, "lon": result.lon, "alt": result.alt,
            "species": dict(result.species), "wind_dir": result.wind_dir, "wind_speed": result.wind_speed,
        }
    return {
        "ok": True, "type": "station", "mn": result.mn, "st": result.st, "cn": result.cn,
        "kind": result.kind.value, "data_time": _iso(result.data_time),
        "values": {code: dict(fields) for code, fields in result.values.items()},
        "qn": result.qn, "flag": result.flag, "edition": result.edition, "ack": result.ack_requested,
        "pnum": result.pnum, "pno": result.pno, "encrypted": result.encrypted,
        "original_codes": dict(result.original_codes), "extra": dict(result.extra),
    }


def key_lookup(settings: Settings | None) -> KeyFor | None:
    """MN -> 16-byte SM4 key from the registry's stations (sm4_key is validated as 32 hex digits)."""
    if settings is None:
        return None
    keys = {
        s.mn: bytes.fromhex(s.sm4_key.get_secret_value())
        for e in settings.registry.enterprises for o in e.outlets for s in o.stations if s.sm4_key
    }
    return keys.get if keys else None


def decode_line(line: bytes, key_for: KeyFor | None, max_bytes: int) -> dict[str, Any]:
    """Decode one input line (trailing CR LF already removed) to its JSON object; never raises."""
    try:
        return to_json(decode_payload(line, key_for, max_bytes))
    except Rejected as exc:
        return to_json(exc)
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop a batch; tests keep this unreachable
        return {"ok": False, "reason": Reason.BAD_FIELD.value, "detail": f"decoder error {type(exc).__name__}: {exc}"}


def run_cli(src: BinaryIO, out: TextIO, settings: Settings | None) -> None:
    """`envwatch decode`: one payload per input line -> one JSON object per output line.

    Only the line's trailing LF and then CR are removed; NUL bytes and other bytes are data.
    """
    key_for = key_lookup(settings)
    max_bytes = settings.ingest.max_payload_bytes if settings is not None else 65536
    write = out.write
    for line in src:
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        obj = decode_line(line, key_for, max_bytes)
        try:
            write(json.dumps(obj, ensure_ascii=False) + "\n")
        except UnicodeEncodeError:  # output stream not UTF-8: fall back to \u escapes
            write(json.dumps(obj) + "\n")
    out.flush()
