"""What a drill-down top-N table costs at hub scale, as ratios to a plain peer query.

    .venv/bin/python bench/bench_drilldown.py [--racks 20000] [--hours 1] [--step-s 30] [--runs 3]

A private InfluxDB 1.x (rackwatch/localservices.py) holds `rack_power` roll-ups of --racks
racks every --step-s seconds for the last --hours. Timed, each --runs times, back to back with
the peer `SELECT last("capacity_pct") FROM "rack_power" WHERE <the whole range>` (one answer,
every point read):

- `top-20, end of range`: the hub's "The 20 racks nearest their limit" as committed
  (dashboards/json/hub-overview.json): top() over each rack's last reading of the last 10 min;
- `top-20, whole range`: the same top() over each rack's last reading of the whole range;
- `top-20 + 3 columns`: the committed one with power, capacity and N+N headroom beside;
- `every rack's last`: the table the hub had before (one row per rack, GROUP BY the rack).

Prints min / median / max of query time over peer time and the rows each returns.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from dashboards.build import OUT
from dashboards.macros import interpolate, variables_used
from rackwatch import localservices

DATABASE = "bench"
TITLE = "The 20 racks nearest their limit"


def write(url: str, racks: int, hours: float, step_s: int) -> int:
    now = int(time.time()) // step_s * step_s
    steps = int(hours * 3600 / step_s)
    points = 0
    with httpx.Client(trust_env=False, timeout=300) as client:
        for k in range(steps):
            t = now - (steps - 1 - k) * step_s
            lines = []
            for i in range(racks):
                room, row, rack = i // 800, i // 20, i
                pct = 20 + (i * 7919 + k * 31) % 700 / 10
                tags = f"site=hub-{i // 10_000},room=hall-{room:02d},row={row:04d},rack=R{rack:05d}"
                lines.append(
                    f"rack_power,{tags} capacity_pct={pct:.1f},power_w={pct * 100:.0f},"
                    f"capacity_w=10000,nn_headroom_w={5000 - pct * 50:.0f} {t}"
                )
            answer = client.post(
                f"{url}/write",
                params={"db": DATABASE, "precision": "s"},
                content="\n".join(lines),
            )
            answer.raise_for_status()
            points += len(lines)
    return points


def timed(client: httpx.Client, url: str, query: str) -> tuple[float, int]:
    started = time.perf_counter()
    answer = client.get(f"{url}/query", params={"db": DATABASE, "q": query, "epoch": "ms"})
    seconds = time.perf_counter() - started
    body = answer.json()
    result = body["results"][0]
    if "error" in result:
        raise RuntimeError(f"{query}: {result['error']}")
    return seconds, sum(len(s["values"]) for s in result.get("series", []))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--racks", type=int, default=20_000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--step-s", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    hub = json.loads((OUT / "hub-overview.json").read_text(encoding="utf-8"))
    (panel,) = [p for p in hub["panels"] if p["title"] == TITLE]
    committed = panel["targets"][0]["query"]
    span = f"{int(args.hours * 60)}m"
    window = "time > ${__to}ms - 10m AND time <= ${__to}ms"
    assert window in committed, committed
    one_field = 'last("capacity_pct") AS "capacity_pct" FROM'
    assert one_field in committed, committed
    four_fields = committed.replace(
        one_field,
        'last("capacity_pct") AS "capacity_pct", last("power_w") AS "power_w", '
        'last("capacity_w") AS "capacity_w", last("nn_headroom_w") AS "nn_headroom_w" FROM',
    ).replace('"rack" FROM (', '"rack", "power_w", "capacity_w", "nn_headroom_w" FROM (')
    cases = {
        "top-20, end of range": committed,
        "top-20, whole range": committed.replace(window, "$timeFilter"),
        "top-20 + 3 columns": four_fields,
        "every rack's last": (
            'SELECT last("capacity_pct") AS "capacity_pct" FROM "$rp"."rack_power" '
            'WHERE $timeFilter AND "site" =~ /^$site$/ GROUP BY "site", "room", "row", "rack"'
        ),
    }
    peer = f'SELECT last("capacity_pct") FROM "rack_power" WHERE time > now() - {span}'
    with tempfile.TemporaryDirectory(prefix="bench-drilldown-") as workdir:
        influx = localservices.start_influxdb(Path(workdir))
        try:
            localservices.influx_create_database(influx, DATABASE)
            started = time.perf_counter()
            points = write(influx.url(), args.racks, args.hours, args.step_s)
            print(
                f"{points:,} rack_power points ({args.racks:,} racks, {args.hours} h every "
                f"{args.step_s} s) written in {time.perf_counter() - started:.0f} s"
            )
            with httpx.Client(trust_env=False, timeout=600) as client:
                timed(client, influx.url(), peer)  # warm the cache once
                print(f"{'query':24} {'ratio to peer min/median/max':>30} {'rows':>7}")
                for name, query in cases.items():
                    sent = interpolate(query, dict.fromkeys(variables_used(query)), time_range=span)
                    ratios, rows = [], 0
                    for _ in range(args.runs):
                        mine, rows = timed(client, influx.url(), sent)
                        theirs, _ = timed(client, influx.url(), peer)
                        ratios.append(mine / theirs)
                    low, mid, high = min(ratios), statistics.median(ratios), max(ratios)
                    print(f"{name:24} {low:10.2f} {mid:9.2f} {high:9.2f} {rows:>7}")
        finally:
            localservices.stop(influx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
