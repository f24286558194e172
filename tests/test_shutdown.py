"""SIGTERM: in-flight data goes to InfluxDB, the broker or the spool within a bounded time."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiomqtt
import httpx
import pytest
import yaml

from agent.service import Agent
from collector.service import SHUTDOWN_FLUSH_S
from rackwatch import localservices
from rackwatch.daemon import Daemon, hold_sigterm
from rackwatch.loader import load_agent
from rackwatch.localservices import Running, free_port, influx_query
from telemetry.lineproto import parse_line
from telemetry.sdnotify import Notifier
from telemetry.spool import Spool
from tests.test_end_to_end import eventually, rackwatch_process
from tests.test_sdnotify import metric, scrape

pytestmark = pytest.mark.integration

MESSAGES, LINES = 20, 500
# Cancelling ingest (at most twice 5 s against a silent broker), then the flush, then exit.
COLLECTOR_BOUND_S = 2 * 5.0 + SHUTDOWN_FLUSH_S + 5.0
RECEIVED = "rackwatch_collector_lines_received_total"


def write_collector_config(
    tmp_path: Path,
    mosquitto: Running,
    influx: Running,
    database: str,
    unique: str,
    metrics_port: int,
) -> Path:
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": f"term-{unique}",
                "mqtt": {
                    "host": mosquitto.host,
                    "port": mosquitto.port,
                    "topic": f"{unique}/#",
                    "group": unique,
                },
                "influxdb": {"url": influx.url(), "database": database, "timeout_s": 1},
                # Nothing would be written for a minute: only the shutdown flush writes.
                "batch": {"max_lines": 1_000_000, "max_delay_s": 60},
                "retry": {"initial_s": 0.2, "max_s": 1.0},
                "dead_letter_path": str(tmp_path / "dead.jsonl"),
                "health_interval_s": 3600,
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            }
        )
    )
    return config


async def publish_load(mosquitto: Running, unique: str) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for m in range(MESSAGES):
            first = 1700000000000000000 + m * LINES
            body = "".join(f"term,m={m} v={i}i {first + i}\n" for i in range(LINES))
            await client.publish(f"{unique}/s/a/metrics", body.encode(), qos=1)


def count_stored(influx: Running, database: str) -> int:
    rows = influx_query(influx, database, 'SELECT count("v") FROM "term"')
    return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]


async def terminate(process: asyncio.subprocess.Process, bound_s: float) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), bound_s) == 0
    return time.monotonic() - started


async def metric_reaches(port: int, name: str, least: float, **labels: str) -> None:
    """Scrape until `name{labels}` is at least `least` (the port may not be bound yet)."""
    last: float | None = None

    async def reached() -> bool:
        nonlocal last
        try:
            last = metric(await scrape(port), name, **labels)
        except httpx.ConnectError:
            return False
        return last is not None and last >= least

    deadline = time.monotonic() + 30
    while not await reached():
        assert time.monotonic() < deadline, f"{name}{labels} = {last}, wanted >= {least}"
        await asyncio.sleep(0.2)


async def test_sigterm_writes_pending_batches_to_influxdb(
    mosquitto: Running, influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    port = free_port()
    config = write_collector_config(tmp_path, mosquitto, influxdb, database, unique, port)
    log = tmp_path / "collector.log"
    collector = await rackwatch_process("collector", config, log)
    await eventually(lambda: b"subscribed to" in log.read_bytes(), 20)
    await publish_load(mosquitto, unique)
    await metric_reaches(port, RECEIVED, MESSAGES * LINES)  # taken in, waiting in a batch
    assert count_stored(influxdb, database) == 0
    took_s = await terminate(collector, COLLECTOR_BOUND_S)
    assert count_stored(influxdb, database) == MESSAGES * LINES
    print(f"\ncollector SIGTERM: {MESSAGES * LINES} pending lines written, exit in {took_s:.1f} s")


async def test_sigterm_with_influxdb_down_leaves_messages_with_the_broker(
    mosquitto: Running, unique: str, tmp_path: Path
) -> None:
    """The flush cannot finish: the collector still exits in bounded time, and the messages it
    never acknowledged are redelivered to the next collector process."""
    influx = localservices.start_influxdb(tmp_path / "influxdb")
    localservices.influx_create_database(influx, "term")
    port = free_port()
    config = write_collector_config(tmp_path, mosquitto, influx, "term", unique, port)
    log = tmp_path / "collector.log"
    processes: list[asyncio.subprocess.Process] = []
    try:
        first = await rackwatch_process("collector", config, log)
        processes.append(first)
        await eventually(lambda: b"subscribed to" in log.read_bytes(), 20)
        localservices.stop(influx)
        await publish_load(mosquitto, unique)
        await metric_reaches(port, RECEIVED, MESSAGES * LINES)
        took_s = await terminate(first, COLLECTOR_BOUND_S)
        assert b"not written to InfluxDB" in log.read_bytes()
        influx = await asyncio.to_thread(localservices.restart, influx)
        second = await rackwatch_process("collector", config, log)
        processes.append(second)
        await metric_reaches(port, RECEIVED, MESSAGES * LINES)  # redelivered to it
        await terminate(second, COLLECTOR_BOUND_S)  # its shutdown flush writes them
        assert count_stored(influx, "term") == MESSAGES * LINES
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        localservices.stop(influx)
    print(f"\ncollector SIGTERM with InfluxDB down: exit in {took_s:.1f} s, nothing lost")


def write_offline_agent_config(
    tmp_path: Path, snmpsim: Running, unique: str, spool_dir: Path, metrics_port: int
) -> Path:
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "agent": {"name": f"term-{unique}", "site": "s"},
                # Nothing listens there: the broker is unreachable the whole time.
                "mqtt": {"port": free_port(), "spool_dir": str(spool_dir), "flush_interval_s": 5},
                "defaults": {"interval_s": 0.5, "jitter_s": 0, "timeout_s": 1},
                "health_interval_s": 3600,
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
                "credentials": {"pdu": {"community": "apc_ap8853"}},
                "devices": [
                    {"name": "pdu-1", "address": f"127.0.0.1:{snmpsim.port}", "credentials": "pdu"}
                ],
            }
        )
    )
    return config


def spooled_measurements(spool_dir: Path) -> list[str]:
    spool = Spool(spool_dir, 1 << 30)
    measurements = []
    while (record := spool.peek()) is not None:
        measurements += [parse_line(line).measurement for line in record.splitlines()]
        spool.ack()
    spool.close()
    return measurements


async def test_a_sigterm_during_start_up_stops_the_agent_once_it_runs(
    snmpsim: Running, unique: str, tmp_path: Path
) -> None:
    """What `rackwatch agent` does: SIGTERM held from its first line, while the config and the
    profiles are read; the agent then starts, stops at once and spools its health sample,
    rather than dying half-started."""
    spool_dir = tmp_path / "spool"
    config = write_offline_agent_config(tmp_path, snmpsim, unique, spool_dir, free_port())
    previous = signal.getsignal(signal.SIGTERM)
    try:
        hold_sigterm()
        os.kill(os.getpid(), signal.SIGTERM)  # before anything below has been read or built
        agent = Agent(load_agent(config))
        daemon = Daemon(agent, lambda: load_agent(config), Notifier({}))
        assert await asyncio.wait_for(daemon.run(), 30) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert spooled_measurements(spool_dir)[-1] == "rackwatch_agent"


async def test_agent_sigterm_while_offline_puts_its_queue_in_the_spool(
    snmpsim: Running, unique: str, tmp_path: Path
) -> None:
    spool_dir, metrics_port = tmp_path / "spool", free_port()
    config = write_offline_agent_config(tmp_path, snmpsim, unique, spool_dir, metrics_port)
    agent = await rackwatch_process("agent", config, tmp_path / "agent.log")
    await metric_reaches(metrics_port, "rackwatch_agent_polls_ok_total", 2, device="pdu-1")
    took_s = await terminate(agent, 20)
    measurements = spooled_measurements(spool_dir)
    assert "pdu" in measurements
    # The health sample made at shutdown, after the last poll, reached the disk too.
    assert measurements[-1] == "rackwatch_agent"
    print(f"\nagent SIGTERM offline: {len(measurements)} lines spooled, exit in {took_s:.1f} s")
