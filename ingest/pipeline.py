"""Validation: one MQTT message -> line-protocol lines, a dead letter, or held (a part of a split
packet). Single-threaded, run by the ingest's commit thread (ingest.consumer) or by the decode
process (ingest.offload); below both, so neither imports the other to get it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone


from config.lookup import Lookup, StationRef
from config.schema import Settings
from ingest import hj212
from ingest.deadletter import DeadLetter
from ingest.decode import decode_payload, key_lookup
from core.time import CHINA_TZ
from ingest.model import Kind, MobileFix, Packet, Reason, Rejected
from ingest.schema import event_line, mobile_line, station_lines

log = logging.getLogger("envwatch.ingest")

SPLIT_TIMEOUT_S = 60.0  # parts of a split packet (Flag D) older than this are dead-lettered


# --------------------------------------------------------------------------------------------
# validation: one message -> lines, a dead letter, or "held" (a part of a split packet)


@dataclass(slots=True)
class Message:
    """One MQTT message as received: what is acked and, if rejected, what is kept byte-exact."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    received: datetime  # UTC, when on_message ran


@dataclass(slots=True)
class Batch:
    """The outcome of a group of messages, committed together and then acked together."""

    lines: list[str] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    done: list[Message] = field(default_factory=list)  # to ack once lines and dead are durable
    events: Counter[str] = field(default_factory=Counter)
    # (now, the latest time a reading may carry): the clock is read once per batch, at its first
    # time check (Pipeline._check_time); a batch spans at most batch_interval_s, small against
    # future_tolerance_s.
    clock: tuple[datetime, datetime] | None = None

    def reject(self, msgs: list[Message], reason: Reason, detail: str) -> None:
        self.dead += [DeadLetter(m.topic, reason, detail, m.payload, m.received) for m in msgs]
        self.done += msgs


class Pipeline:
    """Decode, validate and convert messages to line protocol. Single-threaded (commit thread).

    Pure apart from the Reassembler's memory of split-packet parts, whose messages it holds back
    (not acked) until the merged packet is in a batch, or until the group times out and all its
    parts become one dead letter each (incomplete_split).
    """

    def __init__(self, settings: Settings, lookup: Lookup, split_timeout_s: float = SPLIT_TIMEOUT_S) -> None:
        self.settings = settings
        self.lookup = lookup
        prefix = settings.broker.topic_prefix
        self._station_topic = f"{prefix}/up/station/"
        self._mobile_topic = f"{prefix}/up/mobile/"
        self._reassembler = hj212.Reassembler(split_timeout_s)
        self._key_for = key_lookup(settings)  # MN -> SM4 key of HJ 212-2025 stations
        # Messages of incomplete split packets, not acked yet; oldest group first (dict order).
        self._held: dict[tuple[str, str | None, str], list[Message]] = {}
        self._held_by_mn: Counter[str] = Counter()
        ing = settings.ingest
        # Held parts take places in the broker's window of unacked messages (receive_maximum):
        # at most a quarter of it in all, and split_parts_per_station per station, so that parts
        # that never complete cannot stall the other stations' packets.
        self._max_held = max(1, ing.receive_maximum // 4)
        self._max_held_station = ing.split_parts_per_station
        self._max_bytes = ing.max_payload_bytes
        self._accept_unknown = ing.accept_unknown_stations
        self._future = timedelta(seconds=ing.future_tolerance_s)
        earliest = ing.earliest
        # A naive `earliest` in the config means UTC, like every other time inside the ingest.
        self._earliest = earliest if earliest.tzinfo else earliest.replace(tzinfo=timezone.utc)
        self._earliest_cn = _china(self._earliest)

    def feed(self, msg: Message, batch: Batch) -> None:
        """Add the outcome of `msg` to `batch` (or hold it, if it is one part of a split packet)."""
        try:
            decoded = decode_payload(msg.payload, key_for=self._key_for, max_bytes=self._max_bytes)
            if isinstance(decoded, MobileFix):
                self._check_fix(decoded, msg.topic, batch)
                batch.lines.append(self._check_line(mobile_line(decoded)))
                batch.events["mobile"] += 1
                batch.done.append(msg)
                return
            ref = self._check_packet(decoded, msg.topic, batch)
            if decoded.split:
                self._feed_part(decoded, msg, batch)
            else:
                self._add_packet(decoded, ref, msg.received, batch)
                batch.done.append(msg)
        except Rejected as exc:
            batch.reject([msg], exc.reason, exc.detail)
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the ingest or lose the payload
            log.exception("internal error on a payload from %s; kept as a dead letter", msg.topic)
            batch.reject([msg], Reason.BAD_FIELD, f"internal error {type(exc).__name__}: {exc}")

    def expire(self, batch: Batch, now: float | None = None) -> None:
        """Dead-letter every part of the split packets that did not complete within the timeout.

        `now` is a time.monotonic() value (the Reassembler's clock); default: now.
        """
        for group in self._reassembler.expire(now):
            self._dead_group(group, batch, f"within {self._reassembler.timeout_s:g}s")

    def _dead_group(self, group: hj212.SplitGroup, batch: Batch, why: str) -> None:
        mn, qn, cn = group.key
        batch.reject(self._release(group.key), Reason.INCOMPLETE_SPLIT,
                     f"only parts {sorted(group.parts)} of {group.pnum} of split packet MN={mn} QN={qn} "
                     f"CN={cn} arrived {why}")

    def _release(self, key: tuple[str, str | None, str]) -> list[Message]:
        msgs = self._held.pop(key, [])
        self._held_by_mn[key[0]] -= len(msgs)
        if self._held_by_mn[key[0]] <= 0:
            del self._held_by_mn[key[0]]
        return msgs

    @property
    def held(self) -> int:
        """Messages of incomplete split packets held (not acked)."""
        return self._held_by_mn.total()

    def _check_fix(self, fix: MobileFix, topic: str, batch: Batch) -> None:
        self._check_topic(topic, self._mobile_topic, fix.device, "device")
        if fix.device not in self.lookup.devices:
            raise Rejected(Reason.UNKNOWN_DEVICE, f"device {fix.device!r} is not in the registry")
        self._check_time(fix.time, batch)

    def _check_packet(self, packet: Packet, topic: str, batch: Batch) -> StationRef | None:
        """Topic, registry and time checks of a station packet; its station (None: unknown, accepted)."""
        self._check_topic(topic, self._station_topic, packet.mn, "MN")
        ref = self.lookup.station(packet.mn)
        if ref is None and not self._accept_unknown:
            raise Rejected(Reason.UNKNOWN_STATION, f"MN {packet.mn!r} is not in the registry")
        if packet.data_time is not None:
            self._check_time(packet.data_time, batch)
        return ref

    def _check_topic(self, topic: str, expected_prefix: str, ident: str, what: str) -> None:
        if not topic.startswith(expected_prefix) or "/" in topic[len(expected_prefix):]:
            raise Rejected(Reason.BAD_FIELD, f"{what} {ident!r} published on topic {topic!r}; "
                                             f"expected {expected_prefix}{ident}")
        if topic[len(expected_prefix):] != ident:
            raise Rejected(Reason.BAD_FIELD, f"payload {what} {ident!r} does not match topic {topic!r}")

    def _check_time(self, t: datetime, batch: Batch) -> None:
        problem = self._time_problem(t, batch)
        if problem is not None:
            raise Rejected(Reason.BAD_TIME, problem)

    def _time_problem(self, t: datetime, batch: Batch) -> str | None:
        if batch.clock is None:
            now = datetime.now(timezone.utc)
            batch.clock = (now, _china(now + self._future))
        now, latest = batch.clock
        # The bounds are in China time, like every HJ 212 DataTime: aware datetimes that share a
        # tzinfo compare without working out UTC offsets (same result, ~30 times faster).
        if t > latest:
            return (f"time {t.isoformat()} is more than {self._future.total_seconds():g}s ahead of now "
                    f"({now:%Y-%m-%dT%H:%M:%SZ})")
        if t < self._earliest_cn:
            return f"time {t.isoformat()} is before ingest.earliest {self._earliest.isoformat()}"
        return None

    def _feed_part(self, part: Packet, msg: Message, batch: Batch) -> None:
        key = _group_key(part)
        merged = self._reassembler.add(part)  # Rejected (inconsistent PNUM): this part alone is dead
        self._held.setdefault(key, []).append(msg)
        self._held_by_mn[part.mn] += 1
        if merged is None:
            self._bound_held(part.mn, batch)
        else:
            msgs = self._release(key)
            try:
                self._add_packet(merged, self.lookup.station(merged.mn), msg.received, batch)
            except Rejected as exc:
                batch.reject(msgs, exc.reason, exc.detail)
                return
            batch.done += msgs

    def _add_packet(self, packet: Packet, ref: StationRef | None, received: datetime, batch: Batch) -> None:
        if packet.kind is Kind.READINGS:
            if packet.data_time is None:  # checked here, not per part: one part of a split may carry it
                raise Rejected(Reason.BAD_TIME, f"readings packet CN={packet.cn} without DataTime")
            lines = station_lines(packet, ref)
            if not lines:
                raise Rejected(Reason.BAD_FIELD, f"readings packet CN={packet.cn} holds no pollutant values")
            self._check_line("".join(lines))  # one scan for the whole packet, before any line is added
            batch.lines += lines
        else:
            when, source = hj212.event_time(packet)
            if when is None or (source == "qn" and self._time_problem(when, batch) is not None):
                # The QN is an identifier first: a logger with a wrong clock is still seen now.
                when, source = received, "arrival"
            elif source != "data_time":  # DataTime was checked with the packet
                self._check_time(when, batch)
            batch.lines.append(self._check_line(event_line(packet, ref, received, (when, source))))
            batch.events[packet.kind.value] += 1

    @staticmethod
    def _check_line(line: str) -> str:
        # A newline inside a value would split the point in two; refuse the payload here, where
        # the raw bytes are still at hand, rather than have InfluxDB refuse half-lines later.
        if "\n" in line:
            raise Rejected(Reason.BAD_FIELD, "a value contains a line break")
        return line


    def _bound_held(self, mn: str, batch: Batch) -> None:
        """Dead-letter the oldest incomplete groups (of this station first) beyond the bounds."""
        while self._held_by_mn[mn] > self._max_held_station:
            key = next(k for k in self._held if k[0] == mn)
            self._evict(key, batch, f"before station {mn} held more than {self._max_held_station} parts "
                                    f"of incomplete split packets (ingest.split_parts_per_station)")
        while self.held > self._max_held:
            self._evict(next(iter(self._held)), batch,
                        f"before more than {self._max_held} parts of incomplete split packets were held "
                        f"(a quarter of ingest.receive_maximum)")

    def _evict(self, key: tuple[str, str | None, str], batch: Batch, why: str) -> None:
        group = self._reassembler.drop(key)
        if group is None:  # not expected: every held key has its group; never keep messages unacked
            batch.reject(self._release(key), Reason.INCOMPLETE_SPLIT, f"split packet {key} {why}")
            return
        self._dead_group(group, batch, why)


def _china(t: datetime) -> datetime:
    """The same instant in China time (unchanged if that is beyond datetime's range)."""
    try:
        return t.astimezone(CHINA_TZ)
    except OverflowError:
        return t


def _group_key(p: Packet) -> tuple[str, str | None, str]:
    return (p.mn, p.qn, p.cn)  # the Reassembler's grouping (hj212.SplitGroup.key)


