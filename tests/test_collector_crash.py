"""kill -9 of the collector mid-stream: what it had not written is redelivered by the broker
(manual acknowledgement, persistent session) and lands after the restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
import yaml

from rackwatch.localservices import Running, influx_query
from tests.test_end_to_end import eventually, rackwatch_process

pytestmark = pytest.mark.integration

MESSAGES, LINES = 80, 500


async def test_killed_collector_loses_nothing(
    mosquitto: Running, influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": f"crash-{unique}",
                "mqtt": {
                    "host": mosquitto.host,
                    "port": mosquitto.port,
                    "topic": f"{unique}/#",
                    "group": unique,
                },
                "influxdb": {"url": influxdb.url(), "database": database},
                "batch": {"max_lines": 5000, "max_delay_s": 1.0},
                "dead_letter_path": str(tmp_path / "dead.jsonl"),
                "health_interval_s": 3600,
            }
        )
    )
    log = tmp_path / "collector.log"

    async def collector() -> asyncio.subprocess.Process:
        return await rackwatch_process("collector", config, log)

    def stored() -> int:
        rows = influx_query(influxdb, database, 'SELECT count("v") FROM "crash"')
        return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]

    first = await collector()
    await eventually(lambda: log.exists() and b"subscribed to" in log.read_bytes(), 20)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for m in range(MESSAGES):
            lines = "".join(f"crash,m={m} v={i}i {1700000000000000000 + i}\n" for i in range(LINES))
            await client.publish(f"{unique}/s/a/metrics", lines.encode(), qos=1)
            if m == MESSAGES // 3:
                first.kill()  # SIGKILL mid-stream: batches in memory, messages unacknowledged
                await first.wait()
                lost_at_kill = MESSAGES // 3 * LINES - stored()
            await asyncio.sleep(0.02)
    second = await collector()
    try:
        await eventually(lambda: stored() == MESSAGES * LINES, 60)
    finally:
        second.terminate()
        await asyncio.wait_for(second.wait(), 30)
    assert lost_at_kill > 0  # the kill did catch lines in flight
