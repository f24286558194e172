"""rackwatch's Grafana dashboards, as code. `python -m dashboards.build` writes dashboards/json/.

Every query is InfluxQL (InfluxDB 1.x; 2.x through DBRP mappings; 3.x) with Grafana's macros
`$timeFilter` and `$__interval`, and tag filters as `"site" =~ /^$site$/`, so "All" (`.*`)
and several values (`(a|b)`) both work. Measurements and fields: docs/schema.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dashboards.grafana import GREEN_YELLOW_RED, PLAIN, Dashboard, Panel, Query, Row, Variable

OUT = Path(__file__).resolve().parent / "json"

# --- query helpers ---------------------------------------------------------------------------


def where(filters: Sequence[str]) -> str:
    """$timeFilter and one regex match per tag, each against the variable of the same name."""
    return "$timeFilter" + "".join(f' AND "{tag}" =~ /^${tag}$/' for tag in filters)


def source(measurement: str) -> str:
    """The measurement in the retention policy `$rp` picks for the time range: raw data for
    short ranges, 5-minute aggregates beyond (collector/retention.py)."""
    return f'"$rp"."{measurement}"'


def over_time(select: str, measurement: str, filters: Sequence[str], by: Sequence[str] = ()) -> str:
    group = ", ".join(["time($__interval)", *(f'"{tag}"' for tag in by)])
    return (
        f"SELECT {select} FROM {source(measurement)} WHERE {where(filters)} "
        f"GROUP BY {group} fill(none)"
    )


def latest(select: str, measurement: str, filters: Sequence[str], by: Sequence[str] = ()) -> str:
    group = f" GROUP BY {', '.join(f'{chr(34)}{tag}{chr(34)}' for tag in by)}" if by else ""
    return f"SELECT {select} FROM {source(measurement)} WHERE {where(filters)}{group}"


def events(measurement: str, filters: Sequence[str], limit: int = 100) -> Query:
    """The latest points of an event measurement, every field, newest first."""
    return Query(
        f'SELECT * FROM "{measurement}" WHERE {where(filters)} ORDER BY time DESC LIMIT {limit}',
        table=True,
    )


def tag_values(key: str, filters: Sequence[str], measurement: str = "") -> Variable:
    """A variable of one tag's values; `measurement` may be a regex (`/^pdu/`)."""
    quoted = measurement if measurement.startswith("/") else f'"{measurement}"'
    source = f" FROM {quoted}" if measurement else ""
    condition = " AND ".join(f'"{tag}" =~ /^${tag}$/' for tag in filters)
    query = f'SHOW TAG VALUES{source} WITH KEY = "{key}"' + (
        f" WHERE {condition}" if condition else ""
    )
    return Variable(key, key.capitalize(), query)


# The retention policy for the time range: the first `rp_config` row (written by the collector,
# collector/retention.py) whose span covers the range; Grafana re-asks on every range change.
RP = Variable(
    "rp",
    "Resolution",
    'SELECT "rp" FROM "rackwatch_forever"."rp_config" '
    'WHERE "max_span_ms" >= ${__to} - ${__from} ORDER BY time LIMIT 1',
    multi=False,
)
SITE = tag_values("site", ())
ROOM = tag_values("room", ("site",))
ROW = tag_values("row", ("site", "room"))
RACK = tag_values("rack", ("site", "room", "row"))
PLACE = ("site", "room", "row", "rack")

UP_DOWN = {"true": "green", "false": "red"}
COOLING_STATES = {"on": "green", "standby": "blue", "off": "red"}
UPS_SOURCES = {"normal": "green", "bypass": "yellow", "battery": "red", "none": "red"}
LOAD_STATES = {
    "low_load": "blue",
    "normal": "green",
    "near_overload": "orange",
    "overload": "red",
}
OUTLET_STATES = {"on": "green", "off": "red", "rebooting": "yellow", "unknown": "gray"}
INLET_C = ((None, "green"), (27.0, "orange"), (32.0, "red"))  # ASHRAE recommended: up to 27 C


# --- hub overview ----------------------------------------------------------------------------


def hub_overview() -> Dashboard:
    site = ("site",)
    return Dashboard(
        "rackwatch-hub",
        "rackwatch / Hub overview",
        "Per site: IT power against capacity, PUE, the hottest racks, cooling and UPS status, "
        "accelerator utilization and alerts.",
        [RP, SITE],
        [
            Row("Power"),
            Panel(
                "IT power",
                "stat",
                [Query(over_time('mean("power_w")', "site_power", site, ["site"]), "$tag_site")],
                unit="watt",
                width=6,
                height=5,
                description="Sum of the racks' A and B feeds (roll-up `site_power.power_w`).",
            ),
            Panel(
                "Power against capacity",
                "gauge",
                [
                    Query(
                        over_time('mean("capacity_pct")', "site_power", site, ["site"]),
                        "$tag_site",
                    )
                ],
                unit="percent",
                width=6,
                height=5,
                min=0,
                max=100,
                thresholds=GREEN_YELLOW_RED,
                description="IT power as a share of the racks' derated capacity.",
            ),
            Panel(
                "PUE",
                "stat",
                [Query(over_time('mean("pue")', "pue", site, ["site"]), "$tag_site")],
                width=6,
                height=5,
                decimals=2,
                thresholds=((None, "green"), (1.5, "yellow"), (2.0, "red")),
                description="Facility power over IT power, from the inventory's meters.",
            ),
            Panel(
                "Stranded capacity",
                "stat",
                [Query(over_time('mean("stranded_w")', "site_power", site, ["site"]), "$tag_site")],
                unit="watt",
                width=6,
                height=5,
                thresholds=((None, "blue"),),
                description="Provisioned but never drawn: capacity minus each rack's peak.",
            ),
            Panel(
                "IT power and capacity",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("power_w") AS "power", mean("capacity_w") AS "capacity"',
                            "site_power",
                            site,
                            ["site"],
                        ),
                        "$tag_site $col",
                    )
                ],
                unit="watt",
                min=0,
            ),
            Panel(
                "Rows against capacity",
                "bargauge",
                [
                    Query(
                        over_time('mean("capacity_pct")', "row_power", site, ["room", "row"]),
                        "$tag_room / row $tag_row",
                    )
                ],
                unit="percent",
                min=0,
                max=100,
                thresholds=GREEN_YELLOW_RED,
            ),
            Row("Cooling and UPS"),
            Panel(
                "Hottest rack inlets",
                "table",
                [
                    Query(
                        latest(
                            'last("rack_inlet_c") AS "inlet_c"',
                            "cooling",
                            site,
                            ["room", "row", "rack", "device"],
                        ),
                        table=True,
                    )
                ],
                unit="celsius",
                width=8,
                thresholds=INLET_C,
                options={"sortBy": [{"displayName": "inlet_c", "desc": True}]},
            ),
            Panel(
                "Cooling units",
                "state-timeline",
                [
                    Query(
                        over_time('last("operating_state")', "cooling", site, ["device"]),
                        "$tag_device",
                    )
                ],
                width=8,
                states=COOLING_STATES,
            ),
            Panel(
                "UPS output source",
                "state-timeline",
                [Query(over_time('last("output_source")', "ups", site, ["device"]), "$tag_device")],
                width=8,
                states=UPS_SOURCES,
            ),
            Row("Accelerators and alerts"),
            Panel(
                "Accelerator utilization",
                "timeseries",
                [Query(over_time('mean("util_pct")', "accelerator", site, ["site"]), "$tag_site")],
                unit="percent",
                min=0,
                max=100,
            ),
            Panel(
                "Accelerator power",
                "timeseries",
                [
                    Query(
                        over_time('mean("accelerator_power_w")', "site_power", site, ["site"]),
                        "$tag_site",
                    )
                ],
                unit="watt",
                min=0,
            ),
            firing_now(site),
            Panel("Alert transitions", "table", [events("alert", site, 50)], width=24),
        ],
    )


ALERT_PLACE = ("alertname", "severity", "site", "room", "row", "rack", "device")
ACTIVE_WINDOW = "3m"  # three of the collector's `alerting.active_interval` (60 s)


def firing_now(filters: Sequence[str]) -> Panel:
    """What fires now: the newest `alert_active` snapshot of each alert, which the collector
    writes for every firing alert each `alerting.active_interval`."""
    columns = ("state", "age_s", "silenced_by", "summary", "value")
    inner = ", ".join(f'last("{name}") AS "{name}"' for name in columns)
    group = ", ".join(f'"{tag}"' for tag in ALERT_PLACE)
    # Not $timeFilter: what fires now is now, whatever range the dashboard shows. An alert's
    # newest point says `resolved` once it ended (in the next snapshot); the points of a
    # collector gone quiet age out of the window.
    window = where(filters).replace("$timeFilter", f"time > now() - {ACTIVE_WINDOW}")
    query = (
        f'SELECT "age_s", "silenced_by", "summary", "value" FROM (SELECT {inner} '
        f'FROM "alert_active" WHERE {window} GROUP BY {group}) '
        f"WHERE \"state\" = 'firing' GROUP BY {group}"
    )
    return Panel(
        "Firing now",
        "table",
        [Query(query, table=True)],
        width=24,
        options={"sortBy": [{"displayName": "age_s", "desc": True}]},
        description="Every alert firing now, with its severity, how long it has been active "
        "(age_s, seconds), what silences it (silenced_by: a silence or an inhibiting alert; "
        "empty: it notifies) and where it is. From the collector's `alert_active` points of "
        f"the last {ACTIVE_WINDOW}, whatever the dashboard's time range.",
    )


# --- rows and racks --------------------------------------------------------------------------


def rows_and_racks() -> Dashboard:
    place = PLACE
    return Dashboard(
        "rackwatch-racks",
        "rackwatch / Rows and racks",
        "Rack power per feed against the derated breaker capacity, N+N headroom, stranded "
        "capacity and inlet temperatures.",
        [RP, SITE, ROOM, ROW, RACK],
        [
            Panel(
                "Row $row: racks against capacity",
                "stat",
                [
                    Query(
                        latest('last("capacity_pct")', "rack_power", place, ["row", "rack"]),
                        "$tag_rack",
                    )
                ],
                unit="percent",
                width=24,
                height=4,
                thresholds=GREEN_YELLOW_RED,
                options={"graphMode": "none", "textMode": "value_and_name"},
                repeat="row",
                description="One tile per rack: power as a share of its capacity.",
            ),
            Panel(
                "Heat map: % of capacity by row and rack",
                "status-history",
                [
                    Query(
                        over_time('mean("capacity_pct")', "rack_power", place, ["row", "rack"]),
                        "$tag_row / $tag_rack",
                    )
                ],
                unit="percent",
                width=24,
                thresholds=GREEN_YELLOW_RED,
            ),
            Panel(
                "Rack power by feed",
                "timeseries",
                [
                    Query(
                        over_time('mean("power_w")', "feed_power", place, ["rack", "feed"]),
                        "$tag_rack $tag_feed",
                    )
                ],
                unit="watt",
                min=0,
                custom={"stacking": {"mode": "normal", "group": "A"}},
            ),
            Panel(
                "Feed load against derated rating",
                "timeseries",
                [
                    Query(
                        over_time('mean("load_pct")', "feed_power", place, ["rack", "feed"]),
                        "$tag_rack $tag_feed",
                    )
                ],
                unit="percent",
                min=0,
                thresholds=GREEN_YELLOW_RED,
                custom={"thresholdsStyle": {"mode": "line"}},
            ),
            Panel(
                "Feed voltage against nominal",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("voltage_deviation_pct")', "feed_power", place, ["rack", "feed"]
                        ),
                        "$tag_rack $tag_feed",
                    )
                ],
                unit="percent",
                thresholds=((None, "red"), (-5.0, "green"), (5.0, "red")),
                custom={"thresholdsStyle": {"mode": "line"}},
                description="What the feed's PDUs measure against the inventory's voltage "
                "(line to line, or line to neutral on three phases, whichever is nearer). "
                "Beyond rollup.voltage_tolerance_pct (5 %) the inventory is wrong (and with it "
                "the capacities) or the PDU is on another supply: FeedVoltageMismatch.",
            ),
            Panel(
                "N+N headroom (one feed carrying the rack)",
                "timeseries",
                [
                    Query(
                        over_time('mean("nn_headroom_w")', "rack_power", place, ["rack"]),
                        "$tag_rack",
                    )
                ],
                unit="watt",
                thresholds=((None, "red"), (0.0, "green")),
                custom={"thresholdsStyle": {"mode": "line"}},
                description="Below zero: if one feed fails, the other trips.",
            ),
            Panel(
                "Stranded capacity",
                "bargauge",
                [
                    Query(
                        over_time('mean("stranded_w")', "rack_power", place, ["rack"]),
                        "$tag_rack",
                    )
                ],
                unit="watt",
                min=0,
                thresholds=((None, "blue"),),
                description="Capacity minus the rack's peak over the roll-up's window.",
            ),
            Panel(
                "Row power and capacity",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("power_w") AS "power", mean("capacity_w") AS "capacity"',
                            "row_power",
                            ("site", "room", "row"),
                            ["row"],
                        ),
                        "row $tag_row $col",
                    )
                ],
                unit="watt",
                min=0,
            ),
            Panel(
                "Accelerator power per rack",
                "timeseries",
                [
                    Query(
                        over_time('mean("accelerator_power_w")', "rack_power", place, ["rack"]),
                        "$tag_rack",
                    )
                ],
                unit="watt",
                min=0,
            ),
            Panel(
                "Rack inlet temperature",
                "timeseries",
                [
                    Query(
                        over_time('mean("rack_inlet_c")', "cooling", place, ["rack", "device"]),
                        "$tag_rack $tag_device",
                    ),
                    Query(
                        over_time(
                            'mean("temperature_c")', "env_sensor", place, ["rack", "sensor_name"]
                        ),
                        "$tag_rack $tag_sensor_name",
                    ),
                ],
                unit="celsius",
                width=24,
                thresholds=INLET_C,
                custom={"thresholdsStyle": {"mode": "line"}},
            ),
        ],
    )


# --- PDU detail ------------------------------------------------------------------------------


def pdu_detail() -> Dashboard:
    pdu = (*PLACE, "device")
    device = tag_values("device", PLACE, "/^pdu/")
    return Dashboard(
        "rackwatch-pdu",
        "rackwatch / PDU detail",
        "Inlets, phases and their balance, banks and breakers, outlets.",
        [RP, SITE, ROOM, ROW, RACK, device],
        [
            Row("Inlets"),
            Panel(
                "Power",
                "timeseries",
                [
                    Query(over_time('mean("power_w")', "pdu", pdu, ["device"]), "$tag_device"),
                    Query(
                        over_time('mean("power_w")', "pdu_inlet", pdu, ["device", "inlet"]),
                        "$tag_device inlet $tag_inlet",
                    ),
                ],
                unit="watt",
                width=8,
                min=0,
            ),
            Panel(
                "Inlet current",
                "timeseries",
                [
                    Query(
                        over_time('mean("current_a")', "pdu_inlet", pdu, ["device", "inlet"]),
                        "$tag_device inlet $tag_inlet",
                    )
                ],
                unit="amp",
                width=8,
                min=0,
            ),
            Panel(
                "Inlet voltage",
                "timeseries",
                [
                    Query(
                        over_time('mean("voltage_v")', "pdu_inlet", pdu, ["device", "inlet"]),
                        "$tag_device inlet $tag_inlet",
                    )
                ],
                unit="volt",
                width=8,
                description="Compared with the inventory's nominal voltage on the rows-and-racks "
                "dashboard (Feed voltage against nominal).",
            ),
            Panel(
                "Load state",
                "state-timeline",
                [
                    Query(over_time('last("load_state")', "pdu", pdu, ["device"]), "$tag_device"),
                    Query(
                        over_time(
                            'last("load_state")', "pdu_inlet", pdu, ["device", "unit", "inlet"]
                        ),
                        "$tag_device $tag_unit inlet $tag_inlet",
                    ),
                    # Each inlet's phases apart: grouped by phase alone, L1 of one inlet (or
                    # unit) hid L1 of the other, near_overload included.
                    Query(
                        over_time(
                            'last("load_state")',
                            "pdu_phase",
                            pdu,
                            ["device", "unit", "inlet", "phase"],
                        ),
                        "$tag_device $tag_unit inlet $tag_inlet L$tag_phase",
                    ),
                    # Three-phase Raritans judge each pole (line) and each line pair (phase).
                    Query(
                        over_time(
                            'last("load_state")',
                            "pdu_line",
                            pdu,
                            ["device", "unit", "inlet", "line"],
                        ),
                        "$tag_device $tag_unit inlet $tag_inlet $tag_line",
                    ),
                    Query(
                        over_time(
                            'last("load_state")', "pdu_bank", pdu, ["device", "unit", "bank"]
                        ),
                        "$tag_device $tag_unit bank $tag_bank",
                    ),
                ],
                width=24,
                height=8,
                states=LOAD_STATES,
                description="The PDU's own judgement of each element it judges: the device, "
                "inlets, phases (line pairs on a delta), lines (poles) and banks.",
            ),
            Row("Phases and banks"),
            Panel(
                "Phase current",
                "timeseries",
                [
                    Query(
                        over_time('mean("current_a")', "pdu_phase", pdu, ["device", "phase"]),
                        "$tag_device L$tag_phase",
                    )
                ],
                unit="amp",
                min=0,
            ),
            Panel(
                "Phase balance (latest)",
                "bargauge",
                [
                    Query(
                        latest('last("current_a")', "pdu_phase", pdu, ["device", "phase"]),
                        "$tag_device L$tag_phase",
                    )
                ],
                unit="amp",
                min=0,
                description="Phases of one PDU should carry about the same current.",
            ),
            Panel(
                "Bank and breaker current",
                "timeseries",
                [
                    Query(
                        over_time('mean("current_a")', "pdu_bank", pdu, ["device", "bank"]),
                        "$tag_device bank $tag_bank",
                    )
                ],
                unit="amp",
                min=0,
            ),
            Panel(
                "Energy per interval",
                "timeseries",
                [
                    Query(
                        over_time(
                            'non_negative_difference(max("energy_kwh"))', "pdu", pdu, ["device"]
                        ),
                        "$tag_device",
                    ),
                    Query(
                        over_time(
                            'non_negative_difference(max("energy_kwh"))',
                            "pdu_inlet",
                            pdu,
                            ["device", "inlet"],
                        ),
                        "$tag_device inlet $tag_inlet",
                    ),
                ],
                description="Per device where the PDU counts its total, per inlet where it "
                "counts those (not every PDU has a device total).",
                unit="kwatth",
                min=0,
                custom={"drawStyle": "bars", "fillOpacity": 60},
            ),
            Row("Outlets"),
            Panel(
                "Outlet current",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("current_a")', "pdu_outlet", pdu, ["device", "outlet_name"]
                        ),
                        "$tag_device $tag_outlet_name",
                    )
                ],
                unit="amp",
                min=0,
            ),
            Panel(
                "Outlet state",
                "state-timeline",
                [
                    Query(
                        over_time('last("state")', "pdu_outlet", pdu, ["device", "outlet"]),
                        "$tag_device $tag_outlet",
                    )
                ],
                states=OUTLET_STATES,
                options={"showValue": "never"},
            ),
        ],
    )


# --- cooling ---------------------------------------------------------------------------------


def cooling() -> Dashboard:
    unit = ("site", "room", "row", "device")
    device = tag_values("device", ("site", "room", "row"), "cooling")

    def temperatures(title: str, fields: Sequence[tuple[str, str]]) -> Panel:
        select = ", ".join(f'mean("{name}") AS "{label}"' for name, label in fields)
        return Panel(
            title,
            "timeseries",
            [Query(over_time(select, "cooling", unit, ["device"]), "$tag_device $col")],
            unit="celsius",
        )

    return Dashboard(
        "rackwatch-cooling",
        "rackwatch / Cooling",
        "Supply and return air, set points, chilled water, fans, cooling output, humidity.",
        [RP, SITE, ROOM, ROW, device],
        [
            Panel(
                "Operating state",
                "state-timeline",
                [
                    Query(
                        over_time('last("operating_state")', "cooling", unit, ["device"]),
                        "$tag_device",
                    )
                ],
                width=24,
                height=5,
                states=COOLING_STATES,
            ),
            temperatures(
                "Supply and return air",
                [("supply_air_c", "supply"), ("return_air_c", "return")],
            ),
            temperatures(
                "Rack inlet and set points",
                [
                    ("rack_inlet_c", "rack inlet"),
                    ("rack_inlet_setpoint_c", "rack inlet set point"),
                    ("supply_air_setpoint_c", "supply set point"),
                    ("return_air_setpoint_c", "return set point"),
                ],
            ),
            temperatures(
                "Chilled water",
                [("entering_water_c", "entering"), ("leaving_water_c", "leaving")],
            ),
            Panel(
                "Fans and valve",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("fan_speed_pct") AS "fan", mean("valve_pct") AS "valve"',
                            "cooling",
                            unit,
                            ["device"],
                        ),
                        "$tag_device $col",
                    )
                ],
                unit="percent",
                min=0,
                max=100,
            ),
            Panel(
                "Cooling output and demand",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("cooling_output_w") AS "output", '
                            'mean("cooling_demand_w") AS "demand"',
                            "cooling",
                            unit,
                            ["device"],
                        ),
                        "$tag_device $col",
                    )
                ],
                unit="watt",
                min=0,
            ),
            Panel(
                "Capacity in use",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("cooling_capacity_pct") AS "cooling", '
                            'mean("fan_capacity_pct") AS "fans"',
                            "cooling",
                            unit,
                            ["device"],
                        ),
                        "$tag_device $col",
                    )
                ],
                unit="percent",
                min=0,
                max=100,
            ),
            Panel(
                "Humidity",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("humidity_pct") AS "humidity", '
                            'mean("humidity_setpoint_pct") AS "set point"',
                            "cooling",
                            unit,
                            ["device"],
                        ),
                        "$tag_device $col",
                    )
                ],
                unit="percent",
                min=0,
                max=100,
            ),
        ],
    )


# --- UPS -------------------------------------------------------------------------------------


def ups() -> Dashboard:
    unit = ("site", "room", "row", "device")
    device = tag_values("device", ("site", "room", "row"), "ups")
    return Dashboard(
        "rackwatch-ups",
        "rackwatch / UPS",
        "Load, runtime, battery and the times on battery.",
        [RP, SITE, ROOM, ROW, device],
        [
            Panel(
                "Output source (on battery in red)",
                "state-timeline",
                [Query(over_time('last("output_source")', "ups", unit, ["device"]), "$tag_device")],
                width=24,
                height=5,
                states=UPS_SOURCES,
            ),
            Panel(
                "Load",
                "timeseries",
                [
                    Query(over_time('mean("load_pct")', "ups", unit, ["device"]), "$tag_device"),
                    Query(
                        over_time('mean("load_pct")', "ups_output", unit, ["device", "phase"]),
                        "$tag_device L$tag_phase",
                    ),
                ],
                unit="percent",
                min=0,
                max=100,
                thresholds=GREEN_YELLOW_RED,
                custom={"thresholdsStyle": {"mode": "line"}},
                description="The UPS's own load figure where it has one (APC), else each "
                "output phase's (UPS-MIB upsOutputPercentLoad, Eaton XUPS).",
            ),
            Panel(
                "Runtime on battery",
                "timeseries",
                [Query(over_time('min("runtime_s")', "ups", unit, ["device"]), "$tag_device")],
                unit="s",
                min=0,
            ),
            Panel(
                "Battery charge",
                "timeseries",
                [
                    Query(
                        over_time('mean("battery_charge_pct")', "ups", unit, ["device"]),
                        "$tag_device",
                    )
                ],
                unit="percent",
                width=6,
                min=0,
                max=100,
            ),
            Panel(
                "Battery temperature",
                "timeseries",
                [
                    Query(
                        over_time('mean("battery_temperature_c")', "ups", unit, ["device"]),
                        "$tag_device",
                    )
                ],
                unit="celsius",
                width=6,
            ),
            Panel(
                "Battery status",
                "state-timeline",
                [
                    Query(
                        over_time('last("battery_status")', "ups", unit, ["device"]), "$tag_device"
                    )
                ],
                states={"normal": "green", "low": "orange", "depleted": "red", "unknown": "gray"},
            ),
            Panel(
                "Output power",
                "timeseries",
                [
                    Query(
                        over_time('mean("output_power_w")', "ups", unit, ["device"]),
                        "$tag_device",
                    ),
                    Query(per_phase_sum("power_w", "ups_output", unit), "$tag_device"),
                ],
                unit="watt",
                description="The UPS's own total where it has one (APC), else the sum of its "
                "output phases (UPS-MIB, Eaton XUPS; a lightly loaded phase may read negative).",
            ),
            Panel(
                "Input and output voltage per phase",
                "timeseries",
                [
                    Query(
                        over_time('mean("voltage_v")', "ups_input", unit, ["device", "phase"]),
                        "$tag_device in L$tag_phase",
                    ),
                    Query(
                        over_time('mean("voltage_v")', "ups_output", unit, ["device", "phase"]),
                        "$tag_device out L$tag_phase",
                    ),
                ],
                unit="volt",
            ),
        ],
    )


# --- accelerators ----------------------------------------------------------------------------


def accelerators() -> Dashboard:
    card = (*PLACE, "host")
    host = tag_values("host", PLACE, "accelerator")
    cluster = tag_values("cluster", ("site",), "accelerator")
    filters = (*card, "cluster")

    def per_card(
        title: str, select: str, unit: str, limit: float | None = None, warm: float | None = None
    ) -> Panel:
        return Panel(
            title,
            "timeseries",
            [
                Query(
                    over_time(select, "accelerator", filters, ["host", "index"]),
                    "$tag_host #$tag_index",
                )
            ],
            unit=unit,
            min=0,
            max=limit,
            thresholds=((None, "green"), (warm, "orange")) if warm else PLAIN,
            custom={"thresholdsStyle": {"mode": "line"}} if warm else {},
        )

    return Dashboard(
        "rackwatch-accelerators",
        "rackwatch / Accelerators",
        "Utilization, memory, power, temperatures, throttling, ECC and XID events, by cluster, "
        "rack, host and card, whichever vendor made the card; which job runs on each card, and "
        "each job's power and energy.",
        [RP, SITE, ROOM, ROW, RACK, cluster, host],
        [
            Panel(
                "Utilization by cluster",
                "timeseries",
                [
                    Query(
                        over_time('mean("util_pct")', "accelerator", filters, ["cluster"]),
                        "$tag_cluster",
                    )
                ],
                unit="percent",
                min=0,
                max=100,
            ),
            Panel(
                "Power by rack",
                "timeseries",
                [
                    Query(
                        over_time('mean("power_w")', "accelerator_host", card, ["rack"]),
                        "$tag_rack",
                    )
                ],
                unit="watt",
                min=0,
                custom={"stacking": {"mode": "normal", "group": "A"}},
            ),
            per_card("Utilization per card", 'mean("util_pct")', "percent", limit=100),
            per_card("Memory used per card", 'mean("mem_used_bytes")', "bytes"),
            per_card("Power per card", 'mean("power_w")', "watt"),
            per_card("Temperature per card", 'max("temp_c")', "celsius", warm=85.0),
            Panel(
                "Throttle reasons",
                "state-timeline",
                [
                    Query(
                        over_time("last(/^throttle_/)", "accelerator", filters, ["host", "index"]),
                        "$tag_host #$tag_index $col",
                    )
                ],
                width=24,
                states=UP_DOWN | {"true": "orange", "false": "transparent"},
                options={"showValue": "never"},
                description="Each clock-event (throttle) flag of each card, while it is set.",
            ),
            Panel(
                "ECC errors per interval",
                "timeseries",
                [
                    Query(
                        over_time(
                            'non_negative_difference(max("ecc_corrected_total")) AS "corrected", '
                            'non_negative_difference(max("ecc_uncorrected_total")) '
                            'AS "uncorrected"',
                            "accelerator",
                            filters,
                            ["host", "index"],
                        ),
                        "$tag_host #$tag_index $col",
                    )
                ],
                min=0,
                custom={"drawStyle": "bars"},
            ),
            Panel("XID and other events", "table", [events("accelerator_event", card)], width=24),
            Row("Jobs"),
            Panel(
                "Job per card",
                "table",
                [
                    Query(
                        latest(
                            'last("job") AS "job", max("power_w") AS "peak_w"',
                            "accelerator",
                            filters,
                            ["rack", "host", "index"],
                        ),
                        table=True,
                    )
                ],
                width=12,
                description="The job on each card in the time range (k8s:<namespace>/<pod> or "
                "slurm:<id>; empty: none) and the card's highest power. Narrow the range to "
                "a minute to see which job drew what then.",
            ),
            Panel(
                "Jobs per rack",
                "table",
                [
                    Query(
                        per_job('sum("cards") AS "cards"', 'last("cards")', card, "rack"),
                        table=True,
                    )
                ],
                width=12,
                description="Cards each job holds in each rack, at the end of the time range.",
            ),
            Panel(
                "Power by job",
                "timeseries",
                [
                    Query(
                        over_time('mean("power_w")', "accelerator_job", card, ["job", "host"]),
                        "$tag_job on $tag_host",
                    )
                ],
                unit="watt",
                min=0,
                custom={"stacking": {"mode": "normal", "group": "A"}},
            ),
            Panel(
                "Energy by job",
                "table",
                [
                    Query(
                        per_job('sum("energy_j") / 3600000 AS "kWh"', 'last("energy_j")', card),
                        table=True,
                    )
                ],
                unit="kwatth",
                description="Energy each job's cards used while this agent saw the job: "
                "energy counters where the card has one, power over time where not.",
            ),
        ],
    )


def per_phase_sum(field: str, measurement: str, filters: Sequence[str]) -> str:
    """Each device's total over its phases, per interval: the phases' means, summed."""
    inner = over_time(f'mean("{field}") AS "{field}"', measurement, filters, ["device", "phase"])
    return (
        f'SELECT sum("{field}") FROM ({inner}) WHERE $timeFilter '
        'GROUP BY time($__interval), "device" fill(none)'
    )


def per_job(total: str, per_host: str, filters: Sequence[str], *by: str) -> str:
    """`total` over each job's hosts of `per_host` (a job's series are one per host)."""
    field = per_host.split('"')[1]
    tags = ", ".join(f'"{tag}"' for tag in (*by, "job", "host"))
    inner = (
        f'SELECT {per_host} AS "{field}" FROM {source("accelerator_job")} WHERE {where(filters)} '
        f"GROUP BY {tags}"
    )
    group = ", ".join(f'"{tag}"' for tag in (*by, "job"))
    return f"SELECT {total} FROM ({inner}) GROUP BY {group}"


# --- rackwatch health ------------------------------------------------------------------------


def health() -> Dashboard:
    agent = tag_values("agent", ("site",), "rackwatch_agent")
    agents = ("site", "agent")

    def counter(title: str, field: str, measurement: str, by: Sequence[str], alias: str) -> Panel:
        return Panel(
            title,
            "timeseries",
            [
                Query(
                    over_time(
                        f'non_negative_difference(max("{field}"))',
                        measurement,
                        agents if measurement == "rackwatch_agent" else (),
                        by,
                    ),
                    alias,
                )
            ],
            min=0,
            custom={"drawStyle": "bars", "fillOpacity": 60},
        )

    return Dashboard(
        "rackwatch-health",
        "rackwatch / Health",
        "Is rackwatch itself well: devices answering, poll durations, failures, overruns, "
        "spools, write rate and anything dropped.",
        [RP, SITE, agent],
        [
            Row("Agents"),
            Panel(
                "Device answering",
                "state-timeline",
                [
                    Query(
                        over_time('last("up")', "rackwatch_agent", agents, ["agent", "device"]),
                        "$tag_agent $tag_device",
                    )
                ],
                width=24,
                states=UP_DOWN,
                options={"showValue": "never"},
            ),
            Panel(
                "Poll duration",
                "timeseries",
                [
                    Query(
                        over_time('max("poll_duration_s")', "rackwatch_agent", agents, ["device"]),
                        "$tag_device",
                    )
                ],
                unit="s",
                min=0,
            ),
            counter(
                "Failed polls",
                "polls_failed_total",
                "rackwatch_agent",
                ["device"],
                "$tag_device",
            ),
            counter(
                "Overruns (ticks skipped, poll still running)",
                "overruns_total",
                "rackwatch_agent",
                ["device"],
                "$tag_device",
            ),
            Panel(
                "Agent queue and spool",
                "timeseries",
                [
                    Query(
                        over_time(
                            'max("queue_lines") AS "queued lines", '
                            'max("spool_records") AS "spooled batches"',
                            "rackwatch_agent",
                            agents,
                            ["agent"],
                        ),
                        "$tag_agent $col",
                    )
                ],
                min=0,
            ),
            counter(
                "Agent lines dropped",
                "dropped_lines_total",
                "rackwatch_agent",
                ["agent"],
                "$tag_agent",
            ),
            Panel(
                "Broker connection",
                "state-timeline",
                [
                    Query(
                        over_time('last("mqtt_connected")', "rackwatch_agent", agents, ["agent"]),
                        "agent $tag_agent",
                    ),
                    Query(
                        over_time(
                            'last("mqtt_connected")', "rackwatch_collector", (), ["collector"]
                        ),
                        "collector $tag_collector",
                    ),
                ],
                states=UP_DOWN,
            ),
            Row("Collectors"),
            Panel(
                "Lines written per second",
                "timeseries",
                [
                    Query(
                        over_time(
                            'non_negative_derivative(max("lines_written_total"), 1s)',
                            "rackwatch_collector",
                            (),
                            ["collector"],
                        ),
                        "$tag_collector",
                    )
                ],
                unit="short",
                min=0,
            ),
            Panel(
                "Write duration",
                "timeseries",
                [
                    Query(
                        over_time(
                            'max("write_duration_s")', "rackwatch_collector", (), ["collector"]
                        ),
                        "$tag_collector",
                    )
                ],
                unit="s",
                min=0,
            ),
            Panel(
                "Pending and spooled",
                "timeseries",
                [
                    Query(
                        over_time(
                            'max("pending_lines") AS "pending lines", '
                            'max("spool_records") AS "spooled batches"',
                            "rackwatch_collector",
                            (),
                            ["collector"],
                        ),
                        "$tag_collector $col",
                    )
                ],
                min=0,
            ),
            Panel(
                "Lines set aside or dropped per interval",
                "timeseries",
                [
                    Query(
                        over_time(
                            'non_negative_difference(max("lines_invalid_total")) AS "invalid", '
                            'non_negative_difference(max("lines_rejected_total")) AS "rejected", '
                            'non_negative_difference(max("lines_dropped_total")) AS "dropped"',
                            "rackwatch_collector",
                            (),
                            ["collector"],
                        ),
                        "$tag_collector $col",
                    )
                ],
                min=0,
                custom={"drawStyle": "bars", "fillOpacity": 60},
            ),
        ],
    )


# --- DC power and environment ----------------------------------------------------------------

DC_STATES = {"normal": "green", "warning": "orange", "alarm": "red", "failure": "red"}
# A door or leak contact reads `closed` at rest on most monitors; any other state stands out.
CONTACT_STATES = {"closed": "green", "open": "orange", "on": "blue", "off": "gray"}


def dc_power_and_environment() -> Dashboard:
    """Device-level panels (one DC plant or monitor's own rectifiers, batteries and probes),
    picked by the device variable: nothing draws one series per rack."""
    unit = ("site", "room", "row", "device")
    device = tag_values("device", ("site", "room", "row"), "/^(dc_power|env_sensor|env_contact)$/")
    probe = ("device", "sensor")
    return Dashboard(
        "rackwatch-dc-env",
        "rackwatch / DC power and environment",
        "DC plants (bus, load, batteries, rectifiers) and environment monitors (probes, contacts).",
        [RP, SITE, ROOM, ROW, device],
        [
            Row("DC power"),
            Panel(
                "Plant, mains and battery state",
                "state-timeline",
                [
                    Query(over_time('last("state")', "dc_power", unit, ["device"]), "$tag_device"),
                    Query(
                        over_time('last("mains_state")', "dc_power", unit, ["device"]),
                        "$tag_device mains",
                    ),
                    Query(
                        over_time('last("battery_status")', "dc_power", unit, ["device"]),
                        "$tag_device battery",
                    ),
                ],
                width=24,
                height=5,
                states={**DC_STATES, "low": "orange", "depleted": "red", "unknown": "gray"},
            ),
            Panel(
                "Bus voltage",
                "timeseries",
                [
                    Query(
                        over_time('mean("voltage_v")', "dc_power", unit, ["device"]), "$tag_device"
                    )
                ],
                unit="volt",
                description="The DC bus, as a magnitude (a -48 V plant reads 54 V on float).",
            ),
            Panel(
                "Load and rectifier current",
                "timeseries",
                [
                    Query(
                        over_time('mean("load_current_a")', "dc_power", unit, ["device"]),
                        "$tag_device load",
                    ),
                    Query(
                        over_time('mean("rectifier_current_a")', "dc_power", unit, ["device"]),
                        "$tag_device rectifiers",
                    ),
                ],
                unit="amp",
                min=0,
            ),
            Panel(
                "Battery current (negative: discharging)",
                "timeseries",
                [
                    Query(
                        over_time('mean("battery_current_a")', "dc_power", unit, ["device"]),
                        "$tag_device",
                    ),
                    Query(
                        over_time(
                            'mean("current_a")', "dc_battery", unit, ["device", "battery", "sensor"]
                        ),
                        "$tag_device battery $tag_battery.$tag_sensor",
                    ),
                ],
                unit="amp",
                width=8,
            ),
            Panel(
                "Battery voltage",
                "timeseries",
                [
                    Query(
                        over_time('mean("battery_voltage_v")', "dc_power", unit, ["device"]),
                        "$tag_device",
                    ),
                    Query(
                        over_time('mean("voltage_v")', "dc_battery", unit, ["device", "battery"]),
                        "$tag_device battery $tag_battery",
                    ),
                ],
                unit="volt",
                width=8,
                description="Where the plant measures it apart from the bus; a float-charged "
                "string sits on the bus (Bus voltage).",
            ),
            Panel(
                "Battery temperature",
                "timeseries",
                [
                    Query(
                        over_time('mean("battery_temperature_c")', "dc_power", unit, ["device"]),
                        "$tag_device",
                    ),
                    Query(
                        over_time(
                            'mean("temperature_c")',
                            "dc_battery",
                            unit,
                            ["device", "battery", "sensor"],
                        ),
                        "$tag_device battery $tag_battery.$tag_sensor",
                    ),
                ],
                unit="celsius",
                width=8,
            ),
            Panel(
                "Rectifier states",
                "state-timeline",
                [
                    Query(
                        over_time('last("state")', "dc_rectifier", unit, ["device", "rectifier"]),
                        "$tag_device #$tag_rectifier",
                    )
                ],
                states=DC_STATES,
            ),
            Panel(
                "Rectifier output current",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("output_current_a")',
                            "dc_rectifier",
                            unit,
                            ["device", "rectifier"],
                        ),
                        "$tag_device #$tag_rectifier",
                    )
                ],
                unit="amp",
                min=0,
                description="A rectifier far below its peers carries no share of the load.",
            ),
            Row("Environment"),
            Panel(
                "Temperature per probe",
                "timeseries",
                [
                    Query(
                        over_time('mean("temperature_c")', "env_sensor", unit, probe),
                        "$tag_device $tag_sensor",
                    )
                ],
                unit="celsius",
                width=8,
                thresholds=INLET_C,
                custom={"thresholdsStyle": {"mode": "line"}},
            ),
            Panel(
                "Humidity per probe",
                "timeseries",
                [
                    Query(
                        over_time('mean("humidity_pct")', "env_sensor", unit, probe),
                        "$tag_device $tag_sensor",
                    )
                ],
                unit="percent",
                width=8,
                min=0,
                max=100,
            ),
            Panel(
                "Dew point per probe",
                "timeseries",
                [
                    Query(
                        over_time('mean("dew_point_c")', "env_sensor", unit, probe),
                        "$tag_device $tag_sensor",
                    )
                ],
                unit="celsius",
                width=8,
                description="Where the monitor reports one; ASHRAE recommends at most 15 C.",
            ),
            Panel(
                "Contacts (doors, leak, smoke, relays)",
                "state-timeline",
                [
                    Query(
                        over_time('last("state")', "env_contact", unit, ["device", "contact"]),
                        "$tag_device $tag_contact",
                    )
                ],
                width=24,
                height=6,
                states=CONTACT_STATES,
            ),
        ],
    )


DASHBOARDS = {
    "hub-overview": hub_overview,
    "rows-and-racks": rows_and_racks,
    "pdu-detail": pdu_detail,
    "cooling": cooling,
    "ups": ups,
    "dc-power-environment": dc_power_and_environment,
    "accelerators": accelerators,
    "rackwatch-health": health,
}


def render(name: str) -> str:
    """The committed text of one dashboard: stable key order, two-space indent, final newline."""
    return json.dumps(DASHBOARDS[name]().to_json(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        (args.out / f"{name}.json").write_text(render(name), encoding="utf-8")
        print(f"wrote {args.out / f'{name}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
