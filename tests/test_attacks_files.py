"""Attacks of a hostile enterprise on files, sizes and inputs, against `envwatch run` as a real process.

The service runs once for the module (session Mosquitto and influxd, SQLite store) with small
limits, so that oversized requests stay cheap: body 1 MiB, 3 attachments of 200 kB, 300 kB in all,
2,000 characters of text. Each attack asserts that it fails with a 4xx and a reason, that no file
appears outside the attachments root, and that a refused answer writes nothing at all.
Crafted evidence zips (duplicate, nested, extra, missing entries) fail verification.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from center.devservices import Service, free_port
from config.loader import from_mapping
from config.schema import InfluxSettings
from ingest.deadletter import MAX_RAW_BYTES, DeadLetters, deadletter_path
from notify.evidence import verify
from notify.store import make_engine
from tests.apikit import SERVICE_ENV, T0, auth, seed_case, service_argv, service_config, wait_for
from tests.casekit import pg_cluster  # noqa: F401 - the fixture: the run's PostgreSQL
from tests.test_evidence import package  # noqa: F401 - the fixture: a real package built from InfluxDB

MAX_BODY = 1024 * 1024
LIMITS = {"max_text_chars": 2000, "max_attachments": 3, "max_attachment_bytes": 200_000, "max_total_bytes": 300_000}


@pytest.fixture(scope="module")
def svc(mosquitto: Service, influxd: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("attacks")
    if not mosquitto.running():
        mosquitto.restart()
    db = f"attacks_{uuid.uuid4().hex[:10]}"
    httpx.post(f"{influxd.url}/query", data={"q": f'CREATE DATABASE "{db}"'}, timeout=10).raise_for_status()
    port, prefix = free_port(), f"envwatch_{uuid.uuid4().hex[:10]}"
    cfg = service_config(tmp / "envwatch.yaml", mqtt=(mosquitto.host, mosquitto.port),
                         influx=InfluxSettings(url=influxd.url, api="auto", database=db), state_dir=tmp / "state",
                         port=port, prefix=prefix, max_body_bytes=MAX_BODY)
    raw = yaml.safe_load(cfg.read_text())
    raw["notify"]["answers"] = LIMITS
    cfg.write_text(yaml.safe_dump(raw, allow_unicode=True))
    settings = from_mapping(raw, source=str(cfg), env={})
    log = open(tmp / "service.log", "wb")
    proc = subprocess.Popen(service_argv(cfg), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **SERVICE_ENV})
    url = f"http://127.0.0.1:{port}"
    engine = None
    try:
        wait_for(lambda: proc.poll() is None and httpx.get(f"{url}/readyz", timeout=5).status_code == 200,
                 "the service to be ready", timeout=60)
        engine = make_engine(settings.store_url())
        cases = {"a": seed_case(engine, settings, "EA", T0), "b": seed_case(engine, settings, "EB", T0)}
        yield {"url": url, "prefix": prefix, "tmp": tmp, "root": tmp / "state" / "attachments", "cases": cases,
               "log": tmp / "service.log", "settings": settings}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
        if engine is not None:
            engine.dispose()
    text = (tmp / "service.log").read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]


def client(svc: dict[str, Any], who: str) -> httpx.Client:
    return httpx.Client(base_url=svc["url"], headers=auth(who), timeout=30)


def blobs(root: Path) -> dict[str, bytes]:
    """Every file under the attachments root, by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def assert_content_addressed(root: Path) -> None:
    for rel, data in blobs(root).items():
        digest = hashlib.sha256(data).hexdigest()
        assert rel == f"{digest[:2]}/{digest}", f"{rel} is not named by its content"


def assert_nowhere(svc: dict[str, Any], marker: str) -> None:
    """No file or folder named after `marker` in the test's tree, in /tmp or in the working directory."""
    found = [p for p in svc["tmp"].rglob(f"*{marker}*")] + list(Path("/tmp").glob(f"*{marker}*")) + \
        list(Path.cwd().glob(f"*{marker}*"))
    assert found == [], f"written outside the attachments root: {found}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def answers_of(svc: dict[str, Any], case: str) -> dict[str, Any]:
    with client(svc, "op") as c:
        return {a["id"]: a for a in c.get(f"/api/cases/{svc['cases'][case]}").json()["answers"]}


# -- item 1: ids and names are data, never paths --------------------------------------------------

def test_http_ids_that_look_like_paths_are_refused_and_write_nothing(svc: dict[str, Any]) -> None:
    marker = f"ew{uuid.uuid4().hex[:8]}"
    cid, before = svc["cases"]["a"], blobs(svc["root"])
    evil = [f"/tmp/{marker}", f"../../../{marker}", "..", f"{marker}/..", f"a\x00{marker}", f".{marker}"]
    with client(svc, "a") as c:
        for answer_id in evil:
            att = {"name": f"{marker}.pth", "content_base64": b64(f"import os # {answer_id}".encode())}
            r = c.post(f"/api/cases/{cid}/answers", json={"answer_id": answer_id, "type": "contest",
                                                          "attachments": [att]})
            assert r.status_code == 422 and "answer_id" in r.json()["detail"], (answer_id, r.text)
            r = c.post(f"/api/cases/{cid}/answers", data={"answer_id": answer_id, "type": "contest"},
                       files=[("attachments", (f"{marker}.pth", b"import os", "text/plain"))])
            assert r.status_code == 422, (answer_id, r.text)
        for case_path in (f"..%2F..%2F{marker}", f"{marker}%00", f"%2E%2E", f"{marker}%0A"):
            r = c.post(f"/api/cases/{case_path}/answers", json={"answer_id": "ok-1", "type": "acknowledge"})
            assert 400 <= r.status_code < 500, (case_path, r.text)
    assert blobs(svc["root"]) == before
    assert_nowhere(svc, marker)


def test_file_names_are_kept_as_cleaned_metadata_and_files_are_named_by_content(svc: dict[str, Any]) -> None:
    marker = f"ew{uuid.uuid4().hex[:8]}"
    cid = svc["cases"]["a"]
    names = [f"../../../{marker}.pth", f"/tmp/{marker}.pth", f"..\\..\\{marker}.pth"]
    contents = [f"payload {i} {marker}".encode() for i in range(3)]
    with client(svc, "a") as c:
        multi = c.post(f"/api/cases/{cid}/answers", data={"answer_id": f"{marker}-m", "type": "contest"},
                       files=[("attachments", (n, d, "text/plain")) for n, d in zip(names, contents)])
        js = c.post(f"/api/cases/{cid}/answers", json={
            "answer_id": f"{marker}-j", "type": "contest",
            "attachments": [{"name": f"a\x00\u202e{marker}\n.pth", "content_base64": b64(b"json " + marker.encode())}]})
    assert multi.status_code == 200 and js.status_code == 200, (multi.text, js.text)
    got = answers_of(svc, "a")
    assert [a["name"] for a in got[f"{marker}-m"]["attachments"]] == [f"{marker}.pth"] * 3
    assert [a["name"] for a in got[f"{marker}-j"]["attachments"]] == [f"a{marker}.pth"]
    stored = blobs(svc["root"])
    for data in [*contents, b"json " + marker.encode()]:
        digest = hashlib.sha256(data).hexdigest()
        assert stored[f"{digest[:2]}/{digest}"] == data
    assert_content_addressed(svc["root"])
    assert_nowhere(svc, marker)


def test_refused_answers_write_nothing(svc: dict[str, Any]) -> None:
    a_case, b_case = svc["cases"]["a"], svc["cases"]["b"]

    def att(tag: str) -> dict[str, str]:
        return {"name": f"{tag}.pdf", "content_base64": b64(f"{tag} {uuid.uuid4()}".encode())}

    with client(svc, "a") as c:
        first = c.post(f"/api/cases/{a_case}/answers", json={"answer_id": "dup-1", "type": "acknowledge"})
        assert first.status_code == 200, first.text
        before = blobs(svc["root"])
        dup = c.post(f"/api/cases/{a_case}/answers", json={"answer_id": "dup-1", "type": "contest",
                                                            "attachments": [att("dup")]})
        other = c.post(f"/api/cases/{b_case}/answers", json={"answer_id": "steal-1", "type": "contest",
                                                              "attachments": [att("other")]})
        unknown = c.post("/api/cases/0123456789abcdef01234567/answers",
                         json={"answer_id": "nocase-1", "type": "contest", "attachments": [att("nocase")]})
        bad_type = c.post(f"/api/cases/{a_case}/answers", json={"answer_id": "type-1", "type": "shrug",
                                                                 "attachments": [att("type")]})
        bad_b64 = c.post(f"/api/cases/{a_case}/answers", json={
            "answer_id": "b64-1", "type": "contest", "attachments": [att("ok"), {"name": "x", "content_base64": "%%"}]})
    assert dup.status_code == 200 and dup.json()["status"] == "duplicate"
    assert (other.status_code, unknown.status_code, bad_type.status_code, bad_b64.status_code) == (404, 404, 422, 422)
    assert blobs(svc["root"]) == before
    assert "steal-1" not in answers_of(svc, "b")


def test_mqtt_answers_with_path_ids_or_beyond_the_limits_are_refused_and_write_nothing(
        svc: dict[str, Any], mqtt_client_factory: Callable[..., Any]) -> None:
    marker = f"ew{uuid.uuid4().hex[:8]}"
    prefix, a_case, b_case = svc["prefix"], svc["cases"]["a"], svc["cases"]["b"]
    before = blobs(svc["root"])

    def msg(answer_id: str, case_id: str, n: int = 1, size: int = 10, text: str = "") -> bytes:
        atts = [{"name": f"../../{marker}.pth", "content_base64": b64(os.urandom(size))} for _ in range(n)]
        return json.dumps({"answer_id": answer_id, "case_id": case_id, "type": "contest", "text": text,
                           "attachments": atts}).encode()

    attacks = [
        ("EA", msg(f"../../../{marker}", a_case)),                 # answer id as a relative path
        ("EA", msg(f"/tmp/{marker}", a_case)),                     # ... as an absolute path
        ("EA", msg("m-case-1", f"../../../{marker}")),             # case id as a path
        ("EA", msg("m-case-2", f"/tmp/{marker}")),
        ("..", msg("m-ent-1", a_case)),                            # enterprise id in the topic
        ("EA", msg("m-steal-1", b_case)),                          # another enterprise's case
        ("EA", msg("m-many-1", a_case, n=4)),                      # too many attachments
        ("EA", msg("m-big-1", a_case, size=200_001)),              # one too big
        ("EA", msg("m-total-1", a_case, n=2, size=160_000)),       # too much in all
        ("EA", msg("m-text-1", a_case, text="x" * 2001)),          # text too long
        ("EA", msg("m-nul-1", a_case, text="a\x00b")),             # NUL in the text
        ("EA", b"\xff\xfe not json"),
    ]
    pub = mqtt_client_factory()
    for ent, payload in attacks:
        pub.publish(f"{prefix}/enterprise/{ent}/answer", payload, qos=1).wait_for_publish(10)
    # One subscriber, QoS 1, in order: once the sentinel is in, every attack before it was handled.
    sentinel = b"sentinel " + marker.encode()
    pub.publish(f"{prefix}/enterprise/EA/answer", json.dumps({
        "answer_id": f"m-ok-{marker}", "case_id": a_case, "type": "contest",
        "attachments": [{"name": "ok.txt", "content_base64": b64(sentinel)}]}).encode(), qos=1).wait_for_publish(10)
    got = wait_for(lambda: (a := answers_of(svc, "a")) and f"m-ok-{marker}" in a and a, "the sentinel answer", 30)
    assert not any(k.startswith("m-") and k != f"m-ok-{marker}" for k in got)
    assert "m-steal-1" not in answers_of(svc, "b")
    digest = hashlib.sha256(sentinel).hexdigest()
    assert set(blobs(svc["root"])) - set(before) == {f"{digest[:2]}/{digest}"}
    assert_nowhere(svc, marker)
    # Each refused answer is kept byte-exact with its reason.
    with DeadLetters(deadletter_path(svc["tmp"] / "state")) as dl:
        rows = dl.list(reason="invalid_answer", limit=1000)
        kept = {(d.topic.split("/")[-2], d.raw): d.detail for d in rows}
        sizes = {(d.topic.split("/")[-2], d.raw): (d.size, d.sha256) for d in rows}
    for ent, payload in attacks:  # byte-exact, or (oversized) its prefix with the whole size and digest
        key = (ent, payload[:MAX_RAW_BYTES])
        assert key in kept, payload[:80]
        assert sizes[key] == (len(payload), hashlib.sha256(payload).hexdigest())
    assert "another enterprise" in kept[("EA", attacks[5][1])] or "not a case of" in kept[("EA", attacks[5][1])]


# -- item 5: limits -------------------------------------------------------------------------------

def test_bodies_over_the_limit_get_413_declared_or_streamed(svc: dict[str, Any]) -> None:
    cid = svc["cases"]["a"]
    big = json.dumps({"answer_id": "big-1", "type": "contest", "text": "x" * (MAX_BODY + 10)}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for i in range(0, len(big), 64 * 1024):
            yield big[i:i + 64 * 1024]

    before = blobs(svc["root"])
    with client(svc, "a") as c:
        declared = c.post(f"/api/cases/{cid}/answers", content=big, headers={"content-type": "application/json"})
        streamed = c.post(f"/api/cases/{cid}/answers", content=chunks(), headers={"content-type": "application/json"})
        multi = c.post(f"/api/cases/{cid}/answers", data={"answer_id": "big-2", "type": "contest"},
                       files=[("attachments", ("a.bin", os.urandom(MAX_BODY), "application/octet-stream"))])
    with client(svc, "op") as c:
        action = c.post(f"/api/cases/{cid}/actions", json={"action": "note", "text": "y" * (MAX_BODY + 10)})
        alive = c.get("/healthz")
    for r in (declared, streamed, multi, action):
        assert r.status_code == 413, r.text[:200]
        assert "center.max_body_bytes" in r.json()["detail"] and str(MAX_BODY) in r.json()["detail"]
    assert alive.status_code == 200 and blobs(svc["root"]) == before


def test_attachments_and_text_beyond_the_limits_are_refused(svc: dict[str, Any]) -> None:
    cid = svc["cases"]["a"]

    def js(answer_id: str, sizes: list[int], text: str = "") -> dict[str, Any]:
        return {"answer_id": answer_id, "type": "contest", "text": text,
                "attachments": [{"name": f"f{i}.bin", "content_base64": b64(os.urandom(n))} for i, n in enumerate(sizes)]}

    def parts(sizes: list[int]) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [("attachments", (f"f{i}.bin", os.urandom(n), "application/octet-stream")) for i, n in enumerate(sizes)]

    before = blobs(svc["root"])
    with client(svc, "a") as c:
        post = lambda **kw: c.post(f"/api/cases/{cid}/answers", **kw)  # noqa: E731
        refused = {
            "json: 4 files": (post(json=js("lim-1", [10] * 4)), 422, "max_attachments"),
            "multipart: 4 files": (post(data={"answer_id": "lim-2", "type": "contest"}, files=parts([10] * 4)), 422,
                                   "attachments"),
            "json: one too big": (post(json=js("lim-3", [200_001])), 413, "max_attachment_bytes"),
            "multipart: one too big": (post(data={"answer_id": "lim-4", "type": "contest"}, files=parts([200_001])),
                                       413, "max_attachment_bytes"),
            "json: too much in all": (post(json=js("lim-5", [160_000, 160_000])), 413, "max_total_bytes"),
            "multipart: too much in all": (post(data={"answer_id": "lim-6", "type": "contest"},
                                                files=parts([160_000, 160_000])), 413, "max_total_bytes"),
            "json: text too long": (post(json=js("lim-7", [], "字" * 2001)), 422, "max_text_chars"),
            "multipart: text too long": (post(data={"answer_id": "lim-8", "type": "contest", "text": "字" * 2001}),
                                         422, "max_text_chars"),
        }
        for what, (r, status, reason) in refused.items():
            assert r.status_code == status and reason in r.text, (what, r.status_code, r.text[:300])
        assert blobs(svc["root"]) == before
        # At the limits exactly: taken.
        ok = post(json=js("lim-ok", [100_000, 100_000, 100_000], "字" * 2000))
        assert ok.status_code == 200, ok.text
    assert len(answers_of(svc, "a")["lim-ok"]["attachments"]) == 3 and len(blobs(svc["root"])) == len(before) + 3


# -- item 4: every bad request is a 4xx with a reason ---------------------------------------------

def test_bad_requests_get_a_4xx_with_a_reason_never_a_500(svc: dict[str, Any]) -> None:
    cid = svc["cases"]["a"]
    ans = f"/api/cases/{cid}/answers"
    jtype = {"content-type": "application/json"}
    tries: list[tuple[str, str, str, dict[str, Any], int]] = [
        ("a", "POST", ans, {"content": b"", "headers": jtype}, 422),
        ("a", "POST", ans, {"content": b"hello", "headers": {"content-type": "text/plain"}}, 422),
        ("a", "POST", ans, {"content": b'{"answer_id":', "headers": jtype}, 422),
        ("a", "POST", ans, {"content": b"[1, 2]", "headers": jtype}, 422),
        ("a", "POST", ans, {"content": b'{"answer_id": "\xff"}', "headers": jtype}, 422),
        ("a", "POST", ans, {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}}, 422),
        ("a", "POST", ans, {"json": {"answer_id": "n\x00ul", "type": "acknowledge"}}, 422),
        ("a", "POST", ans, {"json": {"answer_id": "nul-2", "type": "acknowledge", "text": "a\x00b"}}, 422),
        ("a", "POST", ans, {"json": {"answer_id": "nul-3", "type": "contest",
                                     "attachments": [{"name": "\x00", "content_base64": ""}]}}, 422),
        ("a", "GET", "/api/cases/a%00b", {}, 400),
        ("a", "GET", "/api/cases", {"params": {"enterprise": "E\x00A"}}, 400),
        ("a", "GET", "/api/notices", {"params": {"case_id": "../x"}}, 400),
        ("op", "GET", "/api/cases", {"params": {"state": "open\x00"}}, 400),
        ("op", "GET", "/api/alerts/a%00b", {}, 400),
        ("op", "GET", "/api/tickets/..%0A", {}, 400),
        ("op", "POST", "/api/enterprises/E%00A/positive-list", {"json": {}}, 400),
        ("op", "POST", f"/api/cases/{cid}/actions", {"content": b"{", "headers": jtype}, 422),
        ("op", "POST", f"/api/cases/{cid}/actions", {"content": b'{"action": "\xff"}', "headers": jtype}, 400),
        ("op", "GET", "/api/alerts", {"params": {"from": "0001-01-01T00:00:00"}}, 422),
        ("op", "GET", "/api/alerts", {"params": {"to": "9999-12-31T23:59:59"}}, 422),
        ("op", "GET", "/api/alerts", {"params": {"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"}}, 422),
        ("op", "GET", "/api/mobile", {"params": {"from": "0001-01-01T00:00:00"}}, 422),
        ("op", "GET", "/api/mobile", {"params": {"to": "9999-12-31T23:59:59Z"}}, 422),
        ("op", "GET", "/api/hotspots", {"params": {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"}}, 422),
        ("op", "GET", "/api/mobile", {"params": {"device": "UAV1\nSELECT"}}, 400),
        ("op", "GET", "/api/mobile", {"params": {"device": "x' OR '1'='1"}}, 400),
        ("op", "GET", "/api/mobile", {"params": {"device": "../../etc"}}, 400),
        ("op", "GET", f"/api/cases/{cid}/readings", {"params": {"margin_h": "nan"}}, 422),
        ("op", "GET", f"/api/cases/{cid}/readings", {"params": {"margin_h": "inf"}}, 422),
        ("op", "GET", "/api/cases", {"params": {"limit": "1e99"}}, 422),
        ("op", "GET", "/api/alerts", {"params": {"from": "2025-01-01T00:00:00+99:00"}}, 422),
        ("op", "GET", "/api/stream", {"headers": {"Last-Event-ID": b"\xb2"}}, 400),
        ("op", "GET", "/api/stream", {"headers": {"Last-Event-ID": "12abc"}}, 400),
        ("op", "POST", "/api/emergencies", {"json": {"level": "red", "start": "0001-01-01T00:00:00",
                                                     "end": "0001-01-02T00:00:00"}}, 422),
        ("op", "POST", "/api/emergencies", {"json": {"level": "red", "start": "2025-01-01T00:00:00",
                                                     "end": "9999-12-31T23:59:59"}}, 422),
    ]
    failures = []
    for who, method, path, kw, expected in tries:
        with httpx.Client(base_url=svc["url"], headers=auth(who), timeout=30) as c:
            r = c.request(method, path, **kw)
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = None
        if r.status_code != expected or not detail:
            failures.append((method, path, kw, r.status_code, r.text[:200]))
    assert failures == []


def test_a_valid_last_event_id_and_device_still_work(svc: dict[str, Any]) -> None:
    with client(svc, "op") as c:
        assert c.get("/api/mobile", params={"device": "UAV-1.a_b"}).status_code == 200
        with c.stream("GET", "/api/stream", headers={"Last-Event-ID": "0"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")


# -- item 6: evidence packages whose entries are not exactly the manifest's -----------------------

def _rezip(src: Path, out: Path, edit: Callable[[zipfile.ZipFile, zipfile.ZipFile, str], None]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        top = zin.namelist()[0].split("/")[0]
        edit(zin, zout, top)
    return out


def _copy(zin: zipfile.ZipFile, zout: zipfile.ZipFile, skip: tuple[str, ...] = (), root: bool = False) -> None:
    for n in zin.namelist():
        if n.rsplit("/", 1)[-1] not in skip:
            zout.writestr(n.split("/", 1)[1] if root else n, zin.read(n))


def test_crafted_evidence_zips_fail_verification(package: tuple[Path, str], tmp_path: Path) -> None:  # noqa: F811
    path, digest = package
    src = path.with_suffix(".zip")
    tampered = b"time,value\n2025-03-01T00:00:00Z,1.0\n"
    import warnings

    warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate names we craft

    crafted = {
        "tampered entry before the original": lambda zi, zo, top: (
            zo.writestr(f"{top}/readings.csv", tampered), _copy(zi, zo)),
        "tampered entry after the original": lambda zi, zo, top: (
            _copy(zi, zo), zo.writestr(f"{top}/readings.csv", tampered)),
        "a copy in a subfolder": lambda zi, zo, top: (
            _copy(zi, zo), zo.writestr(f"{top}/sub/readings.csv", tampered)),
        "the package moved into a subfolder, a forged copy on top": lambda zi, zo, top: (
            [zo.writestr(f"{top}/orig/{n.split('/', 1)[1]}", zi.read(n)) for n in zi.namelist()],
            zo.writestr(f"{top}/readings.csv", tampered)),
        "an extra file": lambda zi, zo, top: (_copy(zi, zo), zo.writestr(f"{top}/note.txt", b"x")),
        "a file beside the folder": lambda zi, zo, top: (_copy(zi, zo), zo.writestr("readings.csv", tampered)),
        "a missing file": lambda zi, zo, top: _copy(zi, zo, skip=("chart.png",)),
        "an empty subfolder entry": lambda zi, zo, top: (_copy(zi, zo), zo.writestr(f"{top}/sub/", b"")),
        "a path that climbs out": lambda zi, zo, top: (_copy(zi, zo), zo.writestr(f"{top}/../x.csv", b"x")),
        "an entry larger than the manifest says": lambda zi, zo, top: (
            _copy(zi, zo, skip=("readings.csv",)), zo.writestr(f"{top}/readings.csv", bytes(50 << 20))),
        "a large unlisted entry": lambda zi, zo, top: (_copy(zi, zo), zo.writestr(f"{top}/big.bin", bytes(50 << 20))),
    }
    for i, (what, edit) in enumerate(crafted.items()):
        forged = _rezip(src, tmp_path / f"forged-{i}.zip", edit)
        result = verify(forged, expected_digest=digest)
        assert not result.ok and result.problems, what
        if "larger" in what or "large" in what:  # 50 MB of zeros, compressed to 50 kB: never inflated
            assert any("not read" in p for p in result.problems), result.problems
    # The same files without the folder, or with its own folder entry, are still the package.
    assert verify(_rezip(src, tmp_path / "flat.zip", lambda zi, zo, top: _copy(zi, zo, root=True)), digest).ok
    assert verify(_rezip(src, tmp_path / "dir.zip", lambda zi, zo, top: (zo.writestr(f"{top}/", b""), _copy(zi, zo))),
                  digest).ok
    # A folder package with a subfolder or a link does not verify either.
    (path / "sub").mkdir()
    assert not verify(path, digest).ok
    (path / "sub").rmdir()
    (path / "link.csv").symlink_to(path / "readings.csv")
    assert not verify(path, digest).ok
    (path / "link.csv").unlink()
    assert verify(path, digest).ok


def test_envwatch_evidence_verify_refuses_a_zip_with_a_tampered_entry_first(
        package: tuple[Path, str], tmp_path: Path) -> None:  # noqa: F811
    path, digest = package
    import warnings

    warnings.simplefilter("ignore", UserWarning)
    forged = _rezip(path.with_suffix(".zip"), tmp_path / "forged.zip", lambda zi, zo, top: (
        zo.writestr(f"{top}/readings.csv", b"forged\n"), _copy(zi, zo)))
    done = subprocess.run([sys.executable, "-m", "center.cli", "evidence", "verify", str(forged), "--digest", digest],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "appears 2 times" in done.stderr, done.stdout + done.stderr
    ok = subprocess.run([sys.executable, "-m", "center.cli", "evidence", "verify", str(path.with_suffix(".zip")),
                         "--digest", digest], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_values_postgresql_cannot_hold_are_a_400_not_a_500(settings_factory: Callable[..., Any],
                                                           pg_cluster: Any) -> None:
    """NUL in free text of a body: SQLite keeps it, PostgreSQL's text cannot hold it (DataError -> 400)."""
    from center.app import create_app
    from center.service import prepare_store
    from tests.apikit import center_overrides, registry, serve
    from tests.casekit import drop_pg_database, pg_database

    url = pg_database()
    engine = make_engine(url)
    prepare_store(engine)
    settings = settings_factory(registry(), **center_overrides())
    served = serve(create_app(settings, engine, poll_s=0.2))
    try:
        cid = seed_case(engine, settings, "EA", T0)
        with served.client("op") as c:
            dismiss = c.post(f"/api/cases/{cid}/actions", json={"action": "dismiss", "reason": "a\x00b"})
            emergency = c.post("/api/emergencies", json={"level": "red", "start": "2026-01-01T00:00:00",
                                                         "end": "2026-01-02T00:00:00", "note": "\x00"})
            fine = c.post(f"/api/cases/{cid}/actions", json={"action": "dismiss", "reason": "false alarm"})
        with served.client("a") as c:
            text = c.post(f"/api/cases/{cid}/answers", json={"answer_id": "pg-1", "type": "acknowledge",
                                                              "text": "a\x00b"})
    finally:
        served.stop()
        engine.dispose()
        drop_pg_database(url)
    assert (dismiss.status_code, emergency.status_code, text.status_code) == (400, 400, 422), \
        (dismiss.text, emergency.text, text.text)
    assert all(r.json()["detail"] for r in (dismiss, emergency, text))
    assert fine.status_code == 200 and fine.json()["state"] == "dismissed"
