"""A burst of device messages through a site's Mosquitto (its stock limits) to the agent's
MQTT-device subscriber: every message becomes samples, even while the agent is busy.

Mosquitto sends a subscriber 20 QoS 1 messages at a time unless it asks for more (MQTT v5
Receive Maximum), queues up to 1,000 behind them (max_queued_messages) and drops the rest,
though it acknowledged them to the devices. An agent that fell half a second behind a burst of
2,500 messages/s lost hundreds. With the subscriber's receive window the backlog waits in the
agent instead, and the broker's own drop counter ($SYS) is in the subscriber's health.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.mqtt_devices.config import MqttDevicesConfig
from agent.mqtt_devices.subscriber import DeviceSubscriber
from collector.alerting.evaluator import Evaluator, Transition
from collector.alerting.rules import RuleFile
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry import config as config_file
from telemetry.lineproto import encode
from telemetry.sample import Sample
from tests.test_mqtt_devices_subscriber import running

pytestmark = pytest.mark.integration
DEFAULT_RULES = Path(__file__).parents[1] / "configs" / "alert-rules.yaml"

MESSAGES, RATE, DEVICES, PUBLISHERS = 20_000, 2_500, 50, 4
BUSY_EVERY, BUSY_S = 5_000, 0.6  # the agent's loop held up now and then (polls, a reload)
DROPPED = "broker_dropped_messages_total"
WAIT_S = 120.0  # a loaded test machine maps a few hundred messages a second


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until `check()` holds; the bound only guards against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.1)


def offer(broker: Running, prefix: str, messages: int = MESSAGES) -> int:
    """Publish `messages` small JSON readings at RATE per second, QoS 1, from PUBLISHERS
    connections (as many devices would); returns how many the broker acknowledged."""
    acknowledged = 0
    lock = threading.Lock()
    done = threading.Event()

    def on_publish(client: paho.Client, userdata: object, mid: int, *_: object) -> None:
        nonlocal acknowledged
        with lock:
            acknowledged += 1
            if acknowledged == messages:
                done.set()

    clients = []
    for i in range(PUBLISHERS):
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{prefix}-device-{i}", protocol=paho.MQTTv5
        )
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.on_publish = on_publish
        client.connect(broker.host, broker.port)
        client.loop_start()
        clients.append(client)
    try:
        started = time.monotonic()
        for number in range(messages):
            if (wait := started + number / RATE - time.monotonic()) > 0.001:
                time.sleep(wait)  # pacing the publisher, not waiting for an event
            payload = json.dumps({"supply": 18.0 + number % 7, "return": 30.5})
            topic = f"{prefix}/hall1/crah/crah-{number % DEVICES}/telemetry"
            clients[number % PUBLISHERS].publish(topic, payload, qos=1)
        done.wait(120)
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
    return acknowledged


def crahs(broker: Running, prefix: str, **section: object) -> MqttDevicesConfig:
    """CRAHs publishing JSON readings under `prefix`, as the subscriber maps them."""
    return MqttDevicesConfig.model_validate(
        {
            "broker": {"host": broker.host, "port": broker.port},
            "subscriptions": [
                {
                    "topic": f"{prefix}/{{room}}/crah/{{device}}/telemetry",
                    "format": "json",
                    "measurement": "cooling",
                    "fields": {
                        "supply_air_c": {"path": "supply"},
                        "return_air_c": {"path": "return"},
                    },
                }
            ],
            **section,
        }
    )


async def test_a_burst_of_20000_device_messages_all_become_samples(
    tmp_path: Path, unique: str
) -> None:
    broker = localservices.start_mosquitto(tmp_path / "mosquitto", extra_config="sys_interval 1")
    config = crahs(broker, unique)
    samples = 0

    def emit(origin: str, batch: list[Sample]) -> None:
        nonlocal samples
        for sample in batch:
            encode(sample)  # as the agent does before publishing
        samples += len(batch)
        if samples % BUSY_EVERY == 0:
            time.sleep(BUSY_S)  # the agent's event loop busy elsewhere: the burst piles up

    subscriber = DeviceSubscriber(config, "site", "agent", emit)
    try:
        async with running(subscriber):
            assert await asyncio.to_thread(offer, broker, unique) == MESSAGES
            watch = subscriber.broker_watch.stats.values

            def settled() -> bool:
                return samples == MESSAGES or watch.get("broker_dropped_messages_total", 0) > 0

            await eventually(settled, "every message mapped, or the broker dropping some")
            assert samples == MESSAGES, f"{watch}; {samples} of {MESSAGES} mapped"
            assert subscriber.messages == MESSAGES
            assert subscriber.bad_payloads.total == 0
            await eventually(lambda: "broker_dropped_messages_total" in watch, "a $SYS report")
            health = subscriber.health_samples(time.time_ns())[-1].fields
            assert health["broker_dropped_messages_total"] == 0
            assert health["messages_total"] == MESSAGES
    finally:
        localservices.stop(broker)


async def test_what_the_devices_broker_drops_is_in_the_agents_health(
    tmp_path: Path, unique: str
) -> None:
    """A site's broker with a 10-message queue and an agent stuck for a moment on its first
    message with a window of 5: the broker drops what it acknowledged to the devices, and the
    subscriber's health says how many."""
    broker = localservices.start_mosquitto(
        tmp_path / "mosquitto", extra_config="max_queued_messages 10\nsys_interval 1"
    )
    stuck = False

    def emit(origin: str, batch: list[Sample]) -> None:
        nonlocal stuck
        if not stuck:
            stuck = True
            time.sleep(2.0)  # the agent's loop held up while the devices publish 100

    subscriber = DeviceSubscriber(crahs(broker, unique, receive_maximum=5), "site", "a", emit)
    try:
        async with running(subscriber):
            assert await asyncio.to_thread(offer, broker, unique, 100) == 100
            watch = subscriber.broker_watch.stats.values
            await eventually(
                lambda: watch.get("broker_dropped_messages_total", 0) >= 80, "the drops reported"
            )
            await eventually(lambda: subscriber.messages >= 100 - watch[DROPPED], "the rest")
            health = subscriber.health_samples(time.time_ns())[-1]
            assert health.measurement == "rackwatch_mqtt_device"
            assert health.fields[DROPPED] == watch[DROPPED]
            assert subscriber.messages + watch[DROPPED] == 100
    finally:
        localservices.stop(broker)


def test_the_default_rules_page_on_any_drop_by_the_devices_broker() -> None:
    """DeviceBrokerDroppedMessages judges the counter's increase: steady is quiet, a rise pages."""
    seen: list[Transition] = []
    now = 1_800_000_000.0
    evaluator = Evaluator(config_file.load(DEFAULT_RULES, RuleFile), seen.append, clock=lambda: now)
    tags = {"site": "s1", "agent": "a1"}
    for at, dropped in ((0, 0), (10, 0), (20, 85)):
        now = 1_800_000_000.0 + at
        sample = Sample("rackwatch_mqtt_device", tags, {DROPPED: dropped}, int(now * 1e9))
        evaluator.observe([encode(sample).encode()])
        evaluator.tick()
    pages = [t for t in seen if t.alert.labels["alertname"] == "DeviceBrokerDroppedMessages"]
    assert [(t.state, t.summary) for t in pages] == [
        ("firing", "MQTT devices' broker dropped 85 acknowledged messages (agent a1 saw it)")
    ]
