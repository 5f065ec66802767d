"""Evidence packages that hold up: what enforcement takes to the enterprise, and can prove unchanged.

    path, digest = build(engine, settings, case_id, out_dir)     # folder + folder.zip
    result = verify(path_or_zip, expected_digest=digest)         # VerifyResult(ok, problems)

A package is one folder (and a .zip of it) holding:
    readings.csv     raw readings of the windows concerned (each alert's window +- MARGIN), every
                     measurement (rtd/minute/hour/day), all fields including the data flags; the
                     values received first (the ingest keeps those)
    revisions.csv    re-sends that differed (the `revisions` measurement) of the alerts' stations in
                     those windows, and those a data_revision alert reports (received in its window):
                     the first-received value and the re-sent one side by side, with when it came
    payloads.jsonl   raw payloads where kept; envwatch keeps none of accepted readings (InfluxDB holds
                     the decoded values), so it is empty and the manifest says so
    chart.png        readings against the limit, the alert windows shaded
    alerts.json      the case's alerts as attached; case.json the case; answers.json its answers
    history.json     the case's event log with each event's chained digest
    manifest.json    SHA-256 of every file, case id, created_at, the final chained digest, tool version
    manifest.sha256  SHA-256 of manifest.json (sha256sum format)

`verify` recomputes every file hash, the manifest hash and the event chain (notify/events.py's
canonical form), and refuses a package whose entries are not exactly the manifest's (a zip entry
twice, a subfolder, a file beside the package folder, an extra or a missing file). A package rebuilt wholesale by someone who edited history would still be
self-consistent: what pins it is the manifest digest recorded elsewhere (the ticket's
evidence_digest), hence `expected_digest`.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, select

from config.schema import Settings
from core.time import CHINA_ZONE, as_utc
from core.influx import Influx
from detect import readings
from ingest.revisions import Revision, read_revisions
from ingest.schema import FLOAT_FIELDS, STRING_FIELDS, measurement
from notify import events
from notify.notices import pollutant_label, problem_label
from notify.tables import answers, case_alerts, cases

FORMAT = "envwatch-evidence/1"
MARGIN = timedelta(hours=1)  # context before and after each alert window
INTERVALS = ("rtd", "minute", "hour", "day")
TAGS = ("mn", "enterprise", "outlet", "medium", "pollutant", "code")
MANIFEST, MANIFEST_DIGEST = "manifest.json", "manifest.sha256"
MAX_UNLISTED_BYTES = 1 << 20  # what verify reads of a zip entry the manifest gives no size for
PAYLOADS_NOTE = ("envwatch does not keep the raw payloads of accepted readings (InfluxDB holds the decoded "
                 "values, in readings.csv); payloads the ingest rejected are kept as dead letters "
                 "(`envwatch deadletters list`).")


@dataclass
class VerifyResult:
    """Outcome of verify(): ok only when `problems` is empty."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    case_id: str | None = None
    manifest_digest: str | None = None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _iso(t: datetime) -> str:
    return as_utc(t).isoformat().replace("+00:00", "Z")


def _json(doc: Any) -> bytes:
    return (json.dumps(doc, ensure_ascii=False, sort_keys=True, indent=2, default=str) + "\n").encode()


def tool_version() -> str:
    try:
        return metadata.version("envwatch")
    except metadata.PackageNotFoundError:
        return "0+unknown"


# -- gathering ------------------------------------------------------------------------------------

@dataclass
class _Case:
    case: dict[str, Any]
    alerts: list[dict[str, Any]]
    events: list[dict[str, Any]]
    answers: list[dict[str, Any]]


def _load(conn: Connection, case_id: str) -> _Case:
    row = conn.execute(select(cases).where(cases.c.id == case_id)).mappings().first()
    if row is None:
        raise LookupError(f"no case {case_id!r} in the store")
    alerts = conn.execute(select(case_alerts.c.alert).where(case_alerts.c.case_id == case_id)).scalars().all()
    ans = conn.execute(select(answers).where(answers.c.case_id == case_id).order_by(answers.c.received_at,
                                                                                     answers.c.id)).mappings().all()
    return _Case(dict(row), sorted((dict(a) for a in alerts), key=lambda a: (a["window_start"], a["id"])),
                 events.events_of(conn, case_id), [dict(a) for a in ans])


def _windows(alerts: list[dict[str, Any]]) -> list[tuple[str, str, datetime, datetime]]:
    """(enterprise, outlet, start, end) to read: alert windows +- MARGIN, overlapping ones merged."""
    spans: dict[tuple[str, str], list[tuple[datetime, datetime]]] = {}
    for a in alerts:
        start = datetime.fromisoformat(a["window_start"]) - MARGIN
        end = datetime.fromisoformat(a["window_end"]) + MARGIN
        spans.setdefault((a["enterprise_id"], a.get("outlet_id") or ""), []).append((start, end))
    out = []
    for (ent, outlet), ranges in sorted(spans.items()):
        ranges.sort()
        cur_s, cur_e = ranges[0]
        for s, e in ranges[1:]:
            if s <= cur_e:
                cur_e = max(cur_e, e)
            else:
                out.append((ent, outlet, cur_s, cur_e))
                cur_s, cur_e = s, e
        out.append((ent, outlet, cur_s, cur_e))
    return out


def _readings(influx: Influx, windows: list[tuple[str, str, datetime, datetime]]) -> pd.DataFrame:
    """Every stored reading of the outlets in the windows, one row per (measurement, series, time)."""
    frames = []
    for ent, outlet, start, end in windows:
        for interval in INTERVALS:
            df = readings.outlet_frame(influx, ent, outlet, start, end, interval)
            if len(df):
                frames.append(df.assign(measurement=measurement(interval)))
    known = ["measurement", "time", *TAGS, *FLOAT_FIELDS, *STRING_FIELDS]
    if not frames:
        return pd.DataFrame(columns=known)
    df = pd.concat(frames, ignore_index=True)
    cols = [c for c in known if c in df.columns] + sorted(c for c in df.columns if c not in known)
    keys = [c for c in ("measurement", "mn", "pollutant", "time") if c in df.columns]
    return df[cols].drop_duplicates(subset=keys).sort_values(keys, kind="stable").reset_index(drop=True)


REVISION_COLUMNS = ("interval", "time", "time_utc", "mn", "enterprise", "outlet", "pollutant", "field", "first",
                    "revised", "received_at")


def _revisions(influx: Influx, alerts: list[dict[str, Any]],
               windows: list[tuple[str, str, datetime, datetime]]) -> list[Revision]:
    """The stored revisions the case rests on: its alerts' stations' readings in the windows read
    (by DataTime), and for a data_revision alert those received in its window (its windows are
    receipt hours: the readings it reports may be older)."""
    reads = []
    for ent, outlet, start, end in windows:
        mns = {a["station_mn"] for a in alerts if a.get("station_mn")
               and (a["enterprise_id"], a.get("outlet_id") or "") == (ent, outlet)}
        reads += read_revisions(influx, start, end, by="time", mns=mns) if mns else []
    for a in alerts:
        if a["kind"] == "data_revision" and a.get("station_mn"):
            start, end = (datetime.fromisoformat(a[k]) for k in ("window_start", "window_end"))
            reads += read_revisions(influx, start, end, by="received", mns=[a["station_mn"]])
    found = {(rv.interval, rv.mn, rv.pollutant, rv.time, rv.field, rv.received_at): rv for rv in reads}
    return sorted(found.values(), key=lambda rv: (rv.mn, rv.pollutant, rv.interval, rv.time, rv.received_at, rv.field))


def _revisions_csv(revs: list[Revision]) -> bytes:
    """One row per revised field: the first-received value and the re-sent one, Beijing time beside UTC."""
    rows = [{"interval": rv.interval, "time": pd.Timestamp(rv.time).tz_convert(CHINA_ZONE).isoformat(),
             "time_utc": _iso(rv.time), "mn": rv.mn, "enterprise": rv.enterprise, "outlet": rv.outlet,
             "pollutant": rv.pollutant, "field": rv.field, "first": rv.first, "revised": rv.revised,
             "received_at": _iso(rv.received_at)} for rv in revs]
    return pd.DataFrame(rows, columns=list(REVISION_COLUMNS)).to_csv(index=False, lineterminator="\n").encode()


CHART_WORDS: dict[str, dict[str, str]] = {
    "zh-CN": {"limit": "排放限值", "finding": "监测发现", "none": "该时段无监测数据", "time": "时间（北京时间）",
              "case": "案件", "o2": "折算", "minute": "分钟数据", "rtd": "实时数据", "hour": "小时数据"},
    "en": {"limit": "limit", "finding": "finding", "none": "no readings stored for these windows",
           "time": "time (Beijing time, UTC+08:00)", "case": "case", "o2": "O2-corrected", "minute": "minute data",
           "rtd": "real-time data", "hour": "hourly data"},
}


def _readings_csv(df: pd.DataFrame, language: str = "zh-CN") -> bytes:
    """The readings with `time` in Beijing time (ISO 8601, +08:00), `time_utc` beside it, and the
    pollutant's name next to its code."""
    out = df.copy()
    if len(out):
        out.insert(list(out.columns).index("time") + 1, "time_utc", out["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        out["time"] = out["time"].dt.tz_convert(CHINA_ZONE).map(lambda t: t.isoformat())
        if "pollutant" in out.columns:
            out.insert(list(out.columns).index("pollutant") + 1, "pollutant_name",
                       out["pollutant"].map(lambda c: pollutant_label(str(c), language)))
    return out.to_csv(index=False, lineterminator="\n").encode()


def _cjk_font() -> str | None:
    """A font that has Chinese glyphs, if one is installed (else the chart falls back to English)."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((n for n in ("Noto Sans CJK SC", "Noto Serif CJK SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
                             "Source Han Sans SC", "SimHei") if n in names), None)


# -- the chart ------------------------------------------------------------------------------------

def _chart(df: pd.DataFrame, alerts: list[dict[str, Any]], case: dict[str, Any], language: str = "zh-CN",
           names: dict[str, str] | None = None) -> bytes:
    """PNG: per pollutant, the finest readings (O2-corrected where sent) vs the limit and its
    standard, windows shaded, in Beijing time, labelled in `language` (names: enterprise id -> name)."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in threads

    font = _cjk_font() if language == "zh-CN" else None
    if language == "zh-CN" and font is None:
        language = "en"  # no Chinese glyphs here: English rather than boxes
    codes = sorted({a["pollutant"] for a in alerts if a.get("pollutant")}) or [case.get("pollutant") or ""]
    with rc_context({"font.family": [font, "DejaVu Sans"] if font else ["DejaVu Sans"], "timezone": CHINA_ZONE,
                     "axes.unicode_minus": False}):
        fig = Figure(figsize=(10, 3.2 * len(codes)), dpi=100)
        FigureCanvasAgg(fig)
        for i, code in enumerate(codes, start=1):
            ax = fig.add_subplot(len(codes), 1, i)
            _plot_pollutant(ax, df, [a for a in alerts if a.get("pollutant", "") == code], code, case, language,
                            (names or {}).get(case["enterprise_id"], case["enterprise_id"]))
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": f"envwatch {tool_version()}"})
    return buf.getvalue()


def _series(df: pd.DataFrame, code: str) -> tuple[pd.DataFrame, str]:
    for m in ("station_minute", "station_rtd", "station_hour"):
        rows = df[(df["measurement"] == m) & (df["pollutant"] == code)] if len(df) else df
        for col in ("zs_avg", "zs_rtd", "avg", "rtd"):
            if col in rows.columns and rows[col].notna().any():
                return rows[["time", "mn", col]].rename(columns={col: "value"}), f"{m.removeprefix('station_')} {col}"
    return pd.DataFrame(columns=["time", "mn", "value"]), ""


def _plot_pollutant(ax: Any, df: pd.DataFrame, alerts: list[dict[str, Any]], code: str, case: dict[str, Any],
                    language: str = "zh-CN", enterprise: str = "") -> None:
    from matplotlib.dates import DateFormatter

    w = CHART_WORDS[language]
    data, label = _series(df, code)
    interval, _, col = label.partition(" ")
    series = f"{w.get(interval, interval)}{'（' + w['o2'] + '）' if col.startswith('zs') and language == 'zh-CN' else ''}"
    for mn, rows in data.groupby("mn"):
        ax.plot(rows["time"], rows["value"].astype(float), lw=0.8, label=f"{mn} {series}")
    for a in alerts:
        start, end = (pd.Timestamp(a[k]) for k in ("window_start", "window_end"))
        ax.axvspan(start, end, color="tab:red", alpha=0.12)
        if a.get("value") is not None:
            kind = problem_label(language, a["kind"])
            ax.hlines(a["value"], start, end, colors="tab:red", lw=2, label=f"{kind} {a['value']}")
    limits = {(a["limit"], (a.get("evidence") or {}).get("standard") or "") for a in alerts
              if a.get("limit") is not None and "exceedance" in a["kind"]}
    for lim, standard in sorted(limits):
        std = f"（{standard}）" if standard and language == "zh-CN" else (f" ({standard})" if standard else "")
        ax.axhline(lim, color="black", ls="--", lw=1, label=f"{w['limit']} {lim} {alerts[0].get('unit', '')}{std}")
    if data.empty:
        ax.text(0.5, 0.5, w["none"], transform=ax.transAxes, ha="center")
    ax.set_ylabel(alerts[0].get("unit", "") if alerts else "")
    ax.set_xlabel(w["time"], fontsize=8)
    ax.xaxis.set_major_formatter(DateFormatter("%m-%d %H:%M", tz=CHINA_ZONE))
    ax.set_title(f"{w['case']} {case['id']}: {enterprise} / {case['outlet_id']} / {pollutant_label(code, language)}",
                 fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left")


# -- building -------------------------------------------------------------------------------------

def _history(c: _Case) -> dict[str, Any]:
    keep = ("case_id", "seq", "at", "recorded_at", "actor", "type", "data", "prev_digest", "digest")
    rows = [{k: (_iso(e[k]) if k in ("at", "recorded_at") else e[k]) for k in keep} for e in c.events]
    return {"case_id": c.case["id"], "genesis": events.GENESIS, "events": rows}


def _files(c: _Case, df: pd.DataFrame, language: str = "zh-CN", names: dict[str, str] | None = None,
           revs: list[Revision] | None = None) -> dict[str, bytes]:
    case = {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in c.case.items()}
    ans = [{k: (_iso(v) if isinstance(v, datetime) else v) for k, v in a.items()} for a in c.answers]
    return {"readings.csv": _readings_csv(df, language), "revisions.csv": _revisions_csv(revs or []),
            "payloads.jsonl": b"",
            "chart.png": _chart(df, c.alerts, c.case, language, names),
            "alerts.json": _json(c.alerts), "case.json": _json(case), "answers.json": _json(ans),
            "history.json": _json(_history(c))}


def _manifest(c: _Case, files: dict[str, bytes], created: datetime, settings: Settings,
              windows: list[tuple[str, str, datetime, datetime]], rows: int) -> dict[str, Any]:
    final = c.events[-1]["digest"] if c.events else events.GENESIS
    return {
        "format": FORMAT, "case_id": c.case["id"], "enterprise_id": c.case["enterprise_id"],
        "outlet_id": c.case["outlet_id"], "problem": c.case["problem"], "created_at": _iso(created),
        "tool": {"name": "envwatch", "version": tool_version()},
        "files": {name: {"sha256": sha256(data), "bytes": len(data)} for name, data in sorted(files.items())},
        "event_chain": {"algorithm": "sha256(prev_digest + canonical JSON of the event), see notify/events.py",
                        "genesis": events.GENESIS, "events": len(c.events), "final_digest": final},
        "readings": {"source": f"InfluxDB {settings.influxdb.url} database {settings.influxdb.database}",
                     "margin_s": int(MARGIN.total_seconds()), "rows": rows,
                     "windows": [{"enterprise": e, "outlet": o, "start": _iso(s), "end": _iso(t)}
                                 for e, o, s, t in windows]},
        "payloads": {"kept": False, "note": PAYLOADS_NOTE},
    }


def build(engine_or_conn: Engine | Connection, settings: Settings, case_id: str, out_dir: str | Path,
          influx: Influx | None = None, now: datetime | None = None) -> tuple[Path, str]:
    """Write the evidence package of a case; returns (folder, SHA-256 of its manifest.json).

    The folder is out_dir/evidence-{case_id}-{created}; its .zip sits beside it.
    """
    created = as_utc(now or datetime.now(timezone.utc))
    if isinstance(engine_or_conn, Connection):
        c = _load(engine_or_conn, case_id)
    else:
        with engine_or_conn.connect() as conn:
            c = _load(conn, case_id)
    windows = _windows(c.alerts)
    own = influx is None
    influx = influx or Influx(settings.influxdb)
    try:
        df = _readings(influx, windows)
        revs = _revisions(influx, c.alerts, windows)
    finally:
        if own:
            influx.close()
    files = _files(c, df, settings.notify.language, {e.id: e.name for e in settings.registry.enterprises}, revs)
    manifest = _json(_manifest(c, files, created, settings, windows, len(df)))
    digest = sha256(manifest)
    files |= {MANIFEST: manifest, MANIFEST_DIGEST: f"{digest}  {MANIFEST}\n".encode()}
    return _write(Path(out_dir), f"evidence-{case_id}-{created:%Y%m%dT%H%M%SZ}", files), digest


def _write(out_dir: Path, name: str, files: dict[str, bytes]) -> Path:
    """Write to a temporary folder, then rename: a half-written package never has the final name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    folder, n = out_dir / name, 1
    while folder.exists() or folder.with_suffix(".zip").exists():
        n += 1
        folder = out_dir / f"{name}-{n}"
    tmp = out_dir / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for fname, data in files.items():
        (tmp / fname).write_bytes(data)
    with zipfile.ZipFile(out_dir / f".{folder.name}.zip.tmp", "w", zipfile.ZIP_DEFLATED) as z:
        for fname in sorted(files):
            z.writestr(f"{folder.name}/{fname}", files[fname])
    tmp.rename(folder)
    (out_dir / f".{folder.name}.zip.tmp").rename(folder.with_suffix(".zip"))
    return folder


# -- verifying ------------------------------------------------------------------------------------

def _read(path: Path) -> tuple[dict[str, bytes], list[str]]:
    """A package's files by name, from its folder or its .zip, and what makes its layout not a package's."""
    if path.is_dir():
        return _read_folder(path)
    with zipfile.ZipFile(path) as z:
        return _read_zip(z)


def _read_folder(path: Path) -> tuple[dict[str, bytes], list[str]]:
    files, problems = {}, []
    for p in sorted(path.iterdir()):
        if p.is_symlink() or not p.is_file():
            problems.append(f"{p.name} is a {'link' if p.is_symlink() else 'folder'}: a package holds plain files only")
        else:
            files[p.name] = p.read_bytes()
    return files, problems


def _read_zip(z: zipfile.ZipFile) -> tuple[dict[str, bytes], list[str]]:
    """The entries of a package zip: one folder (or none) holding plain files, each name once.

    Anything else is a problem, since unzip tools differ on which duplicate they extract and would
    put a subfolder's copy where a reader might take it for the package's own file."""
    problems: list[str] = []
    names = [i.filename for i in z.infolist()]
    counts = Counter(names)
    problems += [f"zip entry {n!r} appears {k} times" for n, k in sorted(counts.items()) if k > 1]
    files_ = [n for n in names if not n.endswith("/")]
    top = files_[0].rpartition("/")[0] if files_ else ""
    prefix = f"{top}/" if top else ""
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in z.infolist():
        n = info.filename
        if n.endswith("/"):
            if n != prefix:
                problems.append(f"zip entry {n!r}: a package has no subfolders")
            continue
        base = n[len(prefix):] if n.startswith(prefix) else None
        if base is None or not base or "/" in base or "\\" in base or base in (".", ".."):
            problems.append(f"zip entry {n!r} is outside the package folder {top!r} or in a subfolder")
        elif counts[n] == 1:
            entries[base] = info
    # Read nothing larger than the manifest says (a crafted entry may inflate to gigabytes).
    sizes = _listed_sizes(z, entries.get(MANIFEST))
    files: dict[str, bytes] = {}
    for base, info in entries.items():
        most = sizes.get(base, MAX_UNLISTED_BYTES)
        if info.file_size > most:
            problems.append(f"zip entry {info.filename!r} holds {info.file_size} bytes, more than the {most} "
                            "the manifest allows: not read")
            files[base] = b""
        else:
            files[base] = z.read(info)
    return files, problems


def _listed_sizes(z: zipfile.ZipFile, manifest: zipfile.ZipInfo | None) -> dict[str, int]:
    """File sizes the zip's own manifest lists ({} when it has none that can be read)."""
    if manifest is None or manifest.file_size > MAX_UNLISTED_BYTES:
        return {}
    try:
        listed = json.loads(z.read(manifest)).get("files") or {}
        return {str(name): int(meta["bytes"]) for name, meta in listed.items()
                if isinstance(meta, dict) and isinstance(meta.get("bytes"), int)}
    except (ValueError, TypeError, AttributeError):
        return {}


def verify(path: str | Path, expected_digest: str | None = None) -> VerifyResult:
    """Check a package (folder or .zip): its entries are exactly the manifest's (no duplicates, no
    subfolders, nothing extra or missing), file hashes, manifest hash, event chain, optional pinned digest."""
    path = Path(path)
    try:
        files, layout = _read(path)
    except (OSError, zipfile.BadZipFile) as exc:
        return VerifyResult(False, [f"cannot read {path}: {exc}"])
    if MANIFEST not in files:
        return VerifyResult(False, layout + [f"{MANIFEST} missing"])
    digest = sha256(files[MANIFEST])
    problems = layout + _check_manifest_digest(files, digest, expected_digest)
    try:
        manifest = json.loads(files[MANIFEST])
    except ValueError as exc:
        return VerifyResult(False, problems + [f"{MANIFEST} is not JSON: {exc}"], manifest_digest=digest)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        return VerifyResult(False, problems + [f"{MANIFEST} is not an envwatch manifest"], manifest_digest=digest)
    problems += _check_files(files, manifest)
    problems += _check_history(files, manifest)
    return VerifyResult(not problems, problems, manifest.get("case_id"), digest)


def _check_manifest_digest(files: dict[str, bytes], digest: str, expected: str | None) -> list[str]:
    problems = []
    recorded = files.get(MANIFEST_DIGEST, b"").decode(errors="replace").split()
    if not recorded:
        problems.append(f"{MANIFEST_DIGEST} missing or empty")
    elif recorded[0].lower() != digest:
        problems.append(f"{MANIFEST} changed: SHA-256 {digest}, {MANIFEST_DIGEST} says {recorded[0]}")
    if expected is not None and expected.lower() != digest:
        problems.append(f"{MANIFEST} SHA-256 {digest} is not the recorded evidence digest {expected}")
    return problems


def _check_files(files: dict[str, bytes], manifest: dict[str, Any]) -> list[str]:
    problems = []
    listed = manifest.get("files") or {}
    for name, meta in sorted(listed.items()):
        if name not in files:
            problems.append(f"{name} missing")
        elif sha256(files[name]) != meta.get("sha256"):
            problems.append(f"{name} changed: SHA-256 {sha256(files[name])}, manifest says {meta.get('sha256')}")
    extra = sorted(set(files) - set(listed) - {MANIFEST, MANIFEST_DIGEST})
    problems += [f"{name} is not in the manifest" for name in extra]
    return problems


def _check_history(files: dict[str, bytes], manifest: dict[str, Any]) -> list[str]:
    """Recompute the event chain of history.json and compare its end with the manifest's."""
    try:
        history = json.loads(files["history.json"])
        rows = [{**e, "at": datetime.fromisoformat(e["at"]), "recorded_at": datetime.fromisoformat(e["recorded_at"])}
                for e in history["events"]]
    except (KeyError, ValueError, TypeError) as exc:
        return [f"history.json unreadable: {type(exc).__name__}: {exc}"]
    problems = []
    broken = events.verify_chain(rows)
    if broken is not None:
        problems.append(f"history.json: event {broken} does not match its chained digest (edited, missing or reordered)")
    chain = manifest.get("event_chain") or {}
    final = rows[-1]["digest"] if rows else events.GENESIS
    if final != chain.get("final_digest") or len(rows) != chain.get("events"):
        problems.append(f"history.json ends at {final} after {len(rows)} events; the manifest says "
                        f"{chain.get('final_digest')} after {chain.get('events')}")
    if any(r.get("case_id") != manifest.get("case_id") for r in rows):
        problems.append("history.json holds events of another case")
    return problems


def cli_verify(path: str | Path, expected_digest: str | None = None) -> int:
    """`envwatch evidence verify PATH`: prints the outcome; 0 when the package verifies, 1 otherwise."""
    result = verify(path, expected_digest)
    if result.ok:
        print(f"OK {path}: case {result.case_id}, manifest SHA-256 {result.manifest_digest}")
        return 0
    print(f"FAILED {path}" + (f" (case {result.case_id})" if result.case_id else ""), file=sys.stderr)
    for p in result.problems:
        print(f"  - {p}", file=sys.stderr)
    return 1


__all__ = ["FORMAT", "VerifyResult", "build", "cli_verify", "tool_version", "verify"]
