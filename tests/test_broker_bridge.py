"""A site's Mosquitto bridged to a central one (configs/mosquitto/bridge-site.conf): the central
broker restarted while an agent publishes to its site's broker loses nothing.

Two private Mosquittos with the shipped broker settings (persistence, queue limits): the site
broker bridges `<prefix>/#` out to the central one at QoS 1 on a persistent session
(`cleansession false`), so while the central broker is down the site broker queues for the
bridge. A real agent publisher talks to the site broker; a real collector, subscribed on the
central broker (in a share group, or alone), writes to a real InfluxDB.

The bridge answers the agent's PUBACK itself, before the central broker has the message, so
the agent's guarantee ends at the site broker; the rest rests on the bridge's queue and on
the central broker's settings (docs/operations.md, "The broker beyond one node"). Checked
once by hand: with `cleansession true` in the bridge, the same test loses lines and fails.
"""

from __future__ import annotations

import asyncio
import contextlib
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
BRIDGE_EXAMPLE = Path(__file__).parent.parent / "configs" / "mosquitto" / "bridge-site.conf"


def lines(batch: int) -> list[str]:
    first = 1700000000000000000 + batch * LINES
    return [f"bridged,b={batch} v={i}i {first + i}" for i in range(LINES)]


def bridge_config(central: Running, prefix: str, name: str) -> str:
    """The shipped example, pointed at the private central broker and the test's topics."""
    text = BRIDGE_EXAMPLE.read_text(encoding="utf-8")
    replaced = (
        text.replace("central-mqtt.example.net:1883", f"{central.host}:{central.port}")
        .replace("rackwatch/v1/#", f"{prefix}/#")
        .replace("rackwatch-bridge-SITE", f"rackwatch-bridge-{name}")
    )
    assert f"topic {prefix}/# out 1" in replaced, "the example's topic line changed"
    assert str(central.port) in replaced, "the example's address line changed"
    return replaced


@pytest.mark.parametrize("group", ["shared", None], ids=["shared", "plain"])
async def test_central_broker_restart_behind_a_bridge_loses_nothing(
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    group: str | None,
) -> None:
    prefix = f"bridge-{unique}"
    central = localservices.start_mosquitto(tmp_path / "central", persistent=True)
    site = localservices.start_mosquitto(
        tmp_path / "site",
        persistent=True,
        extra_config=bridge_config(central, prefix, unique),
    )
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": f"central-{unique}",
                "mqtt": {
                    "host": central.host,
                    "port": central.port,
                    "topic": f"{prefix}/#",
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
        host=site.host, port=site.port, max_batch_lines=LINES, flush_interval_s=0.1
    )
    publisher = Publisher(settings, f"{prefix}/site/agent/metrics", f"agent-{unique}")
    publishing = asyncio.create_task(publisher.run())

    def stored() -> int:
        rows = influx_query(influxdb, database, 'SELECT count("v") FROM "bridged"')
        return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]

    def bridged() -> bool:
        """the bridge is connected to the central broker"""
        return central.log_path.read_bytes().count(f"rackwatch-bridge-{unique}".encode()) > 0

    try:
        await eventually(lambda: log.read_bytes().count(b"subscribed to") == 1, 20)
        await eventually(bridged, 20)
        for batch in range(BATCHES):
            publisher.submit(lines(batch))
            if batch == BATCHES // 3:
                central = await asyncio.to_thread(localservices.restart, central, 2.0)
            await asyncio.sleep(0.1)
        assert await publisher.drain(60)
        await eventually(lambda: stored() == BATCHES * LINES, 90)
    finally:
        await publisher.close(publishing, timeout_s=5)
        with contextlib.suppress(asyncio.CancelledError):
            await publishing
        collector.terminate()
        await asyncio.wait_for(collector.wait(), 30)
        localservices.stop(site)
        localservices.stop(central)
    # The agent never saw the outage: the site broker took every publish.
    assert publisher.connection.connections == 1
    assert publisher.stats.unrouted_publishes == 0
    assert log.read_bytes().count(b"subscribed to") >= 2  # the collector did lose the broker
