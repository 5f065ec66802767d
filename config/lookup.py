"""Fast look-ups over the registry, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from config.schema import Device, Enterprise, Outlet, Registry, Station


@dataclass(frozen=True, slots=True)
class StationRef:
    """Where a station sits: what ingest needs to tag a reading and detect needs to judge it."""

    enterprise: Enterprise
    outlet: Outlet
    station: Station


class Lookup:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.stations: dict[str, StationRef] = {
            s.mn: StationRef(e, o, s) for e in registry.enterprises for o in e.outlets for s in o.stations
        }
        self.devices: dict[str, Device] = {d.id: d for d in registry.devices}
        self.enterprises: dict[str, Enterprise] = {e.id: e for e in registry.enterprises}
        self.outlets: dict[tuple[str, str], Outlet] = {
            (e.id, o.id): o for e in registry.enterprises for o in e.outlets
        }

    def station(self, mn: str) -> StationRef | None:
        return self.stations.get(mn)
