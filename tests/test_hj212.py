"""HJ 212 frames: CRC, public vectors, field parsing, SM4 (2025), encoding and split reassembly."""

from __future__ import annotations

import base64
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ingest import hj212
from ingest.hj212 import Reassembler, build_segment, crc16, crc16_reference, decode, encode
from core.time import CHINA_TZ
from ingest.model import Kind, Reason, Rejected

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
APPENDIX = b"QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&"


def _vectors() -> list[tuple[str, bytes]]:
    lines = (DATA / "hj212-vectors.tsv").read_bytes().split(b"\n")[1:]
    return [(e.decode(), p) for e, p in (line.split(b"\t", 1) for line in lines if line.strip())]


def _reason(raw: bytes, key_for=None) -> str:
    try:
        decode(raw, key_for)
    except Rejected as exc:
        assert exc.detail
        return exc.reason.value
    return "valid"


def _rejects(raw: bytes, reason: Reason, key_for=None) -> Rejected:
    with pytest.raises(Rejected) as info:
        decode(raw, key_for)
    assert info.value.reason is reason, info.value.detail
    assert info.value.detail
    return info.value


# ---------------------------------------------------------------------------------------- CRC

def test_crc_of_the_2017_appendix_example() -> None:
    assert crc16(APPENDIX) == 0x1C80
    assert crc16_reference(APPENDIX) == 0x1C80


def test_crc_is_not_modbus() -> None:
    # CRC-16/MODBUS of "123456789" is 0x4B37; the appendix algorithm gives something else.
    assert crc16(b"123456789") != 0x4B37


def test_fast_crc_equals_the_appendix_algorithm() -> None:
    rng = random.Random(212)
    for n in [*range(0, 80), 127, 128, 129, 500, 1024, 4097, 9999]:
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data) == crc16_reference(data), n


# ---------------------------------------------------------------------------------------- vectors

@pytest.mark.parametrize(("expected", "raw"), _vectors(), ids=lambda v: v if isinstance(v, str) else None)
def test_public_vectors(expected: str, raw: bytes) -> None:
    assert _reason(raw) == expected
    assert _reason(raw + b"\r\n") == expected


def test_every_vector_outcome_is_covered() -> None:
    outcomes = [e for e, _ in _vectors()]
    assert outcomes[3:4] == ["valid"] and b"QN=20160801085857223" in _vectors()[3][1]
    assert {"valid", "length_mismatch", "crc_mismatch"} == set(outcomes)


def test_crc_accepted_in_either_case() -> None:
    raw = encode(APPENDIX.decode())
    assert raw.endswith(b"1C80\r\n")
    assert decode(raw.replace(b"1C80", b"1c80")).cn == "1062"


def test_appendix_example_fields() -> None:
    p = decode(b"##0101" + APPENDIX + b"1C80\r\n")
    assert (p.qn, p.st, p.cn, p.pw, p.mn, p.flag) == ("20160801085857223", "32", "1062", "100000",
                                                      "010000A8900016F000169DC0", 5)
    assert p.extra == {"RtdInterval": "30"} and p.values == {}


# ---------------------------------------------------------------------------------------- framing

@pytest.mark.parametrize(("raw", "reason"), [
    (b"", Reason.NO_HEADER),
    (b"#0101QN=1", Reason.NO_HEADER),
    (b"2BC0\r", Reason.NO_HEADER),
    (b"##", Reason.BAD_LENGTH),
    (b"##9ST=31;CN=2011", Reason.BAD_LENGTH),
    (b"##test13912345678\x00", Reason.BAD_LENGTH),
    (b"##01a1QN=1", Reason.BAD_LENGTH),
    (b"##0000", Reason.LENGTH_MISMATCH),
    (b"##0101" + APPENDIX[:-1] + b"1C80", Reason.LENGTH_MISMATCH),
    (b"##0101" + APPENDIX + b"1C81", Reason.CRC_MISMATCH),
    (b"##0101" + APPENDIX + b"1CXX", Reason.CRC_MISMATCH),
    (b"##0101" + APPENDIX + b"0x1C", Reason.CRC_MISMATCH),
])
def test_framing_errors(raw: bytes, reason: Reason) -> None:
    _rejects(raw, reason)


def test_length_counts_utf8_bytes() -> None:
    seg = "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20260101000000;Note=监测&&"
    raw = encode(seg)
    assert int(raw[2:6]) == len(seg.encode("utf-8")) != len(seg)
    assert decode(raw).extra["Note"] == "监测"
    char_count = b"##%04d" % len(seg) + raw[6:]
    _rejects(char_count, Reason.LENGTH_MISMATCH)


# ---------------------------------------------------------------------------------------- fields

def test_flag_bits_are_decoded_not_whitelisted() -> None:
    base = "QN=1;ST=91;CN=9014;PW=1;MN=M1;Flag={};CP=&&&&"
    p = decode(encode(base.format(5)))
    assert (p.ack_requested, p.split, p.edition) == (True, False, 1)
    p = decode(encode(base.format(9)))
    assert (p.ack_requested, p.split, p.edition) == (True, False, 2)
    p = decode(encode(base.format(4 * 17)))  # an edition no one has defined yet
    assert (p.ack_requested, p.split, p.edition) == (False, False, 17)
    p = decode(encode("QN=1;ST=91;CN=9014;PW=1;MN=M1;Flag=7;PNUM=3;PNO=2;CP=&&&&"))
    assert (p.ack_requested, p.split, p.edition, p.pnum, p.pno) == (True, True, 1, 3, 2)
    p = decode(encode("ST=91;CN=9014;PW=1;MN=M1;CP=&&&&"))
    assert (p.flag, p.edition, p.ack_requested, p.split) == (None, None, False, False)


@pytest.mark.parametrize("seg", [
    "QN=1;ST=91;CN=9014;PW=1;MN=M1;Flag=6;CP=&&&&",  # split without PNUM/PNO
    "QN=1;ST=91;CN=9014;PW=1;MN=M1;Flag=6;PNUM=2;PNO=3;CP=&&&&",
    "QN=1;ST=91;CN=9014;PW=1;MN=M1;Flag=x;CP=&&&&",
    "QN=1;ST=91;CN=9014;PW=1;MN=M1;Flag=256;CP=&&&&",
])
def test_bad_flag_fields(seg: str) -> None:
    _rejects(encode(seg), Reason.BAD_FIELD)


def test_key_order_is_not_relied_on() -> None:
    head = ["QN=20160824000000000", "ST=31", "CN=2051", "PW=123456", "MN=LD1", "Flag=4"]
    cp = ["DataTime=20160824000000", "02-Avg=12.5,02-Flag=N", "S01-Avg=8.1", "02-ZsAvg=15.0"]
    ref = decode(encode(";".join(head) + ";CP=&&" + ";".join(cp) + "&&"))
    rng = random.Random(1)
    for _ in range(10):
        rng.shuffle(head)
        rng.shuffle(cp)
        p = decode(encode(";".join(head) + ";CP=&&" + ";".join(cp) + "&&"))
        assert p == ref
    assert ref.values == {"a21026": {"avg": 12.5, "flag": "N", "zs_avg": 15.0}, "a19001": {"avg": 8.1}}


def test_2005_codes_mapped_with_original_kept() -> None:
    seg = ("ST=32;CN=2011;PW=1;MN=LD1;CP=&&DataTime=20160824003817000;B01-Rtd=36.91;"
           "011-Rtd=231.0,011-Flag=N;060-Rtd=1.803,060-Flag=N;S04-Rtd=1;w01001-Rtd=7.1&&")
    p = decode(encode(seg))
    assert p.values == {"w00000": {"rtd": 36.91}, "w01018": {"rtd": 231.0, "flag": "N"},
                        "w21003": {"rtd": 1.803, "flag": "N"}, "S04": {"rtd": 1.0}, "w01001": {"rtd": 7.1}}
    assert p.original_codes == {"w00000": "B01", "w01018": "011", "w21003": "060"}
    assert p.kind is Kind.READINGS and p.interval == "rtd"


def test_field_suffixes() -> None:
    seg = ("QN=1;ST=31;CN=2061;PW=1;MN=M1;Flag=4;CP=&&DataTime=20260101100000;"
           "a21026-Rtd=1,a21026-Avg=2,a21026-Min=3,a21026-Max=4,a21026-ZsRtd=5,a21026-ZsAvg=6,"
           "a21026-ZsMin=7,a21026-ZsMax=8,a21026-Cou=9,a21026-Flag=N,a21026-EFlag=A01,"
           "a21026-SampleTime=20260101095500,a21026-RS=1,a21026-RT=0.5,a21026-Ala=3,a21026-NewThing=2.5,"
           "a21026-VendorText=ok&&")
    v = decode(encode(seg)).values["a21026"]
    assert v == {"rtd": 1.0, "avg": 2.0, "min": 3.0, "max": 4.0, "zs_rtd": 5.0, "zs_avg": 6.0,
                 "zs_min": 7.0, "zs_max": 8.0, "cou": 9.0, "flag": "N", "eflag": "A01",
                 "sample_time": "20260101095500", "rs": 1.0, "rt": 0.5, "ala": 3.0, "new_thing": 2.5,
                 "vendor_text": "ok"}


def test_trailing_separators_and_extra_keys() -> None:
    seg = "ST=31;CN=2072;PW=1;MN=M1;Flag=1;CP=&&AlarmTime=20160823235559;B01-Ala=16.00,AlarmType=1,;&&"
    p = decode(encode(seg))
    assert p.values == {"w00000": {"ala": 16.0}}
    assert p.extra == {"AlarmTime": "20160823235559", "AlarmType": "1"}
    assert p.kind is Kind.ALARM and p.data_time is None


def test_data_time_is_china_local_and_converts_to_utc_across_midnight() -> None:
    seg = "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20160824003817123;B01-Rtd=1&&"
    t = decode(encode(seg)).data_time
    assert t == datetime(2016, 8, 24, 0, 38, 17, 123000, tzinfo=CHINA_TZ)
    assert t.utcoffset() == timedelta(hours=8)
    assert t.astimezone(timezone.utc) == datetime(2016, 8, 23, 16, 38, 17, 123000, tzinfo=timezone.utc)
    t14 = decode(encode(seg.replace("20160824003817123", "20160101000000"))).data_time
    assert t14.astimezone(timezone.utc).isoformat() == "2015-12-31T16:00:00+00:00"


@pytest.mark.parametrize("seg", [
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&B01-Rtd=1&&",  # readings without DataTime
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20161324000000;B01-Rtd=1&&",  # month 13
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=2016082400000;B01-Rtd=1&&",  # 13 digits
    "ST=32;CN=9015;PW=1;MN=M1;CP=&&DataTime=soon&&",  # unparsable even where optional
    "ST=32;CN=2011;PW=1;CP=&&DataTime=20160824000000;B01-Rtd=1&&",  # no MN
    "ST=32;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=1&&",  # no CN
    "ST=32;CN=20x1;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=1&&",
    "ST=32;CN=2011;PW=1;MN=M\x001;CP=&&DataTime=20160824000000;B01-Rtd=1&&",  # NUL in MN
    "ST=32;CN=20\x0011;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=1&&",  # NUL in CN
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=1\x00&&",  # NUL in CP
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=abc&&",
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=&&",
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=inf&&",
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd&&",
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20160824000000;-Rtd=1&&",
    "ST=32;CN=2011;PW;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=1&&",
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=1",  # CP not closed
    "ST=32;CN=2011;PW=1;MN=M1;CP=&&DataTime=20160824000000;B01-Rtd=1&&;X=1",
])
def test_bad_fields(seg: str) -> None:
    _rejects(encode(seg), Reason.BAD_FIELD)


def test_nul_bytes_in_st_do_not_reject_the_packet() -> None:
    # Field data: `ST=\0\0` with a correct CRC. ST is informational; MN, CN and CP are fine.
    seg = "ST=\x00\x00;CN=2051;PW=123456;MN=LD130101000229;CP=&&DataTime=20160824080000000;S01-Avg=21.0&&"
    p = decode(encode(seg))
    assert p.st is None and p.extra == {"ST_raw": "\\x00\\x00"}
    assert p.values == {"a19001": {"avg": 21.0}} and p.cn == "2051"


def test_gb18030_text_is_accepted() -> None:
    seg = "ST=32;CN=9015;PW=1;MN=M1;CP=&&Note=监测&&".encode("gb18030")
    raw = b"##%04d%s%04X" % (len(seg), seg, crc16(seg))
    assert decode(raw).extra["Note"] == "监测"


# ---------------------------------------------------------------------------------------- SM4

def _enc_packet(key: bytes | None = KEY, cn: str = "2051") -> bytes:
    return encode(build_segment(mn="0102030405060708090A0B0C", cn=cn, st="31", qn="20260706103512345",
                                data_time=datetime(2026, 7, 6, 10, 35, tzinfo=CHINA_TZ),
                                values={"a21026": {"avg": 12.3, "zs_avg": 15.1, "flag": "N"}}, sm4_key=key))


def test_sm4_round_trip() -> None:
    raw = _enc_packet()
    assert b"a21026" not in raw and b"Flag=8" in raw
    p = decode(raw, {"0102030405060708090A0B0C": KEY}.get)
    assert p.encrypted and p.edition == 2
    assert p.values == {"a21026": {"avg": 12.3, "zs_avg": 15.1, "flag": "N"}}
    assert p.data_time == datetime(2026, 7, 6, 10, 35, tzinfo=CHINA_TZ)


def test_sm4_wrong_key_or_no_key() -> None:
    raw = _enc_packet()
    _rejects(raw, Reason.DECRYPT_FAILED, lambda mn: bytes(16))
    e = _rejects(raw, Reason.DECRYPT_FAILED, lambda mn: None)
    assert "no SM4 key configured" in e.detail
    _rejects(raw, Reason.DECRYPT_FAILED)
    _rejects(raw, Reason.DECRYPT_FAILED, lambda mn: KEY[:8])


def test_sm4_lowercase_hex_and_base64_ciphertext() -> None:
    plain = "DataTime=20260706103500;a21026-Avg=12.3"
    hex_cp = hj212.sm4_encrypt(plain, KEY)
    b64_cp = base64.b64encode(bytes.fromhex(hex_cp)).decode()
    for cp in (hex_cp.lower(), b64_cp):
        seg = f"QN=1;ST=31;CN=2051;PW=1;MN=M1;Flag=8;CP=&&{cp}&&"
        p = decode(encode(seg), lambda mn: KEY)
        assert p.encrypted and p.values == {"a21026": {"avg": 12.3}}


def test_sm4_garbage_ciphertext() -> None:
    for cp in ("ABCD", "zz!!", "00" * 16):
        seg = f"QN=1;ST=31;CN=2051;PW=1;MN=M1;Flag=8;CP=&&{cp}&&"
        _rejects(encode(seg), Reason.DECRYPT_FAILED, lambda mn: KEY)


def test_2025_cleartext_cp_is_accepted_and_marked_unencrypted() -> None:
    seg = "QN=1;ST=31;CN=2051;PW=1;MN=M1;Flag=8;CP=&&DataTime=20260706103500;a21026-Avg=12.3&&"
    for key_for in (None, lambda mn: KEY):
        p = decode(encode(seg), key_for)
        assert not p.encrypted and p.values == {"a21026": {"avg": 12.3}}


def test_non_data_commands_are_never_decrypted() -> None:
    raw = _enc_packet(cn="9014")  # answers are not encrypted: CP text is taken as is
    with pytest.raises(Rejected) as info:
        decode(raw, lambda mn: KEY)
    assert info.value.reason is Reason.BAD_FIELD


# ---------------------------------------------------------------------------------------- encoding

def test_encode_frame() -> None:
    raw = encode(APPENDIX.decode())
    assert raw == b"##0101" + APPENDIX + b"1C80\r\n"
    with pytest.raises(ValueError):
        encode("x" * 10000)


def test_build_segment_round_trip() -> None:
    values = {"a21026": {"avg": 12.3, "zs_avg": 15.1, "min": 0.0001, "max": 1e20, "cou": -3.0, "flag": "N"},
              "a00000": {"rtd": 1 / 3, "eflag": "A"}, "w01001": {"sample_time": "20260101000000"}}
    seg = build_segment(mn="M1", cn="2061", st="31", qn="20260101000000000", flag=4,
                        data_time=datetime(2026, 1, 1, 1, 0, tzinfo=CHINA_TZ), values=values,
                        extra={"Note": "x"})
    assert not re.search(r"=-?[0-9.]+[eE]", seg)  # no exponent notation
    assert "a21026-Cou=-3," in seg and "a21026-Min=0.0001" in seg and "a21026-Max=100000000000000000000" in seg
    p = decode(encode(seg))
    assert p.values == values and p.extra == {"Note": "x"} and p.qn == "20260101000000000"
    assert p.data_time == datetime(2026, 1, 1, 1, 0, tzinfo=CHINA_TZ)


def test_build_segment_converts_data_time_to_china_time() -> None:
    seg = build_segment(mn="M1", cn="2011", st="31", data_time=datetime(2026, 1, 1, 20, 0, tzinfo=timezone.utc),
                        values={})
    assert "DataTime=20260102040000" in seg


@pytest.mark.parametrize("bad", [{"a": {"avg": float("nan")}}, {"a": {"flag": "N;"}}, {"a;b": {"avg": 1.0}}])
def test_build_segment_refuses_unencodable_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        build_segment(mn="M1", cn="2011", st="31", values=bad)


# ---------------------------------------------------------------------------------------- split

def _part(pno: int, pnum: int = 3, qn: str = "20260101000000000", **values: float):
    seg = build_segment(mn="M1", cn="2051", st="31", qn=qn, pnum=pnum, pno=pno,
                        data_time=datetime(2026, 1, 1, tzinfo=CHINA_TZ),
                        values={code: {"avg": v} for code, v in values.items()}, extra={f"P{pno}": "1"})
    return decode(encode(seg))


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_split_reassembly_in_any_order() -> None:
    r = Reassembler()
    whole = decode(encode(build_segment(mn="M1", cn="2051", st="31", data_time=datetime(2026, 1, 1), values={})))
    assert r.add(whole) is whole
    assert r.add(_part(3, a21026=3.0)) is None
    assert r.add(_part(1, a21026=1.0, a21002=5.0)) is None
    assert r.add(_part(1, a21026=1.0, a21002=5.0)) is None  # re-delivered part
    merged = r.add(_part(2, a19001=2.0))
    assert merged is not None and len(r) == 0
    assert merged.values == {"a21026": {"avg": 3.0}, "a21002": {"avg": 5.0}, "a19001": {"avg": 2.0}}
    assert merged.extra == {"P1": "1", "P2": "1", "P3": "1"}
    assert not merged.split and merged.pnum is None and merged.edition == 1


def test_split_groups_are_keyed_by_qn_and_expire() -> None:
    clock = _Clock()
    r = Reassembler(timeout_s=60, clock=clock)
    assert r.add(_part(1, pnum=2, qn="A", a21026=1.0)) is None  # first seen at 100
    clock.now = 130
    assert r.add(_part(1, pnum=2, qn="B", a21026=1.0)) is None  # first seen at 130
    assert r.expire(160.0) == [] and len(r) == 2
    (group,) = r.expire(161.0)  # A is 61 s old, B 31 s
    assert group.key == ("M1", "A", "2051") and group.pnum == 2 and list(group.parts) == [1]
    assert len(r) == 1
    clock.now = 170
    merged = r.add(_part(2, pnum=2, qn="B", a21026=2.0))
    assert merged is not None and merged.values == {"a21026": {"avg": 2.0}} and len(r) == 0
    assert r.add(_part(2, pnum=2, qn="A", a21026=2.0)) is None  # A's late part starts a new group
    clock.now = 1000
    assert [g.key for g in r.expire()] == [("M1", "A", "2051")]


def test_unknown_header_keys_are_kept_escaped() -> None:
    p = decode(encode("ST=32;CN=9015;PW=\x01;MN=M1;Vendor=a\x00b;CP=&&&&"))
    assert p.pw is None and p.extra == {"PW_raw": "\\x01", "Vendor": "a\\x00b"}


def test_split_part_without_datatime_decodes_and_merges_with_the_part_that_has_it() -> None:
    """Loggers may put DataTime in the first part only: the merged packet carries it."""
    head = "QN=20260101000000000;ST=31;CN=2051;PW=123456;MN=ABC;Flag=7;PNUM=2;"
    p1 = hj212.decode(hj212.encode(head + "PNO=1;CP=&&DataTime=20260101000000;a21026-Avg=1.0&&"))
    p2 = hj212.decode(hj212.encode(head + "PNO=2;CP=&&a21002-Avg=2.0&&"))
    assert p2.data_time is None
    r = hj212.Reassembler()
    assert r.add(p1) is None
    merged = r.add(p2)
    assert merged is not None and merged.data_time is not None
    assert merged.values == {"a21026": {"avg": 1.0}, "a21002": {"avg": 2.0}}


def test_unsplit_readings_without_datatime_are_still_rejected() -> None:
    seg = "QN=20260101000000000;ST=31;CN=2051;PW=123456;MN=ABC;Flag=4;CP=&&a21026-Avg=1.0&&"
    with pytest.raises(Rejected) as info:
        hj212.decode(hj212.encode(seg))
    assert info.value.reason is Reason.BAD_FIELD


_NUM_HEAD = "QN=20260101000000000;ST=31;CN=2051;PW=1;MN=M1;Flag=4;CP=&&DataTime=20260101000000;a21026-Avg="


@pytest.mark.parametrize("text", ["1_000", " 7", "7 ", "７", "\u0667", "1\u0660", "inf", "-inf", "nan",
                                  "Infinity", "1e400", "1..2", "0x10", "1,5", ""])
def test_numbers_follow_hj212_syntax_only(text: str) -> None:
    """Issue 15.6: Python's float() syntax (underscores, spaces, full-width and Arabic-Indic
    digits, inf, nan) is not HJ 212's; neither are overflowing exponents."""
    with pytest.raises(Rejected) as err:
        decode(encode(_NUM_HEAD + text + "&&"))
    assert err.value.reason is Reason.BAD_FIELD


@pytest.mark.parametrize(("text", "value"), [("12", 12.0), ("-3.5", -3.5), ("+2", 2.0), (".5", 0.5), ("5.", 5.0),
                                             ("1e3", 1000.0), ("1.5E-02", 0.015), ("0", 0.0)])
def test_hj212_numbers_are_accepted(text: str, value: float) -> None:
    assert decode(encode(_NUM_HEAD + text + "&&")).values["a21026"]["avg"] == value


def test_unknown_suffix_keeps_a_non_hj212_number_as_text() -> None:
    p = decode(encode(_NUM_HEAD + "1;a21026-Foo=1_000,a21026-Bar=2.5&&"))
    assert p.values["a21026"]["foo"] == "1_000" and p.values["a21026"]["bar"] == 2.5


def test_split_part_with_another_pnum_is_refused_not_kept() -> None:
    r = Reassembler()
    seg = "QN=1;ST=31;CN=2061;PW=1;MN=M1;Flag=6;PNUM={n};PNO={i};CP=&&DataTime=20260101000000;a21026-Avg=1&&"
    assert r.add(decode(encode(seg.format(n=2, i=1)))) is None
    with pytest.raises(Rejected, match="PNUM=5;PNO=4 disagrees with PNUM=2"):
        r.add(decode(encode(seg.format(n=5, i=4))))
    merged = r.add(decode(encode(seg.format(n=2, i=2))))
    assert merged is not None and len(r) == 0


@pytest.mark.parametrize(("cp", "qn", "cn", "source"), [
    ("AlarmTime=20260101080000;a21026-Ala=1", None, "2072", "alarm_time"),
    ("RestartTime=20260101080000", "20250101000000000", "2081", "restart_time"),
    ("HeartbeatTime=120", "20260101080000000", "8013", "qn"),
    ("HeartbeatTime=120", "20260101080000000", "9011", "arrival"),  # an answer's QN is the request's
    ("HeartbeatTime=120", "not-a-time", "8013", "arrival"),
    ("HeartbeatTime=120", None, "8013", "arrival"),
])
def test_event_time_from_the_packet(cp: str, qn: str | None, cn: str, source: str) -> None:
    head = f"QN={qn};" if qn else ""
    p = decode(encode(f"{head}ST=31;CN={cn};PW=1;MN=M1;Flag=4;CP=&&{cp}&&"))
    when, got = hj212.event_time(p)
    assert got == source
    if source != "arrival":
        assert when == datetime(2026, 1, 1, 8, 0, tzinfo=CHINA_TZ)
    else:
        assert when is None
