"""A collector writing to two InfluxDB shards against one writing to one node, in the same run:
throughput and the collector's CPU per line, as ratios (two-shard / one-node).

    .venv/bin/python -m bench.bench_shards [--lines 200000] [--runs 3] [--route-by series]

Both legs publish the same pre-built lines (bench/bench_pipeline.py's: distinct series and
timestamps) in 2,000-line QoS 1 messages to a private Mosquitto, and a `rackwatch collector`
process validates, batches and writes them; the clock stops when InfluxDB counts every line
(on both nodes, for the two-shard leg). Legs alternate, each run with fresh databases. On a
2-core machine both InfluxDB nodes share the cores with everything else, so the throughput
ratio shows what routing and a second write path cost here, not what two machines would gain.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from bench.bench_pipeline import count, cpu_seconds, make_lines
from rackwatch import localservices
from rackwatch.localservices import Running


def run_leg(
    mqtt: Running,
    nodes: list[tuple[Running, str]],
    lines: list[bytes],
    workdir: Path,
    name: str,
    route_by: str,
    writes: int = 2,
) -> tuple[float, float]:
    """Seconds to store every line, collector CPU seconds."""
    for influx, db in nodes:
        localservices.influx_create_database(influx, db)
    settings: dict[str, Any] = {
        "name": name,
        "mqtt": {"host": mqtt.host, "port": mqtt.port, "topic": f"{name}/#", "group": name},
        "influxdb": {"url": nodes[0][0].url(), "database": nodes[0][1]},
        "retention": {"enabled": False},
        "batch": {"max_concurrent_writes": writes},
        "dead_letter_path": str(workdir / f"{name}.dead.jsonl"),
        "health_interval_s": 3600,
    }
    if len(nodes) > 1:
        settings["sharding"] = {
            "route_by": route_by,
            "shards": [
                {"name": f"s{i}", "url": influx.url(), "database": db}
                | ({"match": ["qiyang-a1"]} if route_by == "site" and i == 0 else {})
                for i, (influx, db) in enumerate(nodes)
            ],
        }
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings))
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        collector = subprocess.Popen(
            [sys.executable, "-m", "rackwatch", "collector", "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while b"subscribed to" not in log_path.read_bytes():
            if collector.poll() is not None:
                raise SystemExit(log_path.read_text())
            time.sleep(0.05)
        messages = [b"\n".join(lines[i : i + 2000]) + b"\n" for i in range(0, len(lines), 2000)]
        cpu_before = cpu_seconds(collector.pid)
        started = time.perf_counter()
        asyncio.run(publish_to(mqtt, name, messages))
        deadline = started + 600
        while sum(count(influx, db) for influx, db in nodes) < len(lines):
            if time.perf_counter() > deadline:
                raise SystemExit(f"{name}: not every line stored in 600 s")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        return elapsed, cpu_seconds(collector.pid) - cpu_before
    finally:
        collector.terminate()
        collector.wait(30)


async def publish_to(mqtt: Running, prefix: str, messages: list[bytes]) -> None:
    """bench_pipeline's publisher, to a topic of each leg's own."""
    async with aiomqtt.Client(mqtt.host, mqtt.port, max_inflight_messages=20) as client:
        for m in messages:
            await client.publish(f"{prefix}/bench/agent/metrics", m, qos=1)


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--route-by", choices=["series", "site"], default="series")
    args = parser.parse_args()
    lines = make_lines(args.lines)
    n = len(lines)
    speed, cpu, speed4 = [], [], []
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-") as tmp:
        workdir = Path(tmp)
        one = localservices.start_influxdb(workdir / "influxdb-1")
        two = localservices.start_influxdb(workdir / "influxdb-2")
        mqtt = localservices.start_mosquitto(workdir / "mosquitto")
        try:
            for run in range(args.runs):
                single_s, single_cpu = run_leg(
                    mqtt, [(one, f"single{run}")], lines, workdir, f"single{run}", args.route_by
                )
                shards_s, shards_cpu = run_leg(
                    mqtt,
                    [(one, f"shard{run}"), (two, f"shard{run}")],
                    lines,
                    workdir,
                    f"shards{run}",
                    args.route_by,
                )
                # Two shards have 2 x 2 writes in flight: one node with 4 is the fairer peer.
                four_s, _ = run_leg(
                    mqtt, [(one, f"four{run}")], lines, workdir, f"four{run}", args.route_by, 4
                )
                speed.append(single_s / shards_s)
                speed4.append(four_s / shards_s)
                cpu.append(shards_cpu / single_cpu)
                print(
                    f"run {run + 1}: one node {n / single_s:9,.0f} lines/s "
                    f"{single_cpu / n * 1e6:5.2f} us CPU/line | one node, 4 writes "
                    f"{n / four_s:9,.0f} lines/s | two shards {n / shards_s:9,.0f} lines/s "
                    f"{shards_cpu / n * 1e6:5.2f} us CPU/line"
                )
        finally:
            localservices.stop(mqtt)
            localservices.stop(two)
            localservices.stop(one)
    print(f"lines: {n} per leg, route_by {args.route_by}, {args.runs} runs")
    print(f"throughput two shards / one node (min / median / max): {spread(speed)}")
    print(f"throughput two shards / one node with 4 writes:        {spread(speed4)}")
    print(f"collector CPU per line two shards / one node:          {spread(cpu)}")


if __name__ == "__main__":
    main()
