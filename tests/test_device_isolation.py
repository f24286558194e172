"""A black-hole device (takes requests, never answers) among live ones delays none of them."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agent.config import AgentConfig
from agent.service import Agent, build_device
from rackwatch.localservices import Running

pytestmark = pytest.mark.integration


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
            # A 1 s deadline: a shared CI machine can stall every task for over 0.5 s at once
            # (it did: the live devices and the black hole missed the same 0.5 s tick).
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
                },
            ],
        }
    )
    # snmpsim reads a recording on its first request: warm it up, so the live devices' first
    # polls measure the agent, not snmpsim's start (this test may run first in a session).
    await asyncio.gather(
        *(
            build_device(config, device).collect()
            for device in config.devices
            if device.name in live
        )
    )
    agent = Agent(config)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(6.0)
    stop.set()
    await asyncio.wait_for(task, 20)
    black_hole.close()

    hole = agent.pollers["black-hole"].stats
    assert hole.polls_ok == 0
    assert hole.polls_failed + hole.overruns >= 3
    assert "deadline" in hole.last_error or "no answer" in hole.last_error
    for name in live:
        stats = agent.pollers[name].stats
        assert stats.polls_failed == 0, (name, stats)
        assert stats.polls_ok >= 5, name  # ~6 ticks in 6 s; the black hole took none of them
    # The health samples say what each device is once its profile is known (alert dependencies
    # use it); the black hole never answered, so its kind is unknown (and stays so: a series
    # keeps its tags).
    kinds = {
        s.tags["device"]: s.tags.get("kind") for s in agent.health_samples() if "device" in s.tags
    }
    assert kinds == {"pdu-1": "pdu", "pdu-2": "pdu", "pdu-3": "pdu", "black-hole": "unknown"}
