"""Mosquitto (with persistence) restarted while an agent publishes: nothing is missing.

Mosquitto 2.0 restores a persistent session's plain subscriptions after a restart, but not its
shared ones: until the collector subscribes again, the broker answers the agent's publishes
with the MQTT v5 PUBACK reason "no matching subscribers" and throws the message away. The
agent takes that answer as "not delivered" and holds the data until a collector is back.
Tested for collectors in a share group and for a single collector on a plain subscription
(which the broker restores, and queues for while the collector is still away), and for a group
member that also reads the whole stream for alerting (`ownership: {source: subscription}`): that
second subscription must not make the broker take messages that no writer will get.
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
from tests.test_agent_spool import collect_lines
from tests.test_end_to_end import eventually, rackwatch_process

pytestmark = pytest.mark.integration

BATCHES, LINES = 60, 500


def lines(batch: int) -> list[str]:
    first = 1700000000000000000 + batch * LINES
    return [f"restart,b={batch} v={i}i {first + i}" for i in range(LINES)]


def alerting_by_subscription(home: Path) -> dict[str, object]:
    """Alerting that reads the whole stream through its own subscription (no rule fires)."""
    return {
        "rules_file": str(Path(__file__).parent.parent / "configs" / "alert-rules.yaml"),
        "state_path": str(home / "alert-state.json"),
        "receivers": [{"name": "noc", "kind": "webhook", "url": "http://127.0.0.1:9/hook"}],
        "route": {"receiver": "noc"},
        "ownership": {"source": "subscription"},
    }


@pytest.mark.parametrize(
    ("group", "feed"),
    [
        pytest.param("shared", False, id="shared"),
        pytest.param(None, False, id="plain"),
        pytest.param("shared", True, id="shared-with-feed"),
    ],
)
async def test_broker_restart_under_load_loses_nothing(
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    group: str | None,
    feed: bool,
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
                **({"alerting": alerting_by_subscription(tmp_path)} if feed else {}),
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
    )
    publisher = Publisher(settings, f"{unique}/site/agent/metrics", f"agent-{unique}")
    publishing = asyncio.create_task(publisher.run())

    def stored() -> int:
        rows = influx_query(influxdb, database, 'SELECT count("v") FROM "restart"')
        return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]

    try:
        subscriptions = 2 if feed else 1
        await eventually(lambda: log.read_bytes().count(b"subscribed to") == subscriptions, 20)
        for batch in range(BATCHES):
            publisher.submit(lines(batch))
            if batch == BATCHES // 3:
                # The collector is frozen through the restart and for 3 s after it, so the
                # agent is back first and publishes while no collector has subscribed again.
                collector.send_signal(signal.SIGSTOP)
                broker = await asyncio.to_thread(localservices.restart, broker, 1.0)
                restarted_at = time.monotonic()
            if batch == BATCHES // 3 + 30:
                collector.send_signal(signal.SIGCONT)
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
    if group:  # the restored session lost its shared subscription: the broker said so
        assert publisher.stats.unrouted_publishes > 0
    else:  # the plain subscription was restored: the broker queued for the frozen collector
        assert publisher.stats.unrouted_publishes == 0
    print(
        f"\n{BATCHES * LINES} lines produced and stored; all in {recovered_s:.1f} s after "
        f"restart; {publisher.stats.unrouted_publishes} publishes met no subscriber and were held"
    )


async def test_no_subscriber_means_not_delivered(
    mosquitto: Running, unique: str, tmp_path: Path
) -> None:
    """No collector is subscribed: the broker answers "no matching subscribers", the agent
    spools and offers a batch again every second; once a collector subscribes, everything
    arrives, nothing was thrown away."""
    settings = MqttSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        max_batch_lines=LINES,
        flush_interval_s=0.1,
        spool_dir=tmp_path / "spool",
    )
    publisher = Publisher(settings, f"{unique}/site/agent/metrics", f"agent-{unique}")
    publishing = asyncio.create_task(publisher.run())
    received: list[bytes] = []
    try:
        for batch in range(10):
            publisher.submit(lines(batch))
        await eventually(lambda: publisher.unrouted and publisher.queued_lines == 0, 10)
        assert publisher.stats.published_lines == 0
        assert publisher.spool is not None
        assert publisher.spool.stats.records > 0
        listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
        await eventually(lambda: len(set(received)) == 10 * LINES, 20)
        assert not publisher.unrouted
        listener.cancel()
    finally:
        await publisher.close(publishing, timeout_s=5)
    assert publisher.stats.unrouted_publishes > 0
    assert {line.decode() for line in received} == {x for b in range(10) for x in lines(b)}
