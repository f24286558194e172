"""The collector's spool path: intake while InfluxDB is down, and replay after it returns, as
ratios to the no-outage pipeline and to direct InfluxDB writes measured in the same run.

    .venv/bin/python bench/bench_spool.py [--lines 200000] [--message-lines 2000]

One private Mosquitto and one private InfluxDB 1.x. The collector runs in this process (so its
counters can be read and its CPU time measured with `time.process_time`); the load is published
by a child process, one QoS 1 message at a time as agents do. Legs:

1. direct: gzip'd 5,000-line POSTs straight into InfluxDB, one after another;
2. live: MQTT -> collector -> InfluxDB, clock stopped when InfluxDB counts every line;
3. spooling: InfluxDB stopped, `spool.after_s: 0`: MQTT -> collector -> disk spool, clock
   stopped when every line is taken in and none waits in memory (two batches stay in the
   write slots, retrying, as they would in production);
4. replay: InfluxDB started again; clock stopped when it counts every line.

Last, the spool itself (`telemetry/spool.py`, as the agent uses it too): append + fsync and
peek + ack of 2,000-line records, CPU per line.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from bench.bench_pipeline import count, direct, make_lines, wait_for_count
from collector.config import CollectorConfig
from collector.service import Collector
from rackwatch import localservices
from rackwatch.cli import run_async
from rackwatch.localservices import Running
from telemetry import config
from telemetry.spool import Spool

TOPIC = "rackwatch/v1/bench/agent/metrics"


async def publish(host: str, port: int, lines: int, message_lines: int) -> None:
    body = make_lines(lines)
    messages = [
        b"\n".join(body[i : i + message_lines]) + b"\n" for i in range(0, lines, message_lines)
    ]
    async with aiomqtt.Client(host, port, max_inflight_messages=20) as client:
        for message in messages:
            await client.publish(TOPIC, message, qos=1)


def start_publisher(mqtt: Running, lines: int, message_lines: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.bench_spool",
            "--publish-to",
            f"{mqtt.host}:{mqtt.port}",
            "--lines",
            str(lines),
            "--message-lines",
            str(message_lines),
        ]
    )


def collector_config(mqtt: Running, influx: Running, database: str, workdir: Path) -> Path:
    path = workdir / f"{database}.yaml"
    path.write_text(
        f"name: bench-{database}\n"
        f"mqtt: {{host: {mqtt.host}, port: {mqtt.port}, group: {database}}}\n"
        f"influxdb: {{url: '{influx.url()}', database: {database}, timeout_s: 2}}\n"
        "retry: {initial_s: 0.2, max_s: 0.5}\n"
        f"spool: {{directory: '{workdir / database}-spool', after_s: 0}}\n"
        f"dead_letter_path: '{workdir / database}-dead.jsonl'\n"
        "health_interval_s: 3600\n"
    )
    return path


class Leg:
    """Runs the collector in this loop until `done()`; measures wall and CPU time."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(collector.run(self.stop))

    async def subscribed(self) -> None:
        while not self.collector.ingest.connection.connected:  # noqa: ASYNC110 (no event)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # SUBACK

    async def until(self, done: Callable[[], bool], timeout_s: float = 120) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        deadline = wall + timeout_s
        # In a thread: an InfluxQL count is a blocking HTTP call, and this loop is the collector's.
        while not await asyncio.to_thread(done):
            if time.perf_counter() > deadline:
                stats = self.collector.ingest.stats
                raise SystemExit(
                    f"benchmark leg did not finish: {stats.lines_received} lines received, "
                    f"{self.collector.pipeline.pending_lines} pending, "
                    f"{self.collector.pipeline.spooled_lines} spooled"
                )
            await asyncio.sleep(0.05)
        return time.perf_counter() - wall, time.process_time() - cpu

    async def close(self) -> None:
        self.stop.set()
        await self.task


async def live(
    mqtt: Running, influx: Running, n: int, message_lines: int, workdir: Path
) -> tuple[float, float]:
    localservices.influx_create_database(influx, "live")
    config = load_config(mqtt, influx, "live", workdir)
    leg = Leg(Collector(config))
    await leg.subscribed()
    publisher = start_publisher(mqtt, n, message_lines)
    result = await leg.until(lambda: count(influx, "live") >= n)
    publisher.wait()
    await leg.close()
    return result


async def outage(
    mqtt: Running, influx: Running, n: int, message_lines: int, workdir: Path
) -> tuple[tuple[float, float], tuple[float, float], int, Running]:
    localservices.influx_create_database(influx, "spooled")
    config = load_config(mqtt, influx, "spooled", workdir)
    collector = Collector(config)
    leg = Leg(collector)
    await leg.subscribed()
    localservices.stop(influx)
    pipeline, ingest = collector.pipeline, collector.ingest

    def taken_in() -> bool:
        return ingest.stats.lines_received >= n and pipeline.pending_lines == 0

    publisher = start_publisher(mqtt, n, message_lines)
    spooling = await leg.until(taken_in)
    publisher.wait()
    spooled = pipeline.spooled_lines
    influx = await asyncio.to_thread(localservices.restart, influx)
    replay = await leg.until(lambda: count(influx, "spooled") >= n)
    await leg.close()
    return spooling, replay, spooled, influx


def load_config(mqtt: Running, influx: Running, database: str, workdir: Path) -> CollectorConfig:
    return config.load(collector_config(mqtt, influx, database, workdir), CollectorConfig)


def spool_primitive(n: int, record_lines: int, directory: Path) -> tuple[float, float]:
    """CPU seconds for appending (with an fsync per 10 records) and for replaying n lines."""
    lines = make_lines(record_lines)
    record = b"\n".join(lines)
    spool = Spool(directory, 1 << 34)
    started = time.process_time()
    for i in range(n // record_lines):
        spool.append(record)
        if i % 10 == 9:
            spool.sync()
    spool.sync()
    written = time.process_time() - started
    started = time.process_time()
    while spool.peek() is not None:
        spool.ack()
    replayed = time.process_time() - started
    spool.close()
    return written, replayed


async def bench(n: int, message_lines: int, workdir: Path) -> None:
    influx = localservices.start_influxdb(workdir / "influxdb")
    mqtt = localservices.start_mosquitto(workdir / "mosquitto")
    lines = make_lines(n)
    try:
        direct_s = await asyncio.to_thread(direct, influx, lines)
        live_s, live_cpu = await live(mqtt, influx, n, message_lines, workdir)
        spooling, replay, spooled, influx = await outage(mqtt, influx, n, message_lines, workdir)
        wait_for_count(influx, "spooled", n)
    finally:
        localservices.stop(mqtt)
        localservices.stop(influx)
    spool_s, spool_cpu = spooling
    replay_s, replay_cpu = replay
    write_cpu, read_cpu = spool_primitive(n, 2000, workdir / "primitive")
    print(f"lines: {n}, MQTT messages of {message_lines} lines; {spooled} went to the spool")
    print(f"direct gzip POSTs:                 {n / direct_s:10,.0f} lines/s")
    print(f"live   MQTT -> collector -> Influx: {n / live_s:10,.0f} lines/s")
    print(
        f"spool  MQTT -> collector -> disk:   {n / spool_s:10,.0f} lines/s  "
        f"= {live_s / spool_s:.2f}x live (target >= 0.8x)"
    )
    print(
        f"replay disk -> Influx:             {n / replay_s:10,.0f} lines/s  "
        f"= {direct_s / replay_s:.2f}x direct"
    )
    print(
        f"collector CPU per line: live {live_cpu / n * 1e6:.2f} us, "
        f"spooling {spool_cpu / n * 1e6:.2f} us, replay {replay_cpu / n * 1e6:.2f} us"
    )
    print(
        f"spool alone (2,000-line records): append+fsync {write_cpu / n * 1e9:.0f} ns/line, "
        f"peek+ack {read_cpu / n * 1e9:.0f} ns/line"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--message-lines", type=int, default=2000)
    parser.add_argument("--publish-to", help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args()
    if args.publish_to:
        host, port = args.publish_to.rsplit(":", 1)
        asyncio.run(publish(host, int(port), args.lines, args.message_lines))
        return
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-") as tmp:
        run_async(_bench_then_zero(args.lines, args.message_lines, Path(tmp)))


async def _bench_then_zero(n: int, message_lines: int, workdir: Path) -> int:
    await bench(n, message_lines, workdir)
    return 0


if __name__ == "__main__":
    main()
