"""The device subscriber against a real Mosquitto: JSON devices, bad payloads that neither crash
nor stall it, a Sparkplug B edge node through rebirth, primary host STATE, staleness, and the
agent publishing what its MQTT devices sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest

from agent.config import AgentConfig
from agent.mqtt_devices import sparkplug_b_pb2
from agent.mqtt_devices.config import MqttDevicesConfig
from agent.mqtt_devices.sparkplug import DOUBLE, UINT64, parse_state
from agent.mqtt_devices.subscriber import DeviceSubscriber
from agent.service import Agent
from rackwatch.localservices import Running
from telemetry.lineproto import parse_line
from telemetry.sample import Sample

pytestmark = pytest.mark.integration

Payload = sparkplug_b_pb2.Payload
Metric = Payload.Metric
WAIT_S = 15.0


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait until `check()` holds; the bound only guards against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.05)


def settings(mosquitto: Running, **section: Any) -> MqttDevicesConfig:
    broker = {"host": mosquitto.host, "port": mosquitto.port}
    return MqttDevicesConfig.model_validate({"broker": broker, **section})


def crah(prefix: str, **extra: Any) -> dict[str, Any]:
    return {
        "topic": f"{prefix}/{{room}}/crah/{{device}}/telemetry",
        "format": "json",
        "measurement": "cooling",
        "fields": {
            "supply_air_c": {"path": "supply"},
            "return_air_c": {"path": "return"},
        },
        **extra,
    }


@contextlib.asynccontextmanager
async def running(subscriber: DeviceSubscriber) -> AsyncIterator[DeviceSubscriber]:
    task = asyncio.create_task(subscriber.run())
    try:
        async with asyncio.timeout(WAIT_S):
            await subscriber.subscribed.wait()
        yield subscriber
    finally:
        await subscriber.close(task, timeout_s=5.0)


def publisher(mosquitto: Running) -> aiomqtt.Client:
    return aiomqtt.Client(mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5)


async def test_json_devices_and_bad_payloads_never_stall_the_subscription(
    mosquitto: Running, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    emitted: list[Sample] = []
    config = settings(mosquitto, max_payload_bytes=1024, subscriptions=[crah(unique)])
    subscriber = DeviceSubscriber(config, "a1", "agent-1", lambda _, s: emitted.extend(s))
    topic = f"{unique}/hall-1/crah/crah-01/telemetry"
    caplog.set_level(logging.WARNING)
    async with running(subscriber), publisher(mosquitto) as device:
        bad = [
            b'{"supply": 18.5',
            b'{"supply": "warm"}',
            b"[]",
            b'{"supply": 1, "x": "' + b"y" * 2000 + b'"}',
        ]
        for payload in bad * 3:
            await device.publish(topic, payload, qos=1)
        await device.publish(topic, json.dumps({"supply": 18.5, "return": 29}), qos=1)
        await device.publish(f"{unique}/hall-1/crah/crah-02/telemetry", b"{", qos=1)
        await eventually(lambda: len(emitted) == 1, "the good message after the bad ones")
        await eventually(lambda: subscriber.bad_payloads.total == 13, "every bad one counted")

    (sample,) = emitted
    assert sample.measurement == "cooling"
    assert dict(sample.tags) == {"site": "a1", "room": "hall-1", "device": "crah-01"}
    assert dict(sample.fields) == {"supply_air_c": 18.5, "return_air_c": 29.0}
    assert subscriber.bad_payloads.per_topic[topic] == 12
    assert subscriber.oversized == 3
    logged = [r.getMessage() for r in caplog.records if "bad payload" in r.getMessage()]
    assert len(logged) == 2  # once per topic, the first reason
    assert logged[0].startswith(f"MQTT topic {topic}: bad payload: invalid JSON")
    health = {s.tags.get("device"): s.fields for s in subscriber.health_samples(0)}
    assert health["crah-01"]["bad_payloads_total"] == 12
    assert health["crah-01"]["messages_total"] == 1
    assert health["crah-02"]["bad_payloads_total"] == 1
    assert health[None]["messages_total"] == 14
    assert health[None]["oversized_messages_total"] == 3


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


async def test_a_silent_device_goes_stale_and_comes_back(
    mosquitto: Running, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    expected = {"crah-01": {"row": "C", "rack": "C00"}}
    config = settings(mosquitto, stale_after_s=60, subscriptions=[crah(unique, devices=expected)])
    emitted: list[Sample] = []
    subscriber = DeviceSubscriber(config, "a1", "agent-1", lambda _, s: emitted.extend(s), clock)

    def device_health() -> dict[str, Any]:
        (sample,) = [s for s in subscriber.health_samples(0) if s.tags.get("device")]
        return {**sample.tags, **sample.fields}

    async with running(subscriber), publisher(mosquitto) as device:
        assert device_health()["stale"] is False  # expected, within its grace since start
        clock.now += 61
        caplog.set_level(logging.WARNING)
        health = device_health()
        assert (health["stale"], health["age_s"], health["rack"]) == (True, 61.0, "C00")
        assert "never heard in 61 s; marked stale (is it publishing, and may MQTT broker " in (
            caplog.text
        )
        topic = f"{unique}/hall-1/crah/crah-01/telemetry"
        await device.publish(topic, b'{"supply": 19}', qos=1)
        await eventually(lambda: bool(emitted), "the device's message")
        assert (device_health()["stale"], device_health()["age_s"]) == (False, 0.0)
        clock.now += 30
        assert device_health()["stale"] is False
        clock.now += 31
        assert device_health()["stale"] is True
        assert "MQTT device crah-01: nothing for 61 s; marked stale" in caplog.text


def birth_payloads(seq: int, bd_seq: int, supply: float) -> tuple[bytes, bytes]:
    node = Payload(
        seq=seq,
        metrics=[Metric(name="bdSeq", datatype=UINT64, long_value=bd_seq)],
    )
    device = Payload(
        seq=(seq + 1) % 256,
        metrics=[Metric(name="Supply", alias=7, datatype=DOUBLE, double_value=supply)],
    )
    return node.SerializeToString(), device.SerializeToString()


async def test_sparkplug_edge_node_is_asked_to_rebirth_and_its_data_lands(
    mosquitto: Running, unique: str
) -> None:
    group, host_id = f"g{unique}", f"host-{unique}"
    config = settings(
        mosquitto,
        sparkplug={
            "groups": [group],
            "host_id": host_id,
            "mappings": [
                {
                    "measurement": "cooling",
                    "tags": {"room": "hall-2"},
                    "metrics": {"supply_air_c": {"metric": "Supply"}},
                }
            ],
        },
    )
    emitted: list[Sample] = []
    subscriber = DeviceSubscriber(config, "a1", "agent-1", lambda _, s: emitted.extend(s))
    node_topic = f"spBv1.0/{group}/%s/gw-1"
    state_topic = f"spBv1.0/STATE/{host_id}"

    async with running(subscriber), publisher(mosquitto) as edge:
        await edge.subscribe(node_topic % "NCMD", qos=1)
        await edge.subscribe(state_topic, qos=1)
        states = []
        # The agent started before this edge node's birth: data from it asks for a rebirth.
        data = Payload(seq=9, metrics=[Metric(alias=7, double_value=20.0)])
        await edge.publish(f"spBv1.0/{group}/DDATA/gw-1/crah-9", data.SerializeToString())
        async with asyncio.timeout(WAIT_S):
            async for message in edge.messages:
                if message.topic.value == state_topic:
                    assert isinstance(message.payload, bytes)
                    states.append(parse_state(message.payload))
                    continue
                assert isinstance(message.payload, bytes)
                command = Payload.FromString(message.payload)
                assert [(m.name, m.boolean_value) for m in command.metrics] == [
                    ("Node Control/Rebirth", True)
                ]
                break
        assert states
        assert states[0] is not None
        assert states[0][0] is True
        nbirth, dbirth = birth_payloads(0, bd_seq=1, supply=21.5)
        await edge.publish(node_topic % "NBIRTH", nbirth)
        await edge.publish(f"spBv1.0/{group}/DBIRTH/gw-1/crah-9", dbirth)
        data = Payload(seq=2, metrics=[Metric(alias=7, double_value=22.0)])
        await edge.publish(f"spBv1.0/{group}/DDATA/gw-1/crah-9", data.SerializeToString())
        await eventually(
            lambda: len([s for s in emitted if s.measurement == "cooling"]) == 2, "birth + data"
        )
        # What the broker publishes from the edge node's will when its link drops.
        death = Payload(metrics=[Metric(name="bdSeq", datatype=UINT64, long_value=1)])
        await edge.publish(node_topic % "NDEATH", death.SerializeToString(), qos=1)
        await eventually(
            lambda: any(s.fields.get("event") == "offline" for s in emitted), "the NDEATH"
        )
        assert subscriber.sparkplug is not None
        assert subscriber.sparkplug.rebirth_requests == 1

    cooling = [s for s in emitted if s.measurement == "cooling"]
    assert [s.fields["supply_air_c"] for s in cooling] == [21.5, 22.0]
    assert cooling[0].tags["device"] == "crah-9"
    assert cooling[0].tags["room"] == "hall-2"
    events = [(s.tags["device"], s.fields["event"]) for s in emitted if s.measurement != "cooling"]
    assert events == [
        ("gw-1", "online"),
        ("crah-9", "online"),
        ("crah-9", "offline"),
        ("gw-1", "offline"),
    ]
    health = {s.tags.get("device"): s.fields for s in subscriber.health_samples(0)}
    assert health["crah-9"]["online"] is False
    # A clean stop leaves the host's STATE retained as offline, with the birth's timestamp.
    async with publisher(mosquitto) as reader:
        await reader.subscribe(state_topic, qos=1)
        async with asyncio.timeout(WAIT_S):
            message = await anext(aiter(reader.messages))
    assert message.retain
    assert isinstance(message.payload, bytes)
    assert states[0] is not None
    assert parse_state(message.payload) == (False, states[0][1])


async def test_the_agent_publishes_what_its_mqtt_devices_sent(
    mosquitto: Running, unique: str
) -> None:
    config = AgentConfig.model_validate(
        {
            "agent": {"name": "agent-1", "site": "a1"},
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_prefix": unique},
            "health_interval_s": 0.2,
            "mqtt_devices": settings(mosquitto, subscriptions=[crah(f"{unique}-bms")]).model_dump(),
        }
    )
    agent = Agent(config)
    stop = asyncio.Event()
    lines: list[Sample] = []
    async with publisher(mosquitto) as client:
        await client.subscribe(f"{unique}/#", qos=1)
        task = asyncio.create_task(agent.run(stop))
        assert agent.mqtt_devices is not None
        async with asyncio.timeout(WAIT_S):
            await agent.mqtt_devices.subscribed.wait()
        topic = f"{unique}-bms/hall-1/crah/crah-05/telemetry"
        await client.publish(topic, b'{"supply": 17.5, "return": 28.5}', qos=1)

        def measurements() -> set[str]:
            return {s.measurement for s in lines}

        def device_health() -> list[Sample]:
            return [
                s
                for s in lines
                if s.measurement == "rackwatch_mqtt_device" and s.tags.get("device") == "crah-05"
            ]

        async with asyncio.timeout(WAIT_S):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                lines += [parse_line(line) for line in message.payload.splitlines() if line]
                if "cooling" in measurements() and device_health():
                    break
        stop.set()
        await task
    (cooling,) = [s for s in lines if s.measurement == "cooling"]
    assert dict(cooling.tags) == {"site": "a1", "room": "hall-1", "device": "crah-05"}
    assert dict(cooling.fields) == {"supply_air_c": 17.5, "return_air_c": 28.5}
    assert device_health()[-1].fields["messages_total"] == 1


async def test_a_primary_host_said_offline_while_online_says_online_again(
    mosquitto: Running, unique: str
) -> None:
    host_id = f"host-{unique}"
    config = settings(mosquitto, sparkplug={"groups": [f"g{unique}"], "host_id": host_id})
    subscriber = DeviceSubscriber(config, "a1", "agent-1", lambda _, s: None)
    state_topic = f"spBv1.0/STATE/{host_id}"
    async with running(subscriber), publisher(mosquitto) as other:
        await other.subscribe(state_topic, qos=1)
        states = aiter(other.messages)
        async with asyncio.timeout(WAIT_S):
            retained = await anext(states)
            assert isinstance(retained.payload, bytes)
            online = parse_state(retained.payload)
            assert online is not None
            assert online[0] is True
            offline = json.dumps({"online": False, "timestamp": online[1]})
            await other.publish(state_topic, offline, qos=1, retain=True)
            said = [await anext(states), await anext(states)]
    assert [parse_state(m.payload) for m in said if isinstance(m.payload, bytes)] == [
        (False, online[1]),
        (True, online[1]),
    ]
