"""/metrics carries the process's own CPU, memory and file-descriptor figures next to envwatch's."""

from __future__ import annotations

from pathlib import Path

from center.metrics import Metrics
from core.db import make_engine, migrate
from tests.test_metrics_health import sample


def test_process_and_platform_metrics_are_in_the_apps_registry(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/envwatch.sqlite")
    migrate(engine)
    text = Metrics(engine).render().decode()
    assert (sample(text, "process_resident_memory_bytes") or 0) > 1 << 20
    assert sample(text, "process_cpu_seconds_total") is not None
    assert (sample(text, "process_open_fds") or 0) >= 3
    assert sample(text, "process_start_time_seconds") is not None
    assert "python_info{" in text
    # Two apps in one process each have their own registry: no "Duplicated timeseries" error.
    assert "process_resident_memory_bytes" in Metrics(engine).render().decode()
