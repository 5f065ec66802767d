"""DiskBuffer: a durable FIFO of line-protocol chunks (SQLite, WAL)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ingest.buffer import DiskBuffer, buffer_path


def lines(prefix: str, n: int) -> list[str]:
    return [f"m,tag={prefix} v={i}i {1_700_000_000 + i}" for i in range(n)]


def test_fifo_by_whole_chunks(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.sqlite", max_bytes=1 << 20) as buf:
        buf.append(lines("a", 3))
        buf.append(lines("b", 2))
        buf.append(lines("c", 4))
        ids, got = buf.peek(5)
        assert got == lines("a", 3) + lines("b", 2)
        buf.remove(ids)
        ids, got = buf.peek(2)  # a chunk larger than max_lines still comes out whole
        assert got == lines("c", 4)
        buf.remove(ids)
        assert buf.peek(10) == ([], [])
        assert buf.depth == 0 and buf.size_bytes == 0


def test_depth_and_size_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with DiskBuffer(path, max_bytes=1 << 20) as buf:
        buf.append(["m v=1 1", "m v=2 2"])
        buf.append(["m,t=é v=3 3"])
        depth, size = buf.depth, buf.size_bytes
    assert depth == 3
    assert size == len("m v=1 1\nm v=2 2".encode()) + len("m,t=é v=3 3".encode())
    with DiskBuffer(path, max_bytes=1 << 20) as again:
        assert (again.depth, again.size_bytes) == (depth, size)
        assert again.peek(100)[1] == ["m v=1 1", "m v=2 2", "m,t=é v=3 3"]


def test_full_when_over_max_bytes_and_not_after_remove(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.sqlite", max_bytes=100) as buf:
        buf.append(["x" * 60])
        assert not buf.full
        buf.append(["y" * 60])
        assert buf.full
        ids, _ = buf.peek(1)
        buf.remove(ids)
        assert not buf.full


def test_empty_append_is_noop_and_newline_refused(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "b.sqlite", max_bytes=1 << 20) as buf:
        buf.append([])
        assert buf.depth == 0
        with pytest.raises(ValueError, match="newline"):
            buf.append(['m s="a\nb" 1'])
        assert buf.depth == 0 and buf.peek(10) == ([], [])


def test_synchronous_option_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        DiskBuffer(tmp_path / "b.sqlite", 1 << 20, synchronous="OFF")  # type: ignore[arg-type]
    with DiskBuffer(tmp_path / "f.sqlite", 1 << 20, synchronous="FULL") as buf:
        buf.append(["m v=1 1"])
        assert buf.depth == 1


def test_buffer_path_is_per_client_and_file_name_safe(tmp_path: Path) -> None:
    a = buffer_path(tmp_path, "envwatch-1")
    b = buffer_path(tmp_path, "envwatch/2 x")
    assert a != b and a.parent == b.parent == tmp_path
    assert "/" not in b.name and " " not in b.name and "envwatch" in b.name


def test_concurrent_append_and_drain_lose_nothing(tmp_path: Path) -> None:
    """The consumer appends while the writer peeks and removes, as in the ingest."""
    buf = DiskBuffer(tmp_path / "b.sqlite", max_bytes=1 << 30)
    produced = [lines(f"c{i}", 7) for i in range(200)]
    drained: list[str] = []
    done = threading.Event()

    def produce() -> None:
        for chunk in produced:
            buf.append(chunk)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    while not (done.is_set() and buf.depth == 0):
        ids, got = buf.peek(50)
        drained += got
        buf.remove(ids)
    t.join()
    buf.close()
    assert drained == [x for chunk in produced for x in chunk]


def test_append_survives_kill_9(tmp_path: Path) -> None:
    """What append() returned from is on disk even if the process dies at once (synchronous=NORMAL)."""
    path = tmp_path / "b.sqlite"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from ingest.buffer import DiskBuffer
        buf = DiskBuffer({str(path)!r}, 1 << 20)
        for i in range(50):
            buf.append([f"m v={{i}}i {{i}}"])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == -9
    with DiskBuffer(path, 1 << 20) as buf:
        assert buf.depth == 50
        assert buf.peek(100)[1] == [f"m v={i}i {i}" for i in range(50)]


def test_write_ahead_log_stays_bounded(tmp_path: Path) -> None:
    """40 MB through the buffer (append, then remove as the writer does): the -wal file is
    checkpointed and truncated near WAL_MAX_BYTES instead of growing with the traffic."""
    from ingest.buffer import WAL_MAX_BYTES

    path = tmp_path / "b.sqlite"
    wal = Path(f"{path}-wal")
    biggest = 0
    with DiskBuffer(path, max_bytes=1 << 30) as buf:
        for i in range(200):
            buf.append(lines(f"chunk{i:04d}" + "x" * 4000, 50))  # ~200 kB per chunk
            ids, _ = buf.peek(50)
            buf.remove(ids)
            biggest = max(biggest, wal.stat().st_size)
        assert buf.depth == 0
    assert biggest <= 2 * WAL_MAX_BYTES, biggest
