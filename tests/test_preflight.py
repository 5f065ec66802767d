"""center.preflight against the real session services, a secured Mosquitto, and ports nobody serves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from center.broker_acl import CONF_FILE, write_acl
from center.devservices import free_port, start_mosquitto
from center.preflight import DependencyError, check_broker, check_dependencies, require_dependencies
from config.schema import Settings

Factory = Callable[..., Settings]


def test_all_present(settings_factory: Factory) -> None:
    problems = check_dependencies(settings_factory())
    assert [p.name for p in problems] == ["broker", "influxdb", "store"]
    assert all(p.ok for p in problems), problems
    assert "exists" in problems[1].detail and "empty" in problems[2].detail
    assert require_dependencies(settings_factory()) is not None


def test_influxdb_down_names_it_and_says_what_to_do(settings_factory: Factory) -> None:
    port = free_port()
    s = settings_factory(influxdb={"url": f"http://127.0.0.1:{port}"})
    influx = check_dependencies(s)[1]
    assert not influx.ok
    assert influx.detail == (f"InfluxDB at http://127.0.0.1:{port} not reachable (connection refused): "
                             "start it (`envwatch services up`) or fix influxdb.url")


def test_missing_v1_database_is_fine_because_the_ingest_creates_it(settings_factory: Factory) -> None:
    s = settings_factory(influxdb={"database": "never_created_here"})
    influx = check_dependencies(s)[1]
    assert influx.ok and "will be created" in influx.detail


def test_broker_down_and_store_unreachable_are_all_reported(settings_factory: Factory) -> None:
    mqtt_port, pg_port = free_port(), free_port()
    s = settings_factory(broker={"port": mqtt_port},
                         store={"url": f"postgresql://envwatch:s3cret@127.0.0.1:{pg_port}/envwatch"})
    with pytest.raises(DependencyError) as err:
        require_dependencies(s)
    failed = {p.name: p.detail for p in err.value.problems}
    assert set(failed) == {"broker", "store"}
    assert failed["broker"].startswith(f"MQTT broker at 127.0.0.1:{mqtt_port} not reachable (connection refused)")
    assert "start PostgreSQL or fix store.url" in failed["store"]
    assert "s3cret" not in str(err.value) and f"127.0.0.1:{pg_port}" in str(err.value)
    assert str(err.value).startswith("missing dependencies:\n  broker: ")


def test_sqlite_store_under_a_file_is_reported(settings_factory: Factory, tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    s = settings_factory(ingest={"state_dir": str(tmp_path / "not-a-dir" / "state")})
    store = check_dependencies(s)[2]
    assert not store.ok and "ingest.state_dir" in store.detail


def test_broker_credentials_are_checked_with_mqtt_connect(settings_factory: Factory, tmp_path: Path) -> None:
    port = free_port()
    good = settings_factory(broker={"port": port, "client_id": "envwatch", "password": "right"})
    write_acl(good, tmp_path / "acl", bind="127.0.0.1", warn=lambda _w: None)
    svc = start_mosquitto(tmp_path / "broker", free_port(), extra_conf=(tmp_path / "acl" / CONF_FILE).read_text())
    try:
        ok = _retry_until_listening(lambda: check_broker(good.broker))
        # The check's own account (one per connection), and the broker's version.
        assert ok.ok and "connected as envwatch-check" in ok.detail and "(mosquitto version 2." in ok.detail
        assert "WARNING" not in ok.detail
        wrong = settings_factory(broker={"port": port, "client_id": "envwatch", "password": "wrong"})
        bad = check_broker(wrong.broker)
        assert not bad.ok
        assert bad.detail.startswith(f"MQTT broker at 127.0.0.1:{port} refused the MQTT connection (")
        assert "broker.username / broker.password" in bad.detail
    finally:
        svc.stop()


def test_shared_subscription_on_mosquitto_is_warned_about(settings_factory: Factory,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Mosquitto does not keep shared subscriptions across a restart: configuring one is warned about."""
    shared = settings_factory(broker={"shared_group": "envwatch-ingest"})
    with caplog.at_level("WARNING", logger="envwatch.preflight"):
        p = check_broker(shared.broker)
    assert p.ok and "WARNING: broker.shared_group is set, and mosquitto version 2.0" in p.detail
    assert any("does not keep shared subscriptions" in r.getMessage() for r in caplog.records)
    plain = check_broker(settings_factory().broker)
    assert plain.ok and "mosquitto version" in plain.detail and "WARNING" not in plain.detail


def _retry_until_listening(check: Callable[[], object]) -> object:
    # The service start waited for devservices' own listener; ours opens in the same start-up.
    for _ in range(100):
        result = check()
        if "not reachable" not in getattr(result, "detail", ""):
            return result
    return result


def test_fresh_influxd_without_any_database(settings_factory: Factory, tmp_path: Path) -> None:
    """A brand-new server answers SHOW DATABASES with a series that has no values at all."""
    from center.devservices import start_influxd

    fresh = start_influxd(tmp_path / "influxd", free_port())
    try:
        influx = check_dependencies(settings_factory(influxdb={"url": fresh.url}))[1]
    finally:
        fresh.stop()
    assert influx.ok and "will be created" in influx.detail
