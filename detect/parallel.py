"""Where detection work runs: here, one task after another (the default), or on a Dask cluster.

When `detect.cluster` names a dask.distributed scheduler (e.g. "tcp://10.0.0.5:8786"), the
per-(kind, window) detector runs of a range (`Runner.evaluate_range`) and the per-station model
fits and scores of multivariate_anomaly go through joblib's Dask backend to the cluster's workers.
Unset, joblib is not even asked: the tasks run in this process in order, exactly as before.

Tasks carry plain values (a detector, a window, InfluxDB settings, the registry); a worker opens
its own InfluxDB client and lookup once per settings (cached per process), so nothing holding a
socket is pickled. Results come back in task order, so the alerts are the same wherever they ran.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from config.lookup import Lookup
    from config.schema import InfluxSettings, Registry
    from detect.base import Alert, Detector, Window
    from detect.source import ReadingSource

T = TypeVar("T")
_clients: dict[str, Any] = {}
_sources: dict[str, ReadingSource] = {}
_lookups: dict[str, Lookup] = {}
_lock = threading.Lock()


def client(address: str) -> Any:
    """A dask.distributed Client to the scheduler at `address`, one per process and address."""
    with _lock:
        if address not in _clients:
            from distributed import Client  # only a cluster deployment pays for the import

            _clients[address] = Client(address, set_as_default=False)
        return _clients[address]


def run_tasks(fn: Callable[..., T], tasks: Sequence[tuple[Any, ...]], cluster: str | None) -> list[T]:
    """[fn(*task) for task in tasks], on the cluster's workers when `cluster` is set (order kept)."""
    if not cluster or len(tasks) < 2:
        return [fn(*t) for t in tasks]
    from joblib import Parallel, delayed, parallel_config

    with client(cluster).as_current(), parallel_config(backend="dask"):
        return list(Parallel(n_jobs=-1)(delayed(fn)(*t) for t in tasks))


def source_for(settings: InfluxSettings) -> ReadingSource:
    """This process's ReadingSource for the given InfluxDB settings (opened once)."""
    key = settings.model_dump_json()
    with _lock:
        if key not in _sources:
            from detect.source import ReadingSource
            from core.influx import Influx

            _sources[key] = ReadingSource(Influx(settings))
        return _sources[key]


def lookup_for(key: str, registry: Registry) -> Lookup:
    """This process's Lookup of a registry, by a key the caller computed once (its hash)."""
    with _lock:
        if key not in _lookups:
            from config.lookup import Lookup

            _lookups[key] = Lookup(registry)
        return _lookups[key]


def detect_task(detector: Detector, window: Window, influx: InfluxSettings, registry_key: str,
                registry: Registry) -> list[Alert]:
    """One detector over one window, run wherever the task landed."""
    return detector.detect(window, source_for(influx), lookup_for(registry_key, registry))
