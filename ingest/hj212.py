"""HJ 212 (2005 / 2017 / 2025) frames: CRC, decoding, encoding and split-packet reassembly.

Pure functions, no I/O. `decode` is on the ingest hot path, so it avoids regular expressions and
per-byte Python loops (see `crc16`) and validates with a handful of C-level string methods.

Decisions (see also docs in the report / README):
- NUL or other control characters in ST or PW do not reject a packet: both are informational.
  The field is set to None and its escaped raw text kept in `extra` ("ST_raw" / "PW_raw").
  MN, CN, QN, Flag, PNUM, PNO and every CP item must be clean; otherwise `bad_field`.
- HJ 212-2025 (edition 2) data commands (CN 2000-2999) carry SM4-ECB encrypted CP. The ciphertext
  is read as hex (either case) first, then as base64; PKCS#7 padding. A CP that plainly is
  cleartext (it contains `=` other than base64 tail padding, or is empty) is decoded as cleartext
  with `encrypted=False`, whether or not a key is configured: some loggers do not encrypt, and
  hex/base64 text can never contain an inner `=`. Ciphertext without a configured key is
  `decrypt_failed`.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from config.tables import code_2005_to_2017
from core.time import CHINA_TZ
from ingest.model import INTERVALS, Kind, Packet, Reason, Rejected, Value

KeyFor = Callable[[str], "bytes | None"]

# --------------------------------------------------------------------------------------------
# CRC


def _crc_step_table() -> list[int]:
    """T[x]: the 8 shift/xor rounds of the appendix algorithm applied to x (the CRC-16/ARC table)."""
    out = []
    for x in range(256):
        c = x
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        out.append(c)
    return out


_T = _crc_step_table()
# The appendix CRC is crc' = T[(crc >> 8) ^ b]: only the high byte h carries over, h' = M(h ^ b)
# with M linear over GF(2) and M**8 = identity. So a byte d positions before the end contributes
# T[M**(d % 8) (b)], linearly in b: the CRC only depends on the XOR of the bytes in each of the
# 8 classes of d mod 8, which big-integer folding computes without a per-byte Python loop.
_M = [v >> 8 for v in _T]


def _m_power(b: int, k: int) -> int:
    for _ in range(k):
        b = _M[b]
    return b


_G = [[_T[_m_power(b, r)] for b in range(256)] for r in range(8)]
_MASK64 = (1 << 64) - 1


def crc16(data: bytes) -> int:
    """CRC of HJ 212-2017's appendix over `data` (the data segment bytes); not CRC-16/MODBUS.

    Equal to: crc = 0xFFFF; for b: crc = (crc >> 8) ^ b, then 8 rounds of
    (crc >> 1) ^ (0xA001 if crc & 1). Computed by folding, ~1 us for a 300-byte segment.
    """
    n = len(data)
    if n == 0:
        return 0xFFFF
    # The initial 0xFFFF's high byte is xored into the first byte.
    x = int.from_bytes(data, "big") ^ (0xFF << (8 * n - 8))
    nbits = 8 * n
    while nbits > 64:
        half = ((nbits + 127) >> 7) << 6  # ceil(nbits / 2) rounded up to whole 8-byte words
        x = (x >> half) ^ (x & ((1 << half) - 1))
        nbits = half
    g = _G
    return (g[0][x & 255] ^ g[1][(x >> 8) & 255] ^ g[2][(x >> 16) & 255] ^ g[3][(x >> 24) & 255]
            ^ g[4][(x >> 32) & 255] ^ g[5][(x >> 40) & 255] ^ g[6][(x >> 48) & 255]
            ^ g[7][(x >> 56) & 255])


def crc16_reference(data: bytes) -> int:
    """The appendix algorithm written out byte by byte (slow; for tests and documentation)."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


# --------------------------------------------------------------------------------------------
# Field names

_SUFFIX_TO_NAME: dict[str, str] = {
    "Rtd": "rtd", "Avg": "avg", "Min": "min", "Max": "max",
    "ZsRtd": "zs_rtd", "ZsAvg": "zs_avg", "ZsMin": "zs_min", "ZsMax": "zs_max",
    "Cou": "cou", "Flag": "flag", "EFlag": "eflag", "SampleTime": "sample_time",
    "RS": "rs", "RT": "rt", "Ala": "ala", "Info": "info",
}
_NAME_TO_SUFFIX = {v: k for k, v in _SUFFIX_TO_NAME.items()}
# Known numeric fields must parse as finite floats; known text fields stay strings; unknown
# suffixes become floats when they parse as finite numbers and stay strings otherwise.
_NUMERIC = frozenset({"rtd", "avg", "min", "max", "zs_rtd", "zs_avg", "zs_min", "zs_max",
                      "cou", "rs", "rt", "ala"})
_TEXT = frozenset({"flag", "eflag", "sample_time", "info"})
_CODE_MAP = code_2005_to_2017()
_HEADER_KEYS = frozenset({"QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO"})


def field_name(suffix: str) -> str:
    """`ZsAvg` -> `zs_avg`; unknown suffixes to lower snake case (`SampleTime` -> `sample_time`)."""
    name = _SUFFIX_TO_NAME.get(suffix)
    if name is None:
        chars = []
        for i, c in enumerate(suffix):
            if c.isupper() and i and (suffix[i - 1].islower() or suffix[i - 1].isdigit()):
                chars.append("_")
            chars.append(c.lower())
        name = "".join(chars)
        if len(_SUFFIX_TO_NAME) < 4096:  # memoise, bounded against hostile input
            _SUFFIX_TO_NAME[suffix] = name
    return name


def field_suffix(name: str) -> str:
    """`zs_avg` -> `ZsAvg`: the CP key suffix of a field name (field_name's inverse)."""
    s = _NAME_TO_SUFFIX.get(name)
    return s if s is not None else "".join(p[:1].upper() + p[1:] for p in name.split("_"))


# --------------------------------------------------------------------------------------------
# Decoding


def _bad(detail: str) -> Rejected:
    return Rejected(Reason.BAD_FIELD, detail)


def decode(raw: bytes, key_for: KeyFor | None = None) -> Packet:
    """Decode one HJ 212 frame (`##` + length + segment + CRC [+ CR LF]) into a Packet.

    `key_for(mn)` returns the station's 16-byte SM4 key (HJ 212-2025) or None.
    Raises Rejected: no_header, bad_length, length_mismatch, crc_mismatch, bad_field, decrypt_failed.
    """
    raw = raw.rstrip(b"\r\n")
    if raw[:2] != b"##":
        raise Rejected(Reason.NO_HEADER, f"payload does not start with ##: {raw[:16]!r}")
    digits = raw[2:6]
    if len(digits) != 4 or not digits.isdigit():  # bytes.isdigit is ASCII-only
        raise Rejected(Reason.BAD_LENGTH, f"length field is not 4 decimal digits: {digits!r}")
    declared = int(digits)
    seg = raw[6:-4]
    if len(raw) < 10 or len(seg) != declared:
        got = max(len(raw) - 10, 0)
        raise Rejected(Reason.LENGTH_MISMATCH, f"declared length {declared}, data segment {got} bytes")
    crc_text = raw[-4:]
    try:
        sent = int.from_bytes(binascii.a2b_hex(crc_text), "big")  # strict: hex digits only
    except (binascii.Error, ValueError):
        sent = -1
    computed = crc16(seg)
    if sent != computed:
        raise Rejected(Reason.CRC_MISMATCH, f"CRC sent {crc_text.decode('latin-1')!r}, computed {computed:04X}")
    try:
        text = seg.decode("utf-8")
    except UnicodeDecodeError:
        try:  # pre-2025 loggers may send Chinese text in GBK
            text = seg.decode("gb18030")
        except UnicodeDecodeError:
            raise _bad("data segment is neither UTF-8 nor GB18030") from None
    return parse_segment(text, key_for)


def parse_segment(text: str, key_for: KeyFor | None = None) -> Packet:
    """Parse a data segment (`QN=..;ST=..;...;CP=&&...&&`) whose framing was already checked."""
    cp_at = text.find("CP=&&")
    if cp_at < 0:
        head, cp = text, ""  # no CP at all: tolerated, the packet just carries no values
    else:
        end = text.rfind("&&")
        if end < cp_at + 5 or text[end + 2:]:
            raise _bad("CP is not closed by a final &&")
        head, cp = text[:cp_at], text[cp_at + 5:end]
    fields: dict[str, str] = {}
    for item in head.split(";"):
        if item:
            k, eq, v = item.partition("=")
            if not eq:
                raise _bad(f"header item {item[:40]!r} is not key=value")
            fields[k] = v
    p = _header_packet(fields)
    if cp and p.flag is not None and p.flag >> 2 == 2 and "2000" <= p.cn <= "2999" and len(p.cn) == 4:
        cp = _maybe_decrypt(cp, p, key_for)
    _parse_cp(cp, p)
    return p


def _int_field(fields: dict[str, str], key: str, hi: int) -> int | None:
    v = fields.get(key)
    if v is None:
        return None
    if not (v.isascii() and v.isdigit() and len(v) <= 6) or int(v) > hi:
        raise _bad(f"{key}={v[:20]!r} is not a number in 0..{hi}")
    return int(v)


def _header_packet(fields: dict[str, str]) -> Packet:
    mn, cn = fields.get("MN"), fields.get("CN")
    if not mn or not mn.isprintable() or len(mn) > 64:
        raise _bad("MN missing or not printable" if not mn else f"MN {mn[:70]!r} is not a clean identifier")
    if not cn or not (cn.isascii() and cn.isdigit() and len(cn) <= 7):
        raise _bad(f"CN {cn!r} is not 1-7 digits" if cn else "CN missing")
    qn = fields.get("QN")
    if qn is not None and not qn.isprintable():
        raise _bad(f"QN {qn!r} is not printable")
    st, pw = fields.get("ST"), fields.get("PW")
    flag = _int_field(fields, "Flag", 255)
    st_ok = st is None or st.isprintable()
    pw_ok = pw is None or pw.isprintable()
    p = Packet(mn=mn, cn=cn, qn=qn, flag=flag, st=st if st_ok else None, pw=pw if pw_ok else None)
    if not st_ok:  # informational field with NULs etc.: keep the packet
        p.extra["ST_raw"] = _printable(st)
    if not pw_ok:
        p.extra["PW_raw"] = _printable(pw)
    if flag is not None and flag & 2:
        p.pnum = _int_field(fields, "PNUM", 999_999)
        p.pno = _int_field(fields, "PNO", 999_999)
        if p.pnum is None or p.pno is None or not 1 <= p.pno <= p.pnum:
            raise _bad(f"split flag set but PNUM={p.pnum} PNO={p.pno}")
    if not fields.keys() <= _HEADER_KEYS:
        for k, v in fields.items():  # unusual header keys: kept (escaped) for inspection, never trusted
            if k not in _HEADER_KEYS:
                p.extra[_printable(k)] = _printable(v)
    return p


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def _isprintable(s: str) -> bool:
    """`s.isprintable()`, three times faster for ASCII text (isascii() is a flag lookup): an ASCII
    character is printable iff it is not a control character (0x00-0x1F, 0x7F)."""
    if s.isascii():
        return not s.encode("ascii").translate(None, _PRINTABLE_ASCII)
    return s.isprintable()


def _printable(v: str) -> str:
    return v if v.isprintable() else v.encode("unicode_escape").decode("ascii")


# How a CP key is stored: (code as stored, code as sent if it was mapped, field name, mode).
_EXTRA, _NUMBER, _STRING, _EITHER = 0, 1, 2, 3
_KeyInfo = tuple[str, "str | None", str, int]
_KEY_CACHE: dict[str, _KeyInfo] = {}


def _key_info(key: str) -> _KeyInfo:
    """Classify a CP key once (`02-ZsAvg` -> ("a21026", "02", "zs_avg", _NUMBER)); memoised."""
    code, dash, suffix = key.partition("-")
    if not code:
        raise _bad(f"CP key {key[:40]!r} is empty or has no code")
    if not dash:
        info: _KeyInfo = (key, None, "", _EXTRA)
    else:
        name = field_name(suffix)
        if not name:
            raise _bad(f"CP key {key[:40]!r} has no field suffix")
        mode = _NUMBER if name in _NUMERIC else _STRING if name in _TEXT else _EITHER
        new = _CODE_MAP.get(code)
        info = (new, code, name, mode) if new is not None else (code, None, name, mode)
    if len(_KEY_CACHE) < 65536:  # bounded: keys are few in practice, but input is untrusted
        _KEY_CACHE[key] = info
    return info


def _parse_cp(cp: str, p: Packet) -> None:
    if not _isprintable(cp):
        raise _bad("CP contains control or NUL characters")
    _parse_cp_items(cp, p)
    dt = p.extra.pop("DataTime", None)
    if dt is not None:
        p.data_time = parse_data_time(dt)
    elif p.cn in INTERVALS and not p.split:
        # A split packet may carry DataTime in one part only; the merged packet is checked.
        raise _bad(f"CN {p.cn} carries readings but no DataTime")


def _parse_cp_items(cp: str, p: Packet) -> None:
    """CP items one by one into p.values / p.extra, rejecting the first bad one.

    Numbers follow HJ 212's syntax only: optional sign, ASCII digits with at most one decimal
    point, optional exponent. float() also takes `1_000`, surrounding spaces, full-width or
    Arabic-Indic digits, inf and nan: once it has parsed the text (so the syntax is otherwise
    float's), refusing non-ASCII text, `_` and spaces, and non-finite results leaves exactly
    that (the CP is already free of control characters).
    """
    values, extra, orig, cache = p.values, p.extra, p.original_codes, _KEY_CACHE
    # `;` groups one pollutant's fields, but every field names its code: one flat split suffices.
    for item in cp.replace(";", ",").split(","):
        if not item:
            continue  # trailing separators such as `025-Flag=N,;` occur in the field
        key, eq, val = item.partition("=")
        if not eq:
            raise _bad(f"CP item {item[:40]!r} is not key=value")
        code, sent, name, mode = cache.get(key) or _key_info(key)
        # mode literals (not the _NUMBER... globals) keep this loop tight: 1 number, 2 text, 3 either, 0 extra
        if mode == 1:
            try:
                v: Value = float(val)
            except ValueError:
                raise _bad(f"CP item {item[:40]!r}: value is not a number") from None
            if v - v != 0:  # inf or nan
                raise _bad(f"CP item {item[:40]!r}: value is not finite")
            if not val.isascii() or "_" in val or " " in val:
                raise _bad(f"CP item {item[:40]!r}: value is not an HJ 212 number")
        elif mode == 2:
            v = val
        elif mode == 0:
            extra[key] = val
            continue
        else:
            v = _either(val)
        if sent is not None:
            orig[code] = sent
        d = values.get(code)
        if d is None:
            values[code] = d = {}
        d[name] = v


def _either(val: str) -> Value:
    """Unknown field suffix: a finite number if it parses as one, else the text as sent."""
    try:
        f = float(val)
    except ValueError:
        return val
    return f if f - f == 0 and val.isascii() and "_" not in val and " " not in val else val


# CP items that give an event packet's own time, in order of preference (after DataTime).
_EVENT_TIME_KEYS = (("AlarmTime", "alarm_time"), ("RestartTime", "restart_time"), ("SystemTime", "system_time"))


def event_time(p: Packet) -> tuple[datetime | None, str]:
    """The time a non-readings packet carries and where it came from (schema.event_line's
    time_source): DataTime, AlarmTime, RestartTime, SystemTime, else the QN's time (not for
    answers, CN 9011-9014, whose QN is that of the request they answer); (None, "arrival") if none.

    A time item that is present but malformed is bad_field; a QN that is not a time is no time.
    """
    if p.data_time is not None:
        return p.data_time, "data_time"
    for key, source in _EVENT_TIME_KEYS:
        text = p.extra.get(key)
        if text is not None:
            try:
                return parse_data_time(text), source
            except Rejected:
                raise _bad(f"{key} {text[:20]!r} is not YYYYMMDDhhmmss[zzz]") from None
    if p.qn is not None and p.kind is not Kind.ANSWER and len(p.qn) == 17:
        try:
            return parse_data_time(p.qn), "qn"
        except Rejected:
            pass
    return None, "arrival"


_TIME_CACHE: dict[str, datetime] = {}


def parse_data_time(s: str) -> datetime:
    """`YYYYMMDDhhmmss[zzz]` local China time -> aware datetime in UTC+08:00; bad_field if invalid."""
    t = _TIME_CACHE.get(s)
    if t is not None:
        return t
    if len(s) not in (14, 17) or not (s.isascii() and s.isdigit()):
        raise _bad(f"DataTime {s[:20]!r} is not YYYYMMDDhhmmss[zzz]")
    try:
        t = datetime(int(s[0:4]), int(s[4:6]), int(s[6:8]), int(s[8:10]), int(s[10:12]), int(s[12:14]),
                     int(s[14:17] or 0) * 1000, tzinfo=CHINA_TZ)
    except ValueError as exc:
        raise _bad(f"DataTime {s!r}: {exc}") from None
    if len(_TIME_CACHE) > 8192:  # many packets share a DataTime (minute/hour boundaries)
        _TIME_CACHE.clear()
    _TIME_CACHE[s] = t
    return t


# --------------------------------------------------------------------------------------------
# SM4 (HJ 212-2025)


def _looks_clear(cp: str) -> bool:
    # Hex never contains `=`, base64 only as tail padding: an inner `=` means key=value text.
    return "=" in cp.rstrip("=")


def _maybe_decrypt(cp: str, p: Packet, key_for: KeyFor | None) -> str:
    if _looks_clear(cp):
        return cp  # logger did not encrypt; p.encrypted stays False so the caller can see it
    key = key_for(p.mn) if key_for is not None else None
    if key is None:
        raise Rejected(Reason.DECRYPT_FAILED, f"no SM4 key configured for MN {p.mn}")
    if len(key) != 16:
        raise Rejected(Reason.DECRYPT_FAILED, f"SM4 key for MN {p.mn} is {len(key)} bytes, not 16")
    p.encrypted = True
    return sm4_decrypt(cp, key)


def sm4_decrypt(cp: str, key: bytes) -> str:
    """Decrypt CP text (hex, else base64) with SM4-ECB and PKCS#7; decrypt_failed on any failure."""
    try:
        blob = binascii.a2b_hex(cp)
    except (binascii.Error, ValueError):
        try:
            blob = base64.b64decode(cp, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected(Reason.DECRYPT_FAILED, "CP is neither hex nor base64 ciphertext") from None
    if not blob or len(blob) % 16:
        raise Rejected(Reason.DECRYPT_FAILED, f"ciphertext of {len(blob)} bytes is not whole SM4 blocks")
    try:
        dec = Cipher(algorithms.SM4(key), modes.ECB()).decryptor()
        plain = dec.update(blob) + dec.finalize()
        unpad = padding.PKCS7(128).unpadder()
        plain = unpad.update(plain) + unpad.finalize()
        return plain.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise Rejected(Reason.DECRYPT_FAILED, "SM4 decryption failed (wrong key or corrupt CP)") from None


def sm4_encrypt(cp: str, key: bytes) -> str:
    """Encrypt CP text with SM4-ECB, PKCS#7 padding, as uppercase hex (what `decode` reads first)."""
    pad = padding.PKCS7(128).padder()
    data = pad.update(cp.encode("utf-8")) + pad.finalize()
    enc = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    return (enc.update(data) + enc.finalize()).hex().upper()


# --------------------------------------------------------------------------------------------
# Encoding


def encode(segment: str) -> bytes:
    """Frame a data segment: `##` + 4-digit UTF-8 byte length + segment + uppercase CRC + CR LF."""
    seg = segment.encode("utf-8")
    if len(seg) > 9999:
        raise ValueError(f"data segment of {len(seg)} bytes does not fit the 4-digit length")
    return b"##%04d%s%04X\r\n" % (len(seg), seg, crc16(seg))


def format_number(v: float) -> str:
    """Shortest text that parses back to exactly `v`, without exponent (`12`, `0.00001`, `-3.5`)."""
    if not math.isfinite(v):
        raise ValueError(f"HJ 212 cannot carry {v!r}")
    r = repr(float(v))
    if "e" in r or "E" in r:
        r = format(Decimal(r), "f")
    return r[:-2] if r.endswith(".0") else r


_FORBIDDEN = (";", ",", "=", "&")


def _text(v: str, what: str) -> str:
    if not v.isprintable() or any(c in v for c in _FORBIDDEN):
        raise ValueError(f"{what} {v!r} contains a separator or control character")
    return v


def format_data_time(t: datetime) -> str:
    """Aware (or China-local naive) datetime -> `YYYYMMDDhhmmss`, plus `zzz` when it has ms."""
    local = t.astimezone(CHINA_TZ) if t.tzinfo else t
    s = local.strftime("%Y%m%d%H%M%S")
    return s + f"{local.microsecond // 1000:03d}" if local.microsecond else s


def build_segment(*, mn: str, cn: str, st: str, pw: str = "123456", qn: str | None = None,
                  flag: int | None = None, data_time: datetime | None = None,
                  values: dict[str, dict[str, Value]], extra: dict[str, str] | None = None,
                  pnum: int | None = None, pno: int | None = None, sm4_key: bytes | None = None) -> str:
    """Format a data segment with 2017 field names, e.g. values={"a21026": {"avg": 12.3, "flag": "N"}}.

    With `sm4_key` the CP is SM4-encrypted (hex) and Flag defaults to edition 2 (8); with
    pnum/pno the split bit is set. Numbers use the shortest round-trippable decimal form.
    """
    if flag is None and (sm4_key is not None or pnum is not None):
        flag = (8 if sm4_key is not None else 4) | (2 if pnum is not None else 0)
    if sm4_key is not None and (flag is None or flag >> 2 != 2):
        raise ValueError("SM4 encryption is HJ 212-2025 only: Flag edition must be 2")
    items = []
    if data_time is not None:
        items.append(f"DataTime={format_data_time(data_time)}")
    for k, v in (extra or {}).items():
        items.append(f"{_text(k, 'key')}={_text(v, 'value')}")
    groups = [";".join(items)] if items else []
    for code, fields in values.items():
        parts = []
        for name, v in fields.items():
            txt = _text(v, "value") if isinstance(v, str) else format_number(v)
            parts.append(f"{_text(code, 'code')}-{field_suffix(name)}={txt}")
        if parts:
            groups.append(",".join(parts))
    cp = ";".join(groups)
    if sm4_key is not None and cp:
        cp = sm4_encrypt(cp, sm4_key)
    head = [f"QN={_text(qn, 'QN')}"] if qn is not None else []
    head += [f"ST={_text(st, 'ST')}", f"CN={_text(cn, 'CN')}", f"PW={_text(pw, 'PW')}", f"MN={_text(mn, 'MN')}"]
    if flag is not None:
        head.append(f"Flag={flag}")
    if pnum is not None:
        head += [f"PNUM={pnum}", f"PNO={pno}"]
    return ";".join(head) + f";CP=&&{cp}&&"


# --------------------------------------------------------------------------------------------
# Split packets


@dataclass(slots=True)
class SplitGroup:
    """Parts of one split packet received so far, keyed by (MN, QN, CN)."""

    key: tuple[str, str | None, str]
    pnum: int
    first_seen: float
    parts: dict[int, Packet] = field(default_factory=dict)


class Reassembler:
    """Collects split packets (Flag D bit, PNUM parts numbered PNO 1..PNUM) into whole packets."""

    def __init__(self, timeout_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self._groups: dict[tuple[str, str | None, str], SplitGroup] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def add(self, packet: Packet) -> Packet | None:
        """Return `packet` if it is whole, the merged packet when its last part arrives, else None.

        A re-delivered part replaces the earlier copy. The merged packet has the D bit cleared
        and no PNUM/PNO, so it is handled like any unsplit packet. A part whose PNUM disagrees
        with the group's (set by its first part) is refused (Rejected bad_field) and not kept:
        it would otherwise be swallowed when the group completes.
        """
        if not packet.split or packet.pnum is None or packet.pno is None:
            return packet
        key = (packet.mn, packet.qn, packet.cn)
        g = self._groups.get(key)
        if g is not None and packet.pnum != g.pnum:
            raise Rejected(Reason.BAD_FIELD, f"split part PNUM={packet.pnum};PNO={packet.pno} disagrees with "
                                             f"PNUM={g.pnum} of the earlier parts of MN={packet.mn} "
                                             f"QN={packet.qn} CN={packet.cn}")
        if g is None:
            g = self._groups[key] = SplitGroup(key, packet.pnum, self.clock())
        g.parts[packet.pno] = packet
        if len(g.parts) < g.pnum or any(i not in g.parts for i in range(1, g.pnum + 1)):
            return None
        del self._groups[key]
        return _merge([g.parts[i] for i in range(1, g.pnum + 1)])

    def drop(self, key: tuple[str, str | None, str]) -> SplitGroup | None:
        """Remove and return one group (incomplete: the caller dead-letters its parts)."""
        return self._groups.pop(key, None)

    def expire(self, now_monotonic: float | None = None) -> list[SplitGroup]:
        """Remove and return groups first seen more than timeout_s ago (dead-letter: incomplete_split)."""
        now = self.clock() if now_monotonic is None else now_monotonic
        old = [k for k, g in self._groups.items() if now - g.first_seen > self.timeout_s]
        return [self._groups.pop(k) for k in old]


def _merge(parts: list[Packet]) -> Packet:
    first = parts[0]
    out = Packet(mn=first.mn, cn=first.cn, st=first.st, qn=first.qn, pw=first.pw,
                 flag=None if first.flag is None else first.flag & ~2, encrypted=first.encrypted)
    for p in parts:
        out.data_time = out.data_time or p.data_time
        out.encrypted = out.encrypted or p.encrypted
        for code, fields in p.values.items():
            out.values.setdefault(code, {}).update(fields)
        out.original_codes.update(p.original_codes)
        out.extra.update(p.extra)
    return out
