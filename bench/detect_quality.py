"""Detection quality end to end: simulated city with injected events -> MQTT -> ingest -> InfluxDB
-> every detector -> alerts, scored against the simulator's ground truth.

The real path, nothing mocked: its own Mosquitto and influxd (devtools.devservices) in a temporary
directory; the city published by `devtools.simulate.run` (what `envwatch simulate --speedup 0`
runs) in a child process, as fast as the broker acknowledges; an in-process `Ingest` consuming
it into InfluxDB until every message is acked and the disk buffer is drained; then
`Runner(settings).evaluate_range` over the evaluated range for every kind (alerts stored in the
SQLite alert store under the run's state directory), and the alerts read back from that store
(`detect.cli.export_alerts`, the JSON Lines of `envwatch alerts export`).

Evaluated range: by default the last simulated day, where the scenario puts every event (the
days before are the history multivariate_anomaly learns from); --eval-days 3 evaluates the
clean days too (more room for false positives, about three times the detection time), never
the first --warmup-hours of the simulation.

Matching (per kind):
  - station kinds: an alert is a true positive when kind, enterprise_id, outlet_id and the
    pollutant (where the truth names one) equal a truth event's and its window overlaps the
    truth window (hours, or China days for daily_exceedance, touched by the event).
    A station-level alert (pollutant "": offline, flag_abuse, multivariate_anomaly) matches any
    pollutant; for multivariate_anomaly the table also says how often evidence.channels names
    the injected channel.
  - hotspot: same device (the alert's station_mn) and species, window overlapping the event's
    hours; attribution accuracy = share of true-positive hotspot alerts whose enterprise_id is
    the truth enterprise (so a wrong attribution is not hidden as a miss).
  - data_revision: its windows are the hours the ingest *received* a re-send, on the wall clock
    (the simulator publishes the city as fast as the broker takes it), so the benchmark judges
    the receipt hours the run's revisions were stamped with (read back from the `revisions`
    measurement), and an alert matches when enterprise, outlet and pollutant are the event's and
    its evidence lists a revised reading whose DataTime lies in the event's span; the table also
    says how many true-positive alerts have the severity the scenario expects (params.severity:
    critical when the re-send would clear an exceedance, major or minor by how far it moves the mean).
  Near-miss traps (events with params.trap: true, e.g. a spike of a few minutes above the limit
  whose hourly mean stays within it) are injected but left out of the truth: an alert there is
  a false positive (clean).
  precision = true-positive alerts / alerts of that kind; recall = truth events matched by at
  least one alert / truth events. The truth includes what an event implies by definition: the
  hours of a flag_abuse day keep fewer than 45 valid minutes, so the simulator lists them as
  insufficient_valid_data records with "implied_by": "flag_abuse" (devtools.simulate); they count
  like injected events. A false-positive alert is also classed as *collateral* when it is on a
  station (device) and time of another injected event (e.g. a multivariate_anomaly on a
  station's insufficient-data hour), or *clean* when nothing was injected there; "precision
  excl. collateral" = TP / (TP + clean FP).

The numbers are reported, not asserted: exit status is non-zero only when something crashes.

    .venv/bin/python bench/detect_quality.py [--days 3] [--eval-days 1] [--enterprises N]
        [--devices UAV-01,...] [--seed 11] [--scenario config/examples/scenario-quality.yaml]
        [--kinds K,...] [--keep DIR [--reuse]] [--json results.json] [--details]

Scale: --enterprises N keeps the first N enterprises of the city (or a comma-separated list of
ids), --devices a comma-separated list of devices; events on what was dropped are dropped (a
hotspot also needs its source enterprise). --keep DIR keeps the services' data, city.yaml,
scenario.yaml, truth.jsonl and alerts.jsonl; --keep DIR --reuse detects and scores again on that
data without publishing (e.g. after changing a detector).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.devservices import free_port, start_influxd, start_mosquitto
from devtools.simulate import as_utc, iso_z, load_scenario, parse_duration, write_truth
from config.loader import from_mapping
from config.schema import Settings

DEMO = ROOT / "config" / "examples" / "demo-city.yaml"
SCENARIO = ROOT / "config" / "examples" / "scenario-quality.yaml"
DEFAULT_START = "2024-05-01T00:00:00+08:00"  # a China midnight: simulated day k = China day k
SCENARIO_DAYS = 3  # the scenario's offsets are written for a simulation of this many days
KINDS = ("exceedance", "daily_exceedance", "insufficient_valid_data", "offline", "constant_value",
         "zero_while_operating", "negative_value", "o2_anomaly", "flag_abuse", "multivariate_anomaly", "hotspot",
         "data_revision")
RECEIPT_KINDS = ("data_revision",)  # windows are the wall-clock hours the ingest received the re-send

Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Configuration and scenario


def city_mapping(base: Path | dict[str, Any] = DEMO, enterprises: int | Iterable[str] | None = None,
                 devices: Iterable[str] | None = None) -> dict[str, Any]:
    """The demo city as a plain mapping, optionally reduced to some enterprises / devices.

    `enterprises`: a count (the first N in file order) or ids.
    """
    raw = yaml.safe_load(base.read_text(encoding="utf-8")) if isinstance(base, Path) else json.loads(json.dumps(base))
    ents = raw["registry"]["enterprises"]
    if enterprises is not None:
        keep = {e["id"] for e in ents[:enterprises]} if isinstance(enterprises, int) else set(enterprises)
        raw["registry"]["enterprises"] = [e for e in ents if e["id"] in keep]
    if devices is not None:
        want = set(devices)
        raw["registry"]["devices"] = [d for d in raw["registry"].get("devices", []) if d["id"] in want]
    return raw


def point_at(raw: dict[str, Any], mqtt_port: int, influx_url: str, state_dir: Path, run_id: str) -> dict[str, Any]:
    """`raw` pointed at this run's broker, InfluxDB and state directory (alert store included)."""
    out = json.loads(json.dumps(raw))
    out["broker"] = {**out.get("broker", {}), "host": "127.0.0.1", "port": mqtt_port,
                     "topic_prefix": f"envwatch-{run_id}", "client_id": f"quality-{run_id}",
                     "shared_group": None}
    # A loaded machine answers the ingest's first-value lookups of a catch-up slowly: wait, not fail.
    out["influxdb"] = {"url": influx_url, "api": "v1", "database": "quality", "timeout_s": 120}
    out["ingest"] = {**out.get("ingest", {}), "state_dir": str(state_dir)}
    out.pop("store", None)  # default: SQLite under ingest.state_dir
    return out


def scenario_events(source: Path | dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    raw: Any = yaml.safe_load(source.read_text(encoding="utf-8")) if isinstance(source, Path) else source
    items = raw.get("events", []) if isinstance(raw, dict) else raw
    return [dict(e) for e in items or []]


def resolve_events(events: list[dict[str, Any]], origin: datetime, raw_city: dict[str, Any]) -> list[dict[str, Any]]:
    """Events with absolute start times (offsets counted from `origin`), reduced to the city's
    stations and devices."""
    mns = {st["mn"] for e in raw_city["registry"]["enterprises"] for o in e["outlets"] for st in o["stations"]}
    ents = {e["id"] for e in raw_city["registry"]["enterprises"]}
    devs = {d["id"] for d in raw_city["registry"].get("devices", [])}
    out = []
    for ev in events:
        if ev["kind"] == "hotspot":
            if ev.get("device") not in devs or (ev.get("params") or {}).get("enterprise") not in ents:
                continue
        elif str(ev.get("station")) not in mns:
            continue
        start = str(ev.get("start", "+0s"))
        t = origin + parse_duration(start) if start.startswith("+") else as_utc(start)
        out.append({**ev, "start": iso_z(t)})
    return out


# ----------------------------------------------------------------------------------------------
# Scoring


def _t(s: str | datetime) -> datetime:
    return s if isinstance(s, datetime) else datetime.fromisoformat(s)


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> bool:
    return a0 < b1 and b0 < a1


def matches(alert: dict[str, Any], truth: dict[str, Any]) -> bool:
    """Whether an alert (export JSON shape) is a true positive for a truth record (same kind)."""
    if alert["kind"] != truth["kind"]:
        return False
    if truth["kind"] in RECEIPT_KINDS:
        return _revises(alert, truth)
    if not _overlap(_t(alert["window_start"]), _t(alert["window_end"]),
                    _t(truth["window_start"]), _t(truth["window_end"])):
        return False
    if truth["kind"] == "hotspot":
        return alert["station_mn"] == truth["device"] and alert["pollutant"] == truth["pollutant"]
    if (alert["enterprise_id"], alert["outlet_id"]) != (truth["enterprise_id"], truth["outlet_id"]):
        return False
    # A station-level alert (pollutant "": offline, flag_abuse, multivariate_anomaly) covers every channel.
    return truth["pollutant"] is None or alert["pollutant"] in ("", truth["pollutant"])


def _revises(alert: dict[str, Any], truth: dict[str, Any]) -> bool:
    """A data_revision alert (receipt-hour window) revises the event's readings: same outlet and
    pollutant, and a revised reading listed in its evidence lies in the event's span."""
    if (alert["enterprise_id"], alert["outlet_id"], alert["pollutant"]) != (
            truth["enterprise_id"], truth["outlet_id"], truth["pollutant"]):
        return False
    e0, e1 = _t(truth["event_start"]), _t(truth["event_end"])
    return any(e0 <= _t(rv["time"]) < e1 for rv in (alert.get("evidence") or {}).get("revisions") or [])


def touches(alert: dict[str, Any], truth: dict[str, Any]) -> bool:
    """Whether an alert lies on the station (device) and time of an injected event, any kind."""
    if not _overlap(_t(alert["window_start"]), _t(alert["window_end"]),
                    _t(truth["window_start"]), _t(truth["window_end"])):
        return False
    if truth["kind"] == "hotspot":
        return alert["station_mn"] == truth["device"]
    return (alert["enterprise_id"], alert["outlet_id"]) == (truth["enterprise_id"], truth["outlet_id"])


@dataclass
class KindScore:
    kind: str
    truth: int = 0
    alerts: int = 0
    tp: int = 0
    found: int = 0
    collateral: int = 0
    clean_fp: int = 0
    attributed: int = 0  # hotspot: TP alerts attributed to the truth enterprise
    named: int = 0  # multivariate_anomaly: TP alerts whose evidence.channels name the injected channel
    graded: int = 0  # data_revision: TP alerts with the severity the scenario expects (params.severity)
    missed: list[dict[str, Any]] = field(default_factory=list)
    false: list[dict[str, Any]] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return self.tp / self.alerts if self.alerts else None

    @property
    def precision_excl(self) -> float | None:
        n = self.tp + self.clean_fp
        return self.tp / n if n else None

    @property
    def recall(self) -> float | None:
        return self.found / self.truth if self.truth else None


def score(alerts: list[dict[str, Any]], truth: list[dict[str, Any]], kinds: Iterable[str] = KINDS) -> dict[str, KindScore]:
    out = {k: KindScore(k) for k in kinds}
    for a in alerts:
        out.setdefault(a["kind"], KindScore(a["kind"]))
    for r in truth:
        out.setdefault(r["kind"], KindScore(r["kind"]))
    for k, s in out.items():
        mine = [a for a in alerts if a["kind"] == k]
        events = [r for r in truth if r["kind"] == k]
        s.truth, s.alerts = len(events), len(mine)
        for a in mine:
            hits = [r for r in events if matches(a, r)]
            if hits:
                s.tp += 1
                if k == "hotspot" and a["enterprise_id"] in {r["enterprise_id"] for r in hits}:
                    s.attributed += 1
                channels = (a.get("evidence") or {}).get("channels") or []
                if k == "multivariate_anomaly" and any(r["pollutant"] in channels for r in hits):
                    s.named += 1
                if k == "data_revision" and any(a["severity"] == (r.get("params") or {}).get("severity") for r in hits):
                    s.graded += 1
            elif any(touches(a, r) for r in truth):
                s.collateral += 1
                s.false.append(a | {"_class": "collateral"})
            else:
                s.clean_fp += 1
                s.false.append(a | {"_class": "clean"})
        for r in events:
            if any(matches(a, r) for a in mine):
                s.found += 1
            else:
                s.missed.append(r)
    return out


def _fmt(x: float | None) -> str:
    return "   -" if x is None else f"{x:4.2f}"


def table(scores: dict[str, KindScore]) -> str:
    head = (f"{'kind':24s} {'truth':>5s} {'alerts':>6s} {'TP':>4s} {'coll.':>5s} {'clean FP':>8s} "
            f"{'precision':>9s} {'excl.coll':>9s} {'recall':>6s}")
    lines = [head, "-" * len(head)]
    tot = KindScore("all")
    for k in sorted(scores, key=lambda k: (KINDS.index(k) if k in KINDS else 99, k)):
        s = scores[k]
        lines.append(f"{k:24s} {s.truth:5d} {s.alerts:6d} {s.tp:4d} {s.collateral:5d} {s.clean_fp:8d} "
                     f"{_fmt(s.precision):>9s} {_fmt(s.precision_excl):>9s} {_fmt(s.recall):>6s}")
        for name in ("truth", "alerts", "tp", "found", "collateral", "clean_fp"):
            setattr(tot, name, getattr(tot, name) + getattr(s, name))
    lines.append("-" * len(head))
    lines.append(f"{'all kinds':24s} {tot.truth:5d} {tot.alerts:6d} {tot.tp:4d} {tot.collateral:5d} {tot.clean_fp:8d} "
                 f"{_fmt(tot.precision):>9s} {_fmt(tot.precision_excl):>9s} {_fmt(tot.recall):>6s}")
    hs = scores.get("hotspot")
    if hs is not None:
        acc = hs.attributed / hs.tp if hs.tp else None
        lines.append(f"hotspot attribution: {hs.attributed}/{hs.tp} true-positive alerts attributed to the "
                     f"truth enterprise = {_fmt(acc).strip()}")
    mv = scores.get("multivariate_anomaly")
    if mv is not None and mv.tp:
        lines.append(f"multivariate_anomaly: the injected channel is among evidence.channels in {mv.named}/{mv.tp} "
                     f"true-positive alerts")
    rv = scores.get("data_revision")
    if rv is not None and rv.tp:
        lines.append(f"data_revision: {rv.graded}/{rv.tp} true-positive alerts have the expected severity")
    return "\n".join(lines)


def details(scores: dict[str, KindScore], truth: list[dict[str, Any]]) -> str:
    """Every miss and every false positive, one line each (what to look at when a kind is poor)."""
    lines = []
    for k, s in scores.items():
        for r in s.missed:
            lines.append(f"MISSED {k:22s} {r['station_mn'] or r['device']} {r['enterprise_id']}/{r['outlet_id'] or ''} "
                         f"{r['pollutant']} {r['window_start']}..{r['window_end']}")
        for a in s.false:
            lines.append(f"FP[{a['_class']:10s}] {k:22s} {a['station_mn']} {a['enterprise_id']}/{a['outlet_id']} "
                         f"{a['pollutant'] or '-'} {a['window_start']}..{a['window_end']} value={a.get('value')} "
                         f"{_brief_evidence(a.get('evidence') or {})}")
    return "\n".join(lines)


def _brief_evidence(ev: dict[str, Any]) -> str:
    keys = ("pattern", "channels", "score", "threshold", "minutes", "valid_minutes", "stopped_minutes", "valid_hours",
            "marked_share", "hours_by_mark", "silent_from", "silent_until", "factor", "n_points", "stuck_from",
            "stuck_until", "local_day", "candidates")
    return json.dumps({k: ev[k] for k in keys if k in ev}, ensure_ascii=False)[:400]


def attribution_lines(alerts: list[dict[str, Any]], truth: list[dict[str, Any]]) -> str:
    """Per hotspot truth event: the alerts matched and the enterprise each was attributed to."""
    lines = []
    for r in (r for r in truth if r["kind"] == "hotspot"):
        got = [a for a in alerts if a["kind"] == "hotspot" and matches(a, r)]
        attrs = ", ".join(f"{a['enterprise_id'] or '(none)'}" for a in got) or "no alert"
        lines.append(f"  {r['device']:6s} {r['pollutant']:5s} plume of {r['enterprise_id']:16s} "
                     f"{r['event_start']}: {len(got)} alert(s) -> {attrs}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The run


@dataclass
class Result:
    scores: dict[str, KindScore]
    alerts: list[dict[str, Any]]
    truth: list[dict[str, Any]]
    published: int
    counters: dict[str, Any]
    eval_range: tuple[datetime, datetime]
    timings: dict[str, float]
    detect_seconds: dict[str, float]


_PUBLISHER = """\
import sys
from config.loader import load
from devtools.simulate import run
s = load(sys.argv[1], env={})
n = run(s, speedup=0, duration=float(sys.argv[2]), start=sys.argv[3], mobile=True, scenario=sys.argv[4],
        truth=sys.argv[5], seed=int(sys.argv[6]))
print("PUBLISHED", n, flush=True)
"""


def run_quality(raw_city: dict[str, Any], events: list[dict[str, Any]], *, days: int = 3,
                start: str | datetime = DEFAULT_START, seed: int = 11, warmup_hours: float = 1.0,
                eval_days: float | None = None, kinds: Iterable[str] | None = None, workdir: Path | None = None, reuse: bool = False,
                log: Log = print) -> Result:
    """Run the whole path once and score it. `events` have absolute ISO start times (resolve_events).

    Evaluated range: the last `eval_days` days (None: all), never the first `warmup_hours`.
    `reuse`: `workdir` holds a kept run; skip publishing and ingesting, detect again on its InfluxDB data.
    """
    t0 = as_utc(start)
    t1 = t0 + timedelta(days=days)
    own_dir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="envwatch-quality-")) if workdir is None else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    services = []
    cfg_path, scen_path, truth_path = work / "city.yaml", work / "scenario.yaml", work / "truth.jsonl"
    try:
        clock = time.perf_counter()
        if reuse:
            # Detect again on the data a kept run left in InfluxDB (same city, scenario and truth).
            influxd = start_influxd(work / "services", free_port())
            services.append(influxd)
            mapping = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
            mapping["influxdb"]["url"] = influxd.url
            settings = from_mapping(mapping, env={})
            Path(settings.store_url().removeprefix("sqlite:///")).unlink(missing_ok=True)
            published, counters = 0, {}
            # The truth again from the kept scenario: the data is the same, but what the truth
            # file lists (e.g. implied events) may have changed since that run.
            events_kept = [e for e in load_scenario(scen_path, t0, settings) if e.start < t1]
            write_truth(truth_path, settings, events_kept, seed)
        else:
            mosq = start_mosquitto(work / "services", free_port())
            services.append(mosq)
            influxd = start_influxd(work / "services", free_port())
            services.append(influxd)
            run_id = f"{os.getpid()}-{int(time.time())}"
            mapping = point_at(raw_city, mosq.port, influxd.url, work / "state", run_id)
            settings = from_mapping(mapping, env={})
            cfg_path.write_text(yaml.safe_dump(mapping, allow_unicode=True, sort_keys=False), encoding="utf-8")
            scen_path.write_text(yaml.safe_dump({"events": events}, allow_unicode=True, sort_keys=False),
                                 encoding="utf-8")
        timings["services"] = time.perf_counter() - clock
        if not reuse:
            published, counters = _publish_and_ingest(settings, cfg_path, scen_path, truth_path, t0, t1, seed, log,
                                                      timings)
        truth = [json.loads(line) for line in truth_path.read_text(encoding="utf-8").splitlines() if line.strip()]

        e0 = t0 + timedelta(hours=warmup_hours)
        if eval_days is not None:
            e0 = max(e0, t1 - timedelta(days=eval_days))
        rng = (e0, t1)
        detect_seconds, receipt = _detect(settings, rng, (t0, t1), kinds, log)
        timings["detect"] = sum(detect_seconds.values())

        from detect.cli import export_alerts
        alerts_path = work / "alerts.jsonl"
        wanted = set(kinds) if kinds else set(KINDS)
        with alerts_path.open("w", encoding="utf-8") as fh:
            export_alerts(settings, rng[0], rng[1], fh, kinds=[k for k in KINDS if k in wanted and k not in RECEIPT_KINDS])
            if receipt is not None:
                export_alerts(settings, receipt[0], receipt[1], fh, kinds=[k for k in RECEIPT_KINDS if k in wanted])
        alerts = [json.loads(line) for line in alerts_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        # Alerts of the evaluated range only (a daily window may start before it: it is still owned by it).
        truth_in = [r for r in truth if r["kind"] in wanted and not _is_trap(r) and _overlap(_t(r["window_start"]), _t(r["window_end"]), *rng)]
        scores = score(alerts, truth_in, [k for k in KINDS if k in wanted])
        return Result(scores, alerts, truth_in, published, counters, rng, timings, detect_seconds)
    finally:
        for svc in reversed(services):
            try:
                svc.stop()
            except Exception as exc:  # noqa: BLE001 - report, keep stopping the others
                log(f"warning: stopping {svc.name}: {exc}")
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def _publish_and_ingest(settings: Settings, cfg_path: Path, scen_path: Path, truth_path: Path, t0: datetime,
                        t1: datetime, seed: int, log: Log, timings: dict[str, float]) -> tuple[int, dict[str, Any]]:
    from ingest.consumer import Ingest

    ing = Ingest(settings)
    ing.start()
    try:
        if not ing.wait_subscribed(30):
            raise RuntimeError("the ingest did not get its subscription within 30 s")
        clock = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen(
            [sys.executable, "-c", _PUBLISHER, str(cfg_path), str((t1 - t0).total_seconds()), iso_z(t0),
             str(scen_path), str(truth_path), str(seed)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        last = time.perf_counter()
        while proc.poll() is None:
            time.sleep(0.5)
            if time.perf_counter() - last >= 15:
                last = time.perf_counter()
                c = ing.counters()
                log(f"  publishing: {c['acked']} acked by the ingest, {c['readings_written']} lines written, "
                    f"buffer {c['buffer_depth']} ({time.perf_counter() - clock:.0f} s)")
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"simulator exited with {proc.returncode}:\n{err[-3000:]}")
        published = int(next(line.split()[1] for line in out.splitlines() if line.startswith("PUBLISHED")))
        timings["publish"] = time.perf_counter() - clock
        log(f"published {published} messages in {timings['publish']:.0f} s; draining the ingest ...")
        # Drained when every message is acked and the buffer written; stuck only when InfluxDB takes
        # no line for 300 s (a loaded machine writes slowly, but it writes).
        stall, last, last_log = time.monotonic(), (-1, -1), time.monotonic()
        while True:
            c = ing.counters()
            if c["acked"] >= published and c["buffer_depth"] == 0:
                break
            if (c["acked"], c["readings_written"]) != last:
                stall, last = time.monotonic(), (c["acked"], c["readings_written"])
            if time.monotonic() - stall > 300:
                raise RuntimeError(f"ingest not drained (nothing written for 300 s): {c}")
            if time.monotonic() - last_log >= 30:
                last_log = time.monotonic()
                log(f"  draining: {c['readings_written']} lines written, buffer {c['buffer_depth']}")
            time.sleep(0.2)
        timings["ingest"] = time.perf_counter() - clock
    finally:
        ing.stop(timeout=60)
    c = ing.counters()
    log(f"ingest: {c['messages_in']} messages in, {c['acked']} acked, {c['readings_written']} lines written, "
        f"dead letters {c['dead_letters'] or 0} ({timings['ingest']:.0f} s from the first publish)")
    return published, c


def _is_trap(record: dict[str, Any]) -> bool:
    """A near-miss trap: injected so that nothing fires (see the module docstring)."""
    return bool((record.get("params") or {}).get("trap"))


def _detect(settings: Settings, rng: tuple[datetime, datetime], simulated: tuple[datetime, datetime],
            kinds: Iterable[str] | None, log: Log) -> tuple[dict[str, float], tuple[datetime, datetime] | None]:
    """Every selected kind over `rng`; the receipt kinds over the hours the simulated span's
    revisions were received in (None: no revision received)."""
    from detect.runner import Runner

    runner = Runner(settings)
    seconds: dict[str, float] = {}
    receipt = _receipt_range(runner.influx, simulated)
    try:
        for det in runner._selected(list(kinds) if kinds else None):
            span = receipt if det.kind in RECEIPT_KINDS else rng
            if span is None:
                log(f"  detect {det.kind:24s} no revision received: nothing to judge")
                continue
            clock = time.perf_counter()
            report = runner.evaluate_range(span[0], span[1], kinds=[det.kind])[0]
            seconds[det.kind] = time.perf_counter() - clock
            log(f"  detect {det.kind:24s} {report.windows:4d} windows {report.alerts:5d} alerts "
                f"{seconds[det.kind]:6.1f} s")
    finally:
        runner.store.close()
        runner.influx.close()
    return seconds, receipt


def _receipt_range(influx: Any, simulated: tuple[datetime, datetime]) -> tuple[datetime, datetime] | None:
    """The whole wall-clock hours in which the ingest received revisions of the simulated span."""
    from ingest.revisions import read_revisions

    received = [rv.received_at for rv in read_revisions(influx, simulated[0], simulated[1], by="time")]
    if not received:
        return None
    first = min(received).replace(minute=0, second=0, microsecond=0)
    return first, max(received).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


# ----------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=DEMO, help="city (registry) YAML [demo-city.yaml]")
    ap.add_argument("--scenario", type=Path, default=SCENARIO, help="injected events [scenario-quality.yaml]")
    ap.add_argument("--days", type=int, default=3, help=f"simulated days (>= {SCENARIO_DAYS}) [3]")
    ap.add_argument("--start", default=DEFAULT_START, help=f"simulation start, a China midnight [{DEFAULT_START}]")
    ap.add_argument("--enterprises", default=None,
                    help="keep the first N enterprises, or these comma-separated ids [all]")
    ap.add_argument("--devices", default=None, help="comma-separated device ids to keep [all]")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--eval-days", type=float, default=1.0,
                    help="evaluate the last N days (the scenario's events lie in the last one) [1]")
    ap.add_argument("--warmup-hours", type=float, default=1.0,
                    help="hours after the simulation start never evaluated [1]")
    ap.add_argument("--kinds", default=None, help="comma-separated kinds to evaluate [all]")
    ap.add_argument("--keep", type=Path, default=None, help="keep services' data, truth and alerts in this directory")
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep DIR of an earlier run: only detect and score again on its data")
    ap.add_argument("--json", type=Path, default=None, help="write the scores as JSON here")
    ap.add_argument("--details", action="store_true", help="list every miss and false positive")
    args = ap.parse_args(argv)
    if args.reuse and args.keep is None:
        ap.error("--reuse needs --keep DIR (the directory of the earlier run)")
    if args.days < SCENARIO_DAYS:
        ap.error(f"--days must be >= {SCENARIO_DAYS}: the events lie in the last day, after two days of history")

    clock = time.perf_counter()
    events = scenario_events(args.scenario)
    ents = None if args.enterprises is None else (
        int(args.enterprises) if args.enterprises.isdigit() else args.enterprises.split(","))
    raw = city_mapping(args.config, ents, args.devices.split(",") if args.devices else None)
    origin = as_utc(args.start) + timedelta(days=args.days - SCENARIO_DAYS)
    resolved = resolve_events(events, origin, raw)
    n_st = sum(len(o["stations"]) for e in raw["registry"]["enterprises"] for o in e["outlets"])
    print(f"city: {len(raw['registry']['enterprises'])} enterprises, {n_st} stations, "
          f"{len(raw['registry'].get('devices', []))} devices; {len(resolved)} injected events "
          f"({dict(Counter(e['kind'] for e in resolved))}); {args.days} days from {args.start}, seed {args.seed}",
          flush=True)
    kinds = args.kinds.split(",") if args.kinds else None

    def log(msg: str) -> None:
        print(msg, flush=True)

    res = run_quality(raw, resolved, days=args.days, start=args.start, seed=args.seed,
                      warmup_hours=args.warmup_hours, eval_days=args.eval_days, kinds=kinds, workdir=args.keep,
                      reuse=args.reuse, log=log)
    print()
    source = "data of the kept run" if args.reuse else f"{res.published} messages published"
    print(f"evaluated {iso_z(res.eval_range[0])} .. {iso_z(res.eval_range[1])}; {source}; "
          f"timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in res.timings.items())
          + f"; total {time.perf_counter() - clock:.0f} s")
    print()
    print(table(res.scores))
    print(attribution_lines(res.alerts, res.truth))
    if args.details:
        print()
        print(details(res.scores, res.truth) or "(no misses, no false positives)")
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()},
            "eval_range": [iso_z(t) for t in res.eval_range], "published": res.published, "timings": res.timings,
            "detect_seconds": res.detect_seconds,
            "kinds": {k: {"truth": s.truth, "alerts": s.alerts, "tp": s.tp, "found": s.found,
                          "collateral": s.collateral, "clean_fp": s.clean_fp, "precision": s.precision,
                          "precision_excl_collateral": s.precision_excl, "recall": s.recall,
                          **({"attributed": s.attributed} if k == "hotspot" else {}),
                          **({"channel_named": s.named} if k == "multivariate_anomaly" else {}),
                          **({"severity_as_expected": s.graded} if k == "data_revision" else {})}
                      for k, s in res.scores.items()},
        }, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
