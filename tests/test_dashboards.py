"""The Grafana dashboards: committed JSON equals what the code builds, the JSON is a valid
dashboard, every panel query runs against a real InfluxDB filled by the demo pipeline and
returns series, and everything a panel names is documented in docs/schema.md."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboards.build import DASHBOARDS, OUT, render
from dashboards.demodata import filled_by_demo
from dashboards.macros import interpolate, variables_used
from rackwatch import demo, localservices
from rackwatch.localservices import Running

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "docs" / "schema.md"
PROVISIONING = ROOT / "dashboards" / "provisioning"

# Panels may come back empty only where they read something the demo does not produce yet.
# Each entry is a measurement or measurement.field, with who is adding it; shrink it as the
# demo grows. (Undocumented fields of these measurements are let through too, until then.)
NOT_IN_DEMO_YET = {
    # The demo's accelerator host has Ascend NPUs (recorded npu-smi output); throttle reasons,
    # ECC counters and XID events come from NVML only, and the demo has no GPU.
    "accelerator./^throttle_/": "NVIDIA only: no GPU in the demo",
    "accelerator.ecc_corrected_total": "NVIDIA only: no GPU in the demo",
    "accelerator.ecc_uncorrected_total": "NVIDIA only: no GPU in the demo",
    "accelerator_event": "NVIDIA XID events: no GPU in the demo",
    "alert": "issue 7: alert transitions",
    "pdu_line": "no three-phase Raritan or delta ServerTech in the demo",
    "pdu_inlet.load_state": "the demo's PDUs judge phases, not inlets",
    "pdu_bank.load_state": "the demo's PDUs judge phases, not banks",
    "alert_active": "the demo has no alerting; tests/test_alerting_active.py runs the panel",
    "dc_power.battery_voltage_v": "the demo's eNexus has its batteries on the bus: no own reading",
    "dc_battery.voltage_v": "the demo's eNexus has its batteries on the bus: no own reading",
}


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        name: json.loads((OUT / f"{name}.json").read_text(encoding="utf-8")) for name in DASHBOARDS
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str, str, str]]:
    """(dashboard, panel title, refId, InfluxQL) of every panel query."""
    return [
        (name, panel["title"], target["refId"], target["query"])
        for name, dashboard in dashboards().items()
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]


def variable_queries() -> list[tuple[str, str, str]]:
    return [
        (name, variable["name"], variable["query"])
        for name, dashboard in dashboards().items()
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]


def named(query: str) -> tuple[str, set[str]]:
    """The measurement a query reads and the fields (or /regex/ field keys) it names."""
    found = re.search(r'FROM (?:"[^"]+"\.)?"([^"]+)"', query)
    assert found, query
    select = query.split(" FROM ", 1)[0]
    fields = set(re.findall(r'\(\s*"([^"]+)"', select)) | set(re.findall(r"\((/[^/]+/)", select))
    return found.group(1), fields


def pending(query: str) -> str | None:
    measurement, fields = named(query)
    for key in (measurement, *(f"{measurement}.{f}" for f in fields)):
        if key in NOT_IN_DEMO_YET:
            return NOT_IN_DEMO_YET[key]
    return None


# --- generated from code ---------------------------------------------------------------------


def test_committed_json_is_what_the_code_builds() -> None:
    """Drift check: after editing dashboards/build.py, run `python -m dashboards.build`."""
    for name in DASHBOARDS:
        committed = (OUT / f"{name}.json").read_text(encoding="utf-8")
        assert committed == render(name), f"dashboards/json/{name}.json is stale"
    assert sorted(p.stem for p in OUT.glob("*.json")) == sorted(DASHBOARDS)


# --- valid Grafana dashboards ----------------------------------------------------------------


def test_each_dashboard_is_grafana_dashboard_json() -> None:
    uids = set()
    for name, dashboard in dashboards().items():
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"]), name
        uids.add(dashboard["uid"])
        assert dashboard["title"].startswith("rackwatch / ")
        assert dashboard["schemaVersion"] >= 36  # Grafana 9.1+: datasource refs by uid
        assert "rackwatch" in dashboard["tags"]
        variables = dashboard["templating"]["list"]
        assert variables[0] == variables[0] | {"name": "datasource", "type": "datasource"}
        assert variables[0]["query"] == "influxdb"
        assert variables[1]["name"] == "rp"  # the retention policy for the time range
        assert variables[1]["refresh"] == 2  # asked again on every time range change
        for variable in variables[1:]:
            assert variable["type"] == "query"
            assert variable["query"].startswith(("SHOW TAG VALUES", 'SELECT "rp"'))
            assert variable["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
        defined = {variable["name"] for variable in variables}
        ids: set[int] = set()
        cells: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            assert panel["id"] not in ids
            ids.add(panel["id"])
            grid = panel["gridPos"]
            assert set(grid) == {"x", "y", "w", "h"}
            assert grid["x"] >= 0
            assert grid["x"] + grid["w"] <= 24
            assert grid["h"] >= 1
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not area & cells, f"{name}: {panel['title']} overlaps another panel"
            cells |= area
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
            for target in panel["targets"]:
                assert target["rawQuery"] is True
                assert target["resultFormat"] in ("time_series", "table")
                query = target["query"]
                # Every query is bound in time: the dashboard's range, or (what fires now)
                # the last few minutes.
                assert "$timeFilter" in query or "WHERE time > now() - " in query, query
                if "GROUP BY time(" in query:
                    assert "GROUP BY time($__interval)" in query, query
                assert variables_used(query) <= defined, query
            if "repeat" in panel:
                assert panel["repeat"] in defined


def test_provisioning_files_point_at_the_dashboards() -> None:
    import yaml

    datasources = yaml.safe_load((PROVISIONING / "datasources" / "rackwatch.yaml").read_text())
    assert datasources["apiVersion"] == 1
    (influx,) = datasources["datasources"]
    assert influx["type"] == "influxdb"
    assert influx["jsonData"]["dbName"] == "rackwatch"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "rackwatch.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].endswith("rackwatch")


# --- one unit per axis -----------------------------------------------------------------------

# Grafana's unit for each schema unit a timeseries panel may draw.
GRAFANA_UNITS = {
    "W": "watt",
    "A": "amp",
    "V": "volt",
    "%": "percent",
    "°C": "celsius",
    "B": "bytes",
}


def test_a_timeseries_panel_draws_one_unit_on_its_axis() -> None:
    """Fields of different units (current and voltage) on one axis read as nonsense; a
    panel's unit is the unit of every field it draws."""
    from telemetry.schema import schema

    fields = schema().fields
    mixed = []
    for name, dashboard in dashboards().items():
        for panel in panels(dashboard):
            if panel["type"] != "timeseries":
                continue
            units = {
                fields[field].unit
                for target in panel["targets"]
                for field in named(target["query"])[1]
                if field in fields and fields[field].unit
            }
            unit = panel["fieldConfig"]["defaults"]["unit"]
            expected = {GRAFANA_UNITS.get(u, unit) for u in units}
            if expected and expected != {unit}:
                mixed.append(f"{name} / {panel['title']}: {unit} for fields in {units}")
    assert not mixed, "\n".join(mixed)


def test_the_renderer_writes_values_in_their_units() -> None:
    pytest.importorskip("matplotlib")
    from dashboards.render import fmt

    assert fmt(80 * 1024**3, "bytes") == "80.0 GiB"
    assert fmt(512, "bytes") == "512 B"
    assert fmt(12.34, "amp") == "12.3 A"
    assert fmt(229.6, "volt") == "230 V"
    assert fmt(1500, "watt") == "1.50 kW"


# --- documented in docs/schema.md ------------------------------------------------------------


def schema_sections() -> list[set[str]]:
    """The backticked names of each section of docs/schema.md (split at headings)."""
    sections = re.split(r"^#+ ", SCHEMA.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return [set(re.findall(r"`([^`\s]+)`", section)) for section in sections]


def test_every_measurement_and_field_a_panel_names_is_in_the_schema() -> None:
    sections = schema_sections()
    missing = []
    for name, title, ref, query in queries():
        measurement, fields = named(query)
        documented = [names for names in sections if measurement in names]
        if not documented:
            if measurement not in NOT_IN_DEMO_YET:
                missing.append(f"{name} / {title} {ref}: measurement {measurement}")
            continue
        known = set().union(*documented)
        for field in fields:
            if field.startswith("/"):
                ok = any(re.search(field.strip("/"), k) for k in known)
            else:
                ok = field in known
            if not ok and pending(query) is None:
                missing.append(f"{name} / {title} {ref}: {measurement}.{field}")
    assert not missing, "not in docs/schema.md:\n" + "\n".join(missing)


# --- against a real InfluxDB filled by the demo ----------------------------------------------


@pytest.fixture(scope="module")
def demo_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """InfluxDB once the demo's pipeline has landed three points of everything panels show,
    and every device's health (with its kind) has come in."""
    shown = {named(query)[0] for *_, query in queries() if pending(query) is None}

    def every_kind_known(influx: Running) -> bool:
        return set(demo.kinds(influx)) >= set(demo.DEMO_DEVICES)

    with filled_by_demo(tmp_path_factory.mktemp("demo"), shown, until=every_kind_known) as influx:
        yield influx


def first_value(influx: Running, query: str) -> str | None:
    for series in localservices.influx_query(influx, demo.DATABASE, query):
        values = series.get("values")
        if isinstance(values, list) and values:
            return str(values[0][1])
    return None


@pytest.mark.integration
@pytest.mark.parametrize(("dashboard", "variable", "query"), variable_queries())
def test_variables_take_tag_values_from_influxdb(
    demo_influx: Running, dashboard: str, variable: str, query: str
) -> None:
    sent = interpolate(query, dict.fromkeys(variables_used(query)))
    source = re.search(r'FROM (?:"[^"]+"\.)?"([^"]+)"', query)
    if first_value(demo_influx, sent) is None:
        assert source, f"{dashboard}: ${variable} has no values: {sent}"
        assert source.group(1) in NOT_IN_DEMO_YET, f"{dashboard}: ${variable} has no values: {sent}"


@pytest.mark.integration
@pytest.mark.parametrize(("dashboard", "title", "ref", "query"), queries())
def test_every_panel_query_returns_series(
    demo_influx: Running, dashboard: str, title: str, ref: str, query: str
) -> None:
    """With every variable at All, and again with a real site picked."""
    everything: dict[str, list[str] | None] = dict.fromkeys(variables_used(query))
    runs = [everything]
    if "site" in everything:
        site = first_value(demo_influx, 'SHOW TAG VALUES WITH KEY = "site"')
        assert site == "qiyang-a1"
        runs.append({**everything, "site": [site]})
    for variables in runs:
        sent = interpolate(query, variables)
        series = localservices.influx_query(demo_influx, demo.DATABASE, sent)
        if pending(query) is None:
            assert series, f"{dashboard} / {title} {ref} found nothing: {sent}"
        else:
            assert not series, f"{dashboard} / {title} {ref} has data now: shrink NOT_IN_DEMO_YET"


@pytest.mark.integration
async def test_every_panel_reads_the_5_minute_aggregates(demo_influx: Running) -> None:
    """With `$rp` at the 5-minute policy (a long time range), after the continuous queries'
    SELECTs run by hand over the demo's data: every panel that shows raw data shows its
    aggregates too, under the same field names."""
    import time

    import httpx

    from collector.config import InfluxSettings, RetentionSettings
    from collector.retention import backfill, ensure

    influx = InfluxSettings(url=demo_influx.url(), database=demo.DATABASE)
    settings = RetentionSettings()
    async with httpx.AsyncClient(trust_env=False) as client:
        await ensure(client, influx, settings)  # the demo's collector did it too: no change
        now = time.time_ns()
        await backfill(client, influx, settings, now - 3600 * 10**9, now + 600 * 10**9)
    empty = []
    for name, title, ref, query in queries():
        if '"$rp".' not in query or pending(query) is not None:
            continue
        variables: dict[str, list[str] | None] = dict.fromkeys(variables_used(query))
        variables["rp"] = [settings.policy]
        # A difference needs two 5-minute points, more than the demo ran: its max() is read.
        query = re.sub(r"non_negative_\w+\((max\(\"\w+\"\))(?:, 1s)?\)", r"\1", query)
        sent = interpolate(query, variables, time_range="1h", interval="5m")
        if not localservices.influx_query(demo_influx, demo.DATABASE, sent):
            empty.append(f"{name} / {title} {ref}: {sent}")
    assert not empty, "nothing in the 5-minute policy:\n" + "\n".join(empty)


@pytest.mark.integration
def test_load_state_shows_every_phase_line_and_bank_that_nears_overload(
    influxdb: Running, database: str
) -> None:
    """A PDU with two inlets (or two daisy-chained units) has an L1 on each: one near
    overload must not hide behind the other's `normal`; nor a three-phase Raritan's pole
    (`pdu_line`) or a bank near overload."""
    import time

    import httpx

    now = time.time_ns()
    pdu = "site=s1,room=r1,row=A,rack=A01,device=pdu-1"
    lines = [
        f'pdu_phase,{pdu},unit=1,inlet=2,phase=1 load_state="near_overload" {now - 2 * 10**9}',
        f'pdu_phase,{pdu},unit=1,inlet=1,phase=1 load_state="normal" {now - 10**9}',
        f'pdu_line,{pdu},unit=1,inlet=1,line=L2 load_state="near_overload" {now - 10**9}',
        f'pdu_bank,{pdu},unit=2,bank=3 load_state="overload" {now - 10**9}',
    ]
    answer = httpx.post(
        f"{influxdb.url()}/write", params={"db": database}, content="\n".join(lines)
    )
    assert answer.status_code == 204, answer.text
    by_title = {panel["title"]: panel for panel in panels(dashboards()["pdu-detail"])}
    shown = set()
    for target in by_title["Load state"]["targets"]:
        query = target["query"]
        sent = interpolate(query, dict.fromkeys(variables_used(query)), interval="1m")
        for series in localservices.influx_query(influxdb, database, sent):
            tags = series["tags"]
            values = series["values"]
            assert isinstance(tags, dict)
            assert isinstance(values, list)
            where = "/".join(f"{k}={v}" for k, v in sorted(tags.items()) if v and k != "device")
            shown |= {(series["name"], where, row[1]) for row in values}
    assert ("pdu_phase", "inlet=2/phase=1/unit=1", "near_overload") in shown
    assert ("pdu_phase", "inlet=1/phase=1/unit=1", "normal") in shown
    assert ("pdu_line", "inlet=1/line=L2/unit=1", "near_overload") in shown
    assert ("pdu_bank", "bank=3/unit=2", "overload") in shown


# --- the demo's own view ---------------------------------------------------------------------


@pytest.mark.integration
def test_the_demo_lists_each_device_under_its_kind(demo_influx: Running) -> None:
    """Every PDU, including those that report per inlet only (Raritan, Eaton), with its power;
    the CRAH under cooling only; both UPSes under UPS."""
    views = dict(demo.LATEST)
    pdus = demo.latest(demo_influx, "pdu", views["pdu"])
    assert [row[0] for row in pdus] == sorted(d for d in demo.DEMO_DEVICES if d.startswith("pdu-"))
    assert all(isinstance(row[2], float) and row[2] > 0 for row in pdus), pdus
    assert all(row[1] for row in pdus)  # the model, from whichever measurement had the power
    assert [row[0] for row in demo.latest(demo_influx, "ups", views["ups"])] == [
        "ups-main",
        "ups-row-a",
    ]
    cooling = [row[0] for row in demo.latest(demo_influx, "cooling", views["cooling"])]
    assert {"crah-1", "inrow-a01"} <= set(cooling)
    shown = demo.render(demo_influx, 0.0)
    assert shown.count("\npdu-a0") == 6


@pytest.mark.integration
def test_the_pdu_dashboard_shows_pdus_that_report_per_inlet(demo_influx: Running) -> None:
    """Power and energy of the Eaton (inlet totals only), its phases' load state."""
    by_title = {panel["title"]: panel for panel in panels(dashboards()["pdu-detail"])}

    def devices(title: str) -> set[str]:
        """The devices a panel's queries find, every variable at All."""
        found = set()
        for target in by_title[title]["targets"]:
            sent = interpolate(target["query"], dict.fromkeys(variables_used(target["query"])))
            for series in localservices.influx_query(demo_influx, demo.DATABASE, sent):
                tags = series.get("tags")
                if isinstance(tags, dict):
                    found.add(str(tags["device"]))
        return found

    every_pdu = {d for d in demo.DEMO_DEVICES if d.startswith("pdu-")}
    assert devices("Power") == every_pdu
    assert "pdu-a03-b" in devices("Energy per interval")
    assert "pdu-a03-b" in devices("Load state")
    ups_devices = localservices.influx_query(
        demo_influx, demo.DATABASE, 'SHOW TAG VALUES FROM "ups" WITH KEY = "device"'
    )
    assert "crah-1" not in str(ups_devices)


@pytest.mark.integration
def test_the_ups_dashboard_shows_load_and_power_of_rfc1628_upses(demo_influx: Running) -> None:
    """The Generex CS141 (UPS-MIB: load and power per output phase only) beside the APC
    (its own totals), in Load and Output power."""
    by_title = {panel["title"]: panel for panel in panels(dashboards()["ups"])}
    for title in ("Load", "Output power"):
        found = set()
        for target in by_title[title]["targets"]:
            sent = interpolate(target["query"], dict.fromkeys(variables_used(target["query"])))
            for series in localservices.influx_query(demo_influx, demo.DATABASE, sent):
                tags = series.get("tags")
                assert isinstance(tags, dict)
                found.add(str(tags["device"]))
        assert found == {"ups-main", "ups-row-a"}, title


@pytest.mark.integration
def test_the_dc_and_environment_dashboard_shows_the_demos_plant_and_monitor(
    demo_influx: Running,
) -> None:
    """Each DC power panel finds the demo's eNexus plant and nothing else; each environment
    panel its AVTECH monitor (beside the Smart-UPS's own probe), the device variable at All."""
    dashboard = dashboards()["dc-power-environment"]
    section = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            section = panel["title"]
            continue
        shown = [t["query"] for t in panel["targets"] if pending(t["query"]) is None]
        if not shown:
            continue  # e.g. battery voltage: the eNexus has none of its own
        found = set()
        for query in shown:
            sent = interpolate(query, dict.fromkeys(variables_used(query)))
            for series in localservices.influx_query(demo_influx, demo.DATABASE, sent):
                tags = series.get("tags")
                assert isinstance(tags, dict)
                found.add(str(tags["device"]))
        if section == "DC power":
            assert found == {"dc-plant-a"}, panel["title"]
        else:
            assert "env-a01" in found, panel["title"]
