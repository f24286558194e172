"""Every dashboard's panel queries against a hub of 20,000 racks in a real InfluxDB
(dashboards/synthetic.py): each returns series with its variables at All and at one site,
room and row, from the raw policy and from the 5-minute one; the panels that show each rack
or feed show every one of them.

What it writes (to stay near a minute on two shared cores): all 20,000 racks' roll-ups
(`rack_power`, `feed_power`) for the last 30 s at the collector's 10 s and one 5-minute point;
rows, rooms, sites, PUE and a few devices of each kind for 2 minutes raw (devices every
30 s) and an hour of 5-minute points. The devices are real recordings polled once through the
session's snmpsim and the H100 NVML probe (synthetic.poll_real), moved by a small walk.
Panels that show only the last minutes get the devices' points of that moment first (a live
site keeps adding them). Timings at this scale: bench/bench_dashboards.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from collector.config import InfluxSettings, RetentionSettings, RollupSettings
from collector.rollup import Rollup
from dashboards.macros import interpolate, variables_used
from dashboards.synthetic import (
    POLLED,
    Layout,
    Real,
    Rollups,
    Windows,
    device_samples,
    generate,
    has_accelerators,
    opening_values,
    poll_real,
    write_latest,
)
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.lineproto import encode
from telemetry.sample import Sample
from telemetry.schema import schema
from tests.test_dashboards import dashboards, named, queries, variable_queries

Picked = dict[str, list[str] | None]

WINDOWS = Windows(raw_s=120, raw_racks_s=30, aggregated_s=3600, aggregated_racks_s=300)
LAYOUT = Layout()
ONE = {"site": "hub-a", "room": "hall-01", "row": "01"}  # a row an operator picks
AGGREGATES = RetentionSettings().policy
# Panels empty as their dashboard opens, with the reason; the test checks they still are
# (shrink this when the dashboard changes) and runs them with a device of their own kind.
OPENS_EMPTY: dict[tuple[str, str], str] = {}
PLACES = ("site", "room", "row", "rack")


def test_the_layout_is_a_hub_of_20000_racks() -> None:
    places = LAYOUT.places()
    assert len(places) == len(set(places)) == 20_000
    assert {site for site, *_ in places} == {"hub-a", "hub-b"}
    rooms = {(site, room) for site, room, *_ in places}
    rows = {(site, room, row) for site, room, row, _ in places}
    assert len(rooms) == 25  # of 800 racks
    assert len(rows) == 1000  # of 20
    assert len({(site, room, rack) for site, room, _, rack in places}) == 20_000  # rollup's key


def test_roll_up_lines_are_what_the_encoder_writes() -> None:
    """The fast spelling of the racks' lines equals telemetry.lineproto.encode's."""
    rollups = Rollups(Layout(racks=120).places())
    t = 1_780_000_000
    assert list(rollups.lines(t)) == [encode(sample) for sample in rollups.samples(t)]
    groups = list(rollups.lines(t, racks=False))
    assert [line.split(",")[0] for line in groups].count("row_power") == 6
    assert all(not line.startswith(("rack_power", "feed_power")) for line in groups)


def test_rack_and_feed_points_are_what_the_collector_computes() -> None:
    """Fed one PDU per feed (power, inlet voltage), four accelerator hosts in three racks of
    four and each rack's peak, collector/rollup.py gives the points the generator writes."""
    rollups = Rollups(Layout(racks=40).places())
    collector = Rollup(rollups.inventory, RollupSettings(inventory=Path("inventory.yaml")))
    t = 1_780_000_000
    lines = []
    for i, (site, room, row, rack) in enumerate(rollups.places):
        where = {"site": site, "room": room, "row": row, "rack": rack}
        feed_a, feed_b, fields = rollups.rack_fields(i, t)
        for feed, values in (("A", feed_a), ("B", feed_b)):
            pdu = {**where, "device": f"pdu-{rack}-{feed}", "feed": feed}
            lines.append(Sample("pdu", pdu, {"power_w": values["power_w"]}, t * 10**9))
            inlet = {"voltage_v": values["voltage_v"]}
            lines.append(Sample("pdu_inlet", {**pdu, "inlet": "1"}, inlet, t * 10**9))
        if "accelerator_power_w" in fields:
            for host in range(4):
                power = {"power_w": float(fields["accelerator_power_w"]) / 4}
                tags = {**where, "host": f"{rack}-{host}", "vendor": "nvidia"}
                lines.append(Sample("accelerator_host", tags, power, t * 10**9))
        collector._peaks[(site, room, rack)].add((t - 3600) * 10**9, rollups.peak_w(i))
    collector.observe(encode(sample).encode() for sample in lines)

    def points(samples: Iterable[Sample]) -> dict[tuple[str, str], dict[str, object]]:
        return {
            (s.measurement, str(sorted(s.tags.items()))): dict(s.fields)
            for s in samples
            if s.measurement in ("rack_power", "feed_power")
        }

    theirs = points(collector.compute(t * 10**9))
    assert len(theirs) == 3 * 40
    assert theirs == points(rollups.samples(t))


@pytest.fixture(scope="module")
def real(snmpsim: Running) -> Real:
    """The real devices' polls (once: the session's snmpsim serves the recordings)."""
    return poll_real(snmpsim)


@pytest.mark.integration
def test_real_devices_move_together_and_keep_their_sums(real: Real) -> None:
    """Each kind's recordings gave its measurements; over an hour a device's load fields
    (W, VA, A) move by one factor within 4 % of the recording, so what it sums stays
    summed (a host's power is its cards'), and counters only grow."""
    assert {kind for kind, _ in real} == {*POLLED, "gpu"}
    places = Layout(racks=40).places()
    shown = sorted({m for polled in real.values() for m in polled.measurements})
    before: dict[tuple[str, str], float] = {}
    t0 = 1_790_000_000
    for t in range(t0, t0 + 3600, 300):
        now = [s for s in device_samples(shown, places, t, real) if s.tags["site"] == "hub-a"]
        hosts = {s.tags["host"]: s.fields["power_w"] for s in now if s.measurement.endswith("host")}
        for host, power in hosts.items():
            cards = [
                float(s.fields["power_w"])
                for s in now
                if s.measurement == "accelerator" and s.tags["host"] == host
            ]
            assert cards
            assert power == pytest.approx(sum(cards), abs=0.002)
        for kind, n in real:
            polled = real[(kind, n)]
            device = f"{'gpu-host' if kind == 'gpu' else kind}-hub-a-{n + 1}"
            ours = [
                s
                for s in now
                if device in (s.tags.get("device"), s.tags.get("host"))
                and s.measurement in polled.measurements  # the first device's gaps: made up
            ]
            assert len(ours) == len(polled.samples), device
            factors = set()
            recordings = sorted(polled.samples, key=lambda s: s.measurement)  # as written
            for mine, recorded in zip(ours, recordings, strict=True):
                for name, value in recorded.fields.items():
                    unit = schema().fields[name].unit
                    moved = mine.fields[name]
                    if unit in ("W", "VA", "A") and isinstance(value, float) and value > 10:
                        assert isinstance(moved, float)
                        factors.add(round(moved / value, 2))
                    if schema().fields[name].kind == "counter" and n:
                        key = (f"{device} {sorted(mine.tags.items())}", name)
                        assert float(moved) >= before.get(key, float(value)), key
                        before[key] = float(moved)
            assert len(factors) <= 2, (device, factors)  # one factor, rounded either way
            assert all(0.95 <= f <= 1.05 for f in factors), (device, factors)


@pytest.fixture(scope="module")
def site(influxdb: Running, real: Real) -> Iterator[str]:
    database = f"synthetic_{uuid.uuid4().hex[:8]}"
    localservices.influx_create_database(influxdb, database)
    shown = {named(query)[0] for *_, query in queries()}
    settings = InfluxSettings(url=influxdb.url(), database=database)
    written = generate(settings, shown, LAYOUT, WINDOWS, real=real)
    assert written.points["autogen.rack_power"] == 3 * LAYOUT.racks
    assert written.points[f"{AGGREGATES}.feed_power"] == 2 * LAYOUT.racks
    yield database
    localservices.influx_query(influxdb, database, f'DROP DATABASE "{database}"')


def _run(
    influxdb: Running, database: str, query: str, variables: dict[str, list[str] | None], **how: str
) -> list[dict[str, object]]:
    variables = {name: variables.get(name) for name in variables_used(query)}
    if how.get("policy"):
        variables["rp"] = [how["policy"]]
    time_range, interval = ("3h", "5m") if how.get("policy") else ("10m", "10s")
    sent = interpolate(query, variables, time_range=time_range, interval=interval)
    return localservices.influx_query(influxdb, database, sent)


def _opening(influxdb: Running, database: str, dashboard: str, **chosen: str) -> Picked:
    def ask(query: str) -> list[dict[str, object]]:
        return localservices.influx_query(influxdb, database, query)

    return opening_values(ask, dashboards()[dashboard], chosen)


@pytest.mark.integration
@pytest.mark.parametrize(("dashboard", "variable", "query"), variable_queries())
def test_variables_list_the_hub(
    influxdb: Running, site: str, dashboard: str, variable: str, query: str
) -> None:
    opened = _opening(influxdb, site, dashboard)
    series = _run(influxdb, site, query, opened)
    values = [row[-1] for one in series for row in one.get("values") or []]  # type: ignore[attr-defined]
    assert values, f"{dashboard}: ${variable} has no values"
    if variable == "site":
        assert set(values) == {"hub-a", "hub-b"}
    if variable == "rack":  # a row's racks, or every rack name (they repeat from room to room)
        rows = LAYOUT.rows_per_room if opened.get("row") is None else 1
        assert len(set(values)) == rows * LAYOUT.racks_per_row


@pytest.mark.integration
@pytest.mark.parametrize(("dashboard", "title", "ref", "query"), queries())
def test_every_panel_query_returns_series_at_hub_scale(
    influxdb: Running, site: str, real: Real, dashboard: str, title: str, ref: str, query: str
) -> None:
    """Raw (last 10 minutes) and 5-minute (last 3 hours) data, with the variables as the
    dashboard opens (All where it offers All) and at one row."""
    measurement, _ = named(query)
    if "now() - " in query:
        settings = InfluxSettings(url=influxdb.url(), database=site)
        write_latest(settings, {measurement}, LAYOUT, real)
    opened = _opening(influxdb, site, dashboard)
    row = _opening(influxdb, site, dashboard, **ONE)
    if (dashboard, measurement) in OPENS_EMPTY:
        assert not _run(influxdb, site, query, opened), "has data now: shrink OPENS_EMPTY"
        own = f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "device"'
        device = localservices.influx_query(influxdb, site, own)[0]["values"][0][1]  # type: ignore[index]
        opened = _opening(influxdb, site, dashboard, device=device)
        row = _opening(influxdb, site, dashboard, **ONE, device=device)
    runs = [(opened, ""), (row, "")]
    if '"$rp".' in query:
        runs += [(opened, AGGREGATES), (row, AGGREGATES)]
    for variables, policy in runs:
        series = _run(influxdb, site, query, variables, policy=policy)
        where = {k: v for k, v in variables.items() if v} or "All"
        assert series, f"{dashboard} / {title} {ref} found nothing ({where}, {policy}): {query}"
        grouped = query.rsplit("GROUP BY", 1)[-1] if "GROUP BY" in query else ""
        places = [t for t in PLACES if variables_used(query) & {t}]
        if (
            variables is opened
            and not policy
            and measurement in ("rack_power", "feed_power", "row_power")
            and "FROM (" not in query
            and not any(variables.get(t) for t in places)
        ):
            # Every rack (feed, row) of the hub, as distinct as the panel's GROUP BY makes it.
            tags = [t for t in PLACES if f'"{t}"' in grouped]
            feeds = ("A", "B") if '"feed"' in grouped else ("",)
            expected = {
                (*(dict(zip(PLACES, place, strict=True))[t] for t in tags), feed)
                for i, place in enumerate(LAYOUT.places())
                if "accelerator" not in query or has_accelerators(i)
                for feed in feeds
            }
            assert len(series) == len(expected), f"{dashboard} / {title} {ref}"
