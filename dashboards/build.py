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
from typing import Any

from dashboards.grafana import (
    GREEN_YELLOW_RED,
    PLAIN,
    Dashboard,
    Link,
    Panel,
    Query,
    Row,
    Variable,
)

OUT = Path(__file__).resolve().parent / "json"

# --- query helpers ---------------------------------------------------------------------------


def where(filters: Sequence[str]) -> str:
    """$timeFilter and one regex match per tag, each against the variable of the same name,
    or of another name as `tag=variable` (a DC plant's `device` against `$plant`)."""
    matches = (f.partition("=") for f in filters)
    return "$timeFilter" + "".join(
        f' AND "{tag}" =~ /^${variable or tag}$/' for tag, _, variable in matches
    )


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


def tag_values(
    key: str, filters: Sequence[str], measurement: str = "", *, multi: bool = True
) -> Variable:
    """A variable of one tag's values; `measurement` may be a regex (`/^pdu/`). Single-valued
    (`multi=False`): the variable that fixes a drill-down view's level (one site, one rack)."""
    quoted = measurement if measurement.startswith("/") else f'"{measurement}"'
    source = f" FROM {quoted}" if measurement else ""
    condition = " AND ".join(f'"{tag}" =~ /^${tag}$/' for tag in filters)
    query = f'SHOW TAG VALUES{source} WITH KEY = "{key}"' + (
        f" WHERE {condition}" if condition else ""
    )
    return Variable(key, key.capitalize(), query, multi=multi)


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
# One of each: the variables that make a view a site, room, row or rack view.
ONE_SITE = tag_values("site", (), multi=False)
ONE_ROOM = tag_values("room", ("site",), multi=False)
ONE_ROW = tag_values("row", ("site", "room"), multi=False)
ONE_RACK = tag_values("rack", ("site", "room", "row"), multi=False)

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


# --- drill-down: hub -> site -> room -> row -> rack -> device --------------------------------
#
# Each level is a view with its own aggregates (the roll-ups of that level) and top-N tables
# that link to the level below. Above the row, no panel draws one series per rack or per card:
# a hub has 20,000 racks and 70,000 cards (tests/test_dashboards.py enforces it).

TOP_N = 20
NOW_WINDOW = "5m"  # "now": the last few polls, whatever range the dashboard shows
UID = {
    "hub": "rackwatch-hub",
    "site": "rackwatch-site",
    "room": "rackwatch-room",
    "row": "rackwatch-racks",
    "rack": "rackwatch-rack",
    "pdu": "rackwatch-pdu",
    "cooling": "rackwatch-cooling",
    "ups": "rackwatch-ups",
    "dc-env": "rackwatch-dc-env",
    "accelerators": "rackwatch-accelerators",
}
# Clock-event reasons that slow a card down (idle, application clocks, sync boost do not).
THROTTLING = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake",
)


def columns(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def down_to(level: str) -> tuple[str, ...]:
    """A place's tags from the site down to `level`: row "A" of one room is not row "A" of
    the next, so a series per row is grouped by site, room and row."""
    return PLACE[: PLACE.index(level) + 1]


def drill(target: str, variables: Sequence[str], *, labels: bool = False) -> Link:
    """A data link to the `target` view, each of `variables` taken from the clicked row's column
    of the same name (a table), or the clicked series' tag (`labels`), the time range kept."""
    ref = "__field.labels" if labels else "__data.fields"
    passed = "&".join(f"var-{name}=${{{ref}.{name}}}" for name in variables)
    return Link(
        f"{target} view",
        f"/d/{UID[target]}?{passed}&var-datasource=${{datasource}}&${{__url_time_range}}",
    )


# Tables of latest values read the end of the range: what was so then (a range looked back on
# shows its end), and a rack that stopped reporting does not rank with an old value. It costs
# about what the whole range does (bench/bench_drilldown.py). They read the raw policy whatever
# `$rp` is: the 5-minute policy's newest point is 5 to 10 minutes old (its continuous query
# writes an interval once it has ended), so a 10-minute window there can hold nothing, while
# raw data, kept for days, has the last poll; a window wide enough for the aggregates would
# rank a rack that stopped reporting with a value up to 15 minutes old.
LATEST_WINDOW = "10m"


def now_where(filters: Sequence[str]) -> str:
    return where(filters).replace("$timeFilter", f"time > now() - {NOW_WINDOW}")


def end_where(filters: Sequence[str]) -> str:
    """The last LATEST_WINDOW of the dashboard's range (Grafana's ${__to}: epoch ms)."""
    window = f"time > ${{__to}}ms - {LATEST_WINDOW} AND time <= ${{__to}}ms"
    return where(filters).replace("$timeFilter", window)


def top_n(
    rank: str,
    shown: Sequence[str],
    measurement: str,
    filters: Sequence[str],
    keys: Sequence[str],
    *,
    now: bool = False,
    condition: str = "",
    n: int = TOP_N,
) -> Query:
    """The `n` series of `keys` with the highest latest `rank` at the end of the range (raw
    data of its last LATEST_WINDOW), with their latest `shown` fields and their tags as
    columns: one table of n rows, whatever the number of series. `now`: the last NOW_WINDOW,
    whatever the range."""
    fields = (rank, *shown)
    inner = ", ".join(f'last("{name}") AS "{name.removeprefix("throttle_")}"' for name in fields)
    window = now_where(filters) if now else end_where(filters)
    origin = f'"{measurement}" WHERE {window}'  # the raw policy: see LATEST_WINDOW
    outer = columns([*keys, *(name.removeprefix("throttle_") for name in shown)])
    query = (
        f'SELECT top("{rank}", {n}) AS "{rank}", {outer} FROM (SELECT {inner} FROM {origin} '
        f"GROUP BY {columns(keys)})"
    )
    return Query(query + (f" WHERE {condition}" if condition else ""), table=True)


def exceptions(
    field: str,
    normal: Sequence[str],
    measurement: str,
    filters: Sequence[str],
    keys: Sequence[str],
) -> Query:
    """Up to TOP_N series of `keys` whose latest `field` is none of `normal`: what is wrong
    now (empty when all is well)."""
    condition = " AND ".join(f"\"state\" != '{value}'" for value in normal)
    return Query(
        f'SELECT "state", {columns(keys)} FROM (SELECT last("{field}") AS "state" '
        f'FROM "{measurement}" WHERE {now_where(filters)} GROUP BY {columns(keys)}) '
        f"WHERE {condition} LIMIT {TOP_N}",
        table=True,
    )


def racks_nearest_their_limit(filters: Sequence[str]) -> Panel:
    return Panel(
        f"The {TOP_N} racks nearest their limit",
        "table",
        [top_n("capacity_pct", (), "rack_power", filters, PLACE)],
        unit="percent",
        thresholds=GREEN_YELLOW_RED,
        options={"sortBy": [{"displayName": "capacity_pct", "desc": True}]},
        links=[drill("rack", PLACE)],
        hide=("Time",),
        # The rank alone: each column more is one more last() over every rack of the view,
        # three more cost 3 to 6 times as much (bench/bench_drilldown.py); the rack view has them.
        description="Each rack's power against its capacity (roll-up `rack_power`) at the end "
        f"of the time range, the {TOP_N} highest; a click opens the rack.",
    )


def hottest_inlets(filters: Sequence[str]) -> Panel:
    return Panel(
        f"The {TOP_N} hottest inlets",
        "table",
        [top_n("rack_inlet_c", (), "cooling", filters, (*PLACE, "device"))],
        unit="celsius",
        thresholds=INLET_C,
        options={"sortBy": [{"displayName": "rack_inlet_c", "desc": True}]},
        links=[drill("rack", PLACE)],
        hide=("Time",),
        description="Rack inlet temperature as the cooling units measure it at the end of the "
        "time range; ASHRAE recommends at most 27 C. A click opens the rack.",
    )


def throttling(filters: Sequence[str]) -> tuple[str, str]:
    """The latest reading of each card of the last NOW_WINDOW (subquery), and the condition
    that it throttles now."""
    flags = [f"throttle_{flag}" for flag in THROTTLING]
    inner = ", ".join(
        [
            'last("temp_c") AS "temp_c"',
            'last("power_w") AS "power_w"',
            *(f'last("{flag}") AS "{flag.removeprefix("throttle_")}"' for flag in flags),
        ]
    )
    cards = (*PLACE, "host", "index")
    subquery = (
        f'(SELECT {inner} FROM "accelerator" WHERE {now_where(filters)} GROUP BY {columns(cards)})'
    )
    return subquery, " OR ".join(f'"{flag}" = true' for flag in THROTTLING)


def cards_throttling(
    filters: Sequence[str], by: Sequence[str], table_width: int = 20
) -> Sequence[Panel]:
    """How many cards throttle now (per `by`), and the hottest TOP_N of them."""
    subquery, condition = throttling(filters)
    group = f" GROUP BY {columns(by)}" if by else ""
    count = f'SELECT count("temp_c") AS "cards" FROM {subquery} WHERE {condition}{group}'
    cards = (*PLACE, "host", "index")
    table = (
        f'SELECT top("temp_c", {TOP_N}) AS "temp_c", {columns([*cards, "power_w", *THROTTLING])} '
        f"FROM {subquery} WHERE {condition}"
    )
    return (
        Panel(
            "Cards throttling now",
            "stat",
            [Query(count, f"$tag_{by[-1]}" if by else "cards")],
            width=4,
            thresholds=((None, "green"), (1.0, "orange")),
            options={"graphMode": "none", "textMode": "value_and_name"},
            description="Cards with a slowing clock-event reason set in their latest reading "
            f"of the last {NOW_WINDOW}: power cap, HW slowdown, thermal slowdown, power brake.",
        ),
        Panel(
            f"The {TOP_N} hottest cards throttling now",
            "table",
            [Query(table, table=True)],
            width=table_width,
            unit="celsius",
            options={"sortBy": [{"displayName": "temp_c", "desc": True}]},
            links=[drill("accelerators", (*PLACE, "host"))],
            hide=("Time",),
            description="Which reasons slow each card; a click opens its host.",
        ),
    )


def not_running(filters: Sequence[str]) -> Sequence[Panel]:
    """Cooling units off and UPSes not on their normal output, now: lists of what is wrong."""
    unit = ("site", "room", "row", "device")
    return (
        Panel(
            "Cooling units not running now",
            "table",
            [exceptions("operating_state", ("on", "standby"), "cooling", filters, unit)],
            states=COOLING_STATES,
            links=[drill("cooling", unit)],
            hide=("Time",),
            description="Units whose latest operating state is neither on nor standby "
            f"(up to {TOP_N}); empty: every unit runs.",
        ),
        Panel(
            "UPSes not on normal output now",
            "table",
            [exceptions("output_source", ("normal",), "ups", filters, unit)],
            states=UPS_SOURCES,
            links=[drill("ups", unit)],
            hide=("Time",),
            description=f"On battery, bypass or no output (up to {TOP_N}); empty: all normal.",
        ),
    )


GROUP_COLUMNS = (
    ("power_w", "power_w"),
    ("capacity_w", "capacity_w"),
    ("capacity_pct", "capacity_pct"),
    ("rack_pct_max", "hottest_rack_pct"),
    ("rack_pct_p95", "rack_p95_pct"),
    ("racks_near_limit", "racks_near_limit"),
    ("racks_nn_failing", "racks_nn_failing"),
    ("racks_reporting", "racks_reporting"),
    ("racks", "racks"),
    ("stranded_w", "stranded_w"),
)


def children(measurement: str, filters: Sequence[str], keys: Sequence[str], target: str) -> Panel:
    """One row per site, room or row below this view, its roll-up's latest aggregates."""
    select = ", ".join(f'last("{name}") AS "{label}"' for name, label in GROUP_COLUMNS)
    level = keys[-1]
    return Panel(
        f"{level.capitalize()}s",
        "table",
        [
            Query(
                # The raw policy, whatever $rp: see LATEST_WINDOW.
                f'SELECT {select} FROM "{measurement}" WHERE {end_where(filters)} '
                f"GROUP BY {columns(keys)}",
                table=True,
            )
        ],
        width=24,
        height=7,
        thresholds=GREEN_YELLOW_RED,
        options={"sortBy": [{"displayName": "hottest_rack_pct", "desc": True}]},
        links=[drill(target, keys)],
        hide=("Time",),
        description=f"Per {level} (roll-up `{measurement}`): power against capacity, the "
        "hottest rack and the 95th percentile of its racks (% of capacity), racks at or above "
        "rollup.near_limit_pct, racks failing N+N. A click opens the "
        f"{level}.",
    )


def level_stats(measurement: str, filters: Sequence[str], by: str) -> list[Panel]:
    """A level's headline aggregates, from its own roll-up: sum, max, p95, counts."""
    alias = f"$tag_{by}"

    def stat(title: str, select: str, unit: str = "", **extra: Any) -> Panel:
        return Panel(
            title,
            "stat",
            [Query(over_time(select, measurement, filters, down_to(by)), alias)],
            unit=unit,
            width=4,
            height=5,
            **extra,
        )

    return [
        stat("IT power", 'mean("power_w")', "watt", description=f"`{measurement}.power_w`"),
        stat(
            "Power against capacity",
            'mean("capacity_pct")',
            "percent",
            thresholds=GREEN_YELLOW_RED,
        ),
        stat(
            "Hottest rack",
            'max("rack_pct_max")',
            "percent",
            thresholds=GREEN_YELLOW_RED,
            description="The rack with the highest power against its capacity.",
        ),
        stat(
            "Rack load, p95",
            'max("rack_pct_p95")',
            "percent",
            thresholds=GREEN_YELLOW_RED,
            description="95 % of the racks draw at most this share of their capacity.",
        ),
        stat(
            "Racks near their limit",
            'last("racks_near_limit")',
            thresholds=((None, "green"), (1.0, "orange")),
            description="Racks at or above rollup.near_limit_pct (80 %) of their capacity.",
        ),
        stat(
            "Racks failing N+N",
            'last("racks_nn_failing")',
            thresholds=((None, "green"), (1.0, "red")),
            description="Racks whose load one feed alone could not carry.",
        ),
    ]


def spread_over_time(measurement: str, filters: Sequence[str], by: str) -> Panel:
    return Panel(
        "Racks against capacity: whole, hottest, p95",
        "timeseries",
        [
            Query(
                over_time(
                    'mean("capacity_pct") AS "all racks", max("rack_pct_max") AS "hottest", '
                    'max("rack_pct_p95") AS "p95"',
                    measurement,
                    filters,
                    down_to(by),
                ),
                f"$tag_{by} $col",
            )
        ],
        unit="percent",
        min=0,
        thresholds=GREEN_YELLOW_RED,
        custom={"thresholdsStyle": {"mode": "line"}},
    )


def power_and_capacity(measurement: str, filters: Sequence[str], by: str) -> Panel:
    return Panel(
        f"Power and capacity per {by}",
        "timeseries",
        [
            Query(
                over_time(
                    'mean("power_w") AS "power", mean("capacity_w") AS "capacity"',
                    measurement,
                    filters,
                    down_to(by),
                ),
                f"$tag_{by} $col",
            )
        ],
        unit="watt",
        min=0,
        links=[drill(by, down_to(by), labels=True)],
    )


def inlets_too_warm(filters: Sequence[str], by: str) -> Panel:
    """How many inlets read above ASHRAE's recommended 27 C now, per `by`."""
    limit = INLET_C[1][0]
    latest_inlet = (
        f'(SELECT last("rack_inlet_c") AS "inlet_c" FROM "cooling" WHERE {now_where(filters)} '
        f"GROUP BY {columns([*PLACE, 'device'])})"
    )
    return Panel(
        f"Inlets above {limit:.0f} C now",
        "stat",
        [
            Query(
                f'SELECT count("inlet_c") AS "inlets" FROM {latest_inlet} '
                f'WHERE "inlet_c" > {limit} GROUP BY {columns(down_to(by))}',
                f"$tag_{by}",
            )
        ],
        width=4,
        thresholds=((None, "green"), (1.0, "orange")),
        options={"graphMode": "none", "textMode": "value_and_name"},
        description="Rack inlets whose latest reading of the last "
        f"{NOW_WINDOW} is above ASHRAE's recommended {limit:.0f} C; none: no data.",
    )


def where_to_look(filters: Sequence[str], by: str) -> list[Panel | Row]:
    """The counts and top-N tables every level above the row shares."""
    return [
        Row("Where to look"),
        racks_nearest_their_limit(filters),
        hottest_inlets(filters),
        inlets_too_warm(filters, by),
        *cards_throttling(filters, down_to(by), table_width=16),
        *not_running(filters),
    ]


# --- hub overview ----------------------------------------------------------------------------


def hub_overview() -> Dashboard:
    site = ("site",)
    return Dashboard(
        UID["hub"],
        "rackwatch / Hub overview",
        "Every site: IT power against capacity, PUE, the racks' spread, the racks nearest their "
        "limit, the hottest inlets, cards throttling, cooling and UPS exceptions, alerts. "
        "Click a site, a rack or a card to drill down.",
        [RP, SITE],
        [
            Row("Sites"),
            *level_stats("site_power", site, "site"),
            children("site_power", site, site, "site"),
            power_and_capacity("site_power", site, "site"),
            Panel(
                "PUE",
                "timeseries",
                [Query(over_time('mean("pue")', "pue", site, ["site"]), "$tag_site")],
                decimals=2,
                thresholds=((None, "green"), (1.5, "yellow"), (2.0, "red")),
                custom={"thresholdsStyle": {"mode": "line"}},
                description="Facility power over IT power, from the inventory's meters.",
            ),
            spread_over_time("site_power", site, "site"),
            Panel(
                "Stranded capacity",
                "timeseries",
                [Query(over_time('mean("stranded_w")', "site_power", site, ["site"]), "$tag_site")],
                unit="watt",
                min=0,
                description="Provisioned but never drawn: capacity minus each rack's peak.",
            ),
            *where_to_look(site, "site"),
            Row("Accelerators and alerts"),
            Panel(
                "Accelerator utilization by cluster",
                "timeseries",
                [
                    Query(
                        over_time('mean("util_pct")', "accelerator", site, ["cluster"]),
                        "$tag_cluster",
                    )
                ],
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


def site_view() -> Dashboard:
    site = ("site",)
    room = ("site", "room")
    return Dashboard(
        UID["site"],
        "rackwatch / Site",
        "One site: its aggregates, its rooms, and where to look (top-N racks, inlets, cards). "
        "Click a room, a rack or a card to drill down.",
        [RP, ONE_SITE],
        [
            Row("Site $site"),
            *level_stats("site_power", site, "site"),
            children("room_power", site, room, "room"),
            power_and_capacity("room_power", site, "room"),
            spread_over_time("room_power", site, "room"),
            *where_to_look(site, "room"),
            Row("Accelerators and alerts"),
            Panel(
                "Accelerator power per room",
                "timeseries",
                [
                    Query(
                        over_time('mean("accelerator_power_w")', "room_power", site, ["room"]),
                        "$tag_room",
                    )
                ],
                unit="watt",
                min=0,
            ),
            Panel(
                "Accelerator utilization by cluster",
                "timeseries",
                [
                    Query(
                        over_time('mean("util_pct")', "accelerator", site, ["cluster"]),
                        "$tag_cluster",
                    )
                ],
                unit="percent",
                min=0,
                max=100,
            ),
            firing_now(site),
        ],
    )


def room_view() -> Dashboard:
    room = ("site", "room")
    row = ("site", "room", "row")
    return Dashboard(
        UID["room"],
        "rackwatch / Room",
        "One room: its aggregates, its rows, and where to look (top-N racks, inlets, cards). "
        "Click a row, a rack or a card to drill down.",
        [RP, ONE_SITE, ONE_ROOM],
        [
            Row("Room $room"),
            *level_stats("room_power", room, "room"),
            children("row_power", room, row, "row"),
            power_and_capacity("row_power", room, "row"),
            spread_over_time("row_power", room, "row"),
            *where_to_look(room, "row"),
            Row("Alerts"),
            firing_now(room),
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
    """The row view: one row's racks, each its own series (a row holds tens of racks)."""
    place = PLACE
    row = ("site", "room", "row")
    to_rack = [drill("rack", PLACE, labels=True)]
    return Dashboard(
        UID["row"],
        "rackwatch / Rows and racks",
        "One row: its aggregates, rack power per feed against the derated breaker capacity, "
        "N+N headroom, stranded capacity and inlet temperatures. Click a rack to open it.",
        [RP, ONE_SITE, ONE_ROOM, ONE_ROW, RACK],
        [
            Row("Row $row"),
            *level_stats("row_power", row, "row"),
            Panel(
                "Row $row: racks against capacity",
                "stat",
                [
                    Query(
                        latest('last("capacity_pct")', "rack_power", place, PLACE),
                        "$tag_rack",
                    )
                ],
                unit="percent",
                width=24,
                height=4,
                thresholds=GREEN_YELLOW_RED,
                options={"graphMode": "none", "textMode": "value_and_name"},
                links=to_rack,
                description="One tile per rack: power as a share of its capacity.",
            ),
            Panel(
                "Heat map: % of capacity by rack",
                "status-history",
                [
                    Query(
                        over_time('mean("capacity_pct")', "rack_power", place, PLACE),
                        "$tag_rack",
                    )
                ],
                unit="percent",
                width=24,
                thresholds=GREEN_YELLOW_RED,
                links=to_rack,
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


# --- rack ------------------------------------------------------------------------------------


def rack_view() -> Dashboard:
    """One rack: its feeds, inlets, devices and cards, each device linked to its own view."""
    place = PLACE
    rack_power = [
        ("Power", 'last("power_w")', "watt", PLAIN),
        ("Against capacity", 'last("capacity_pct")', "percent", GREEN_YELLOW_RED),
        ("N+N headroom", 'last("nn_headroom_w")', "watt", ((None, "red"), (0.0, "green"))),
        ("Stranded", 'last("stranded_w")', "watt", ((None, "blue"),)),
        ("Feeds missing", 'last("feeds_missing")', "", ((None, "green"), (1.0, "red"))),
        ("Accelerator power", 'last("accelerator_power_w")', "watt", PLAIN),
    ]
    device_links = [
        Link(
            f"{title} view",
            f"/d/{UID[target]}?var-site=${{site}}&var-room=${{room}}&var-row=${{row}}"
            + ("&var-rack=${rack}" if target == "pdu" else "")  # the others have no rack
            + f"&var-{variable}=${{__data.fields.device}}&var-datasource=${{datasource}}"
            "&${__url_time_range}",
        )
        for title, target, variable in (
            ("PDU", "pdu", "device"),
            ("Cooling", "cooling", "device"),
            ("UPS", "ups", "device"),
            ("DC power", "dc-env", "plant"),
            ("Environment", "dc-env", "monitor"),
        )
    ]
    return Dashboard(
        UID["rack"],
        "rackwatch / Rack",
        "One rack: power per feed against capacity, N+N, inlet temperatures, its devices and "
        "accelerator cards. Click a device or a host to open it.",
        [RP, ONE_SITE, ONE_ROOM, ONE_ROW, ONE_RACK],
        [
            Row("Rack $rack"),
            *(
                Panel(
                    title,
                    "stat",
                    [Query(latest(select, "rack_power", place), title)],
                    unit=unit,
                    width=4,
                    height=4,
                    thresholds=steps,
                    options={"graphMode": "none"},
                )
                for title, select, unit, steps in rack_power
            ),
            Panel(
                "Power by feed",
                "timeseries",
                [
                    Query(
                        over_time(
                            'mean("power_w") AS "power", mean("capacity_w") AS "capacity"',
                            "feed_power",
                            place,
                            ["feed"],
                        ),
                        "feed $tag_feed $col",
                    )
                ],
                unit="watt",
                min=0,
            ),
            Panel(
                "Feed load against derated rating",
                "timeseries",
                [
                    Query(
                        over_time('mean("load_pct")', "feed_power", place, ["feed"]),
                        "feed $tag_feed",
                    )
                ],
                unit="percent",
                min=0,
                thresholds=GREEN_YELLOW_RED,
                custom={"thresholdsStyle": {"mode": "line"}},
            ),
            Panel(
                "Inlet temperature",
                "timeseries",
                [
                    Query(
                        over_time('mean("rack_inlet_c")', "cooling", place, ["device"]),
                        "$tag_device",
                    ),
                    Query(
                        over_time('mean("temperature_c")', "env_sensor", place, ["sensor_name"]),
                        "$tag_sensor_name",
                    ),
                ],
                unit="celsius",
                thresholds=INLET_C,
                custom={"thresholdsStyle": {"mode": "line"}},
            ),
            Panel(
                "Devices",
                "table",
                [
                    Query(
                        latest(
                            'last("up") AS "up", max("poll_duration_s") AS "poll_s"',
                            "rackwatch_agent",
                            place,
                            ["device", "kind"],
                        ),
                        table=True,
                    )
                ],
                states=UP_DOWN,
                links=device_links,
                hide=("Time",),
                description="Every device the agents poll in this rack, answering or not; a "
                "click opens the view of its kind.",
            ),
            Row("Accelerators"),
            Panel(
                "Hosts",
                "table",
                [
                    Query(
                        latest(
                            'last("power_w") AS "power_w", last("count") AS "cards"',
                            "accelerator_host",
                            place,
                            [*PLACE, "host"],
                        ),
                        table=True,
                    )
                ],
                unit="watt",
                width=8,
                links=[drill("accelerators", (*PLACE, "host"))],
                hide=("Time",),
                description="Accelerator power per host; a click opens the host.",
            ),
            *cards_throttling(place, ["host"], table_width=12),
            Panel(
                "Utilization per card",
                "timeseries",
                [
                    Query(
                        over_time('mean("util_pct")', "accelerator", place, ["host", "index"]),
                        "$tag_host #$tag_index",
                    )
                ],
                unit="percent",
                min=0,
                max=100,
            ),
            Panel(
                "Temperature per card",
                "timeseries",
                [
                    Query(
                        over_time('max("temp_c")', "accelerator", place, ["host", "index"]),
                        "$tag_host #$tag_index",
                    )
                ],
                unit="celsius",
                thresholds=((None, "green"), (85.0, "orange")),
                custom={"thresholdsStyle": {"mode": "line"}},
            ),
        ],
    )


# --- PDU detail ------------------------------------------------------------------------------


def pdu_detail() -> Dashboard:
    pdu = (*PLACE, "device")
    device = tag_values("device", PLACE, "/^pdu/", multi=False)
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
    device = tag_values("device", ("site", "room", "row"), "cooling", multi=False)

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
    device = tag_values("device", ("site", "room", "row"), "ups", multi=False)
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

CARD_FILTERS = (*PLACE, "host", "cluster")  # the accelerators view's variables


def per_card(
    title: str,
    select: str,
    unit: str,
    limit: float | None = None,
    warm: float | None = None,
    *,
    column: bool = False,
    description: str = "",
) -> Panel:
    """One series per card of the accelerators view (several with `column`: one per field)."""
    return Panel(
        title,
        "timeseries",
        [
            Query(
                over_time(select, "accelerator", CARD_FILTERS, ["host", "index"]),
                "$tag_host #$tag_index" + (" $col" if column else ""),
            )
        ],
        unit=unit,
        min=0,
        max=limit,
        thresholds=((None, "green"), (warm, "orange")) if warm else PLAIN,
        custom={"thresholdsStyle": {"mode": "line"}} if warm else {},
        description=description,
    )


def accelerators() -> Dashboard:
    card = (*PLACE, "host")
    host = tag_values("host", PLACE, "accelerator", multi=False)
    cluster = tag_values("cluster", ("site",), "accelerator")
    filters = CARD_FILTERS

    return Dashboard(
        "rackwatch-accelerators",
        "rackwatch / Accelerators",
        "One host (the device level): utilization, memory, power, temperatures, throttling, "
        "ECC and XID events per card, whichever vendor made the card; which job runs on each "
        "card, and each job's power and energy.",
        [RP, SITE, ROOM, ROW, RACK, cluster, host],
        [
            Panel(
                "Host power",
                "timeseries",
                [
                    Query(
                        over_time('mean("power_w")', "accelerator_host", card, ["host", "vendor"]),
                        "$tag_host $tag_vendor",
                    )
                ],
                unit="watt",
                min=0,
                width=24,
                height=6,
                description="All of the host's cards of one vendor (`accelerator_host`).",
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
            *health_and_network(),
            *profiling(),
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
                        # The whole place: rack "A01" is in every room.
                        per_job('sum("cards") AS "cards"', 'last("cards")', card, *PLACE),
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


def health_and_network() -> list[Panel | Row]:
    """Ascend: each chip's health with its fault codes, and its RoCE port (`hccn_tool`)."""
    by_card = ["host", "index", "chip"]
    filters = CARD_FILTERS
    return [
        Row("Health and RoCE network"),
        Panel(
            "Card health",
            "table",
            [
                Query(
                    latest(
                        'last("health") AS "health", last("health_error_codes") AS "codes", '
                        'last("health_fault_handling") AS "handling", '
                        'last("health_fault_meaning") AS "meaning"',
                        "accelerator",
                        filters,
                        by_card,
                    ),
                    table=True,
                )
            ],
            width=24,
            description="Each Ascend chip's last health (npu-smi) in the time range, and while "
            "it is not OK its fault codes with Huawei's handling level and meaning "
            "(agent/accelerators/ascend_faults.yaml).",
        ),
        Panel(
            "RoCE link up",
            "state-timeline",
            [
                Query(
                    over_time('last("roce_link_up")', "accelerator", filters, by_card[:2]),
                    "$tag_host #$tag_index",
                )
            ],
            states=UP_DOWN,
            options={"showValue": "never"},
            description="Each NPU's RoCE port (`hccn_tool -link -g`): red while the link is down.",
        ),
        per_card(
            "RoCE throughput per card",
            'non_negative_derivative(max("roce_tx_bytes_total"), 1s) AS "tx", '
            'non_negative_derivative(max("roce_rx_bytes_total"), 1s) AS "rx"',
            "Bps",
            column=True,
        ),
        Panel(
            "PFC pause frames and QP errors per interval",
            "timeseries",
            [
                Query(
                    over_time(
                        'non_negative_difference(max("roce_tx_pfc_packets_total")) '
                        'AS "pfc sent", '
                        'non_negative_difference(max("roce_qp_errors_total")) AS "qp errors"',
                        "accelerator",
                        filters,
                        by_card[:2],
                    ),
                    "$tag_host #$tag_index $col",
                )
            ],
            min=0,
            custom={"drawStyle": "bars"},
            description="Pause frames a port sends mean its receive buffers fill: the fabric "
            "is congested at this NPU. Queue-pair errors break collective operations.",
        ),
        per_card(
            "Optical module power per card",
            'min("optical_tx_power_w") AS "tx", min("optical_rx_power_w") AS "rx", '
            'max("optical_rx_power_low_w") AS "rx low alarm"',
            "watt",
            column=True,
            description="The weakest lane of each module: a lane's received power below the "
            "module's own low-alarm threshold (a dirty or cracked fibre) fails the link.",
        ),
    ]


def profiling() -> list[Panel | Row]:
    """NVIDIA's profiling counters (GPM, Hopper and later), read only where the agent's
    `nvidia.profiling_interval_s` is set (docs/accelerators-nvidia.md)."""
    return [
        Row("Profiling (NVIDIA GPM)"),
        per_card(
            "SM and tensor pipes active per card",
            'mean("sm_active_pct") AS "sm", mean("tensor_active_pct") AS "tensor"',
            "percent",
            limit=100,
            column=True,
        ),
        per_card(
            "SM occupancy and DRAM bandwidth per card",
            'mean("sm_occupancy_pct") AS "occupancy", mean("dram_active_pct") AS "dram"',
            "percent",
            limit=100,
            column=True,
        ),
        per_card(
            "NVLink and PCIe throughput per card",
            'mean("nvlink_tx_bytes_per_s") AS "nvlink tx", '
            'mean("nvlink_rx_bytes_per_s") AS "nvlink rx", '
            'mean("pcie_tx_bytes_per_s") AS "pcie tx", mean("pcie_rx_bytes_per_s") AS "pcie rx"',
            "Bps",
            column=True,
        ),
        per_card(
            "Encoder and decoder use per card",
            'mean("enc_util_pct") AS "encoder", mean("dec_util_pct") AS "decoder"',
            "percent",
            limit=100,
            column=True,
        ),
    ]


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
            *devices_answering(agents),
            Panel(
                "Poll duration (slowest device per agent)",
                "timeseries",
                [
                    Query(
                        over_time('max("poll_duration_s")', "rackwatch_agent", agents, ["agent"]),
                        "$tag_agent",
                    )
                ],
                unit="s",
                min=0,
            ),
            Panel(
                f"The {TOP_N} slowest polls",
                "table",
                [top_n("poll_duration_s", (), "rackwatch_agent", agents, AGENT_DEVICE)],
                unit="s",
                options={"sortBy": [{"displayName": "poll_duration_s", "desc": True}]},
                hide=("Time",),
                description="Each device's latest poll duration at the end of the time range, "
                "the slowest.",
            ),
            per_agent_counter("Failed polls per agent", "polls_failed_total", agents),
            per_agent_counter(
                "Overruns per agent (ticks skipped, poll still running)", "overruns_total", agents
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


AGENT_DEVICE = ("site", "agent", "room", "row", "rack", "device")


def devices_answering(agents: Sequence[str]) -> Sequence[Panel]:
    """Per agent, how many devices answer now, and the devices that do not: one series per
    agent, never one per device (an agent polls thousands)."""
    latest_up = (
        f'(SELECT last("up") AS "up" FROM "rackwatch_agent" WHERE {now_where(agents)} '
        f"GROUP BY {columns(AGENT_DEVICE)})"
    )
    count = f'SELECT count("up") AS "answering" FROM {latest_up} WHERE "up" = true GROUP BY "agent"'
    silent = (
        f'SELECT "up", {columns(AGENT_DEVICE)} FROM {latest_up} WHERE "up" = false LIMIT {TOP_N}'
    )
    return (
        Panel(
            "Devices answering now",
            "stat",
            [Query(count, "$tag_agent")],
            width=8,
            options={"graphMode": "none", "textMode": "value_and_name"},
            description=f"Devices whose latest poll of the last {NOW_WINDOW} succeeded.",
        ),
        Panel(
            "Devices not answering now",
            "table",
            [Query(silent, table=True)],
            width=16,
            states=UP_DOWN,
            hide=("Time",),
            description=f"Up to {TOP_N} devices whose latest poll failed; empty: all answer.",
        ),
    )


def per_agent_counter(title: str, field: str, agents: Sequence[str]) -> Panel:
    """A counter's increase per interval, summed over each agent's devices."""
    inner = over_time(
        f'non_negative_difference(max("{field}")) AS "{field}"',
        "rackwatch_agent",
        agents,
        ["agent", "device"],
    )
    return Panel(
        title,
        "timeseries",
        [
            Query(
                f'SELECT sum("{field}") FROM ({inner}) WHERE $timeFilter '
                'GROUP BY time($__interval), "agent" fill(none)',
                "$tag_agent",
            )
        ],
        min=0,
        custom={"drawStyle": "bars", "fillOpacity": 60},
    )


# --- DC power and environment ----------------------------------------------------------------

DC_STATES = {"normal": "green", "warning": "orange", "alarm": "red", "failure": "red"}
# A door or leak contact reads `closed` at rest on most monitors; any other state stands out.
CONTACT_STATES = {"closed": "green", "open": "orange", "on": "blue", "off": "gray"}


def dc_power_and_environment() -> Dashboard:
    """Device-level panels (one DC plant's own rectifiers and batteries, one monitor's probes
    and contacts): nothing draws one series per rack. The plant and the monitor are separate
    variables, each listing only devices of its kind, so both halves show one on opening."""
    place = ("site", "room", "row")

    def one_of(name: str, label: str, measurements: str) -> Variable:
        condition = " AND ".join(f'"{tag}" =~ /^${tag}$/' for tag in place)
        query = f'SHOW TAG VALUES FROM {measurements} WITH KEY = "device" WHERE {condition}'
        return Variable(name, label, query, multi=False)

    plant = one_of("plant", "DC plant", '"dc_power"')
    monitor = one_of("monitor", "Environment monitor", "/^(env_sensor|env_contact)$/")
    unit = (*place, "device=plant")
    env = (*place, "device=monitor")
    probe = ("device", "sensor")
    return Dashboard(
        "rackwatch-dc-env",
        "rackwatch / DC power and environment",
        "DC plants (bus, load, batteries, rectifiers) and environment monitors (probes, contacts).",
        [RP, SITE, ROOM, ROW, plant, monitor],
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
                        over_time('mean("temperature_c")', "env_sensor", env, probe),
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
                        over_time('mean("humidity_pct")', "env_sensor", env, probe),
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
                        over_time('mean("dew_point_c")', "env_sensor", env, probe),
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
                        over_time('last("state")', "env_contact", env, ["device", "contact"]),
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
    "site": site_view,
    "room": room_view,
    "rows-and-racks": rows_and_racks,
    "rack": rack_view,
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
