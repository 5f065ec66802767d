"""MQTT -> InfluxDB ingest: decoders, validation, disk buffer, dead letters and the consumer.

What other packages use:
    Packet, MobileFix, Rejected, Reason, Kind        the decoded data (ingest.model, pure)
    Ingest, Counters, run                            the consumer (ingest.consumer)
    DeadLetters, DeadLetter                          rejected payloads (ingest.deadletter)
    DiskBuffer                                       the write-behind buffer (ingest.buffer)

The model names are imported eagerly (pure data); the others on first use, so that importing
`ingest` for a dataclass does not pull in paho-mqtt, SQLite and the InfluxDB client.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ingest.model import Kind, MobileFix, Packet, Reason, Rejected

_LAZY = {
    "Ingest": "ingest.consumer", "Counters": "ingest.consumer", "run": "ingest.consumer",
    "DeadLetters": "ingest.deadletter", "DeadLetter": "ingest.deadletter",
    "DiskBuffer": "ingest.buffer",
}

__all__ = ["Counters", "DeadLetter", "DeadLetters", "DiskBuffer", "Ingest", "Kind", "MobileFix", "Packet",
           "Reason", "Rejected", "run"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ingest' has no attribute {name!r}")
    return getattr(import_module(module), name)
