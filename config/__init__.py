"""The deployment's configuration: schema, loading, validation, shipped examples and tables."""

from config.loader import ConfigError, Problem, load
from config.lookup import Lookup, StationRef
from config.schema import Device, Enterprise, Limit, Outlet, Registry, Settings, Station

__all__ = [
    "ConfigError", "Device", "Enterprise", "Limit", "Lookup", "Outlet", "Problem", "Registry",
    "Settings", "Station", "StationRef", "load",
]
