"""The Grafana dashboards: committed JSON equals what the code builds, the JSON is a valid
dashboard, every panel query runs against a real InfluxDB filled by the demo pipeline and
returns series, and everything a panel names is documented in docs/schema.md."""

from __future__ import annotations

import json
import re
import shutil
import time
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
    # Profiling counters: NVIDIA only, and off unless nvidia.profiling_interval_s is set.
    "accelerator.sm_active_pct": "NVIDIA GPM only: no GPU in the demo",
    "accelerator.sm_occupancy_pct": "NVIDIA GPM only: no GPU in the demo",
    "accelerator.nvlink_tx_bytes_per_s": "NVIDIA GPM only: no GPU in the demo",
    "accelerator.enc_util_pct": "NVIDIA only: no GPU in the demo",
    # hccn_tool was captured on one chip of another server, not on the demo's eight 910B3:
    # test_the_roce_panels_show_what_hccn_tool_printed runs these panels on that capture.
    "accelerator.roce_link_up": "no hccn_tool capture of the demo's NPUs",
    "accelerator.roce_tx_bytes_total": "no hccn_tool capture of the demo's NPUs",
    "accelerator.roce_tx_pfc_packets_total": "no hccn_tool capture of the demo's NPUs",
    "accelerator.optical_tx_power_w": "no hccn_tool capture of the demo's NPUs",
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
    """The measurement a query reads and the fields (or /regex/ field keys) it names: those of
    the SELECT that reads the measurement (the innermost, where subqueries rank or sum)."""
    found = re.search(r'SELECT ((?:(?!SELECT ).)*?) FROM (?:"[^"]+"\.)?"([^"]+)"', query)
    assert found, query
    select = found.group(1)
    fields = set(re.findall(r'\(\s*"([^"]+)"', select)) | set(re.findall(r"\((/[^/]+/)", select))
    return found.group(2), fields


def pending(query: str) -> str | None:
    measurement, fields = named(query)
    for key, why in NOT_IN_DEMO_YET.items():
        listed, _, field = key.partition(".")
        if listed != measurement:
            continue
        if not field or field in fields:
            return why
        if field.startswith("/") and any(re.search(field.strip("/"), f) for f in fields):
            return why
    return None


# Panels that list only what is wrong now (a unit off, a UPS on battery, a device silent):
# empty while all is well, as in the demo. test_exception_lists_show_what_is_wrong_now
# gives them something to find.
EXCEPTION_LISTS = {
    "Cooling units not running now",
    "UPSes not on normal output now",
    "Devices not answering now",
    "Inlets above 27 C now",
}


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
                # Every query is bound in time: the dashboard's range, its last minutes (a
                # table of latest values), or (what fires now) the last few minutes.
                assert re.search(r"\$timeFilter|WHERE time > (now\(\)|\$\{__to\}ms) - ", query), (
                    query
                )
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
    "B/s": "Bps",
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

    def every_device_polled_thrice(influx: Running) -> bool:
        # Per device, not per measurement: a panel that differences a counter (energy per
        # interval) needs two polls of each PDU, and a loaded machine polls some devices late.
        series = localservices.influx_query(
            influx, demo.DATABASE, 'SELECT count("up") FROM "rackwatch_agent" GROUP BY "device"'
        )
        polls = {
            str(one["tags"]["device"]): int(one["values"][0][1])  # type: ignore[index]
            for one in series
            if isinstance(one.get("tags"), dict)
        }
        return set(demo.kinds(influx)) >= set(demo.DEMO_DEVICES) and all(
            polls.get(device, 0) >= 3 for device in demo.DEMO_DEVICES
        )

    with filled_by_demo(
        tmp_path_factory.mktemp("demo"), shown, until=every_device_polled_thrice
    ) as influx:
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
        if title in EXCEPTION_LISTS:
            continue  # ran without an error; what it finds: the exception test
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

    now = time.time_ns()
    pdu = "site=s1,room=r1,row=A,rack=A01,device=pdu-1"
    lines = [
        f'pdu_phase,{pdu},unit=1,inlet=2,phase=1 load_state="near_overload" {now - 2 * 10**9}',
        f'pdu_phase,{pdu},unit=1,inlet=1,phase=1 load_state="normal" {now - 10**9}',
        f'pdu_line,{pdu},unit=1,inlet=1,line=L2 load_state="near_overload" {now - 10**9}',
        f'pdu_bank,{pdu},unit=2,bank=3 load_state="overload" {now - 10**9}',
    ]
    write(influxdb, database, "\n".join(lines))
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


# --- drill-down: no walls of series above the row --------------------------------------------

LEVELS = ("hub", "site", "room", "row", "rack", "device")
ABOVE_ROW = ("hub", "site", "room")
# Tags a panel above the row may draw one series (or table row) per: a hub has a few sites,
# tens of rooms, hundreds of rows, a few clusters, agents and collectors; never 20,000 racks,
# 40,000 PDUs or 70,000 cards.
TAGS_ABOVE_ROW = {"site", "room", "row", "cluster", "agent", "collector"}
TOP_MAX = 20
# Alert lists are as long as what fires, not as the hub: they may name a rack or a device.
ALERT_LISTS = {"alert", "alert_active"}
# Device data the roll-ups sum: above the row, its aggregates come from the roll-ups.
ROLLED_UP = {"pdu", "pdu_inlet", "pdu_phase", "accelerator_host"}


def level(dashboard: dict[str, Any]) -> str:
    """The drill-down level a view is at: the deepest place variable that takes one value
    (no All, no multi); a view whose place variables all take All is a hub view."""
    single = {
        v["name"]
        for v in dashboard["templating"]["list"]
        if v["type"] == "query" and not v.get("multi", True)
    }
    if single & {"device", "host", "plant", "monitor"}:
        return "device"
    return next((name for name in ("rack", "row", "room", "site") if name in single), "hub")


def outermost(query: str) -> str:
    """The query without anything in parentheses: subqueries and function arguments gone."""
    while re.search(r"\([^()]*\)", query):
        query = re.sub(r"\([^()]*\)", "", query)
    return query


def series_tags(query: str) -> set[str]:
    """The tags of the outermost GROUP BY: what one series (or table row) is drawn per."""
    found = re.search(r"GROUP BY (.*?)(?: fill| LIMIT| SLIMIT| ORDER|$)", outermost(query))
    return set(re.findall(r'"(\w+)"', found.group(1))) if found else set()


def bounded(query: str) -> int | None:
    """How many rows a top-N query returns at most: top()/bottom() over a subquery's series,
    or the outermost LIMIT; None: unbounded."""
    top = re.match(r'SELECT (?:top|bottom)\("\w+", (\d+)\)', query)
    if top and not series_tags(query):
        return int(top.group(1))
    limit = re.search(r" LIMIT (\d+)$", outermost(query))
    return int(limit.group(1)) if limit and not series_tags(query) else None


def test_each_view_has_a_drill_down_level() -> None:
    """Hub, site, room, row and rack views, and the device views; a row or rack view fixes
    every level above it (row A is in every room)."""
    levels = {name: level(dashboard) for name, dashboard in dashboards().items()}
    assert levels["hub-overview"] == "hub"
    assert levels["site"] == "site"
    assert levels["room"] == "room"
    assert levels["rows-and-racks"] == "row"
    assert levels["rack"] == "rack"
    for name in ("pdu-detail", "cooling", "ups", "dc-power-environment", "accelerators"):
        assert levels[name] == "device", name
    for name, dashboard in dashboards().items():
        single = {v["name"] for v in dashboard["templating"]["list"] if not v.get("multi", True)}
        if levels[name] in ("row", "rack"):
            place = ("site", "room", "row", "rack")
            assert set(place[: place.index(levels[name]) + 1]) <= single, name


def test_no_panel_above_the_row_draws_a_series_per_rack_or_card() -> None:
    """The issue's rule, read off every query: above the row a panel draws one series per
    site, room or row (or cluster, agent), else it is a top-N table of at most TOP_MAX rows;
    and it reads the roll-ups, never the device data they sum."""
    walls = []
    for name, dashboard in dashboards().items():
        if level(dashboard) not in ABOVE_ROW:
            continue
        for panel in panels(dashboard):
            assert panel.get("repeat") in (None, "site", "room", "row"), panel["title"]
            for target in panel["targets"]:
                query = target["query"]
                measurement, _ = named(query)
                where = f"{name} / {panel['title']}"
                if measurement in ROLLED_UP:
                    walls.append(f"{where}: reads {measurement}, not its roll-up")
                if measurement in ALERT_LISTS:
                    continue
                extra = series_tags(query) - TAGS_ABOVE_ROW
                rows = bounded(query)
                if extra:
                    walls.append(f"{where}: one series per {sorted(extra)}")
                elif rows is not None and rows > TOP_MAX:
                    walls.append(f"{where}: top {rows}")
    assert not walls, "\n".join(walls)


def test_the_rule_catches_a_series_per_rack_or_card() -> None:
    """The checks above on queries they must refuse and accept."""
    per_rack = (
        'SELECT mean("power_w") FROM "rack_power" WHERE $timeFilter GROUP BY time(1m), "rack"'
    )
    per_card = (
        'SELECT sum("x") FROM (SELECT max("util_pct") AS "x" FROM "accelerator" GROUP BY '
        '"site") GROUP BY "host", "index"'
    )
    assert series_tags(per_rack) == {"rack"}
    assert series_tags(per_card) == {"host", "index"}
    top = (
        'SELECT top("p", 20) AS "p", "rack" FROM (SELECT last("p") AS "p" FROM "x" GROUP BY "rack")'
    )
    assert series_tags(top) == set()
    assert bounded(top) == 20
    assert bounded(top.replace('GROUP BY "rack")', 'GROUP BY "rack") GROUP BY "rack"')) is None
    assert bounded('SELECT "s", "device" FROM (SELECT last("s") AS "s" FROM "x") LIMIT 20') == 20


def test_each_level_links_to_the_level_below() -> None:
    """Hub -> site -> room -> row -> rack -> device views, through data links that pass the
    place down; each link names a view that exists, variables it has, and columns (or series
    tags) its panel's queries return."""
    boards = dashboards()
    by_uid = {dashboard["uid"]: dashboard for dashboard in boards.values()}
    targets: dict[str, set[str]] = {name: set() for name in boards}
    for name, dashboard in boards.items():
        for panel in panels(dashboard):
            tags = set().union(*(series_tags(t["query"]) for t in panel["targets"]))
            # A table's columns: its series' tags, and what the outermost SELECT names.
            selected = " ".join(outermost(t["query"]).split(" FROM ")[0] for t in panel["targets"])
            for link in panel["fieldConfig"]["defaults"].get("links", []):
                found = re.fullmatch(r"/d/([\w-]+)\?(.*)", link["url"])
                assert found, link["url"]
                uid, params = found.groups()
                assert uid in by_uid, f"{name} / {panel['title']}: no view {uid}"
                defined = {v["name"] for v in by_uid[uid]["templating"]["list"]}
                for param in params.split("&"):
                    if not param.startswith("var-"):
                        assert param == "${__url_time_range}", param
                        continue
                    variable, value = param.removeprefix("var-").split("=", 1)
                    assert variable in defined, f"{name} / {panel['title']}: {uid} ${variable}"
                    field = re.fullmatch(r"\$\{__(data\.fields|field\.labels)\.(\w+)\}", value)
                    if field and field.group(1) == "field.labels":
                        assert field.group(2) in tags, (name, panel["title"], value)
                    elif field:
                        column = field.group(2)
                        assert column in tags or f'"{column}"' in selected, (panel["title"], value)
                targets[name].add(uid)
    assert "rackwatch-site" in targets["hub-overview"]
    assert "rackwatch-room" in targets["site"]
    assert "rackwatch-racks" in targets["room"]
    assert "rackwatch-rack" in targets["rows-and-racks"]
    assert {"rackwatch-pdu", "rackwatch-accelerators"} <= targets["rack"]
    for view in ("hub-overview", "site", "room"):
        assert "rackwatch-rack" in targets[view]  # the racks nearest their limit
        assert "rackwatch-accelerators" in targets[view]  # the cards throttling


# --- what the top-N and exception panels find, on data made for them -------------------------


def panel_query(dashboard: str, title: str) -> str:
    (panel,) = [p for p in panels(dashboards()[dashboard]) if p["title"] == title]
    (target,) = panel["targets"]
    return str(target["query"])


def write(influx: Running, database: str, lines: str) -> None:
    """Line protocol into the test's database, as the collector writes it."""
    import httpx

    answer = httpx.post(f"{influx.url()}/write", params={"db": database}, content=lines)
    assert answer.status_code == 204, answer.text


def rows_of(
    influx: Running, database: str, query: str, **picked: list[str]
) -> list[dict[str, Any]]:
    variables: dict[str, list[str] | None] = dict.fromkeys(variables_used(query))
    variables |= picked
    found = []
    for series in localservices.influx_query(influx, database, interpolate(query, variables)):
        columns, values, tags = series["columns"], series["values"], series.get("tags") or {}
        assert isinstance(columns, list)
        assert isinstance(values, list)
        assert isinstance(tags, dict)
        found += [dict(zip(columns, row, strict=True)) | tags for row in values]
    return found


@pytest.mark.integration
def test_top_n_tables_rank_the_racks_and_stay_within_the_level(
    influxdb: Running, database: str
) -> None:
    """40 racks in two rooms: each view's table lists the 20 highest of its own racks, by
    their latest reading (an older, higher one of the same rack does not count)."""
    import time

    now = time.time_ns()
    lines = []
    pct = {}
    for i in range(40):
        room, rack = f"hall-{i % 2}", f"R{i:02d}"
        pct[rack] = float(i * 2)
        tags = f"site=s1,room={room},row=A,rack={rack}"
        lines.append(f"rack_power,{tags} capacity_pct=99.5,power_w=1 {now - 60 * 10**9}")
        lines.append(f"rack_power,{tags} capacity_pct={pct[rack]},power_w={i * 100} {now}")
    write(influxdb, database, "\n".join(lines))
    title = "The 20 racks nearest their limit"
    hub = rows_of(influxdb, database, panel_query("hub-overview", title))
    assert [row["rack"] for row in hub] == sorted(pct, key=pct.__getitem__, reverse=True)[:20]
    assert [row["capacity_pct"] for row in hub] == sorted(pct.values(), reverse=True)[:20]
    assert hub[0] | {"Time": 0} == hub[0] | {
        "Time": 0,
        "site": "s1",
        "room": "hall-1",
        "row": "A",
        "rack": "R39",
    }
    hall = rows_of(influxdb, database, panel_query("room", title), site=["s1"], room=["hall-0"])
    assert len(hall) == 20
    assert {row["room"] for row in hall} == {"hall-0"}
    assert hall[0]["rack"] == "R38"
    # A long range picks the 5-minute policy, whose newest point is minutes old (here: none
    # at all): the table of latest values still reads the raw policy's last poll.
    long = rows_of(influxdb, database, panel_query("hub-overview", title), rp=["rackwatch_5m"])
    assert long == hub


def test_tables_of_latest_values_read_the_raw_policy() -> None:
    """A window of the range's last minutes (or of now) on `$rp` finds nothing in the
    5-minute policy, whose newest point is 5 to 10 minutes old."""
    windowed = [
        (name, title, query)
        for name, title, _, query in queries()
        if re.search(r"time > (now\(\)|\$\{__to\}ms) - ", query)
    ]
    assert len(windowed) > 10
    assert [(name, title) for name, title, query in windowed if "$rp" in query] == []


@pytest.mark.integration
def test_jobs_per_rack_keeps_same_named_racks_of_two_rooms_apart(
    influxdb: Running, database: str
) -> None:
    """Rack A01 is in every room: a job on A01 of two rooms is two rows, not one sum."""
    import time

    now = time.time_ns()
    lines = [
        f"accelerator_job,site=s1,room={room},row=A,rack=A01,host={host},job=slurm:7,"
        f"vendor=nvidia cards={cards}i,power_w=2400 {now}"
        for room, host, cards in (("hall-1", "gpu-1", 8), ("hall-2", "gpu-2", 4))
    ]
    write(influxdb, database, "\n".join(lines))
    found = rows_of(influxdb, database, panel_query("accelerators", "Jobs per rack"))
    assert sorted((row["room"], row["rack"], row["job"], row["cards"]) for row in found) == [
        ("hall-1", "A01", "slurm:7", 8),
        ("hall-2", "A01", "slurm:7", 4),
    ]


@pytest.mark.integration
def test_cards_throttling_now_counts_and_lists_only_cards_slowed_now(
    influxdb: Running, database: str
) -> None:
    """Clock-event flags as NVML reports them on an H100 (power cap, HW slowdown, thermal):
    an idle card (clocks down, not throttled) and a card that throttled ten minutes ago are
    not throttling now; 25 throttling cards give a count of 25 and a table of the hottest 20."""
    import time

    now = time.time_ns()
    flags = {f"throttle_{flag}": "false" for flag in THROTTLE_FLAGS} | {"throttle_idle": "false"}

    def card(host: str, index: int, when: int, temp: float, **set_flags: str) -> str:
        fields = {**flags, **set_flags, "temp_c": str(temp), "power_w": "612.4", "util_pct": "97"}
        body = ",".join(f"{k}={v}" for k, v in fields.items())
        rack = f"R{index % 3}"
        return (
            f"accelerator,site=s1,room=hall-1,row=A,rack={rack},host={host},index={index},"
            f"vendor=nvidia {body} {when}"
        )

    lines = [card("gpu-a", i, now, 60.0 + i, throttle_sw_power_cap="true") for i in range(25)]
    lines.append(card("gpu-b", 0, now, 90.0, throttle_idle="true"))  # idle: not throttled
    lines.append(card("gpu-b", 1, now - 600 * 10**9, 95.0, throttle_hw_slowdown="true"))
    lines.append(card("gpu-b", 2, now, 40.0, throttle_hw_thermal_slowdown="false"))
    write(influxdb, database, "\n".join(lines))
    count = rows_of(influxdb, database, panel_query("hub-overview", "Cards throttling now"))
    assert [(row["site"], row["cards"]) for row in count] == [("s1", 25)]
    table = rows_of(
        influxdb, database, panel_query("hub-overview", "The 20 hottest cards throttling now")
    )
    assert len(table) == 20
    assert {row["host"] for row in table} == {"gpu-a"}
    assert [row["temp_c"] for row in table] == [60.0 + i for i in range(24, 4, -1)]
    assert all(row["sw_power_cap"] is True and row["hw_slowdown"] is False for row in table)
    rack = rows_of(
        influxdb,
        database,
        panel_query("rack", "Cards throttling now"),
        site=["s1"],
        room=["hall-1"],
        row=["A"],
        rack=["R0"],
    )
    assert [(row["host"], row["cards"]) for row in rack] == [("gpu-a", 9)]  # 0, 3, ..., 24


THROTTLE_FLAGS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake",
)


@pytest.mark.integration
def test_exception_lists_show_what_is_wrong_now(influxdb: Running, database: str) -> None:
    """A cooling unit off (one on, one on standby), a UPS on battery (one normal), a device
    that stopped answering (one that answers): each list shows the one that is wrong."""
    import time

    now = time.time_ns()
    place = "site=s1,room=hall-1,row=A"
    lines = [
        f'cooling,{place},device=crah-1 operating_state="off" {now}',
        f'cooling,{place},device=crah-2 operating_state="on" {now}',
        f'cooling,{place},device=crah-3 operating_state="standby" {now}',
        f'cooling,{place},device=crah-4 operating_state="off" {now - 60 * 10**9}',
        f'cooling,{place},device=crah-4 operating_state="on" {now}',  # back on
        f"cooling,{place},rack=A01,device=inrow-1 rack_inlet_c=29.5 {now}",
        f"cooling,{place},rack=A02,device=inrow-2 rack_inlet_c=31.0 {now - 60 * 10**9}",
        f"cooling,{place},rack=A02,device=inrow-2 rack_inlet_c=24.0 {now}",  # cooler now
        f'ups,{place},device=ups-1 output_source="battery" {now}',
        f'ups,{place},device=ups-2 output_source="normal" {now}',
        f"rackwatch_agent,site=s1,agent=a1,{place[8:]},rack=A01,device=pdu-1 up=false {now}",
        f"rackwatch_agent,site=s1,agent=a1,{place[8:]},rack=A01,device=pdu-2 up=true {now}",
    ]
    write(influxdb, database, "\n".join(lines))
    for view in ("hub-overview", "site", "room"):
        picked = {"site": ["s1"]} | ({"room": ["hall-1"]} if view == "room" else {})
        off = rows_of(
            influxdb, database, panel_query(view, "Cooling units not running now"), **picked
        )
        assert [(row["device"], row["state"]) for row in off] == [("crah-1", "off")]
        ups = rows_of(
            influxdb, database, panel_query(view, "UPSes not on normal output now"), **picked
        )
        assert [(row["device"], row["state"]) for row in ups] == [("ups-1", "battery")]
        warm = rows_of(influxdb, database, panel_query(view, "Inlets above 27 C now"), **picked)
        by = {"hub-overview": "site", "site": "room", "room": "row"}[view]
        assert [(row[by], row["inlets"]) for row in warm] == [
            ({"site": "s1", "room": "hall-1", "row": "A"}[by], 1)
        ]
    silent = rows_of(
        influxdb, database, panel_query("rackwatch-health", "Devices not answering now")
    )
    assert [(row["device"], row["rack"]) for row in silent] == [("pdu-1", "A01")]
    answering = rows_of(
        influxdb, database, panel_query("rackwatch-health", "Devices answering now")
    )
    assert [(row["agent"], row["answering"]) for row in answering] == [("a1", 1)]


@pytest.mark.integration
async def test_the_roce_panels_show_what_hccn_tool_printed(
    influxdb: Running, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Ascend host polled twice, 10 s apart, through the real parsers: npu-smi's eight
    910B3 and hccn_tool's output for device 0 (tests/data/hccn_tool, with its source), written
    to InfluxDB as the collector writes them; each RoCE panel shows device 0's port."""
    import dataclasses

    from agent.accelerators.npu_smi import NpuSmiSource
    from telemetry.lineproto import encode_many

    data = ROOT / "tests" / "data"
    monkeypatch.setenv("FAKE_NPU_SMI_DIR", str(tmp_path))
    shutil.copy(data / "npu_smi" / "info_910b3_x8.txt", tmp_path / "info.txt")
    for option in ("link", "stat", "optical"):
        shutil.copy(data / "hccn_tool" / f"{option}_i0.txt", tmp_path / f"-i_0_-{option}_-g.txt")
    polled_at = 0.0
    source = NpuSmiSource(
        {"host": "npu-b07-01", "site": "s1", "room": "hall-1", "row": "B", "rack": "B07"},
        command=str(data / "npu_smi" / "npu-smi"),
        timeout_s=5,
        hccn_tool=str(data / "npu_smi" / "npu-smi"),  # the stand-in answers its arguments too
        details_interval_s=1,
        clock=lambda: polled_at,
    )
    now, samples = time.time_ns(), []
    for polled_at in (0.0, 10.0):  # each poll reads the port again (details_interval_s)
        samples += [
            dataclasses.replace(sample, time_ns=now - int(10 - polled_at) * 10**9)
            for sample in await source.collect()
            if sample.measurement == "accelerator"
        ]
    write(influxdb, database, encode_many(samples))

    def card_0(title: str) -> list[dict[str, Any]]:
        rows = rows_of(influxdb, database, panel_query("accelerators", title))
        assert {row["index"] for row in rows} == {"0"}, f"{title}: only device 0 has a port"
        return rows

    assert {row["last"] for row in card_0("RoCE link up")} == {True}
    optical = card_0("Optical module power per card")
    assert optical[-1]["tx"] == pytest.approx(0.0044035)  # Tx Power : 4.4035 mW
    assert optical[-1]["rx"] == pytest.approx(0.0010189)
    assert optical[-1]["rx low alarm"] == pytest.approx(0.0001445)  # RxPower Low Thres
    # The same counters twice: nothing moved between the polls, and nothing is invented.
    assert {(row["tx"], row["rx"]) for row in card_0("RoCE throughput per card")} == {(0, 0)}
    pfc = card_0("PFC pause frames and QP errors per interval")
    assert {(row["pfc sent"], row["qp errors"]) for row in pfc} == {(0, 0)}
