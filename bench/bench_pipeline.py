"""End-to-end throughput MQTT -> collector -> InfluxDB, as a ratio to writing the same lines
straight into the same InfluxDB in the same run, and the collector's CPU per line.

    .venv/bin/python bench/bench_pipeline.py [--lines 300000] [--message-lines 2000]

Both legs write the same pre-built line protocol (distinct series and timestamps, so InfluxQL
count() equals lines written) into fresh databases of one private InfluxDB 1.x. The direct leg
POSTs gzip'd 5,000-line batches one after another, which is what a well-tuned client does. The
pipeline leg publishes `--message-lines` batches at QoS 1 to a private Mosquitto (as agents do),
and a `rackwatch collector` process validates, batches and writes them. The clock stops when
InfluxDB counts every line. CPU per line is the collector process's user+system time / lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import aiomqtt
import httpx
import yaml

from rackwatch import localservices
from rackwatch.localservices import Running

BASE_NS = 1_700_000_000_000_000_000


def make_lines(n: int) -> list[bytes]:
    return [
        (
            f"pdu_outlet,device=pdu-{i % 500:03d}-a,outlet={i % 24},rack=A{i % 500:03d},row=A,"
            f'site=qiyang-a1 current_a={i % 16}.{i % 10},power_w={i % 3000}.0,state="on" '
            f"{BASE_NS + i}"
        ).encode()
        for i in range(n)
    ]


def count(influx: Running, database: str) -> int:
    rows = localservices.influx_query(influx, database, 'SELECT count("power_w") FROM pdu_outlet')
    return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]


def wait_for_count(influx: Running, database: str, n: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while count(influx, database) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {count(influx, database)} of {n} lines in {database}")
        time.sleep(0.05)


def post_gzipped(client: httpx.Client, influx: Running, database: str, lines: list[bytes]) -> None:
    """The direct-ingest peer: lines in gzip'd 5,000-line /write batches, one after another."""
    for i in range(0, len(lines), 5000):
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        body = compressor.compress(b"\n".join(lines[i : i + 5000])) + compressor.flush()
        reply = client.post(
            f"{influx.url()}/write",
            params={"db": database, "precision": "ns"},
            content=body,
            headers={"Content-Encoding": "gzip"},
        )
        reply.raise_for_status()


def direct(influx: Running, lines: list[bytes]) -> float:
    localservices.influx_create_database(influx, "direct")
    with httpx.Client(timeout=60) as client:
        started = time.perf_counter()
        post_gzipped(client, influx, "direct", lines)
        wait_for_count(influx, "direct", len(lines))
        return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish(mqtt: Running, messages: list[bytes]) -> None:
    async with aiomqtt.Client(mqtt.host, mqtt.port, max_inflight_messages=20) as client:
        for m in messages:  # one at a time, each waiting for its PUBACK, as an agent does
            await client.publish("rackwatch/v1/bench/agent/metrics", m, qos=1)


def pipeline(
    influx: Running, mqtt: Running, lines: list[bytes], message_lines: int, workdir: Path
) -> tuple[float, float]:
    localservices.influx_create_database(influx, "pipeline")
    config = workdir / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "bench",
                "mqtt": {"host": mqtt.host, "port": mqtt.port},
                "influxdb": {"url": influx.url(), "database": "pipeline"},
                "dead_letter_path": str(workdir / "dead.jsonl"),
                "health_interval_s": 3600,
            }
        )
    )
    log = (workdir / "collector.log").open("wb")
    collector = subprocess.Popen(
        [sys.executable, "-m", "rackwatch", "collector", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        while b"subscribed to" not in (workdir / "collector.log").read_bytes():
            if collector.poll() is not None:
                raise SystemExit((workdir / "collector.log").read_text())
            time.sleep(0.05)
        messages = [
            b"\n".join(lines[i : i + message_lines]) + b"\n"
            for i in range(0, len(lines), message_lines)
        ]
        cpu_before = cpu_seconds(collector.pid)
        started = time.perf_counter()
        asyncio.run(publish(mqtt, messages))
        wait_for_count(influx, "pipeline", len(lines))
        elapsed = time.perf_counter() - started
        return elapsed, cpu_seconds(collector.pid) - cpu_before
    finally:
        collector.terminate()
        collector.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--message-lines", type=int, default=2000)
    args = parser.parse_args()
    lines = make_lines(args.lines)
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-") as tmp:
        workdir = Path(tmp)
        influx = localservices.start_influxdb(workdir / "influxdb")
        mqtt = localservices.start_mosquitto(workdir / "mosquitto")
        try:
            direct_s = direct(influx, lines)
            pipeline_s, collector_cpu_s = pipeline(influx, mqtt, lines, args.message_lines, workdir)
        finally:
            localservices.stop(mqtt)
            localservices.stop(influx)
    n = len(lines)
    print(
        f"lines: {n}, {sum(map(len, lines)) / n:.0f} bytes each, "
        f"MQTT messages of {args.message_lines} lines"
    )
    print(f"direct gzip POST of 5,000-line batches: {n / direct_s:10,.0f} lines/s")
    print(f"MQTT -> collector -> InfluxDB:          {n / pipeline_s:10,.0f} lines/s")
    print(
        f"ratio pipeline / direct:                {direct_s / pipeline_s:10.2f}x  (target >= 0.8x)"
    )
    print(
        f"collector CPU per line:                 {collector_cpu_s / n * 1e6:10.2f} us "
        f"({collector_cpu_s:.2f} s CPU for {n} lines; "
        f"{collector_cpu_s / pipeline_s:.0%} of one core while running)"
    )


if __name__ == "__main__":
    main()
