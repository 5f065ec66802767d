"""The one place that knows InfluxDB's API versions: writes line protocol, reads InfluxQL.

    influx = Influx(settings.influxdb)          # api "auto": asks GET /ping once
    influx.ensure_database()
    influx.write(lines)                         # raises InfluxUnavailable (retry) / InfluxRejected (don't)
    influx.query('SELECT avg FROM station_hour WHERE mn = $mn', params={"mn": "X"})
    influx.query_frame(...)                     # pandas, one row per value, tags as columns, UTC time

Writes: 1.x via POST /write (httpx, keep-alive pool); 2.x and 3.x via influxdb-client's
synchronous WriteApi (POST /api/v2/write, bucket = database). Reads: every version serves the
1.x-compatible GET/POST /query (2.x maps db=<bucket>, rp=autogen through its virtual DBRP).
Only the 1.x paths are tested against a real server (influxd 1.6 is what Debian packages).
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from config.schema import InfluxSettings

log = logging.getLogger(__name__)

Api = Literal["v1", "v2", "v3"]
# Bodies at least this large are gzipped when the server is not on loopback. Measured with
# 5000-line (650 kB) station_lines batches into influxd 1.6 on loopback: plain ~150k lines/s,
# gzip ~140k (the server's parsing dominates, gzip only adds CPU); over a real network the 10-20x
# smaller body is what counts.
GZIP_MIN_BYTES = 32 * 1024
_EPOCH_UNITS = {"ns": "ns", "u": "us", "us": "us", "ms": "ms", "s": "s", "m": "m", "h": "h"}
_PARSE_ERROR = re.compile(r"unable to parse '(.*?)': ", re.S)


class InfluxError(Exception):
    """Base of the errors below."""


class InfluxUnavailable(InfluxError):
    """The server could not take the request now (down, timeout, 5xx, 429): retry later, same batch."""


class InfluxRejected(InfluxError):
    """The server refused the request (bad line protocol, unknown database, auth): retrying won't help.

    `server_message` is the server's own text. `partial` is True when the server wrote the other
    lines of the batch; `bad_lines` are the lines it quoted as unparsable, so that a caller can
    dead-letter just those.
    """

    def __init__(self, server_message: str, status: int | None = None, what: str = "request") -> None:
        code = f" (HTTP {status})" if status else ""
        super().__init__(f"{what} rejected by InfluxDB{code}: {server_message}")
        self.status = status
        self.server_message = server_message
        self.partial = server_message.startswith("partial write")
        self.bad_lines: list[str] = _PARSE_ERROR.findall(server_message)


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a /query result."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    values: list[list[Any]] = field(default_factory=list)


def api_from_version(version: str | None) -> Api:
    """The API family of a server from its X-Influxdb-Version header ('1.6.7~rc0', 'v2.7.4', '3.0.1')."""
    major = (version or "").strip().lower().removeprefix("v")[:1]
    if major in ("1", "2", "3"):
        return f"v{major}"  # type: ignore[return-value]
    log.warning("InfluxDB version %r not recognised; assuming the 1.x API", version)
    return "v1"


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return str(body.get("error") or body.get("message") or body).strip()
    except ValueError:
        return resp.text.strip() or resp.reason_phrase


def _raise_for(status: int, message: str, what: str) -> None:
    if status == 429 or status >= 500:
        raise InfluxUnavailable(f"{what}: HTTP {status}: {message}")
    if status >= 400:
        raise InfluxRejected(message, status, what)


class Influx:
    """A client for one InfluxDB database (bucket). Thread-safe for concurrent writes and queries."""

    def __init__(self, settings: InfluxSettings, *, gzip_min_bytes: int | None = None) -> None:
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self.version: str | None = None
        self._api: Api | None = None if settings.api == "auto" else settings.api
        if gzip_min_bytes is None:
            gzip_min_bytes = 0 if _is_loopback(self.url) else GZIP_MIN_BYTES
        self.gzip_min_bytes = gzip_min_bytes  # 0: never gzip
        auth = None
        if settings.username:
            pw = settings.password.get_secret_value() if settings.password else ""
            auth = httpx.BasicAuth(settings.username, pw)
        self._http = httpx.Client(
            auth=auth, timeout=settings.timeout_s,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))
        self._v2: Any = None  # influxdb_client.InfluxDBClient, made on first v2/v3 use
        self._v2_write: Any = None

    # -- connection -------------------------------------------------------------------------

    def _token_headers(self) -> dict[str, str]:
        token = self.settings.token
        return {"Authorization": f"Token {token.get_secret_value()}"} if token else {}

    def _request(self, method: str, path: str, what: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, self.url + path, **kw)
        except httpx.TransportError as exc:  # refused, reset, timeouts
            raise InfluxUnavailable(f"{what}: InfluxDB at {self.url} unreachable: "
                                    f"{type(exc).__name__}: {exc}") from exc

    def ping(self) -> bool:
        """True if the server answers /ping (204 on 1.x/2.x, 200 on 3.x)."""
        try:
            resp = self._request("GET", "/ping", "ping", headers=self._token_headers())
        except InfluxUnavailable:
            return False
        if resp.status_code in (200, 204):
            self.version = resp.headers.get("X-Influxdb-Version", self.version)
            return True
        return False

    @property
    def api(self) -> Api:
        """The API family in use: the configured one, or (auto) the server's, asked once."""
        if self._api is None:
            resp = self._request("GET", "/ping", "version detection", headers=self._token_headers())
            _raise_for(resp.status_code, _error_message(resp), "version detection")
            self.version = resp.headers.get("X-Influxdb-Version")
            self._api = api_from_version(self.version)
        return self._api

    def close(self) -> None:
        self._http.close()
        if self._v2 is not None:
            self._v2.close()

    def __enter__(self) -> "Influx":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- database ---------------------------------------------------------------------------

    def ensure_database(self) -> None:
        """1.x: CREATE DATABASE (idempotent). 2.x/3.x: check the bucket/database exists, else say how to make it."""
        db = self.settings.database
        if self.api == "v1":
            self.query(f'CREATE DATABASE "{_esc_ident(db)}"')
            return
        if self.api == "v2":
            found = self._v2_call("bucket lookup", lambda c: c.buckets_api().find_bucket_by_name(db)) is not None
            hint = f"influx bucket create -n {db} -o {self.settings.org}"
        else:
            rows = [r[0] for s in self.query("SHOW DATABASES") for r in s.values]
            found = db in rows
            hint = f"influxdb3 create database {db}"
        if not found:
            raise InfluxRejected(f"{'bucket' if self.api == 'v2' else 'database'} {db!r} does not exist on "
                                 f"{self.url} (InfluxDB {self.version or self.api}); create it: `{hint}`", what="ensure_database")

    # -- write ------------------------------------------------------------------------------

    def write(self, lines: list[str], precision: str = "s") -> None:
        """Write line-protocol lines (one point each) in one request. Empty input is a no-op."""
        if not lines:
            return
        if self.api == "v1":
            self._write_v1("\n".join(lines).encode(), precision)
        else:
            self._write_v2(lines, precision)

    def _write_v1(self, body: bytes, precision: str) -> None:
        params = {"db": self.settings.database, "rp": self.settings.retention_policy, "precision": precision}
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip_min_bytes and len(body) >= self.gzip_min_bytes:
            # Level 1: most of the size gain for a fraction of level 9's CPU; line protocol repeats a lot.
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        resp = self._request("POST", "/write", "write", params=params, content=body, headers=headers)
        if resp.status_code != 204:
            _raise_for(resp.status_code, _error_message(resp), "write")

    def _v2_client(self) -> Any:
        if self._v2 is None:
            from influxdb_client import InfluxDBClient

            token = self.settings.token.get_secret_value() if self.settings.token else None
            # retries=False (the default, made explicit): the ingest decides when to retry a batch.
            self._v2 = InfluxDBClient(url=self.url, token=token, org=self.settings.org,
                                      timeout=int(self.settings.timeout_s * 1000),
                                      enable_gzip=self.gzip_min_bytes > 0, retries=False)
        return self._v2

    def _write_v2(self, lines: list[str], precision: str) -> None:
        from influxdb_client.client.write_api import SYNCHRONOUS

        if self._v2_write is None:
            self._v2_write = self._v2_client().write_api(write_options=SYNCHRONOUS)
        self._v2_call("write", lambda _c: self._v2_write.write(
            bucket=self.settings.database, org=self.settings.org or "-", record=lines,
            write_precision=_v2_precision(precision)))

    def _v2_call(self, what: str, call: Any) -> Any:
        """Run call(InfluxDBClient), mapping influxdb-client's errors onto ours."""
        from influxdb_client.rest import ApiException

        try:
            return call(self._v2_client())
        except ApiException as exc:
            msg = getattr(exc, "message", None) or str(exc)
            msg = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
            _raise_for(exc.status or 500, msg.strip(), what)
            raise InfluxUnavailable(f"{what}: HTTP {exc.status}: {exc}") from exc
        except InfluxError:
            raise
        except Exception as exc:  # urllib3 connection/timeout errors: worth retrying
            raise InfluxUnavailable(f"{what}: InfluxDB at {self.url} unreachable: "
                                    f"{type(exc).__name__}: {exc}") from exc

    # -- query ------------------------------------------------------------------------------

    def query(self, influxql: str, epoch: str = "s", params: dict[str, Any] | None = None) -> list[Series]:
        """Run InfluxQL through /query; all series of all statements. Statement errors raise InfluxRejected."""
        form = {"db": self.settings.database, "q": influxql, "epoch": epoch}
        if self.settings.retention_policy:
            form["rp"] = self.settings.retention_policy
        if params:
            form["params"] = json.dumps(params)
        headers = self._token_headers() if self.api != "v1" else {}
        if self.api == "v1":
            # 1.x wants POST for anything that changes state (CREATE ...); it serves SELECT either way.
            resp = self._request("POST", "/query", "query", data=form, headers=headers)
        else:
            resp = self._request("GET", "/query", "query", params=form, headers=headers)
        if resp.status_code != 200:
            _raise_for(resp.status_code, _error_message(resp), "query")
        return _series(resp.json())

    def query_frame(self, influxql: str, epoch: str = "s", params: dict[str, Any] | None = None) -> Any:
        """Like query(), as a pandas DataFrame: one row per value, tag columns added, `time` UTC datetime."""
        import pandas as pd

        frames, columns = [], {}
        for s in self.query(influxql, epoch=epoch, params=params):
            df = pd.DataFrame(s.values, columns=s.columns)
            for k, v in s.tags.items():
                df[k] = v
            columns.update(dict.fromkeys(df.columns))
            # All-null columns (a field this series lacks) would make concat guess dtypes: drop, re-add below.
            frames.append(df.dropna(axis=1, how="all"))
        if not frames:
            return pd.DataFrame({"time": pd.Series([], dtype="datetime64[ns, UTC]")})
        df = pd.concat(frames, ignore_index=True).reindex(columns=list(columns))
        if "time" in df.columns:
            df["time"] = pd.to_datetime(df["time"], unit=_EPOCH_UNITS.get(epoch, "s"), utc=True)
        return df


def _series(body: dict[str, Any]) -> list[Series]:
    if "error" in body:
        raise InfluxRejected(str(body["error"]), what="query")
    out: list[Series] = []
    for result in body.get("results", []):
        if "error" in result:
            raise InfluxRejected(str(result["error"]), what="query")
        for s in result.get("series", []):
            out.append(Series(s.get("name", ""), s.get("tags") or {}, s.get("columns", []), s.get("values", [])))
    return out


def _esc_ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _v2_precision(precision: str) -> Any:
    from influxdb_client import WritePrecision

    return {"s": WritePrecision.S, "ms": WritePrecision.MS, "u": WritePrecision.US, "us": WritePrecision.US,
            "ns": WritePrecision.NS}[precision]


# -- InfluxQL query building: every query written by hand quotes its names and values with these --

def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier (measurement, tag or field name)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value: str) -> str:
    """A single-quoted InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_REGEX_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$\-/])")


def tag_in(tag: str, values: Iterable[str], ignore_case: bool = False) -> str:
    """`"tag" =~ /^(?:a|b)$/` matching exactly the given values (regex-escaped, `/` included).

    Works on string fields too (e.g. flag); `ignore_case` prefixes the expression with (?i).
    """
    alts = "|".join(_REGEX_SPECIAL.sub(r"\\\1", v) for v in sorted(set(values)))
    return f"{ident(tag)} =~ /{'(?i)' if ignore_case else ''}^(?:{alts})$/"


def time_between(start: datetime, end: datetime) -> str:
    """`time >= start AND time < end` for a WHERE clause."""
    return f"time >= {literal(rfc3339(start))} AND time < {literal(rfc3339(end))}"
