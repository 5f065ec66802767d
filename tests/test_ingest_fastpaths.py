"""The ingest's fast paths give exactly what the plain code gives.

- hj212: how number texts are written, and _isprintable against str.isprintable
- schema: station_lines' shortcuts against the line writer as it was before them, _epoch_s' memo
- consumer: the clock read once per batch and the China-time bounds of the time checks
- buffer: 16 KiB pages for new files, old files still open; sizes remembered between peek and remove
"""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from config.loader import from_mapping
from config.lookup import Lookup, StationRef
from config.schema import Registry
from config.tables import pollutants
from ingest import hj212, schema
from ingest.buffer import DiskBuffer
from ingest.pipeline import Batch, Message, Pipeline
from core.time import CHINA_TZ
from ingest.model import Packet, Reason

HEAD = "QN=20260101100000000;ST=31;CN=2051;PW=123456;MN=M1;Flag=4;CP=&&"
DT = "DataTime=20260101100000"


# --------------------------------------------------------------------------------------------
# hj212: number texts and _isprintable


@pytest.mark.parametrize("text", ["1e3", "-0.0", ".5", "5.", "+3", "00012.50", "1e-400"])
def test_tricky_numbers_are_written_as_the_repr_of_their_float(text: str) -> None:
    p = hj212.parse_segment(f"{HEAD}{DT};a21026-Avg={text},a21026-Flag=N&&")
    (line,) = schema.station_lines(p, None)
    assert f" avg={float(text)!r},flag=\"N\" " in line


def test_isprintable_agrees_with_str_isprintable() -> None:
    for c in map(chr, range(sys.maxunicode + 1)):
        for s in (c, f"a{c}", c * 3):
            assert hj212._isprintable(s) == s.isprintable(), hex(ord(c))
    assert hj212._isprintable("")


# --------------------------------------------------------------------------------------------
# schema: station_lines and _epoch_s


def _reference_station_lines(packet: Packet, ref: StationRef | None) -> list[str]:
    """station_lines as it was before its shortcuts (verbatim but for names), plus the plausible
    ranges and the catch-all series written plainly."""
    if packet.interval is None or packet.data_time is None:
        return []
    ts = int(packet.data_time.astimezone(timezone.utc).timestamp())
    esc = schema._esc_tag
    ent = esc(ref.enterprise.id) if ref else "_unknown"
    out = esc(ref.outlet.id) if ref else "_unknown"
    medium = ref.outlet.medium if ref else ("water" if packet.st == "32" else "gas")
    units = ref.station.units if ref else {}
    head = f"{schema.measurement(packet.interval)},mn={esc(packet.mn)},enterprise={ent},outlet={out},medium={medium}"
    lines = []
    known = set(pollutants()) | set(ref.station.pollutants if ref else [])
    other = []
    for code, fields in packet.values.items():
        if code not in known:
            orig = packet.original_codes.get(code, code)
            other += [f"{orig}-{hj212.field_suffix(n)}={v if isinstance(v, str) else float(v)!r}" for n, v in fields.items()]
            continue
        scale = schema._scale(code, units) if units else 1.0
        rng = pollutants()[code].plausible
        parts = []
        bad = []
        for name, v in fields.items():
            if name in schema.FLOAT_FIELDS:
                if v.__class__ is not str:
                    v = float(v) * scale if scale != 1.0 and name in schema._RATE_FIELDS else float(v)
                    if rng and name != "cou" and not rng[0] <= v <= rng[1]:
                        bad.append(name)
                        name = f"{name}_implausible"
                    parts.append(f"{name}={v!r}")
            elif name in schema.STRING_FIELDS:
                parts.append(f'{name}="{schema._esc_str(str(v))}"')
        if bad:
            parts.append(f'implausible="{",".join(bad)}"')
        if parts:
            orig = packet.original_codes.get(code, code)
            lines.append(f"{head},pollutant={esc(code)},code={esc(orig)} {','.join(parts)} {ts}")
    if other:
        lines.append(f'{head},pollutant=_other,code=_other other="{schema._esc_str(",".join(other))}" {ts}')
    return lines


class _F(float):
    def __repr__(self) -> str:
        return "not-a-plain-float"


def _ref() -> StationRef:
    registry = Registry.model_validate({"enterprises": [{"id": "E 1", "name": "P", "outlets": [{
        "id": "DA,1", "medium": "gas",
        "stations": [{"mn": "M 1", "pollutants": ["a21026", "a00000"], "units": {"a00000": "m3/h"}}]}]}]})
    ref = Lookup(registry).station("M 1")
    assert ref is not None
    return ref


@pytest.mark.parametrize("values", [
    {"a21026": {"avg": 1.5, "min": -0.0, "max": 1e300, "zs_avg": 5e-324, "flag": "N", "eflag": "A"}},
    {"a21026": {"avg": 2, "min": True, "max": _F(3.5), "cou": "12", "flag": 7, "eflag": None}},
    {"a21026": {"avg": float("inf"), "flag": 'say "hi"', "eflag": "back\\slash"}, "x y,z=": {"rtd": 1.0}},
    {"a21026": {"info": "text", "sample_time": "x", "new_thing": 2.5}, "a19001": {}},
    {"a00000": {"avg": 3600.0, "rtd": 7200, "cou": 36000.0, "min": "x", "flag": "N"}},  # scaled m3/h -> m3/s
])
@pytest.mark.parametrize("with_ref", [False, True])
def test_station_lines_match_the_plain_writer(values: dict[str, dict[str, Any]], with_ref: bool) -> None:
    ref = _ref() if with_ref else None
    packet = Packet(mn="M 1", cn="2061", st="32", data_time=datetime(2024, 3, 1, 8, 0, 1, 500000, tzinfo=CHINA_TZ),
                    values=values, original_codes={"a21026": "02", "a00000": "B02"})
    assert schema.station_lines(packet, ref) == _reference_station_lines(packet, ref)


def test_station_lines_of_the_benchmark_packets_match_the_plain_writer() -> None:
    seg = ("ST=31;CN=2051;PW=123456;MN=LD1;CP=&&DataTime=20160824002000000;B02-Cou=158521.79,B02-Min=263.41,"
           "B02-Avg=264.20,B02-Max=265.10;01-Cou=2.24,01-Avg=14.15,01-Flag=N;S08-Min=0.29,S08-Avg=0.000000&&")
    packet = hj212.parse_segment(seg)
    assert schema.station_lines(packet, None) == _reference_station_lines(packet, None)


def test_epoch_seconds_memo_is_exact_across_zones_and_folds() -> None:
    def epoch(t: datetime) -> int:
        return int(t.astimezone(timezone.utc).timestamp())

    utc = datetime(2021, 11, 7, 5, 30, tzinfo=timezone.utc)  # 01:30 EDT, the first 01:30 in New York
    assert schema._epoch_s(utc) == epoch(utc)
    assert schema._epoch_s(utc.astimezone(CHINA_TZ)) == epoch(utc)  # equal instants share the entry
    ny = ZoneInfo("America/New_York")
    for fold in (0, 1):  # equal to each other in New York, one hour apart in fact
        t = datetime(2021, 11, 7, 1, 30, fold=fold, tzinfo=ny)
        assert schema._epoch_s(t) == epoch(t) == epoch(utc) + 3600 * fold
    naive = datetime(2021, 11, 7, 1, 30)
    assert schema._epoch_s(naive) == epoch(naive) and naive not in schema._EPOCH_S
    t = datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=CHINA_TZ)
    assert schema._epoch_s(t) == schema._epoch_s(t) == epoch(t)


# --------------------------------------------------------------------------------------------
# consumer: one clock reading per batch, bounds in China time

REGISTRY = {"enterprises": [{"id": "p", "name": "P", "outlets": [
    {"id": "DA001", "medium": "gas", "stations": [{"mn": "M1"}]}]}], "devices": [{"id": "UAV01", "kind": "drone"}]}


def _pipeline(**ingest: Any) -> Pipeline:
    s = from_mapping({"broker": {"host": "127.0.0.1", "port": 1, "topic_prefix": "t"},
                      "influxdb": {"url": "http://127.0.0.1:1", "database": "d"},
                      "ingest": {"state_dir": "/nonexistent", "future_tolerance_s": 600, **ingest},
                      "registry": REGISTRY}, env={})
    return Pipeline(s, Lookup(s.registry))


def _packet_at(t: datetime) -> Message:
    seg = hj212.build_segment(mn="M1", cn="2051", st="31", flag=4, data_time=t, values={"a21026": {"avg": 1.0}})
    return Message("t/up/station/M1", hj212.encode(seg), 1, 1, datetime.now(timezone.utc))


def test_future_bound_is_read_once_per_batch_and_compared_in_china_time() -> None:
    p = _pipeline()
    now = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
    batch = Batch(clock=(now, (now + timedelta(seconds=600)).astimezone(CHINA_TZ)))
    edge = (now + timedelta(seconds=600)).astimezone(CHINA_TZ)
    p.feed(_packet_at(edge), batch)  # exactly at the bound: accepted, as `t > now + future` says
    p.feed(_packet_at(edge + timedelta(seconds=1)), batch)
    assert len(batch.lines) == 1 and [d.reason for d in batch.dead] == [Reason.BAD_TIME]
    assert batch.dead[0].detail == (f"time {(edge + timedelta(seconds=1)).isoformat()} is more than 600s ahead of "
                                    "now (2026-06-01T12:00:00Z)")
    fresh = Batch()
    p.feed(_packet_at(datetime.now(CHINA_TZ).replace(microsecond=0)), fresh)
    assert fresh.clock is not None and fresh.clock[1].tzinfo is CHINA_TZ and not fresh.dead


def test_earliest_bound_in_china_time_gives_the_same_answers_and_details() -> None:
    p = _pipeline(earliest="2020-01-01T00:00:00")  # naive: UTC
    at = datetime(2020, 1, 1, 8, 0, tzinfo=CHINA_TZ)  # the same instant
    batch = Batch()
    p.feed(_packet_at(at), batch)
    p.feed(_packet_at(at - timedelta(seconds=1)), batch)
    assert len(batch.lines) == 1
    assert batch.dead[0].detail == ("time 2020-01-01T07:59:59+08:00 is before ingest.earliest "
                                    "2020-01-01T00:00:00+00:00")


def test_mobile_fix_times_in_utc_are_checked_against_the_china_time_bound() -> None:
    p = _pipeline()
    now = datetime.now(timezone.utc)
    batch = Batch(clock=(now, (now + timedelta(seconds=600)).astimezone(CHINA_TZ)))
    for t in (now + timedelta(seconds=590), now + timedelta(seconds=610)):
        body = json.dumps({"device": "UAV01", "kind": "drone", "time": t.isoformat(), "lat": 36.6, "lon": 117.0})
        p.feed(Message("t/up/mobile/UAV01", body.encode(), 1, 1, now), batch)
    assert len(batch.lines) == 1 and [d.reason for d in batch.dead] == [Reason.BAD_TIME]


# --------------------------------------------------------------------------------------------
# buffer


def _old_buffer(path: Path, chunks: list[list[str]]) -> None:
    """A buffer file as the previous DiskBuffer made it: default 4 KiB pages, the same table."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS chunk (id INTEGER PRIMARY KEY AUTOINCREMENT, "
               "n_lines INTEGER NOT NULL, body TEXT NOT NULL)")
    for lines in chunks:
        db.execute("INSERT INTO chunk (n_lines, body) VALUES (?, ?)", (len(lines), "\n".join(lines)))
    db.close()


def test_new_buffers_get_16k_pages_and_old_files_keep_theirs(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "new.sqlite", 1 << 20) as buf:
        buf.append(["m v=1 1"])
        assert buf._db.execute("PRAGMA page_size").fetchone() == (16384,)
    chunks = [[f"m,t=é v={i} {i}" for i in range(j, j + 3)] for j in range(0, 30, 3)]
    _old_buffer(tmp_path / "old.sqlite", chunks)
    with DiskBuffer(tmp_path / "old.sqlite", 1 << 20) as buf:
        assert buf._db.execute("PRAGMA page_size").fetchone() == (4096,)
        assert buf.depth == 30 and buf.size_bytes == sum(len("\n".join(c).encode()) for c in chunks)
        buf.append(["m v=99 99"])
        drained: list[str] = []
        while buf.depth:
            ids, got = buf.peek(7)
            drained += got
            buf.remove(ids)
        assert drained == [x for c in chunks for x in c] + ["m v=99 99"]
        assert buf.size_bytes == 0


def test_remove_counts_peeked_unpeeked_and_repeated_ids_once(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, 1 << 20) as buf:
        for i in range(4):
            buf.append([f"m,t=é v={i} {i}", f"m v={i} {i}"])
    with DiskBuffer(path, 1 << 20) as buf:  # a new process: nothing peeked yet
        total = buf.size_bytes
        ids, _ = buf.peek(4)
        assert len(ids) == 2
        buf.remove([ids[0], ids[0], 10_000])  # repeated and unknown ids
        buf.remove([ids[0]])  # already removed: no-op
        assert (buf.depth, buf.size_bytes) == (6, total * 3 // 4)
        rest = [row[0] for row in buf._db.execute("SELECT id FROM chunk ORDER BY id")]
        buf.remove(rest[1:])  # never peeked: measured in SQL
        assert (buf.depth, buf.size_bytes) == (2, total // 4)
        buf.remove(rest[:1])  # peeked, removed last
        assert (buf.depth, buf.size_bytes) == (0, 0) and buf.peek(10) == ([], [])
