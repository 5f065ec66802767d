"""The contract every detector keeps, in the spirit of scikit-learn's check_estimator, checked for
every registered kind (detect.registry): a new detector is covered by adding its class.

    constructible with defaults; get_params/set_params round-trip (sklearn.clone); nothing happens
    in __init__; tags declared (labels and notice problem in zh-CN and en, a category); the same
    alerts twice on the same data; the same findings (alerts but their evidence) for one 24-hour
    window and for 24 one-hour windows, unless the class declares `window_invariant = False` and says why in `variance`.

The data: one China day of minute readings in a real InfluxDB for the stations of
tests/detect_helpers.py, with problems injected (an exceedance, a stuck value, missing minutes, a
silent station, zero while the flow runs, negative readings).
"""

from __future__ import annotations

import inspect
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sklearn.base import clone

from config.schema import InfluxSettings

from detect.base import CATEGORIES, Alert, Detector, Window
from detect.registry import detector_classes
from detect.runner import windows
from detect.source import ReadingSource
from core.influx import Influx
from notify.notices import LANGUAGES
from tests.detect_helpers import heartbeat_lines, lookup, minute_lines, utc, write

SO2, NOX, O2, FLOW, COD = "a21026", "a21002", "a19001", "a00000", "w01018"
DAY0 = utc(2024, 3, 1, 16)  # 2024-03-02 00:00 China time
DAY = timedelta(days=1)
KINDS = sorted(detector_classes())


def _gas(i: int) -> dict[str, dict[str, Any]]:
    """A running flue-gas stack: an exceedance in hours 3-4, zero SO2 with flow running in hours 9-10,
    negative NOx in hour 12, the SO2 reading stuck from hour 15 to 20."""
    hour = i // 60
    so2 = 50.0 + (i % 7) if hour in (3, 4) else 20.0 + (i % 5)
    if hour in (9, 10):
        so2 = 0.0
    if 15 <= hour < 21:
        so2 = 22.5
    nox = -3.0 if hour == 12 else 30.0 + (i % 3)
    return {SO2: {"avg": so2, "zs_avg": so2, "flag": "N"}, NOX: {"avg": nox, "zs_avg": nox, "flag": "N"},
            O2: {"avg": 9.0 + (i % 4) * 0.1, "flag": "N"}, FLOW: {"avg": 50.0 + (i % 9), "flag": "N"}}


def _water(i: int) -> dict[str, dict[str, Any]]:
    """A sewage outlet that sends only 30 minutes an hour in hours 6-7 (insufficient valid data)."""
    if i // 60 in (6, 7) and i % 60 >= 30:
        return {}
    return {COD: {"avg": 20.0 + (i % 6), "flag": "N"}, "w00000": {"avg": 10.0, "flag": "N"}}


def _old(i: int) -> dict[str, dict[str, Any]]:
    """An old boiler that falls silent from hour 13 to 16 (offline)."""
    if 13 * 60 <= i < 16 * 60:
        return {}
    return {"a34013": {"avg": 10.0 + (i % 4), "zs_avg": 10.0 + (i % 4), "flag": "N"},
            FLOW: {"avg": 30.0, "flag": "N"}}


@pytest.fixture(scope="module")
def day(influxd: Any) -> Any:
    """(source, lookup): a day before DAY0 (trailing history) and the day under test."""
    db = f"contract_{uuid.uuid4().hex[:12]}"
    httpx.post(f"{influxd.url}/query", data={"q": f'CREATE DATABASE "{db}"'}, timeout=10).raise_for_status()
    lk = lookup()
    influx = Influx(InfluxSettings(url=influxd.url, api="auto", database=db))
    start, n = DAY0 - DAY, 2 * 24 * 60
    lines = minute_lines(lk, "GAS01", start, n, lambda i: _gas(i - 24 * 60) if i >= 24 * 60 else _gas(0))
    lines += minute_lines(lk, "NOZS01", start, n, lambda i: _gas(0))
    lines += minute_lines(lk, "WAT01", start, n, lambda i: _water(i - 24 * 60) if i >= 24 * 60 else _water(0))
    lines += minute_lines(lk, "OLD2005", start, n, lambda i: _old(i - 24 * 60) if i >= 24 * 60 else _old(0))
    lines += heartbeat_lines(lk, "GAS01", start, 2 * 24 * 12, every_s=300)
    write(influx, lines)
    yield ReadingSource(influx), lk
    influx.close()


def _found(det: Detector, spans: list[Window], day: Any, evidence: bool = True) -> list[dict[str, Any]]:
    """The alerts of `det` over `spans`, by id; without `evidence`, the findings only."""
    source, lk = day
    alerts: list[Alert] = []
    for w in spans:
        alerts += det.detect(w, source, lk)
    found = sorted((a.to_json() for a in alerts), key=lambda a: a["id"])
    return found if evidence else [{k: v for k, v in a.items() if k != "evidence"} for a in found]


@pytest.mark.parametrize("kind", KINDS)
def test_constructible_with_defaults_and_nothing_happens_in_init(kind: str) -> None:
    cls = detector_classes()[kind]
    det = cls()
    params = det.get_params(deep=False)
    defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"}
    assert params == defaults, "__init__ stores its arguments as given, under their own names"
    assert set(vars(det)) == set(defaults), f"__init__ sets more than its parameters: {set(vars(det)) - set(defaults)}"


@pytest.mark.parametrize("kind", KINDS)
def test_parameters_round_trip(kind: str) -> None:
    det = detector_classes()[kind]()
    twin = clone(det)
    assert twin is not det and twin.get_params(deep=False) == det.get_params(deep=False)
    again = type(det)().set_params(**det.get_params(deep=False))
    assert again.get_params(deep=False) == det.get_params(deep=False)
    assert repr(again) == repr(det)


@pytest.mark.parametrize("kind", KINDS)
def test_tags_are_declared(kind: str) -> None:
    cls = detector_classes()[kind]
    assert cls.kind == kind and cls.category in CATEGORIES
    for lang in LANGUAGES:
        assert cls.labels.get(lang) and cls.problem.get(lang), (kind, lang)
    assert cls.window_invariant or cls.variance, "a detector that depends on its windows says why"


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_alerts_twice_on_the_same_data(kind: str, day: Any) -> None:
    det = detector_classes()[kind]()
    whole = [Window(DAY0, DAY0 + DAY)]
    assert _found(det, whole, day) == _found(clone(det), whole, day)


@pytest.mark.parametrize("kind", KINDS)
def test_one_day_window_finds_what_24_hour_windows_find(kind: str, day: Any) -> None:
    cls = detector_classes()[kind]
    if not cls.window_invariant:
        pytest.skip(f"{kind} declares window_invariant = False: {cls.variance}")
    det = cls()
    hours = list(windows(DAY0, DAY0 + DAY, 3600))
    assert len(hours) == 24
    # The findings are the same (ids, severity, value, limit); their evidence may describe what the
    # run could see so far (a stuck span up to its window's end), which the next run updates.
    assert _found(det, [Window(DAY0, DAY0 + DAY)], day, False) == _found(det, hours, day, False)


def test_the_injected_problems_are_found(day: Any) -> None:
    """The data set is not silent: the window checks above compare real alerts."""
    whole = [Window(DAY0, DAY0 + DAY)]
    found = {kind: len(_found(detector_classes()[kind](), whole, day)) for kind in KINDS}
    assert sum(1 for n in found.values() if n) >= 4, found
