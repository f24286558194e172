"""Mosquitto killed (kill -9) under load, with the broker settings rackwatch ships
(configs/mosquitto/rackwatch.conf: the store saved every second).

With a live collector the broker passes each message on as it arrives, so a crash costs
nothing: the collector writes what it holds, and the agent publishes again what the broker
never acknowledged. With the collector away, the broker holds its messages, and a crash costs
what arrived since the last save: `pytest -s` prints how many lines that was.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import pytest
import yaml

from agent.config import MqttSettings
from agent.publisher import Publisher
from rackwatch import localservices
from rackwatch.localservices import Running, influx_query
from tests.test_end_to_end import eventually, rackwatch_process

pytestmark = pytest.mark.integration

BATCHES, LINES = 60, 500
MARKER = 'SELECT count("v") FROM "crash_marker"'


def lines(batch: int) -> list[str]:
    first = 1700000000000000000 + batch * LINES
    return [f"crash,b={batch} v={i}i {first + i}" for i in range(LINES)]


def collector_yaml(
    path: Path, broker: Running, influxdb: Running, database: str, topic: str
) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": f"crash-{database}",
                "mqtt": {"host": broker.host, "port": broker.port, "topic": topic},
                "influxdb": {"url": influxdb.url(), "database": database},
                "batch": {"max_lines": 5000, "max_delay_s": 0.2, "max_concurrent_writes": 1},
                "dead_letter_path": str(path.parent / "dead.jsonl"),
                "health_interval_s": 3600,
            }
        )
    )
    return path


def stored(influxdb: Running, database: str) -> int:
    rows = influx_query(influxdb, database, 'SELECT count("v") FROM "crash"')
    return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]


def kill_and_restart(broker: Running) -> Running:
    broker.process.send_signal(signal.SIGKILL)
    broker.process.wait()
    return localservices.restart(broker, 1.0)


async def test_kill_9_of_the_broker_with_a_live_collector_loses_nothing(
    influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    broker = localservices.start_mosquitto(tmp_path / "mosquitto", persistent=True)
    config = collector_yaml(tmp_path / "c.yaml", broker, influxdb, database, f"{unique}/#")
    log = tmp_path / "collector.log"
    collector = await rackwatch_process("collector", config, log)
    settings = MqttSettings(
        host=broker.host, port=broker.port, max_batch_lines=LINES, flush_interval_s=0.1
    )
    publisher = Publisher(settings, f"{unique}/site/agent/metrics", f"agent-{unique}")
    publishing = asyncio.create_task(publisher.run())
    try:
        await eventually(lambda: b"subscribed to" in log.read_bytes(), 20)
        for batch in range(BATCHES):
            publisher.submit(lines(batch))
            if batch == BATCHES // 3:
                broker = await asyncio.to_thread(kill_and_restart, broker)
            await asyncio.sleep(0.1)
        assert await publisher.drain(60)
        await eventually(lambda: stored(influxdb, database) == BATCHES * LINES, 60)
    finally:
        await publisher.close(publishing, timeout_s=5)
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        collector.terminate()
        await asyncio.wait_for(collector.wait(), 30)
        localservices.stop(broker)
    assert publisher.connection.connections == 2  # the crash did cut the connection


async def test_kill_9_of_the_broker_holding_a_backlog_costs_what_came_after_its_last_save(
    influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    """The collector is stopped, so the broker queues for its session. Batches acknowledged
    before the broker's last save survive the crash; later ones are lost (counted, printed)."""
    broker = localservices.start_mosquitto(tmp_path / "mosquitto", persistent=True)
    config = collector_yaml(tmp_path / "c.yaml", broker, influxdb, database, f"{unique}/#")
    log = tmp_path / "collector.log"
    collector = await rackwatch_process("collector", config, log)
    settings = MqttSettings(
        host=broker.host, port=broker.port, max_batch_lines=LINES, flush_interval_s=0.1
    )
    publisher = Publisher(settings, f"{unique}/site/agent/metrics", f"agent-{unique}")
    publishing = asyncio.create_task(publisher.run())
    store = tmp_path / "mosquitto" / "mosquitto.db"
    try:
        await eventually(lambda: b"subscribed to" in log.read_bytes(), 20)
        collector.terminate()
        await asyncio.wait_for(collector.wait(), 30)
        for batch in range(BATCHES // 2):
            publisher.submit(lines(batch))
        assert await publisher.drain(30)
        saved = publisher.stats.published_lines
        # Everything so far is acknowledged; wait for the broker's next save after it.
        mtime = store.stat().st_mtime if store.exists() else 0.0
        await eventually(lambda: store.exists() and store.stat().st_mtime > mtime, 10)
        # Then more, and the crash right after their acknowledgement: these may be lost.
        for batch in range(BATCHES // 2, BATCHES):
            publisher.submit(lines(batch))
        assert await publisher.drain(30)
        since_save_s = time.time() - store.stat().st_mtime
        broker = await asyncio.to_thread(kill_and_restart, broker)
        collector = await rackwatch_process("collector", config, log)
        # A marker published now arrives after whatever the broker kept; batches are written
        # one at a time, in order: once the marker is stored, so is all that survived.
        publisher.submit(["crash_marker v=1i"])
        assert await publisher.drain(30)
        await eventually(lambda: influx_query(influxdb, database, MARKER) != [], 60)
        count = stored(influxdb, database)
    finally:
        await publisher.close(publishing, timeout_s=5)
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        if collector.returncode is None:
            collector.terminate()
            await asyncio.wait_for(collector.wait(), 30)
        localservices.stop(broker)
    lost = BATCHES * LINES - count
    assert lost <= BATCHES * LINES - saved  # only what came after the last save
    print(
        f"\nbroker kill -9 with the collector away: {count} of {BATCHES * LINES} lines stored, "
        f"{lost} lost: those acknowledged in the {since_save_s:.1f} s since the broker's last "
        f"save; the {saved} acknowledged before it all survived"
    )
