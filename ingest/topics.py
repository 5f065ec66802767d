"""The ingest's topics: which station and device topics one ingest worker subscribes to (its
partition of them), and why a shared subscription loses readings on Mosquitto. The MQTT client
itself is core.mqtt's.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

from config.schema import BrokerSettings


# A topic level must not hold wildcards or separators: such an id is no topic of its own.
_BAD_LEVEL = re.compile(r"[+#/\x00]")


def in_partition(broker: BrokerSettings, key: str) -> bool:
    """Whether station MN or device id `key` is this worker's (broker.partition of broker.partitions)."""
    return zlib.crc32(key.encode("utf-8")) % broker.partitions == broker.partition


def ingest_topics(broker: BrokerSettings, mns: Iterable[str], devices: Iterable[str]) -> list[str]:
    """The topic filters one ingest worker subscribes to.

    One worker: {p}/up/# (a plain subscription, kept by the broker across restarts), or
    $share/{shared_group}/{p}/up/# when a group is set. Partitioned: the station and device topics
    of this worker's share (a stable hash of the MN or device id), each a plain subscription.
    """
    up = f"{broker.topic_prefix}/up"
    if broker.partitions == 1:
        return [f"$share/{broker.shared_group}/{up}/#" if broker.shared_group else f"{up}/#"]
    return ([f"{up}/station/{mn}" for mn in sorted(mns) if not _BAD_LEVEL.search(mn) and in_partition(broker, mn)]
            + [f"{up}/mobile/{d}" for d in sorted(devices) if not _BAD_LEVEL.search(d) and in_partition(broker, d)])


def shared_subscription_warning(broker: BrokerSettings, version: str | None) -> str | None:
    """Why broker.shared_group loses readings on this broker, or None.

    Mosquitto saves only plain subscriptions in its persistence file (src/persist_write.c walks
    each topic's plain subscribers, never its shared ones: so from 1.6, which added shared
    subscriptions, through 2.0.22, and in 2.1's file persistence). After a restart a shared subscription exists only
    once a worker has reconnected and subscribed again; QoS 1 readings published before that are
    acknowledged to the station and dropped (tests/test_broker_restart.py measures it).
    """
    if not broker.shared_group or not version or not version.lower().startswith("mosquitto"):
        return None
    return (f"broker.shared_group is set, and {version} does not keep shared subscriptions across a "
            "restart: readings published between a broker restart and the workers' re-subscription are "
            "lost. Use a plain subscription (broker.shared_group: null, the default) or broker.partitions "
            "to scale out")
