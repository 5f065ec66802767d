"""detect.cluster: the same alerts from a Dask cluster as from this process (detect/parallel.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from config.schema import InfluxSettings
from detect.anomaly import MultivariateAnomaly
from detect.exceedance import Exceedance, InsufficientValidData
from detect.offline import Offline
from detect.patterns import ConstantValue, FlagAbuse, ZeroWhileOperating
from detect.runner import Runner
from core.influx import Influx
from tests.detect_helpers import lookup, minute_lines, registry, utc, write

distributed = pytest.importorskip("distributed")

H0 = utc(2024, 3, 1, 2)
SO2, NOX, O2, FLOW = "a21026", "a21002", "a19001", "a00000"


def readings(i: int) -> dict[str, dict[str, Any]]:
    """GAS01: SO2 stuck from the second hour, above its limit in the first; NOx at zero in the
    third hour; a silence in the fourth; maintenance flags on the fifth."""
    if 200 <= i < 230:
        return {}
    wobble = (i * 7) % 61 * 0.05
    so2 = 40.0 + wobble if i < 60 else 21.5
    nox = 0.0 if 120 <= i < 180 else 30.0 + wobble
    flag = "M" if 240 <= i < 290 else "N"
    return {SO2: {"avg": so2, "zs_avg": so2 * 1.2, "flag": flag}, NOX: {"avg": nox, "zs_avg": nox * 1.2, "flag": "N"},
            O2: {"avg": 9.0 + (i % 5) * 0.01, "flag": "N"}, FLOW: {"avg": 1000.0 + i % 13, "flag": "N"}}


def detectors() -> list[Any]:
    return [ConstantValue(), Exceedance(), FlagAbuse(), InsufficientValidData(), MultivariateAnomaly(), Offline(),
            ZeroWhileOperating()]


def alerts_of(runner: Runner) -> list[tuple[Any, ...]]:
    return sorted((s.alert.id, s.alert.kind, s.alert.pollutant, s.alert.value, s.alert.window_start, s.status)
                  for s in runner.store.alerts())


def test_a_cluster_raises_the_same_alerts_as_this_process(settings_factory: Any, influx_settings: InfluxSettings,
                                                           tmp_path: Any) -> None:
    lk = lookup()
    with Influx(influx_settings) as influx:
        write(influx, minute_lines(lk, "GAS01", H0, 300, readings))
        write(influx, minute_lines(lk, "NOZS01", H0, 300, lambda i: {SO2: {"avg": 10.0 + i % 9, "flag": "N"}}))
    start, end = H0, H0 + timedelta(hours=5)
    local = Runner(settings_factory(registry()), detectors=detectors())
    local.evaluate_range(start, end)
    expected = alerts_of(local)
    assert {a[1] for a in expected} >= {"constant_value", "exceedance", "zero_while_operating", "offline",
                                        "insufficient_valid_data"}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        remote = Runner(settings_factory(registry(), detect={"cluster": cluster.scheduler_address}),
                        detectors=detectors())
        assert remote.source.cluster == cluster.scheduler_address
        remote.evaluate_range(start, end)
        assert alerts_of(remote) == expected
        with distributed.Client(cluster.scheduler_address) as client:  # the work went through the cluster
            assert any("detect_task" in key for key in _task_keys(client))


def _task_keys(client: Any) -> list[str]:
    log = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k in dask_scheduler.task_prefixes])
    return list(log)
