"""An agent with many devices: its open-files limit (a UDP socket per SNMP device) and the
bound on polls that walk tables at once.

The open-files tests run a real `rackwatch agent` process whose RLIMIT_NOFILE is lowered
before it starts (setrlimit in the child), polling snmpsim, and read what it reports in its
health samples over MQTT.
"""

from __future__ import annotations

import asyncio
import random
import re
import resource
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from agent import plan, service
from agent.config import AgentConfig
from agent.open_files import MAX_DEVICES, RESERVED_FILES
from agent.service import Agent
from rackwatch.localservices import Running
from telemetry.lineproto import parse_lines
from telemetry.sample import Sample
from tests.test_end_to_end import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
RECORDING = "tpdin"  # a DC monitor read in 3 requests: cheap for snmpsim to serve 50 times
WALKING = "cxc"  # a DC controller whose first poll walks a dozen columns
DEVICES = 50
LIMIT = 40  # the agent itself holds about 13 files: about 27 devices get a socket


def settings(
    mosquitto: Running,
    snmpsim: Running,
    prefix: str,
    devices: int,
    interval_s: float,
    recording: str = RECORDING,
) -> dict[str, Any]:
    return {
        "agent": {"name": "many", "site": "limits"},
        "mqtt": {
            "host": mosquitto.host,
            "port": mosquitto.port,
            "topic_prefix": prefix,
            "flush_interval_s": 0.2,
        },
        "defaults": {"interval_s": interval_s, "jitter_s": 0, "timeout_s": 2, "retries": 1},
        "health_interval_s": 1,
        "credentials": {recording: {"community": recording}},
        "devices": [
            {
                "name": f"pdu-{i:03d}",
                "address": f"{snmpsim.host}:{snmpsim.port}",
                "credentials": recording,
            }
            for i in range(devices)
        ],
    }


class Health:
    """The latest health sample of each device the agent reports, from its MQTT topic."""

    def __init__(self) -> None:
        self.devices: dict[str, Sample] = {}

    def take(self, payload: bytes) -> None:
        for sample in parse_lines(payload):
            device = sample.tags.get("device")
            if sample.measurement == "rackwatch_agent" and device:
                self.devices[device] = sample

    def count(self, field: str) -> int:
        return sum(int(s.fields[field]) for s in self.devices.values())


@asynccontextmanager
async def agent_process(
    mosquitto: Running,
    snmpsim: Running,
    tmp_path: Path,
    unique: str,
    nofile: tuple[int, int],
) -> AsyncIterator[tuple[Health, Path]]:
    """`rackwatch agent` with RLIMIT_NOFILE set to `nofile` (soft, hard) before it starts;
    yields what its health says and its log file."""
    prefix = f"limits-{unique}"
    config, log = tmp_path / "agent.yaml", tmp_path / "agent.log"
    config.write_text(yaml.safe_dump(settings(mosquitto, snmpsim, prefix, DEVICES, 5)))
    health = Health()
    subscribed = asyncio.Event()

    async def subscribe() -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe(f"{prefix}/#", qos=1)
            subscribed.set()
            async for message in client.messages:
                health.take(bytes(message.payload))

    subscriber = asyncio.create_task(subscribe())
    await asyncio.wait_for(subscribed.wait(), 10)
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rackwatch",
            "agent",
            "-c",
            str(config),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile),
        )
    try:
        yield health, log
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        subscriber.cancel()
        await asyncio.gather(subscriber, return_exceptions=True)


def every_device_reported(health: Health) -> Callable[[], bool]:
    def check() -> bool:
        """every device's first poll finished and was reported"""
        return len(health.devices) == DEVICES

    return check


async def test_devices_past_the_open_files_limit_fail_as_open_files(
    mosquitto: Running, snmpsim: Running, tmp_path: Path, unique: str
) -> None:
    """Soft and hard limit 40 for 50 devices: the agent warns with the numbers at start;
    the devices that got a socket are read, the others fail, counted as `open_files`, with an
    error that names the limit."""
    async with agent_process(mosquitto, snmpsim, tmp_path, unique, (LIMIT, LIMIT)) as (health, log):
        await eventually(every_device_reported(health), 60)
        text = log.read_text()
    assert re.search(
        rf"open-files limit {LIMIT} \(hard {LIMIT}\) is too low for {DEVICES} SNMP devices: they "
        rf"need about {DEVICES + RESERVED_FILES}",
        text,
    ), text
    states = {s.tags["device"]: s.fields for s in health.devices.values()}
    failed = {name for name, f in states.items() if f["polls_failed_open_files_total"]}
    read = {name for name, f in states.items() if f["state"] == "ok"}
    assert failed
    assert read
    assert failed | read == set(states), {n: states[n] for n in set(states) - failed - read}
    assert health.count("polls_failed_total") == health.count("polls_failed_open_files_total")
    for name in failed:
        error = str(states[name]["error"])
        assert "Too many open files" in error
        assert f"open-files limit (RLIMIT_NOFILE) is {LIMIT}" in error


async def test_the_agent_raises_its_soft_limit_to_the_hard_one(
    mosquitto: Running, snmpsim: Running, tmp_path: Path, unique: str
) -> None:
    """A soft limit of 40 under a hard one of 4,096 (systemd's default is 1,024 under a high
    hard limit): the agent raises it itself, and every one of 50 devices is read."""
    async with agent_process(mosquitto, snmpsim, tmp_path, unique, (LIMIT, 4096)) as (health, log):
        await eventually(every_device_reported(health), 60)
        text = log.read_text()
    assert f"open-files limit raised from {LIMIT} to 4096" in text
    assert health.count("polls_failed_total") == 0
    assert all(s.fields["state"] == "ok" for s in health.devices.values())


def test_the_units_open_files_limit_covers_the_documented_maximum() -> None:
    units = sorted((ROOT / "systemd").glob("rackwatch-agent*.service"))
    assert len(units) == 3  # agent, agent@ (per config), agent-worker@ (per worker)
    for unit in units:
        limits = re.findall(r"^LimitNOFILE=(\d+)$", unit.read_text(), re.MULTILINE)
        assert limits, unit.name
        assert int(limits[0]) >= MAX_DEVICES + RESERVED_FILES, unit.name
    assert f"{MAX_DEVICES:,} SNMP devices per agent" in (ROOT / "docs/operations.md").read_text()


async def test_polls_that_walk_tables_are_bounded_at_once(
    mosquitto: Running, snmpsim: Running, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst cold start: 48 devices whose first polls (each walking the device's tables)
    all fall due at the same moment. At most PLAN_WALKS_AT_ONCE (4 here) walk at once; the
    rest wait their turn outside their deadline, so every device is read, none fails."""
    monkeypatch.setattr(service, "PLAN_WALKS_AT_ONCE", 4)
    monkeypatch.setattr(random, "uniform", lambda low, high: low)  # no random phase
    walking, most = 0, 0
    build = plan.build

    async def counted(*args: Any) -> Any:
        nonlocal walking, most
        walking += 1
        most = max(most, walking)
        try:
            return await build(*args)
        finally:
            walking -= 1

    monkeypatch.setattr(plan, "build", counted)
    config = AgentConfig.model_validate(
        settings(mosquitto, snmpsim, f"walks-{unique}", 48, 3, WALKING)
        | {"health_interval_s": 3600}
    )
    agent = Agent(config)
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    stats = [poller.stats for poller in agent.pollers.values()]

    def all_polled() -> bool:
        """every device finished its first poll"""
        return all(s.polls_ok + s.polls_failed for s in stats)

    try:
        await eventually(all_polled, 60)
    finally:
        stop.set()
        await running
    assert most == 4
    assert sum(s.polls_failed for s in stats) == 0
    assert all(s.polls_ok for s in stats)
