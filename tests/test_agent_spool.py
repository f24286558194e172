"""The agent's on-disk spool: batches made while the broker is away are kept, across a
kill -9 of the agent, and published after it returns."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
import yaml

from agent.config import MqttSettings
from agent.publisher import Publisher
from rackwatch.localservices import Running, free_port
from telemetry.lineproto import parse_line
from telemetry.spool import Spool
from tests.test_broker_outage import Link
from tests.test_end_to_end import eventually, rackwatch_process

pytestmark = pytest.mark.integration


async def collect_lines(mosquitto: Running, topic: str, into: list[bytes]) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            into.extend(message.payload.splitlines())


async def test_outage_goes_to_disk_and_is_replayed(
    mosquitto: Running, unique: str, tmp_path: Path
) -> None:
    received: list[bytes] = []
    listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
    link = Link(free_port(), mosquitto)
    await link.up()
    settings = MqttSettings(
        port=link.port,
        flush_interval_s=0.1,
        spool_dir=tmp_path / "spool",
        spool_max_bytes=1 << 20,
    )
    publisher = Publisher(settings, f"{unique}/s/a/metrics", client_id=f"spool-{unique}")
    task = asyncio.create_task(publisher.run())
    await eventually(lambda: publisher.connected, 10)
    lines = [f"m,device=d{i} v={i}i {1700000000000000000 + i}" for i in range(3000)]
    publisher.submit(lines[:1000])
    await eventually(lambda: len(received) == 1000, 10)

    await link.down()
    publisher.submit(lines[1000:1001])  # the publish that finds the broker gone
    await eventually(lambda: not publisher.connected, 10)
    for start in range(1001, 3000, 500):
        publisher.submit(lines[start : start + 500])
        await asyncio.sleep(0.3)
    await eventually(lambda: publisher.queued_lines == 0, 10)
    assert publisher.spool is not None
    assert publisher.spool.stats.records > 0  # on disk, not in memory
    assert publisher.stats.spooled_lines >= 1999

    await link.up()
    await eventually(lambda: len(set(received)) == 3000, 30)
    assert {line.decode() for line in received} == set(lines)
    assert publisher.spool.stats.records == 0
    assert publisher.stats.replayed_lines == publisher.stats.spooled_lines
    await publisher.close(task, timeout_s=5)
    await link.down()
    listener.cancel()


async def test_killed_agent_replays_its_spool_after_restart(
    mosquitto: Running, snmpsim: Running, unique: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"

    def write_config(broker_port: int) -> Path:
        config = {
            "agent": {"name": "spooler", "site": "s"},
            "mqtt": {
                "host": "127.0.0.1",
                "port": broker_port,
                "topic_prefix": unique,
                "spool_dir": str(spool_dir),
                "flush_interval_s": 0.2,
            },
            "defaults": {"interval_s": 0.5, "jitter_s": 0, "timeout_s": 1},
            "health_interval_s": 1,
            "credentials": {"pdu": {"community": "apc_ap8853"}},
            "devices": [
                {"name": "pdu-1", "address": f"127.0.0.1:{snmpsim.port}", "credentials": "pdu"}
            ],
        }
        path = tmp_path / f"agent-{broker_port}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    async def agent(config: Path) -> asyncio.subprocess.Process:
        return await rackwatch_process("agent", config, tmp_path / "agent.log")

    def spooled_bytes() -> int:  # read-only look: the agent owns the files while it runs
        return sum(p.stat().st_size for p in spool_dir.glob("*.seg")) if spool_dir.exists() else 0

    # The broker is unreachable: nothing listens on this port.
    offline = await agent(write_config(free_port()))
    try:
        await eventually(lambda: spooled_bytes() > 5000, 30)
    finally:
        offline.kill()  # SIGKILL: no chance to flush anything
        await offline.wait()
    spooled = Spool(spool_dir, 1 << 30)
    waiting = spooled.stats.records
    first = spooled.peek()
    spooled.close()
    assert first is not None
    oldest = parse_line(first.splitlines()[0])

    received: list[bytes] = []
    listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
    await asyncio.sleep(0.3)
    online = await agent(write_config(mosquitto.port))
    try:
        await eventually(
            lambda: any(
                parse_line(x).time_ns == oldest.time_ns
                and parse_line(x).measurement == oldest.measurement
                for x in received
            ),
            10,
        )
    finally:
        online.send_signal(signal.SIGTERM)
        await asyncio.wait_for(online.wait(), 20)
        listener.cancel()
    assert waiting >= 5
    assert Spool(spool_dir, 1 << 30).stats.records == 0  # all replayed, none left


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs, unmounted after the test."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], check=False
    )
    if mounted.returncode != 0:
        pytest.skip("this machine does not let us mount a tmpfs")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


async def test_spool_on_a_full_filesystem_counts_drops_and_recovers(
    mosquitto: Running, unique: str, small_tmpfs: Path
) -> None:
    """A running publisher spooling to a 512 KiB tmpfs while the broker is away: what does
    not fit is counted as dropped, nothing crashes, spooling resumes when space returns, and
    everything that was spooled is delivered."""
    mount = small_tmpfs
    received: list[bytes] = []
    listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
    link = Link(free_port(), mosquitto)
    settings = MqttSettings(
        port=link.port,
        flush_interval_s=0.1,
        max_batch_lines=500,
        spool_dir=mount / "spool",
        spool_max_bytes=64 << 20,  # larger than the filesystem: the filesystem fills first
    )
    publisher = Publisher(settings, f"{unique}/s/a/metrics", client_id=f"full-{unique}")
    task = asyncio.create_task(publisher.run())
    batch = 0

    def submit(batches: int) -> None:
        nonlocal batch
        for _ in range(batches):
            start = 1700000000000000000 + batch * 500
            publisher.submit(
                [f'full,b={batch} pad="{"x" * 40}",v={i}i {start + i}' for i in range(500)]
            )
            batch += 1

    try:
        submit(40)  # ~2.3 MiB while offline: four times what the filesystem holds
        await eventually(lambda: publisher.queued_lines == 0, 20)
        assert publisher.spool is not None
        stats = publisher.spool.stats
        assert stats.write_errors > 0
        assert publisher.stats.dropped_lines > 0
        assert not task.done()  # no crash

        remount = ["mount", "-o", "remount,size=8m", str(mount)]
        await asyncio.to_thread(subprocess.run, remount, check=True)
        submit(10)  # space has returned: these are spooled
        await eventually(lambda: publisher.queued_lines == 0, 20)
        assert publisher.spool.stats.write_errors == stats.write_errors  # no new failures

        await link.up()
        expected = batch * 500 - publisher.stats.dropped_lines
        await eventually(lambda: len(set(received)) == expected, 30)
        newest = {parse_line(line).tags["b"] for line in received}
        assert {str(b) for b in range(40, 50)} <= newest  # all after recovery delivered
    finally:
        await publisher.close(task, timeout_s=5)
        await link.down()
        listener.cancel()
    print(
        f"\nfull tmpfs: {batch * 500} lines made, {publisher.stats.dropped_lines} dropped "
        f"and counted ({stats.write_errors} failed appends), {expected} delivered"
    )
