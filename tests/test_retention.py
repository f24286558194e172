"""History against a real InfluxDB 1.x: retention policies and continuous queries created once
and left alone after, aggregates that land in the 5-minute policy with each field's name and
type, and the dashboards' choice of policy by time range."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from collector.config import CollectorConfig, InfluxSettings, RetentionSettings
from collector.retention import (
    EVENTS,
    Keeper,
    RetentionError,
    backfill,
    continuous_queries,
    ensure,
    influx_duration,
    parse_go_duration,
)
from dashboards.build import RP
from dashboards.macros import interpolate
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.schema import schema

pytestmark = pytest.mark.integration

S = 1_000_000_000
T0 = 1_800_000_000 * S  # on a 5-minute boundary


def influx(service: Running, database: str) -> InfluxSettings:
    return InfluxSettings(url=service.url(), database=database)


def rows(service: Running, database: str, query: str) -> list[dict[str, Any]]:
    """Every row of every series, as column -> value, with the series' name and tags."""
    out = []
    for one in localservices.influx_query(service, database, query):
        series: dict[str, Any] = dict(one)
        for values in series.get("values") or []:
            row = dict(zip(series["columns"], values, strict=True))
            out.append({**row, "_name": series.get("name"), **(series.get("tags") or {})})
    return out


def policies(service: Running, database: str) -> dict[str, str]:
    found = rows(service, database, f'SHOW RETENTION POLICIES ON "{database}"')
    return {str(row["name"]): str(row["duration"]) for row in found}


def cq_names(service: Running, database: str) -> set[str]:
    found = rows(service, database, "SHOW CONTINUOUS QUERIES")
    return {str(row["name"]) for row in found if row["_name"] == database}


def test_durations_both_ways() -> None:
    assert influx_duration(0) == "INF"
    assert influx_duration(14 * 86400) == "1209600s"
    assert parse_go_duration("336h0m0s") == 14 * 86400
    assert parse_go_duration("0s") == 0
    with pytest.raises(RetentionError):
        parse_go_duration("two weeks")


def test_every_measurement_but_events_is_aggregated_under_its_own_field_names() -> None:
    queries = continuous_queries(RetentionSettings(), "db", "autogen")
    by_measurement = {
        name.removeprefix("rackwatch_5m_").rsplit("_", 1)[0]: q for name, q in queries.items()
    }
    covered = set(by_measurement)
    assert covered == set(schema().measurements) - EVENTS
    pdu = by_measurement["pdu"]
    assert 'mean("power_w") AS "power_w"' in pdu
    assert 'last("load_state") AS "load_state"' in pdu  # a state: its last value
    assert 'last("energy_kwh") AS "energy_kwh"' in pdu  # a counter: its last value
    assert 'INTO "db"."rackwatch_5m"."pdu" FROM "db"."autogen"."pdu"' in pdu
    assert "RESAMPLE EVERY 300s FOR 900s" in pdu
    assert pdu.endswith("GROUP BY time(300s), * END")


async def test_ensure_creates_once_then_changes_nothing(influxdb: Running, database: str) -> None:
    settings = RetentionSettings(raw_duration=14 * 86400)
    async with httpx.AsyncClient(trust_env=False) as client:
        first = await ensure(client, influx(influxdb, database), settings)
        assert "retention policy rackwatch_5m (34560000s)" in first.created
        assert "retention policy rackwatch_forever (INF)" in first.created
        assert first.altered == ["retention policy autogen (1209600s)"]
        names = cq_names(influxdb, database)
        assert names == set(continuous_queries(settings, database, "autogen"))
        assert len(first.created) == 2 + len(names)

        again = await ensure(client, influx(influxdb, database), settings)
        assert not again.changed(), again
        assert policies(influxdb, database) == {
            "autogen": "336h0m0s",
            "rackwatch_5m": "9600h0m0s",
            "rackwatch_forever": "0s",
        }
        assert cq_names(influxdb, database) == names

        # A changed interval replaces every query; the policies stay.
        ten = RetentionSettings(raw_duration=14 * 86400, interval=600)
        changed = await ensure(client, influx(influxdb, database), ten)
        assert len(changed.dropped) == len(names)
        assert len(changed.created) == len(names)
        assert not changed.altered
        assert cq_names(influxdb, database) == set(continuous_queries(ten, database, "autogen"))


async def test_raw_data_is_left_alone_unless_asked(influxdb: Running, database: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        report = await ensure(client, influx(influxdb, database), RetentionSettings())
    assert not report.altered
    assert policies(influxdb, database)["autogen"] == "0s"  # InfluxDB's default: forever


async def test_aggregates_land_in_the_5_minute_policy(influxdb: Running, database: str) -> None:
    """The continuous queries' SELECT, run by hand over written data (no waiting for
    InfluxDB's CQ scheduler): means of gauges, last of states and counters, per series, with
    the raw field names, so a dashboard query reads both policies alike."""
    settings = RetentionSettings()
    target = influx(influxdb, database)
    lines = [
        f'pdu,site=s1,device=pdu-1 power_w=1000,load_state="normal",energy_kwh=10.0 {T0 + 10 * S}',
        f'pdu,site=s1,device=pdu-1 power_w=3000,load_state="near_overload",energy_kwh=10.5 '
        f"{T0 + 200 * S}",
        f"pdu,site=s1,device=pdu-2 power_w=500 {T0 + 20 * S}",
        f"pdu,site=s1,device=pdu-1 power_w=100 {T0 + 310 * S}",  # the next 5 minutes
        f"feed_power,site=s1,rack=A01,feed=A voltage_mismatch=true,feeds_note=1 {T0 + 5 * S}",
    ]
    async with httpx.AsyncClient(trust_env=False) as client:
        await ensure(client, target, settings)
        answer = await client.post(
            f"{influxdb.url()}/write", params={"db": database}, content="\n".join(lines)
        )
        assert answer.status_code == 204, answer.text
        await backfill(client, target, settings, T0, T0 + 600 * S)
    found = rows(influxdb, database, 'SELECT * FROM "rackwatch_5m"."pdu" GROUP BY "device"')
    pdu1 = [row for row in found if row["device"] == "pdu-1"]
    pdu2 = [row for row in found if row["device"] == "pdu-2"]
    first, second = pdu1
    assert first["time"] == T0
    assert first["power_w"] == 2000.0
    assert first["load_state"] == "near_overload"
    assert first["energy_kwh"] == 10.5
    assert second["time"] == T0 + 300 * S
    assert second["power_w"] == 100.0
    assert pdu2[0]["power_w"] == 500.0
    feed = rows(influxdb, database, 'SELECT "voltage_mismatch" FROM "rackwatch_5m"."feed_power"')
    assert [(row["time"], row["voltage_mismatch"]) for row in feed] == [(T0, True)]


async def test_the_dashboards_pick_raw_data_for_short_ranges_and_aggregates_for_long(
    influxdb: Running, database: str
) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        await ensure(client, influx(influxdb, database), RetentionSettings())

    def picked(time_range: str) -> str:
        (row,) = rows(influxdb, database, interpolate(RP.query, {}, time_range=time_range))
        return str(row["rp"])

    assert picked("6h") == "autogen"
    assert picked("2d") == "autogen"
    assert picked("3d") == "rackwatch_5m"
    assert picked("365d") == "rackwatch_5m"


async def test_the_v2_api_is_told_to_use_buckets_and_tasks() -> None:
    v2 = InfluxSettings(api="v2", url="http://127.0.0.1:9", org="o", bucket="b", token="t")
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(RetentionError, match="buckets and tasks"):
            await ensure(client, v2, RetentionSettings())


async def test_the_collectors_keeper_counts_a_failed_set_up_and_names_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = CollectorConfig.model_validate({"influxdb": {"url": "http://127.0.0.1:9"}})
    keeper = Keeper(config)
    task = asyncio.create_task(keeper.run())
    await asyncio.wait_for(keeper.attempted.wait(), 30)
    task.cancel()
    assert keeper.health_fields() == {"retention_errors_total": 1}
    assert not keeper.ready
    assert "retention: http://127.0.0.1:9/query: ConnectError" in caplog.text


async def test_the_collectors_keeper_sets_up_its_database(influxdb: Running, database: str) -> None:
    keeper = Keeper(CollectorConfig(influxdb=influx(influxdb, database)))
    await keeper.run()
    assert keeper.ready
    assert keeper.health_fields() == {"retention_errors_total": 0}
    assert "rackwatch_5m" in policies(influxdb, database)


def test_the_command_sets_up_and_then_reports_nothing_to_do(
    tmp_path: Path, influxdb: Running, database: str
) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "influxdb": {"url": influxdb.url(), "database": database},
                "retention": {"raw_duration": "14d"},
            }
        )
    )

    def retention(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "rackwatch.cli", "retention", "-c", str(config), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    first = retention()
    assert first.returncode == 0, first.stderr
    assert "created retention policy rackwatch_5m" in first.stdout
    assert "altered retention policy autogen (1209600s)" in first.stdout
    second = retention("--backfill", "1h")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "retention policies and continuous queries: in place, nothing changed",
        "aggregated the last 1h into rackwatch_5m",
    ]
    config.write_text(yaml.safe_dump({"influxdb": {"url": "http://127.0.0.1:9"}}))
    refused = retention()
    assert refused.returncode == 1
    assert refused.stderr.startswith("rackwatch retention: http://127.0.0.1:9/query: ")
