"""Traps and informs (v2c and v3) sent by net-snmp's snmptrap/snmpinform reach the agent,
become `snmp_trap` samples on MQTT, and make the agent poll the sender at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from agent.config import AgentConfig
from agent.service import Agent
from rackwatch.localservices import Running, free_port
from telemetry.lineproto import parse_line
from telemetry.sample import Sample
from tests.test_end_to_end import eventually

pytestmark = pytest.mark.integration

ENGINE_ID = "8000000001020304"


async def send(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()


@pytest.fixture
async def agent_with_traps(
    snmpsim: Running, mosquitto: Running, unique: str
) -> AsyncIterator[tuple[Agent, int, list[Sample]]]:
    trap_port = free_port("udp")
    config = AgentConfig.model_validate(
        {
            "agent": {"name": "trap-agent", "site": "qiyang-a1"},
            "mqtt": {
                "host": mosquitto.host,
                "port": mosquitto.port,
                "topic_prefix": unique,
                "flush_interval_s": 0.1,
            },
            "defaults": {"interval_s": 3600},  # no regular poll during the test
            "credentials": {"pdu": {"community": "apc_ap8853"}},
            "traps": {
                "listen": f"127.0.0.1:{trap_port}",
                "communities": ["trap-community"],
                "users": [
                    {
                        "user": "pdu-trapper",
                        "auth_protocol": "sha256",
                        "auth_password": "auth-secret",
                        "priv_protocol": "aes",
                        "priv_password": "priv-secret",
                        "engine_id": ENGINE_ID,
                    },
                    {
                        "user": "ups-informer",
                        "auth_protocol": "sha512",
                        "auth_password": "auth-secret",
                        "priv_protocol": "aes256",
                        "priv_password": "priv-secret",
                    },
                ],
            },
            "devices": [
                {
                    "name": "pdu-a01-a",
                    "address": f"127.0.0.1:{snmpsim.port}",
                    "credentials": "pdu",
                    "room": "hall-1",
                    "row": "A",
                    "rack": "A01",
                }
            ],
        }
    )
    agent = Agent(config)
    received: list[Sample] = []
    stop = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe(f"{unique}/#", qos=1)
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                received.extend(parse_line(line) for line in message.payload.splitlines())

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(0.3)
    yield agent, trap_port, received
    stop.set()
    await asyncio.wait_for(task, 20)
    listener.cancel()


def traps(received: list[Sample]) -> list[Sample]:
    return [s for s in received if s.measurement == "snmp_trap"]


async def test_v2c_trap_becomes_an_event_and_polls_the_sender(
    agent_with_traps: tuple[Agent, int, list[Sample]],
) -> None:
    agent, port, received = agent_with_traps
    assert agent.pollers["pdu-a01-a"].stats.polls_ok == 0
    await send(
        "snmptrap",
        "-v",
        "2c",
        "-c",
        "trap-community",
        f"127.0.0.1:{port}",
        "",
        "1.3.6.1.4.1.318.0.268",
        "1.3.6.1.4.1.318.2.3.3.0",
        "s",
        "Rack PDU: overload",
    )
    await eventually(lambda: bool(traps(received)), 10)
    event = traps(received)[0]
    assert event.tags["trap_oid"] == "1.3.6.1.4.1.318.0.268"
    assert (event.tags["device"], event.tags["rack"]) == ("pdu-a01-a", "A01")
    assert event.fields["varbinds"] == "1.3.6.1.4.1.318.2.3.3.0=Rack PDU: overload"
    assert event.fields["inform"] is False
    # ... and the PDU was polled right away, not an hour later.
    await eventually(lambda: agent.pollers["pdu-a01-a"].stats.polls_ok == 1, 10)
    await eventually(lambda: any(s.measurement == "pdu_phase" for s in received), 10)


async def test_v3_auth_priv_trap_and_inform(
    agent_with_traps: tuple[Agent, int, list[Sample]],
) -> None:
    _, port, received = agent_with_traps
    await send(
        "snmptrap",
        "-v",
        "3",
        "-u",
        "pdu-trapper",
        "-l",
        "authPriv",
        "-a",
        "SHA-256",
        "-A",
        "auth-secret",
        "-x",
        "AES",
        "-X",
        "priv-secret",
        "-e",
        f"0x{ENGINE_ID}",
        f"127.0.0.1:{port}",
        "",
        "1.3.6.1.4.1.318.0.5",
    )
    await send(
        "snmpinform",
        "-v",
        "3",
        "-u",
        "ups-informer",
        "-l",
        "authPriv",
        "-a",
        "SHA-512",
        "-A",
        "auth-secret",
        "-x",
        "AES-256",
        "-X",
        "priv-secret",
        f"127.0.0.1:{port}",
        "",
        "1.3.6.1.2.1.33.2.1",
    )  # UPS-MIB upsTrapOnBattery
    await eventually(lambda: len(traps(received)) == 2, 10)
    by_oid = {s.tags["trap_oid"]: s for s in traps(received)}
    assert by_oid["1.3.6.1.4.1.318.0.5"].fields["inform"] is False
    assert by_oid["1.3.6.1.2.1.33.2.1"].fields["inform"] is True


async def test_unknown_community_and_wrong_key_are_dropped(
    agent_with_traps: tuple[Agent, int, list[Sample]],
) -> None:
    _, port, received = agent_with_traps
    await send(
        "snmptrap", "-v", "2c", "-c", "guess", f"127.0.0.1:{port}", "", "1.3.6.1.4.1.318.0.1"
    )
    await send(
        "snmptrap",
        "-v",
        "3",
        "-u",
        "pdu-trapper",
        "-l",
        "authPriv",
        "-a",
        "SHA-256",
        "-A",
        "wrong-secret",
        "-x",
        "AES",
        "-X",
        "priv-secret",
        "-e",
        f"0x{ENGINE_ID}",
        f"127.0.0.1:{port}",
        "",
        "1.3.6.1.4.1.318.0.2",
    )
    await send(
        "snmptrap",
        "-v",
        "2c",
        "-c",
        "trap-community",
        f"127.0.0.1:{port}",
        "",
        "1.3.6.1.4.1.318.0.3",
    )
    await eventually(lambda: bool(traps(received)), 10)
    await asyncio.sleep(0.5)
    assert [s.tags["trap_oid"] for s in traps(received)] == ["1.3.6.1.4.1.318.0.3"]
