"""Typed settings of one envwatch deployment: services, ingest tuning and the registry.

The registry (enterprises -> outlets -> stations, plus mobile devices) is what every other
package looks things up in; it is validated once here so that the rest can trust it.
"""

from __future__ import annotations

import difflib
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from config.tables import pollutant_codes

Medium = Literal["gas", "water"]
Grade = Literal["A", "B", "C", "D", "leading"]
Protocol = Literal["hj212", "json"]


class _Model(BaseModel):
    # Unknown keys are errors: a typo in a limit must not silently disable it.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSSettings(_Model):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


class BrokerSettings(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = "envwatch"
    keepalive: Annotated[int, Field(ge=5)] = 30
    tls: TLSSettings | None = None
    # Topic layout; {mn} / {device} / {enterprise} are filled in per station, device, enterprise.
    topic_prefix: str = "envwatch"
    # Shared-subscription group: workers with the same group split the stream between them. Off by
    # default: Mosquitto (1.x, 2.0, 2.1's file persistence) does not save shared subscriptions, so
    # readings published after a broker restart and before the workers re-subscribe are lost.
    shared_group: str | None = None
    # Scale-out that survives a broker restart: worker `partition` of `partitions` subscribes
    # (plain, persistent) to the topics of its share of the registry's stations and devices.
    partitions: Annotated[int, Field(ge=1, le=64)] = 1
    partition: Annotated[int, Field(ge=0)] = 0
    # True (what `envwatch broker acl` generates, with use_username_as_clientid): each connection
    # logs in as its own account named after its client id ({client_id}, {client_id}-answers, ...)
    # with broker.password, so no other account can take its session. False: every connection
    # logs in as broker.username (a broker configured by hand).
    account_per_connection: bool = True
    # Client ids of every envwatch instance and ingest worker on this broker (each runs with its
    # own client_id); `envwatch broker acl` makes accounts for these and for client_id.
    instances: list[str] = Field(default_factory=list)
    # Largest MQTT packet the broker accepts (Mosquitto max_packet_size); an HJ 212 frame is <10 KB.
    max_message_bytes: Annotated[int, Field(ge=1024, le=268_435_455)] = 256 * 1024

    @model_validator(mode="after")
    def _consistent(self) -> "BrokerSettings":
        if self.partition >= self.partitions:
            raise ValueError(f"partition {self.partition} is not below partitions {self.partitions}")
        if self.partitions > 1 and self.shared_group:
            raise ValueError("use either partitions or shared_group, not both")
        if self.account_per_connection and self.username and self.username != self.client_id:
            raise ValueError(f"with account_per_connection each connection logs in as its client id "
                             f"({self.client_id!r}, {self.client_id}-answers, ...): leave username unset "
                             f"(or equal to client_id), or set account_per_connection: false")
        return self


def _http_url(v: str | None, example: str) -> str | None:
    """An http(s) URL with a host; else the error says what is missing and what would work."""
    if v is None:
        return v
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{v!r} is not an http:// or https:// URL (no scheme); write e.g. {example!r}")
    if not parts.hostname:
        raise ValueError(f"{v!r} has no host; write e.g. {example!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError as exc:
        raise ValueError(f"{v!r}: {exc}; write e.g. {example!r}") from exc
    return v


class InfluxSettings(_Model):
    url: str = "http://127.0.0.1:8086"
    # auto: ask the server (/ping X-Influxdb-Version); v1 writes via /write, v2/v3 via /api/v2/write.
    api: Literal["auto", "v1", "v2", "v3"] = "auto"
    database: str = "envwatch"  # bucket name on 2.x/3.x (DBRP: bucket = database, rp autogen)
    retention_policy: str = "autogen"
    org: str | None = None
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @field_validator("url")
    @classmethod
    def _url_has_scheme(cls, v: str) -> str:
        return _http_url(v, "http://127.0.0.1:8086") or v


class IngestSettings(_Model):
    state_dir: str = ".state"
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    batch_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    buffer_max_bytes: Annotated[int, Field(ge=1 << 20)] = 1 << 30
    max_payload_bytes: Annotated[int, Field(ge=256)] = 64 * 1024
    # Readings stamped further in the future than this, or before `earliest`, are dead-lettered.
    future_tolerance_s: Annotated[int, Field(ge=0)] = 600
    earliest: datetime = datetime(2000, 1, 1)
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 1000
    accept_unknown_stations: bool = False
    # Decode in a child process (ingest/offload.py): one worker then uses two cores.
    decode_process: bool = False
    # A dead letter keeps at most this prefix of an oversized payload, with its size and SHA-256.
    deadletter_max_bytes: Annotated[int, Field(ge=256)] = 64 * 1024
    # Parts of incomplete split packets one station may have held (unacked) at a time; beyond
    # that its oldest incomplete packet is dead-lettered (incomplete_split).
    split_parts_per_station: Annotated[int, Field(ge=1)] = 64


class Limit(_Model):
    """A permit limit for one pollutant at one outlet (O2-corrected for flue gas)."""

    hourly: Annotated[float, Field(gt=0)] | None = None
    daily: Annotated[float, Field(gt=0)] | None = None
    unit: str = "mg/m3"
    standard: str = Field(min_length=1, description="Standard the limit comes from, e.g. GB 13223-2011")

    @model_validator(mode="after")
    def _one_value(self) -> "Limit":
        if self.hourly is None and self.daily is None:
            raise ValueError("a limit needs `hourly`, `daily` or both")
        return self


class Station(_Model):
    mn: str = Field(min_length=1, max_length=64, description="HJ 212 MN of the data logger")
    protocol: Protocol = "hj212"
    pollutants: list[str] = Field(default_factory=list)
    # Per-station unit overrides, e.g. {a00000: m3/h} for loggers that send flow per hour.
    units: dict[str, str] = Field(default_factory=dict)
    # HJ 212-2025 stations encrypt CP with SM4-ECB; the 128-bit key as 32 hex digits.
    sm4_key: SecretStr | None = None
    password: SecretStr | None = None  # the station's MQTT password (envwatch broker acl)
    # What the logger (and `envwatch simulate`) puts in HJ 212's PW field: not a secret, the standard's
    # example value unless the site configures another; never the MQTT password, which a packet would leak.
    hj212_pw: str = Field("123456", max_length=32, pattern=r"^[0-9A-Za-z]*$")

    @field_validator("pollutants")
    @classmethod
    def _known_pollutants(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in pollutant_codes()]
        if unknown:
            raise ValueError(f"unknown pollutant code(s) {unknown}; see config/tables/pollutants.yaml")
        return v

    @field_validator("sm4_key")
    @classmethod
    def _key_is_128_bit_hex(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not re.fullmatch(r"[0-9A-Fa-f]{32}", v.get_secret_value()):
            raise ValueError("sm4_key must be 32 hex digits (128 bits)")
        return v


class Outlet(_Model):
    id: str = Field(min_length=1)
    name: str = ""
    medium: Medium
    # Reference O2 (%) of the applicable standard; flue gas only.
    reference_o2: Annotated[float, Field(ge=0, lt=21)] | None = None
    limits: dict[str, Limit] = Field(default_factory=dict)
    stations: list[Station] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "Outlet":
        problems = [f"limits.{c}: unknown pollutant code" for c in self.limits if c not in pollutant_codes()]
        if self.medium == "water" and self.reference_o2 is not None:
            problems.append("reference_o2: only flue-gas outlets have a reference O2")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Contact(_Model):
    """How an enterprise receives notices. MQTT always works: {prefix}/enterprise/{id}/notice."""

    email: str | None = None
    webhook_url: str | None = None
    # HMAC-SHA256 key signing webhook bodies; set it here or via the environment.
    webhook_secret: SecretStr | None = None
    language: Literal["zh-CN", "en"] = "zh-CN"
    # The enterprise's MQTT account (username = enterprise id) for reading notices and answering.
    mqtt_password: SecretStr | None = None

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_http(cls, v: str | None) -> str | None:
        return _http_url(v, "https://example.cn/envwatch/notice")


class Enterprise(_Model):
    id: str = Field(min_length=1)
    name: str
    industry: str = ""
    district: str = ""  # administrative district (区/县): what tickets may be routed by
    positive_list: bool = False
    emergency_grade: Grade = "C"
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    contact: Contact = Contact()
    outlets: list[Outlet] = Field(default_factory=list)


class Device(_Model):
    """A drone or mobile survey vehicle that publishes JSON tracks."""

    id: str = Field(min_length=1)
    kind: Literal["drone", "vehicle"]
    name: str = ""
    password: SecretStr | None = None  # MQTT account (username = device id)


class Registry(_Model):
    enterprises: list[Enterprise] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> "Registry":
        problems: list[str] = []
        problems += _duplicates("enterprises", [e.id for e in self.enterprises])
        problems += _duplicates("devices", [d.id for d in self.devices])
        for i, e in enumerate(self.enterprises):
            problems += _duplicates(f"enterprises.{i}.outlets", [o.id for o in e.outlets])
        mns = [s.mn for e in self.enterprises for o in e.outlets for s in o.stations]
        problems += _duplicates("station mn", mns)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _duplicates(where: str, ids: list[str]) -> list[str]:
    seen: set[str] = set()
    dups = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    return [f"{where}: duplicate id {d!r}" for d in dups]


class DetectorSettings(_Model):
    """Per-kind detector configuration: constructor parameters of the detector class."""

    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)


class DetectOverride(_Model):
    """Parameters for a narrower scope; the most specific matching override wins, key by key."""

    kind: str | None = None
    enterprise: str | None = None
    outlet: str | None = None
    pollutant: str | None = None
    params: dict[str, Any]


class WarningSettings(_Model):
    """Early warning (detect/warning.py): an hour's or day's exceedance told before it closes."""

    enabled: bool = True
    # Also warn "likely" once this many valid minutes (by the hourly rule's count) have a mean above
    # the limit; None: only certain warnings.
    likely_after_minutes: Annotated[int, Field(ge=1, le=60)] | None = None


class DetectSettings(_Model):
    detectors: dict[str, DetectorSettings] = Field(default_factory=dict)
    warning: WarningSettings = Field(default_factory=WarningSettings)
    overrides: list[DetectOverride] = Field(default_factory=list)
    # Seconds after a window closes before it is first evaluated (lets late minutes arrive).
    settle_s: Annotated[int, Field(ge=0)] = 300
    # Windows this far back are re-evaluated on every run, so late data updates their alerts.
    reevaluate_s: Annotated[int, Field(ge=0)] = 6 * 3600
    # A dask.distributed scheduler ("tcp://host:8786") to spread detector runs and model fits over
    # (detect/parallel.py); unset: everything runs in this process.
    cluster: str | None = None
    # Re-evaluate only the windows late data touched, told by ingest's markers (ingest/late.py),
    # instead of every recent window every reevaluate_every_s. For a service whose data all comes
    # through envwatch's ingest (anything written around it is not seen as late data: turn it off).
    incremental: bool = True


class Officer(_Model):
    """An enforcement officer who receives escalation tickets."""

    id: str = Field(min_length=1)
    name: str
    email: str | None = None
    mqtt_password: SecretStr | None = None  # MQTT account (username = officer id) to receive tickets
    # What this officer covers, for notify.ticket_routing: districts, enterprise ids, industries.
    districts: list[str] = Field(default_factory=list)
    enterprises: list[str] = Field(default_factory=list)
    industries: list[str] = Field(default_factory=list)


class SMTPSettings(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    username: str | None = None
    password: SecretStr | None = None
    starttls: bool = False
    sender: str = "envwatch@localhost"


class EscalationSettings(_Model):
    """The bureau's escalation rules; all evaluated on event time."""

    repeat_count: Annotated[int, Field(ge=2)] = 3  # same problem N times ...
    repeat_days: Annotated[int, Field(ge=1)] = 30  # ... within D days
    severe_factor: Annotated[float, Field(gt=1)] = 2.0  # exceedance by this factor: immediate
    # Falsification patterns escalate at once: they are not something to "rectify".
    immediate_kinds: list[str] = Field(
        default_factory=lambda: ["constant_value", "zero_while_operating", "o2_anomaly", "flag_abuse",
                                 "data_revision"])
    # The lowest alert severity at which an immediate kind escalates at once (kinds not listed: any).
    # A revision that would clear an exceedance (critical) is falsification; a minor one goes
    # through notice and answer like any first minor problem (助企: light or no penalty).
    immediate_from: dict[str, Literal["info", "minor", "major", "critical"]] = Field(
        default_factory=lambda: {"data_revision": "critical"})
    recurrence_escalates: bool = True


class AnswerLimits(_Model):
    """What one enterprise answer may carry, over HTTP and MQTT alike; beyond it the answer is refused."""

    max_text_chars: Annotated[int, Field(ge=1)] = 10_000
    max_attachments: Annotated[int, Field(ge=0)] = 5
    max_attachment_bytes: Annotated[int, Field(ge=1)] = 10 * 1024 * 1024
    max_total_bytes: Annotated[int, Field(ge=1)] = 20 * 1024 * 1024


class ReminderSettings(_Model):
    """Reminders to the enterprise before a deadline falls due; 0 turns one off."""

    acknowledge_before_hours: Annotated[float, Field(ge=0)] = 1
    rectification_before_hours: Annotated[float, Field(ge=0)] = 12


class GroupingSettings(_Model):
    """Findings that share a cause (many stations short of data in the same window) become one
    grouped item for the center, and send no enterprise notice until a person confirms them."""

    enabled: bool = True
    kinds: list[str] = Field(default_factory=lambda: ["insufficient_valid_data", "offline"])
    min_enterprises: Annotated[int, Field(ge=2)] = 5  # ... distinct enterprises in one window and kind
    min_station_share: Annotated[float, Field(gt=0, le=1)] = 0.3  # ... or this share of all stations


class FormalNoticeSettings(_Model):
    """What makes a notice a formal 通知: issuer, document number, legal basis, contact."""

    authority: str = "生态环境局"
    authority_en: str = "Ecology and Environment Bureau"
    number_prefix: str = "环监通"  # the number reads {prefix}〔{year}〕第{seq:04d}号
    contact: str = ""
    contact_en: str = ""
    # Legal basis by notice problem (alert kind) or industry, most specific first: kind, industry,
    # then `default`. Texts as they are to be quoted.
    legal_basis: dict[str, str] = Field(default_factory=lambda: {
        "default": "《中华人民共和国环境保护法》第四十二条、《中华人民共和国大气污染防治法》第二十四条及排污许可证",
        "exceedance": "《中华人民共和国大气污染防治法》第十八条、第九十九条及排污许可证载明的排放限值",
        "daily_exceedance": "《中华人民共和国大气污染防治法》第十八条、第九十九条及排污许可证载明的排放限值",
    })
    legal_basis_en: dict[str, str] = Field(default_factory=lambda: {
        "default": "Environmental Protection Law of the PRC, art. 42; Air Pollution Prevention and Control Law, "
                   "art. 24; the discharge permit",
        "exceedance": "Air Pollution Prevention and Control Law of the PRC, arts. 18 and 99; the limits in the "
                      "discharge permit",
        "daily_exceedance": "Air Pollution Prevention and Control Law of the PRC, arts. 18 and 99; the limits in "
                            "the discharge permit",
    })


class FilingSettings(_Model):
    """Filings ahead (停产/检修/标定报备, notify/filings.py)."""

    # Longest period one filing may cover; a longer stop is filed again (and approved again).
    max_days: Annotated[float, Field(gt=0)] = 31
    # How far back a filing made after the fact may reach (it is flagged as such either way).
    max_back_days: Annotated[float, Field(ge=0)] = 7
    # Largest attachment (a plan, a work order) one filing may carry.
    max_attachment_bytes: Annotated[int, Field(gt=0)] = 20 * 1024 * 1024


class NotifySettings(_Model):
    # Hours an enterprise has to rectify, by problem type (alert kind); `default` for the rest.
    deadline_hours: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: {"default": 72, "exceedance": 24, "offline": 12})
    # Hours an enterprise has to acknowledge a notice before the case is overdue.
    acknowledge_hours: Annotated[float, Field(gt=0)] = 4
    # A reported rectification is verified when the problem does not recur for this long.
    verify_hours: Annotated[float, Field(gt=0)] = 72
    escalation: EscalationSettings = EscalationSettings()
    language: Literal["zh-CN", "en"] = "zh-CN"
    smtp: SMTPSettings | None = None
    officers: list[Officer] = Field(default_factory=list)
    webhook_max_attempts: Annotated[int, Field(ge=1)] = 20
    answers: AnswerLimits = AnswerLimits()
    reminders: ReminderSettings = ReminderSettings()
    # How escalation picks the ticket's officer: the first officer (in list order) whose districts,
    # enterprises or industries cover the case's enterprise; else `default_officer`, else the first.
    ticket_routing: Literal["district", "enterprise", "industry"] = "district"
    default_officer: str | None = None
    grouping: GroupingSettings = GroupingSettings()
    formal: FormalNoticeSettings = FormalNoticeSettings()
    # A ticket notice waits this long for its evidence package; then it goes without (saying so).
    evidence_wait_s: Annotated[int, Field(ge=0)] = 600
    filings: FilingSettings = FilingSettings()
    # Where notify keeps its files (evidence/, attachments/, filings/); default: ingest.state_dir.
    files_dir: str | None = None


# A token is the only thing between the internet and a role: long enough that guessing it, even at the
# rate the failed-authentication limit allows, is hopeless. `secrets.token_urlsafe(32)` makes 43 characters.
MIN_TOKEN_LENGTH = 24


class User(_Model):
    """An API / board user. Give `token` (kept secret) or only its SHA-256 as `token_sha256`."""

    name: str = Field(min_length=1)
    role: Literal["operator", "enterprise", "officer"]
    token: SecretStr | None = None
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    enterprise_id: str | None = None  # role enterprise: whose cases and notices this user sees
    officer_id: str | None = None  # role officer

    @field_validator("token")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"token too short ({len(v.get_secret_value())} characters): tokens need at least "
                             f"{MIN_TOKEN_LENGTH}; make one with `python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))'`")
        return v

    @model_validator(mode="after")
    def _scoped(self) -> "User":
        if self.token is None and self.token_sha256 is None:
            raise ValueError("a user needs `token` or `token_sha256`")
        if self.role == "enterprise" and not self.enterprise_id:
            raise ValueError("an enterprise user needs `enterprise_id`")
        if self.role == "officer" and not self.officer_id:
            raise ValueError("an officer user needs `officer_id`")
        return self


class CenterSettings(_Model):
    """The monitoring center's service: HTTP API, board, logging, leadership between instances."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    users: list[User] = Field(default_factory=list)
    language: Literal["zh-CN", "en"] = "zh-CN"
    log_json: bool = False
    # Largest HTTP request body (413 beyond it, refused before it is read into memory). JSON answers
    # carry attachments in base64 (4/3 of their size): keep this above notify.answers.max_total_bytes * 4/3.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024
    # Only one instance runs scheduled detection and the outbox: it holds a lease renewed this often.
    lease_ttl_s: Annotated[int, Field(ge=3, le=300)] = 15
    instance_id: str | None = None
    # Failed authentication: after this many unknown tokens from one client address within the window,
    # that address gets 429 (Retry-After) until the oldest failure leaves the window. Counted per instance.
    auth_max_failures: Annotated[int, Field(ge=1)] = 10
    auth_failure_window_s: Annotated[float, Field(gt=0)] = 60.0


class StoreSettings(_Model):
    """The case store (alerts, watermarks, cases). Default: SQLite under ingest.state_dir."""

    url: SecretStr | None = None


class Settings(_Model):
    broker: BrokerSettings = BrokerSettings()
    influxdb: InfluxSettings = InfluxSettings()
    ingest: IngestSettings = IngestSettings()
    store: StoreSettings = StoreSettings()
    detect: DetectSettings = DetectSettings()
    notify: NotifySettings = NotifySettings()
    center: CenterSettings = CenterSettings()
    registry: Registry = Registry()

    @model_validator(mode="after")
    def _partitions_see_every_publisher(self) -> "Settings":
        # A partitioned worker subscribes only to registered stations' and devices' topics.
        if self.broker.partitions > 1 and self.ingest.accept_unknown_stations:
            raise ValueError("broker.partitions > 1 subscribes to registered stations only: "
                             "ingest.accept_unknown_stations must be false")
        return self

    def notify_files_dir(self) -> str:
        """notify's own directory for evidence, attachments and filings (notify.files_dir)."""
        return self.notify.files_dir or self.ingest.state_dir

    def store_url(self) -> str:
        if self.store.url is not None:
            return self.store.url.get_secret_value()
        return f"sqlite:///{self.ingest.state_dir}/envwatch.sqlite"


def reference_problems(s: Settings) -> list[tuple[str, str]]:
    """(key path, message) for every reference to something the configuration does not define:
    users -> enterprises and officers, overrides -> enterprises/outlets, escalation kinds, MQTT
    accounts that would collide. Valid settings only; the loader reports these after validation."""
    enterprises = {e.id: e for e in s.registry.enterprises}
    officers = {o.id for o in s.notify.officers}
    out: list[tuple[str, str]] = []
    for i, u in enumerate(s.center.users):
        if u.enterprise_id is not None and u.enterprise_id not in enterprises:
            out.append((f"center.users.{i}.enterprise_id", f"no enterprise {u.enterprise_id!r} in registry.enterprises"
                        + did_you_mean(u.enterprise_id, enterprises)))
        if u.officer_id is not None and u.officer_id not in officers:
            out.append((f"center.users.{i}.officer_id", f"no officer {u.officer_id!r} in notify.officers"
                        + did_you_mean(u.officer_id, officers)))
    for i, o in enumerate(s.detect.overrides):
        if o.enterprise is not None and o.enterprise not in enterprises:
            out.append((f"detect.overrides.{i}.enterprise", f"no enterprise {o.enterprise!r} in registry.enterprises"
                        + did_you_mean(o.enterprise, enterprises)))
        elif o.outlet is not None and o.enterprise is not None:
            outlets = {x.id for x in enterprises[o.enterprise].outlets}
            if o.outlet not in outlets:
                out.append((f"detect.overrides.{i}.outlet", f"no outlet {o.outlet!r} at enterprise {o.enterprise!r}"
                            + did_you_mean(o.outlet, outlets)))
        if o.pollutant is not None and o.pollutant not in pollutant_codes():
            out.append((f"detect.overrides.{i}.pollutant", f"unknown pollutant code {o.pollutant!r}"
                        + did_you_mean(o.pollutant, pollutant_codes())))
    # Enterprises, devices, officers and stations log in to MQTT under their id (MN): `envwatch broker
    # acl` skips a second account of the same name, so that party could never log in.
    first: dict[str, tuple[str, str]] = {}
    named = ([("enterprise", f"registry.enterprises.{i}.id", e.id) for i, e in enumerate(s.registry.enterprises)]
             + [("device", f"registry.devices.{i}.id", d.id) for i, d in enumerate(s.registry.devices)]
             + [("officer", f"notify.officers.{i}.id", o.id) for i, o in enumerate(s.notify.officers)]
             + [("station", f"registry.enterprises.{i}.outlets.{j}.stations.{k}.mn", st.mn)
                for i, e in enumerate(s.registry.enterprises) for j, o in enumerate(e.outlets)
                for k, st in enumerate(o.stations)])
    for kind, path, ident in named:
        # Duplicates within enterprises, devices and stations are reported by the registry's own check.
        if ident in first and (first[ident][0] != kind or kind == "officer"):
            out.append((path, f"{ident!r} is also {first[ident][1]}: enterprises, devices, officers and stations "
                              "share one MQTT account namespace (username = id or MN)"))
        first.setdefault(ident, (kind, path))
    return out


def did_you_mean(word: str, choices: Any) -> str:
    """'; did you mean 'hourly'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
