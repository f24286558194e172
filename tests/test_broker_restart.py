"""Mosquitto (with persistence) restarted while an agent publishes: nothing is missing.

Mosquitto 2.0 restores a persistent session's plain subscriptions after a restart, but not its
shared ones: until the collector subscribes again, messages for a shared subscription are
dropped. Two set-ups survive it, and both are tested: collectors in a share group with agents
that hold back after a reconnect (`resume_delay_s`), and a single collector on a plain
subscription, which the broker queues for while the collector is still away.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def lines(batch: int) -> list[str]:
    first = 1700000000000000000 + batch * LINES
    return [f"restart,b={batch} v={i}i {first + i}" for i in range(LINES)]


@pytest.mark.parametrize(
    ("group", "resume_delay_s"),
    [pytest.param("shared", 5.0, id="shared-with-hold-back"), pytest.param(None, 0.0, id="plain")],
)
async def test_broker_restart_under_load_loses_nothing(
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    group: str | None,
    resume_delay_s: float,
) -> None:
    broker = localservices.start_mosquitto(tmp_path / "mosquitto", persistent=True)
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": f"restart-{unique}",
                "mqtt": {
                    "host": broker.host,
                    "port": broker.port,
                    "topic": f"{unique}/#",
                    "group": group and unique,
                },
                "influxdb": {"url": influxdb.url(), "database": database},
                "batch": {"max_lines": 5000, "max_delay_s": 0.5},
                "dead_letter_path": str(tmp_path / "dead.jsonl"),
                "health_interval_s": 3600,
            }
        )
    )
    log = tmp_path / "collector.log"
    collector = await rackwatch_process("collector", config, log)
    settings = MqttSettings(
        host=broker.host,
        port=broker.port,
        max_batch_lines=LINES,
        flush_interval_s=0.1,
        resume_delay_s=resume_delay_s,
    )
    publisher = Publisher(settings, f"{unique}/site/agent/metrics", f"agent-{unique}")
    publishing = asyncio.create_task(publisher.run())

    def stored() -> int:
        rows = influx_query(influxdb, database, 'SELECT count("v") FROM "restart"')
        return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]

    try:
        await eventually(lambda: b"subscribed to" in log.read_bytes(), 20)
        for batch in range(BATCHES):
            publisher.submit(lines(batch))
            if batch == BATCHES // 3:
                broker = await asyncio.to_thread(localservices.restart, broker, 1.0)
                restarted_at = time.monotonic()
            await asyncio.sleep(0.1)
        assert await publisher.drain(60)
        await eventually(lambda: stored() == BATCHES * LINES, 60)
        recovered_s = time.monotonic() - restarted_at
    finally:
        await publisher.close(publishing, timeout_s=5)
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        collector.terminate()
        await asyncio.wait_for(collector.wait(), 30)
        localservices.stop(broker)
    assert publisher.connection.connections == 2  # the restart did cut the connection
    print(
        f"\n{BATCHES * LINES} lines produced and stored; all in {recovered_s:.1f} s after restart"
    )
