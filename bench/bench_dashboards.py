"""Every panel query of every dashboard against a hub of 20,000 racks, as a ratio to a plain
`SELECT last(field)` over the same measurement, policy and time range.

    .venv/bin/python -m bench.bench_dashboards [--racks 20000] [--raw-racks-s 120] [--runs 3]

Starts a private InfluxDB 1.x (rackwatch/localservices.py), fills it with dashboards/synthetic.py
(roll-ups of every rack, row, room and site; a few devices of each kind, polled from real
recordings through a private snmpsim) and sends each panel
query the way Grafana sends it (dashboards/macros.py) in three cases:

- `open`: the variables as the dashboard opens (All where it offers All, else the first
  value), the last hour of the raw policy, `$__interval` 10 s;
- `row`: one site, room and row picked (what an operator drills into), same range;
- `5m`: as `open`, the last 24 hours of the 5-minute policy, `$__interval` 5 m.

Each query and its peer run back to back, --runs times; the table gives min / median / max
of query time over peer time, the query's median in ms, and the series and points it
returns (at All). Flags: `device`: reads device data and sums it to a place where a roll-up
holds the same figure; `scan`: reads every device (card) for a place-level line, no roll-up
exists; `merge`: groups by a place without the levels above it, so at All places of the same
name in other rooms or sites fall into one series.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from collector.config import InfluxSettings, RetentionSettings
from dashboards.macros import interpolate, variables_used
from dashboards.synthetic import (
    RECORDINGS,
    ROLLUPS,
    Layout,
    Real,
    Windows,
    generate,
    opening_values,
    poll_real,
    write_latest,
)
from rackwatch import localservices
from telemetry.schema import schema
from tests.test_dashboards import dashboards, named, queries

DATABASE = "rackwatch"
PLACES = ("site", "room", "row", "rack")
ONE = {"site": "hub-a", "room": "hall-01", "row": "01"}
# A device measurement's field that a roll-up already sums per place.
ROLLED_UP = {
    ("accelerator_host", "power_w"): "rack_power.accelerator_power_w",
    ("accelerator", "power_w"): "rack_power.accelerator_power_w",
    ("pdu", "power_w"): "rack_power.power_w",
    ("pdu_inlet", "power_w"): "feed_power.power_w",
    ("pdu_phase", "power_w"): "feed_power.power_w",
}
CASES = {
    "open": ({}, None, "1h", "10s"),
    "row": (ONE, None, "1h", "10s"),
    "5m": ({}, RetentionSettings().policy, "24h", "5m"),
}


def flags(query: str, dashboard: dict[str, Any]) -> list[str]:
    measurement, fields = named(query)
    by = query.rsplit("GROUP BY", 1)[-1] if "GROUP BY" in query else ""
    grouped = set(re.findall(r'"(\w+)"', by))
    out = []
    if measurement not in ROLLUPS and {"device", "host"} & set(schema().tags_of(measurement)):
        per_device = grouped & {"device", "host", "index", "job", "sensor", "sensor_name"}
        if grouped and not per_device:
            rolled = [ROLLED_UP[(measurement, f)] for f in fields if (measurement, f) in ROLLED_UP]
            direct = rolled and "FROM (" not in query
            out.append(f"device: {', '.join(rolled)} exists" if direct else "scan")
    # Places are unique only with the levels above them: where a level above may be All,
    # a GROUP BY without it (nor a device or host) draws same-named places as one series.
    offers_all = {
        v["name"] for v in dashboard["templating"]["list"] if v.get("includeAll") or v.get("multi")
    }
    deepest = max((PLACES.index(t) for t in grouped if t in PLACES), default=-1)
    missing = set(PLACES[:deepest]) - grouped if deepest > 0 else set()
    if missing & offers_all and not grouped & {"device", "host"}:
        out.append("merge")
    return out


def peer(query: str, policy: str | None, time_range: str) -> str:
    measurement, fields = named(query)
    field = next((f for f in sorted(fields) if not f.startswith("/")), None)
    field = field or schema().measurements[measurement].fields[0]
    source = f'"{policy}"."{measurement}"' if policy else f'"{measurement}"'
    if '"$rp".' in query and not policy:
        source = f'"autogen"."{measurement}"'
    return f'SELECT last("{field}") FROM {source} WHERE time > now() - {time_range}'


def timed(client: httpx.Client, url: str, query: str) -> tuple[float, int, int]:
    """Seconds for the answer (sent, run, read whole), its series and points."""
    started = time.perf_counter()
    response = client.get(url, params={"db": DATABASE, "q": query, "epoch": "ms"})
    body = response.json()
    seconds = time.perf_counter() - started
    results = body.get("results", [{}])
    if response.status_code != 200 or "error" in body or "error" in results[0]:
        raise RuntimeError(f"{query}: {response.text[:300]}")
    series = results[0].get("series", [])
    return seconds, len(series), sum(len(s.get("values", [])) for s in series)


def polled(workdir: Path) -> Real:
    """The real devices' polls (dashboards/synthetic.py POLLED) through a private snmpsim."""
    snmpsim = localservices.start_snmpsim(RECORDINGS, workdir / "snmpsim")
    try:
        return poll_real(snmpsim)
    finally:
        localservices.stop(snmpsim)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--racks", type=int, default=20_000)
    parser.add_argument("--raw-s", type=int, default=3600, help="rows, rooms, sites, devices")
    parser.add_argument("--raw-racks-s", type=int, default=120, help="racks and feeds, raw")
    parser.add_argument("--aggregated-s", type=int, default=86400)
    parser.add_argument("--aggregated-racks-s", type=int, default=3600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="a regex: only dashboards it matches")
    args = parser.parse_args(argv)
    windows = Windows(args.raw_s, args.raw_racks_s, args.aggregated_s, args.aggregated_racks_s)
    all_queries = [q for q in queries() if re.search(args.only, q[0])]
    with tempfile.TemporaryDirectory(prefix="bench-dashboards-") as workdir:
        influx = localservices.start_influxdb(Path(workdir) / "influxdb")
        try:
            localservices.influx_create_database(influx, DATABASE)
            settings = InfluxSettings(url=influx.url(), database=DATABASE)
            shown = {named(q)[0] for *_, q in all_queries}
            real = polled(Path(workdir))
            written = generate(settings, shown, Layout(racks=args.racks), windows, real=real)
            print(
                f"synthetic site: {args.racks} racks, {windows}; {written.total():,} points "
                f"({written.bytes_gzipped / 1e6:.0f} MB gzipped) in {written.seconds:.0f} s",
                flush=True,
            )

            def ask(query: str) -> list[dict[str, object]]:
                return localservices.influx_query(influx, DATABASE, query)

            report(influx.url() + "/query", all_queries, args.runs, ask, settings, real)
        finally:
            localservices.stop(influx)
    return 0


def report(
    url: str,
    all_queries: list[tuple[str, str, str, str]],
    runs: int,
    ask: Callable[[str], list[dict[str, object]]],
    settings: InfluxSettings,
    real: Real,
) -> None:
    boards = dashboards()
    print("| dashboard / panel | case | ratio min / med / max | ms | series | points | flags |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with httpx.Client(timeout=600, trust_env=False) as client:
        for dashboard, title, ref, query in all_queries:
            for case, (picked, policy, time_range, interval) in CASES.items():
                if policy and '"$rp".' not in query:
                    continue  # events: raw only
                used = variables_used(query)
                first = opening_values(ask, boards[dashboard])
                opened = opening_values(ask, boards[dashboard], picked)
                if case == "row" and all(opened[k] == first[k] for k in used & set(ONE)):
                    continue  # the dashboard opens at a row already (or picks none)
                variables = {name: opened.get(name) for name in used}
                if policy:
                    variables["rp"] = [policy]
                sent = interpolate(query, variables, time_range=time_range, interval=interval)
                if "now() - " in query:  # the last minutes: the devices' points of now
                    write_latest(settings, {named(query)[0]}, real=real)
                base = peer(query, policy, time_range)
                ratios, times = [], []
                for _ in range(runs):
                    seconds, series, points = timed(client, url, sent)
                    peer_s = timed(client, url, base)[0]
                    ratios.append(seconds / peer_s)
                    times.append(seconds)
                low, mid, high = min(ratios), statistics.median(ratios), max(ratios)
                print(
                    f"| {dashboard} / {title} {ref} | {case} | {low:.1f} / {mid:.1f} / {high:.1f}"
                    f" | {statistics.median(times) * 1000:.0f} | {series} | {points} | "
                    f"{'; '.join(flags(query, boards[dashboard]))} |",
                    flush=True,
                )


if __name__ == "__main__":
    sys.exit(main())
