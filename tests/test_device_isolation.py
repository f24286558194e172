"""A black-hole device (takes requests, never answers) among live ones delays none of them."""

from __future__ import annotations

import asyncio
import socket

import aiomqtt
import pytest

from agent.config import AgentConfig
from agent.service import Agent
from rackwatch.localservices import Running
from tests.test_end_to_end import eventually

pytestmark = pytest.mark.integration
HOLE_WAIT_S = 40.0


async def test_black_hole_device_does_not_delay_live_devices(
    snmpsim: Running, mosquitto: Running, unique: str
) -> None:
    black_hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # reads nothing, answers nothing
    black_hole.bind(("127.0.0.1", 0))
    hole_port = black_hole.getsockname()[1]
    live = {"pdu-1": "apc_ap8853", "pdu-2": "apc_ap8959eu3", "pdu-3": "apc_ap8853"}
    config = AgentConfig.model_validate(
        {
            "agent": {"name": f"iso-{unique}", "site": "test"},
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_prefix": unique},
            "defaults": {"interval_s": 1.0, "jitter_s": 0, "timeout_s": 0.3, "retries": 2},
            "credentials": {c: {"community": c} for c in [*live.values(), "public"]},
            "devices": [
                *(
                    {"name": n, "address": f"{snmpsim.host}:{snmpsim.port}", "credentials": c}
                    for n, c in live.items()
                ),
                {
                    "name": "black-hole",
                    "address": f"127.0.0.1:{hole_port}",
                    "credentials": "public",
                    # Its first poll waits HOLE_WAIT_S on one request: everything the live
                    # devices do meanwhile is done beside it, not after it.
                    "timeout_s": HOLE_WAIT_S,
                    "retries": 0,
                    "deadline_s": 2 * HOLE_WAIT_S,
                },
            ],
        }
    )
    agent = Agent(config)
    stop = asyncio.Event()
    hole = agent.pollers["black-hole"].stats
    # A subscriber, as a collector would be: the agent's shutdown does not hold data for one.
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as subscriber:
        await subscriber.subscribe(f"{unique}/#", qos=1)
        task = asyncio.create_task(agent.run(stop))
        # Counted, not timed: a loaded machine may stall every task for a second (live devices
        # once missed a 1 s deadline together under CI load), but none may wait on the hole.
        try:
            await eventually(lambda: hole.overruns >= 1, 10)  # a tick found its poll waiting
            before = {name: agent.pollers[name].stats.polls_ok for name in live}
            await eventually(
                lambda: all(agent.pollers[n].stats.polls_ok >= before[n] + 3 for n in live),
                HOLE_WAIT_S / 2,
            )
            # ...and the black hole is still in that first poll: nothing it did has ended.
            assert (hole.polls_ok, hole.polls_failed) == (0, 0)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            black_hole.close()
    kinds = {
        s.tags["device"]: s.tags.get("kind") for s in agent.health_samples() if "device" in s.tags
    }
    # A device is reported once its first poll has ended (test_agent_health): not the hole.
    assert kinds == {"pdu-1": "pdu", "pdu-2": "pdu", "pdu-3": "pdu"}
