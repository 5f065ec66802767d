"""Write config/examples/field-2016.yaml: a registry for every station in the 2016 field data.

    .venv/bin/python bench/make_field_registry.py [DATA_DIR] [OUT_FILE]

The field files (/work/shared/data/hj212-field-2016/*.h212, HJ/T 212-2005) come from about 290
data loggers of one Chinese city. Nothing in them says which enterprise a logger belongs to, so
the registry has ONE ENTERPRISE PER MN, each with one outlet holding that one station; grouping
by MN prefix would invent ownership the data does not show. (The digits after the two-letter
vendor prefix look like an administrative-division code, e.g. 130133; they are kept in the
enterprise's `industry` note, not used to merge loggers.)

What each station gets, from its own packets:
  - medium: the most frequent ST of 31 (flue gas -> gas) or 32 (wastewater -> water). ST=91 is
    "system interaction" and says nothing about the medium; a logger seen only with ST=91 is
    still registered (so its heartbeats are accepted, not dead-lettered as unknown) as a gas
    outlet without pollutants or limits.
  - pollutants: every pollutant code it sends, mapped 2005 -> 2017 with
    config.tables.code_2005_to_2017(); codes outside config/tables/pollutants.yaml (SB1..SB8
    equipment states, CON, 023, S04, ...) are ignored.
  - limits (assumed: the data is a city's mixed sources, no permits come with it):
      gas:   GB 13223-2011 coal-fired boiler, dust 30 / SO2 200 / NOx 200 mg/m3 hourly at 6 % O2;
      water: GB 18918-2002 grade 1B, COD 60 / NH3-N 8 mg/L, daily means (that standard's basis).
    A limit is only written for a pollutant the station actually sends.
Only packets whose framing holds (`##`, the 4-digit length equal to the data segment's, the CRC)
count: a corrupted packet's MN may be a mangled copy of a real one (three such MNs existed only
in packets failing the length check). MNs containing NUL bytes or other non-printable characters
are skipped too (field corruption).
Output is sorted by MN and byte-for-byte deterministic.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.tables import code_2005_to_2017, pollutant_codes  # noqa: E402
from ingest import hj212  # noqa: E402
from ingest.model import Reason, Rejected  # noqa: E402

DATA_DIR = Path("/work/shared/data/hj212-field-2016")
OUT_FILE = ROOT / "config" / "examples" / "field-2016.yaml"

GAS_LIMITS = {"a34013": 30.0, "a21026": 200.0, "a21002": 200.0}
WATER_LIMITS = {"w01018": 60.0, "w21003": 8.0}
_KEY = re.compile(rb"(?:^|;)(ST|MN)=([^;]*)")
_CP = re.compile(rb"CP=&&(.*)&&")
_FRAMING = frozenset({Reason.NO_HEADER, Reason.BAD_LENGTH, Reason.LENGTH_MISMATCH, Reason.CRC_MISMATCH})


@dataclass
class Seen:
    """What one MN was seen sending."""

    st: Counter[str] = field(default_factory=Counter)
    codes: set[str] = field(default_factory=set)


def _header_stripped(line: bytes) -> bytes:
    # `##dddd` prefix before the data segment; parsing is loose, so a bad header is fine here.
    return line[6:] if line.startswith(b"##") else line


def framed(raw: bytes) -> bool:
    """Whether `raw` passes HJ 212's header, length and CRC checks (whatever its fields hold)."""
    try:
        hj212.decode(raw)
    except Rejected as exc:
        return exc.reason not in _FRAMING
    return True


def scan(files: list[Path]) -> dict[str, Seen]:
    """Every printable MN in the files with its STs and the 2017 codes of what it sent."""
    to_2017 = code_2005_to_2017()
    known = pollutant_codes()
    seen: dict[str, Seen] = defaultdict(Seen)
    for path in files:
        for raw in path.read_bytes().split(b"\n"):
            if not framed(raw):
                continue
            seg = _header_stripped(raw.rstrip(b"\r\n"))
            keys = {k.decode(): v.decode("utf-8", "replace") for k, v in _KEY.findall(seg.split(b"CP=")[0])}
            mn = keys.get("MN")
            if not mn or not mn.isprintable():
                continue  # no MN, or NUL / control bytes in it: corrupted, skip
            entry = seen[mn]
            if keys.get("ST") in ("31", "32", "91"):
                entry.st[keys["ST"]] += 1
            entry.codes |= _codes(seg, to_2017, known)
    return dict(seen)


def _codes(seg: bytes, to_2017: dict[str, str], known: frozenset[str]) -> set[str]:
    m = _CP.search(seg)
    if not m:
        return set()
    out = set()
    for item in re.split(rb"[;,]", m.group(1)):
        name = item.split(b"=", 1)[0].decode("ascii", "replace")
        if "-" not in name:
            continue  # DataTime=, HeartbeatTime=, ...
        code = name.split("-", 1)[0]
        code = to_2017.get(code, code)
        if code in known:
            out.add(code)
    return out


def medium_of(st: Counter[str]) -> str:
    """gas for ST 31, water for ST 32 (most frequent wins); system-only loggers default to gas."""
    gas, water = st.get("31", 0), st.get("32", 0)
    return "water" if water > gas else "gas"


def enterprise(mn: str, s: Seen) -> dict[str, Any]:
    """One enterprise with one outlet and one station for this MN."""
    medium = medium_of(s.st)
    codes = sorted(s.codes)
    outlet: dict[str, Any] = {"id": "DW001" if medium == "water" else "DA001", "name": "", "medium": medium}
    if medium == "gas":
        outlet["name"] = "废气排放口"
        if codes:
            outlet["reference_o2"] = 6.0
        outlet["limits"] = {c: {"hourly": v, "unit": "mg/m3", "standard": "GB 13223-2011 (assumed: coal boiler)"}
                            for c, v in GAS_LIMITS.items() if c in codes}
    else:
        outlet["name"] = "废水排放口"
        outlet["limits"] = {c: {"daily": v, "unit": "mg/L", "standard": "GB 18918-2002 一级B (assumed)"}
                            for c, v in WATER_LIMITS.items() if c in codes}
    outlet["stations"] = [{"mn": mn, "pollutants": codes}]
    sts = "/".join(sorted(s.st)) or "?"
    division = mn[2:8] if mn[2:8].isdigit() else "?"
    return {
        "id": f"F-{mn}",
        "name": f"现场站点 {mn}",
        "industry": f"field data 2016, ST {sts}, division code {division}" + ("" if codes else ", system packets only"),
        "outlets": [outlet],
    }


def registry_document(seen: dict[str, Seen]) -> dict[str, Any]:
    return {
        "broker": {"host": "127.0.0.1", "port": 1883, "topic_prefix": "envwatch"},
        "influxdb": {"url": "http://127.0.0.1:8086", "api": "auto", "database": "envwatch_field"},
        "ingest": {"state_dir": ".state"},
        "registry": {"enterprises": [enterprise(mn, seen[mn]) for mn in sorted(seen)], "devices": []},
    }


HEADER = """\
# GENERATED by bench/make_field_registry.py from /work/shared/data/hj212-field-2016 -- do not edit.
# One enterprise per MN (ownership is not in the data), one outlet and one station each.
# Limits are ASSUMED (no permits come with the data): flue gas GB 13223-2011 coal boiler
# dust 30 / SO2 200 / NOx 200 mg/m3 hourly at 6 % O2; wastewater GB 18918-2002 grade 1B
# COD 60 / NH3-N 8 mg/L daily. Loggers seen only with ST=91 are registered without pollutants.
"""


def main(argv: list[str]) -> int:
    data_dir = Path(argv[1]) if len(argv) > 1 else DATA_DIR
    out = Path(argv[2]) if len(argv) > 2 else OUT_FILE
    seen = scan(sorted(data_dir.glob("*.h212")))
    text = yaml.safe_dump(registry_document(seen), allow_unicode=True, sort_keys=False, default_flow_style=None,
                          width=120)
    out.write_text(HEADER + text, encoding="utf-8")
    print(f"{out}: {len(seen)} stations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
