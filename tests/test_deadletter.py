"""DeadLetters: every rejected payload kept byte-exact with its reason; the CLI views of them."""

from __future__ import annotations

import io
import multiprocessing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from config.schema import IngestSettings, Settings
from ingest.deadletter import DeadLetter, DeadLetters, cli_count, cli_list, deadletter_path, escape_raw
from ingest.model import Reason

RAW_CRC = b"##0101QN=20160801085857223;ST=32;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&&&ABCD\r\n"


def test_add_many_then_list_newest_first_byte_exact(tmp_path: Path) -> None:
    t = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)
    with DeadLetters(tmp_path / "dl.sqlite") as dl:
        n = dl.add_many([
            DeadLetter("p/up/station/A", Reason.CRC_MISMATCH, "CRC sent 'ABCD'", RAW_CRC, t),
            DeadLetter("p/up/station/B", Reason.UNKNOWN_STATION, "MN 'B' unknown", b"\x00\xff##", t),
            DeadLetter("p/up/mobile/d", Reason.BAD_JSON, "not JSON", b"{", t),
        ])
        assert n == 3
        got = dl.list()
    assert [d.reason for d in got] == [Reason.BAD_JSON, Reason.UNKNOWN_STATION, Reason.CRC_MISMATCH]
    assert got[2].raw == RAW_CRC and got[1].raw == b"\x00\xff##"
    assert got[2].topic == "p/up/station/A" and got[2].detail == "CRC sent 'ABCD'"
    assert got[2].received_at == t
    assert got[0].id is not None and got[0].id > got[2].id  # type: ignore[operator]


def test_filter_limit_and_count(tmp_path: Path) -> None:
    with DeadLetters(tmp_path / "dl.sqlite") as dl:
        dl.add_many(DeadLetter("t", Reason.BAD_TIME, f"#{i}", b"x") for i in range(5))
        dl.add(DeadLetter("t", Reason.TOO_LARGE, "big", b"y" * 10))
        assert dl.count_by_reason() == {"bad_time": 5, "too_large": 1}
        newest = dl.list(reason=Reason.BAD_TIME, limit=2)
        assert [d.detail for d in newest] == ["#4", "#3"]
        assert dl.list(reason="too_large")[0].raw == b"y" * 10
        assert dl.add_many([]) == 0


def test_naive_received_at_is_utc(tmp_path: Path) -> None:
    with DeadLetters(tmp_path / "dl.sqlite") as dl:
        dl.add(DeadLetter("t", Reason.BAD_FIELD, "d", b"r", datetime(2026, 1, 1, 12, 0)))
        assert dl.list()[0].received_at == datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _write_many(path: str, worker: int) -> None:
    with DeadLetters(path) as dl:
        for i in range(50):
            dl.add_many([DeadLetter(f"w{worker}", Reason.BAD_FIELD, str(i), b"%d" % i)] * 2)


def test_shared_by_several_processes(tmp_path: Path) -> None:
    """Workers of one deployment share the file: concurrent writers wait, none fails or is lost."""
    path = str(tmp_path / "dl.sqlite")
    DeadLetters(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with DeadLetters(path) as dl:
        assert dl.count_by_reason() == {"bad_field": 300}


def test_escape_raw_is_one_printable_line() -> None:
    assert escape_raw(b"##0001X\r\n") == "##0001X\\r\\n"
    assert escape_raw(b"ST=\x00\x00;") == "ST=\\x00\\x00;"
    assert escape_raw(b"\xff\xfe ok") == "\\xff\\xfe ok"
    assert escape_raw("站点".encode()) == "站点"
    long = escape_raw(b"a" * 500, limit=50)
    assert len(long) == 50 and long.endswith("…")


def _settings(state: Path) -> Settings:
    return Settings(ingest=IngestSettings(state_dir=str(state)))


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, color_system=None), out


def test_cli_list_and_count(tmp_path: Path) -> None:
    with DeadLetters(deadletter_path(tmp_path)) as dl:
        dl.add(DeadLetter("p/up/station/A", Reason.CRC_MISMATCH, "CRC [sent] ABCD", RAW_CRC))
        dl.add(DeadLetter("p/up/station/B", Reason.BAD_TIME, "future", b"##x"))
    console, out = _console()
    cli_list(_settings(tmp_path), reason="crc_mismatch", limit=5, console=console)
    text = out.getvalue()
    assert "crc_mismatch" in text and "CRC [sent] ABCD" in text  # brackets not eaten as markup
    assert "\\r\\n" in text and "bad_time" not in text
    console, out = _console()
    cli_count(_settings(tmp_path), console=console)
    text = out.getvalue()
    assert "crc_mismatch" in text and "bad_time" in text and "total" in text and "2" in text


def test_cli_on_missing_store_says_so(tmp_path: Path) -> None:
    console, out = _console()
    cli_count(_settings(tmp_path / "nowhere"), console=console)
    assert "no dead letters" in out.getvalue()
    assert not (tmp_path / "nowhere").exists()


def test_cli_list_unknown_reason_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_list(_settings(tmp_path), reason="crc", console=_console()[0])
    assert exc.value.code == 2
    assert "crc_mismatch" in capsys.readouterr().err


def test_oversized_payload_keeps_a_bounded_prefix_with_size_and_sha256(tmp_path: Path) -> None:
    import hashlib

    big = bytes(range(256)) * 4096  # 1 MiB
    small = b"##9999" + b"x" * 1000
    with DeadLetters(tmp_path / "dl.sqlite", max_raw_bytes=64 * 1024) as dl:
        dl.add_many([DeadLetter("t", Reason.TOO_LARGE, "big", big), DeadLetter("t", Reason.BAD_LENGTH, "s", small)])
        kept_small, kept_big = dl.list()
    assert kept_big.raw == big[:64 * 1024] and kept_big.truncated
    assert kept_big.size == len(big) and kept_big.sha256 == hashlib.sha256(big).hexdigest()
    assert kept_small.raw == small and not kept_small.truncated and kept_small.size == len(small)
    assert (tmp_path / "dl.sqlite").stat().st_size < 1 << 20
    out = io.StringIO()
    console = Console(file=out, width=400)
    settings = Settings(ingest=IngestSettings(state_dir=str(tmp_path)))
    (tmp_path / "dl.sqlite").rename(deadletter_path(tmp_path))
    cli_list(settings, console=console)
    assert f"first 65536 of {len(big)} bytes" in out.getvalue()


def test_a_file_of_an_older_version_gets_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "dl.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("CREATE TABLE dead_letter (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL,"
                         " topic TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL, raw BLOB NOT NULL);"
                         "INSERT INTO dead_letter (received_at, topic, reason, detail, raw) VALUES"
                         " ('2026-01-01T00:00:00.000+00:00', 't', 'bad_field', 'old', x'00');")
    db.close()
    with DeadLetters(path) as dl:
        dl.add(DeadLetter("t", Reason.BAD_FIELD, "new", b"\x01"))
        new, old = dl.list()
    assert (old.raw, old.size, old.truncated) == (b"\x00", None, False)
    assert (new.raw, new.size) == (b"\x01", 1)


def test_the_ingest_bounds_a_50_mb_payload(settings_factory: Any, mqtt_client_factory: Any) -> None:
    """Issue 9.5: a 50 MB MQTT payload through the real broker and ingest: one too_large dead
    letter of 64 KiB with the payload's size and SHA-256, not 50 MB of SQLite."""
    import hashlib

    from ingest.consumer import Ingest
    from tests.test_consumer import REGISTRY, MN_GAS, station_topic, wait_until

    settings = settings_factory(REGISTRY)
    payload = b"##" + b"9" * (50 * 1024 * 1024)
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        pub.publish(station_topic(settings, MN_GAS), payload, qos=1).wait_for_publish(30)
        wait_until("the payload dead-lettered", lambda: ing.counters()["acked"] == 1, timeout=60)
    with DeadLetters(deadletter_path(settings.ingest.state_dir)) as dl:
        [d] = dl.list()
    assert d.reason == Reason.TOO_LARGE and len(d.raw) == 64 * 1024 and d.raw == payload[:64 * 1024]
    assert d.size == len(payload) and d.sha256 == hashlib.sha256(payload).hexdigest()
    assert deadletter_path(settings.ingest.state_dir).stat().st_size < 2 << 20
