"""Property tests: decode_payload only ever raises Rejected, and generated packets round-trip."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.decode import decode_payload, decode_line, to_json
from ingest.hj212 import build_segment, encode
from core.time import CHINA_TZ
from ingest.model import Packet, Reason, Rejected

KEY = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
REASONS = set(Reason)
FAST = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SAMPLES = [
    b"##0139ST=32;CN=2011;PW=123456;MN=LD130133000015;CP=&&DataTime=20160824003817000;B01-Rtd=36.91;"
    b"011-Rtd=231.0,011-Flag=N;060-Rtd=1.803,060-Flag=N&&4980\r\n",
    b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;"
    b"CP=&&RtdInterval=30&&1C80\r\n",
    b'{"device": "UAV01", "kind": "drone", "time": "2026-11-29T10:00:00", "lat": 31.2, "lon": 121.5,'
    b' "species": {"voc": 0.8}}',
    b'{"mn": "LD1", "cn": "2051", "data_time": "2026-11-29T10:00:00", "values": {"02": {"avg": 1.5}}}',
]


def _check(raw: bytes, key_for=None) -> Packet | None:
    """Decode; anything but a well-formed Rejected escaping is a failure (hypothesis reports it)."""
    try:
        result = decode_payload(raw, key_for)
    except Rejected as exc:
        assert exc.reason in REASONS and isinstance(exc.detail, str) and exc.detail
        assert to_json(exc)["ok"] is False
        return None
    assert to_json(result)["ok"] is True
    return result if isinstance(result, Packet) else None


@FAST
@given(st.binary(max_size=400))
def test_random_bytes(raw: bytes) -> None:
    _check(raw)
    _check(b"##" + raw)
    _check(b"{" + raw)


@FAST
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_packets(sample: bytes, data: st.DataObject) -> None:
    raw = bytearray(sample)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "length"]))
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "truncate":
            del raw[i:]
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[i]
        elif op == "length" and len(raw) >= 6:
            raw[data.draw(st.integers(2, 5))] = data.draw(st.sampled_from(b"0123456789x\x00 "))
    _check(bytes(raw), lambda mn: KEY)
    assert decode_line(bytes(raw), None, 65536)["ok"] in (True, False)


_codes = st.sampled_from(["a21026", "a21002", "a34013", "a19001", "w01018", "w21003", "a99999", "SB1"])
_names = st.sampled_from(["rtd", "avg", "min", "max", "zs_avg", "zs_rtd", "cou", "rt"])
_numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)
_flags = st.sampled_from(["N", "F", "M", "S", "D", "C", "T", "B"])
_fields = st.tuples(st.dictionaries(_names, _numbers, max_size=4), st.one_of(st.none(), _flags)).map(
    lambda t: {**t[0], **({"flag": t[1]} if t[1] else {})})
_text = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp", "Zs", "Co", "Cn"),
                              blacklist_characters=";,=&-"), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    mn=_text, cn=st.sampled_from(["2011", "2051", "2061", "2031"]), st_=st.sampled_from(["21", "22", "31", "32"]),
    flag=st.one_of(st.none(), st.sampled_from([0, 1, 4, 5])),
    when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    values=st.dictionaries(_codes, _fields, max_size=5), encrypt=st.booleans(),
)
def test_generated_packets_round_trip(mn, cn, st_, flag, when, values, encrypt) -> None:
    when = when.replace(microsecond=when.microsecond // 1000 * 1000, tzinfo=CHINA_TZ)
    seg = build_segment(mn=mn, cn=cn, st=st_, qn="20260101000000000", flag=8 if encrypt else flag,
                        data_time=when, values=values, sm4_key=KEY if encrypt else None)
    raw = encode(seg)
    p = _check(raw, lambda m: KEY if m == mn else None)
    assert p is not None
    assert (p.mn, p.cn, p.st, p.data_time) == (mn, cn, st_, when)
    assert p.encrypted == encrypt  # CP always holds DataTime, so it is never empty
    assert p.values == {c: f for c, f in values.items() if f}  # codes sent as 2017 codes: no mapping
    assert p.original_codes == {}
    assert p.data_time.utcoffset() == timedelta(hours=8)
