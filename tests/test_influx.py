"""core.influx against the real influxd of the test session (InfluxDB 1.6)."""

from __future__ import annotations

import time
from datetime import datetime

import pandas as pd
import pytest

from devtools.devservices import Service
from config.lookup import Lookup
from config.schema import InfluxSettings, Registry
from core.influx import Influx, InfluxRejected, InfluxUnavailable, api_from_version
from core.time import CHINA_TZ
from ingest.model import Packet
from ingest.schema import station_lines


@pytest.fixture
def influx(influx_settings: InfluxSettings):
    with Influx(influx_settings) as client:
        yield client


def test_version_detection_gives_v1(influx: Influx) -> None:
    assert influx.api == "v1"
    assert influx.version and influx.version.startswith("1.")
    assert influx.ping()


@pytest.mark.parametrize("header, api", [("1.8.10", "v1"), ("v2.7.4", "v2"), ("2.0.0", "v2"),
                                         ("3.0.1", "v3"), ("v3.1.0-core", "v3"), (None, "v1"), ("x", "v1")])
def test_api_from_version_header(header: str | None, api: str) -> None:
    assert api_from_version(header) == api


def test_write_query_round_trip(influx: Influx) -> None:
    influx.write(["m,site=a v=1.5,s=\"ok\" 1700000000", "m,site=b v=2 1700000060"])
    series = influx.query("SELECT v, s FROM m GROUP BY site")
    assert [(s.name, s.tags) for s in series] == [("m", {"site": "a"}), ("m", {"site": "b"})]
    assert series[0].columns == ["time", "v", "s"]
    assert series[0].values == [[1700000000, 1.5, "ok"]]
    assert influx.query("SELECT v FROM m WHERE site = $site", params={"site": "b"})[0].values == [[1700000060, 2]]


def test_same_line_twice_is_one_point(influx: Influx) -> None:
    line = "m,site=a v=1 1700000000"
    influx.write([line])
    influx.write([line, line])
    assert influx.query("SELECT count(v) FROM m")[0].values == [[0, 1]]


def test_ensure_database_is_idempotent(influx_settings: InfluxSettings) -> None:
    fresh = influx_settings.model_copy(update={"database": influx_settings.database + "_x"})
    with Influx(fresh) as influx:
        influx.ensure_database()
        influx.ensure_database()
        influx.write(["m v=1 1700000000"])
        assert influx.query("SELECT v FROM m")[0].values == [[1700000000, 1]]


def _registry() -> Registry:
    return Registry.model_validate({"enterprises": [{
        "id": "E 1", "name": "Power plant", "outlets": [{
            "id": "DA001", "medium": "gas", "reference_o2": 6,
            "stations": [{"mn": "MN0001", "pollutants": ["a21026", "a00000"], "units": {"a00000": "m3/h"}}],
        }],
    }]})


def test_station_lines_round_trip(influx: Influx) -> None:
    ref = Lookup(_registry()).station("MN0001")
    packet = Packet(
        mn="MN0001", cn="2061", data_time=datetime(2024, 3, 1, 8, 0, tzinfo=CHINA_TZ),
        values={"a21026": {"avg": 35.2, "min": 30.0, "max": 40.1, "zs_avg": 38.0, "flag": "N"},
                "a00000": {"avg": 36000.0, "cou": 36000.0, "flag": "N"}},
        original_codes={"a21026": "02", "a00000": "B02"})
    influx.write(station_lines(packet, ref))
    df = influx.query_frame("SELECT * FROM station_hour GROUP BY *")
    assert len(df) == 2
    so2 = df[df.pollutant == "a21026"].iloc[0]
    assert so2.time == pd.Timestamp("2024-03-01T00:00:00Z")  # 08:00 UTC+8
    assert str(df.time.dt.tz) == "UTC"
    assert (so2.mn, so2.enterprise, so2.outlet, so2.medium, so2.code) == ("MN0001", "E 1", "DA001", "gas", "02")
    assert (so2.avg, so2.zs_avg, so2.flag) == (35.2, 38.0, "N")
    flow = df[df.pollutant == "a00000"].iloc[0]
    assert flow.avg == pytest.approx(10.0) and flow.cou == 36000.0  # m3/h -> m3/s; cou not rescaled
    assert flow.code == "B02"


def test_query_frame_empty_and_epochs(influx: Influx) -> None:
    assert influx.query_frame("SELECT * FROM nothing_here").empty
    influx.write(["m v=1 1700000000123"], precision="ms")
    df = influx.query_frame("SELECT v FROM m", epoch="ms")
    assert df.time[0] == pd.Timestamp(1700000000123, unit="ms", tz="UTC")


def test_bad_line_protocol_is_rejected_with_the_servers_message(influx: Influx) -> None:
    with pytest.raises(InfluxRejected) as info:
        influx.write(["m,site=a v= 1700000000"])
    assert info.value.status == 400 and not info.value.partial
    assert "unable to parse" in str(info.value) and "m,site=a v= 1700000000" in info.value.bad_lines

    with pytest.raises(InfluxRejected) as info:  # one bad line among good ones: the rest is written
        influx.write(["m v=1 1700000000", "m v=oops 1700000001", "m v=3 1700000002"])
    assert info.value.partial and info.value.bad_lines == ["m v=oops 1700000001"]
    assert [r[1] for r in influx.query("SELECT v FROM m")[0].values] == [1, 3]

    with pytest.raises(InfluxRejected, match="field type conflict"):
        influx.write(['m v="text" 1700000005'])


def test_query_errors_are_rejected(influx: Influx) -> None:
    with pytest.raises(InfluxRejected, match="error parsing query"):
        influx.query("SELEKT nonsense")
    missing = Influx(influx.settings.model_copy(update={"database": "no_such_db"}))
    with pytest.raises(InfluxRejected, match="database not found"):
        missing.write(["m v=1 1700000000"])
    missing.close()


def test_stopped_server_is_unavailable_then_recovers(influx: Influx, influxd: Service) -> None:
    influx.write(["m v=1 1700000000"])  # a pooled keep-alive connection now exists
    influxd.stop()
    try:
        assert not influx.ping()
        with pytest.raises(InfluxUnavailable, match="unreachable"):
            influx.write(["m v=2 1700000001"])
        with pytest.raises(InfluxUnavailable):
            influx.query("SELECT v FROM m")
    finally:
        influxd.restart()
    influx.write(["m v=2 1700000001"])
    assert [r[1] for r in influx.query("SELECT v FROM m")[0].values] == [1, 2]


def test_unreachable_at_detection_is_unavailable(influx_settings: InfluxSettings) -> None:
    from devtools.devservices import free_port

    nowhere = influx_settings.model_copy(update={"url": f"http://127.0.0.1:{free_port()}"})
    with Influx(nowhere) as influx, pytest.raises(InfluxUnavailable):
        influx.write(["m v=1 1700000000"])


def test_write_throughput_5000_line_batches(influx: Influx) -> None:
    """Not a benchmark gate, a floor that catches a pathological regression; prints the rate."""
    batches = [[f"station_rtd,mn=MN{(b * 5000 + i) % 500:04d},enterprise=E1,outlet=DA001,medium=gas,"
                f"pollutant=a21026,code=02 rtd={i * 0.1},flag=\"N\" {1700000000 + b * 10 + i // 500}"
                for i in range(5000)] for b in range(10)]
    influx.write(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        influx.write(batch)
    rate = 5000 * 9 / (time.perf_counter() - start)
    print(f"\ninflux write: {rate:,.0f} lines/s in 5000-line batches")
    assert rate > 5000


def test_v2_code_path_maps_errors(influx_settings: InfluxSettings) -> None:
    """No 2.x/3.x server is installable here: this only checks that the influxdb-client path runs
    and maps errors (influxd 1.6 has no /api/v2/write, so the write is a 404 rejection)."""
    v2 = InfluxSettings.model_validate({**influx_settings.model_dump(), "api": "v2", "org": "o", "token": "t"})
    with Influx(v2) as influx, pytest.raises(InfluxRejected, match=r"HTTP 404"):
        influx.write(["m v=1 1700000000"])
    from devtools.devservices import free_port

    down = v2.model_copy(update={"url": f"http://127.0.0.1:{free_port()}"})
    with Influx(down) as influx, pytest.raises(InfluxUnavailable, match="Connection refused"):
        influx.write(["m v=1 1700000000"])
