"""Small messages at 3,000/s through one collector lose nothing; a broker that drops messages
it acknowledged is seen by the collector and paged.

Mosquitto acknowledges a QoS 1 message to the publisher and then, if the subscriber's queue
is full, throws it away. With its default queue (1,000 messages) and the old in-flight window
(100), one collector lost a third and more of ten-line messages offered at 1,600-3,200/s. With
the broker settings rackwatch ships (configs/mosquitto/rackwatch.conf, which the persistent
private broker uses) and the collector's window, every message offered is stored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
import yaml

from bench.bench_mqtt_intake import broker_dropped, message, offer, stored
from collector.alerting.settings import AlertingSettings
from collector.service import Collector
from rackwatch import localservices
from rackwatch.localservices import Running, influx_query
from tests.recording_http import RecordingServer
from tests.test_end_to_end import collector_config, eventually, rackwatch_process, running

pytestmark = pytest.mark.integration

MESSAGES, RATE, LINES = 30_000, 3_000, 10
RULES = Path(__file__).resolve().parents[1] / "configs" / "alert-rules.yaml"


async def test_3000_small_messages_a_second_through_one_collector_lose_nothing(
    influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    broker = localservices.start_mosquitto(
        tmp_path / "mosquitto", persistent=True, extra_config="sys_interval 1"
    )
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": f"intake-{unique}",
                "mqtt": {"host": broker.host, "port": broker.port, "topic": f"{unique}/#"},
                "influxdb": {"url": influxdb.url(), "database": database},
                "dead_letter_path": str(tmp_path / "dead.jsonl"),
                "health_interval_s": 1,
            }
        )
    )
    log = tmp_path / "collector.log"
    collector = await rackwatch_process("collector", config, log)
    try:
        await eventually(lambda: b"subscribed to" in log.read_bytes(), 20)
        topic = f"{unique}/site/agent/metrics"
        offered = await asyncio.to_thread(offer, broker, topic, MESSAGES, RATE, LINES)
        assert (offered.acknowledged, offered.refused) == (MESSAGES, 0)
        await eventually(lambda: stored(influxdb, database) == MESSAGES * LINES, 240)
        assert await broker_dropped(broker) == 0

        def reported_drops() -> object:
            rows = influx_query(
                influxdb,
                database,
                'SELECT last("broker_dropped_messages_total") FROM "rackwatch_collector"',
            )
            return rows[0]["values"][0][1] if rows else None  # type: ignore[index]

        # The collector reads the broker's drop counter into its health.
        await eventually(lambda: reported_drops() is not None, 20)
        assert reported_drops() == 0
    finally:
        collector.terminate()
        await asyncio.wait_for(collector.wait(), 30)
        localservices.stop(broker)
    print(f"\n{MESSAGES} messages offered at {MESSAGES / offered.elapsed_s:,.0f}/s, all stored")


async def test_a_broker_that_drops_messages_is_paged(
    influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    """A queue of 10 messages and a collector whose InfluxDB refuses writes: the broker
    acknowledges the agent's messages and drops them; the collector reports the broker's
    counter and the default rule BrokerDroppedMessages pages."""
    broker = localservices.start_mosquitto(
        tmp_path / "mosquitto", extra_config="max_queued_messages 10\nsys_interval 1"
    )
    config = collector_config(broker, influxdb, database, unique, tmp_path)
    mqtt = config.mqtt.model_copy(update={"receive_maximum": 5})
    dead_influx = config.influxdb.model_copy(update={"url": f"http://127.0.0.1:{free_port()}"})
    with RecordingServer() as server:
        alerting = AlertingSettings.model_validate(
            {
                "rules_file": str(RULES),
                "state_path": str(tmp_path / "alert-state.json"),
                "receivers": [{"name": "noc", "kind": "webhook", "url": server.url("/hook")}],
                "route": {"receiver": "noc", "group_wait": 0.2, "group_interval": "1s"},
                "evaluation_interval": 0.2,
            }
        )
        collector = Collector(
            config.model_copy(update={"mqtt": mqtt, "influxdb": dead_influx, "alerting": alerting})
        )
        assert collector.alerting is not None
        evaluated: list[bytes] = []
        observe = collector.alerting.observe

        def spy(lines: list[bytes]) -> None:
            evaluated.extend(lines)
            observe(lines)

        collector.alerting.observe = spy  # type: ignore[method-assign]
        try:
            async with running(collector):
                watch = collector.broker_watch.stats.values
                # The rule judges increases: the evaluator first sees the counter at 0.
                await eventually(
                    lambda: any(b"broker_dropped_messages_total=0i" in x for x in evaluated), 20
                )
                await publish(broker, f"{unique}/site/agent/metrics", 100)
                await eventually(lambda: watch["broker_dropped_messages_total"] >= 85, 20)

                def paged() -> bool:
                    return any(
                        alert["labels"].get("alertname") == "BrokerDroppedMessages"
                        for request in server.to("/hook")
                        if request.json()["status"] == "firing"
                        for alert in request.json()["alerts"]
                    )

                await server.wait_for(paged, "a BrokerDroppedMessages page")
                reported = collector.health_sample().fields["broker_dropped_messages_total"]
                assert isinstance(reported, int)
                assert reported >= 85
        finally:
            localservices.stop(broker)


def free_port() -> int:
    return localservices.free_port("tcp")


async def publish(broker: Running, topic: str, count: int) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as client:
        for number in range(count):
            await client.publish(topic, message(number, LINES), qos=1)
