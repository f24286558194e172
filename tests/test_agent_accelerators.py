"""An agent with `accelerators:` in its config: a real `rackwatch agent` process reads eight
Ascend 910B3 NPUs through npu-smi (the recorded output of a real machine, served by the fake
npu-smi) and publishes `accelerator`, `accelerator_host` and its own health over MQTT."""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

import pytest
import yaml

from agent.accelerators.config import AcceleratorSettings
from agent.accelerators.sources import host_totals
from rackwatch.localservices import Running
from telemetry.lineproto import parse_line
from telemetry.sample import Sample
from tests.test_agent_spool import collect_lines
from tests.test_end_to_end import eventually, rackwatch_process

NPU_SMI = Path(__file__).parent / "data" / "npu_smi"


def test_host_totals_sum_power_and_count_cards() -> None:
    tags = {"host": "h1"}
    cards = [
        Sample("accelerator", {"index": "0"}, {"power_w": 120.5, "healthy": True}, 1),
        Sample("accelerator", {"index": "1"}, {"power_w": 99.5, "healthy": False}, 1),
        Sample("accelerator", {"index": "2"}, {"healthy": True}, 1),  # power not reported
    ]
    total = host_totals(cards, tags)
    assert total is not None
    assert dict(total.fields) == {"count": 3, "power_w": 220.0, "healthy_count": 2}
    assert host_totals([], tags) is None


def test_host_defaults_to_this_machine() -> None:
    import socket

    assert AcceleratorSettings().host == socket.gethostname()


@pytest.mark.integration
async def test_agent_publishes_ascend_cards_and_host_totals(
    mosquitto: Running, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recordings = tmp_path / "npu-smi"
    recordings.mkdir()
    shutil.copy(NPU_SMI / "info_910b3_x8.txt", recordings / "info.txt")
    monkeypatch.setenv("FAKE_NPU_SMI_DIR", str(recordings))
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "agent": {"name": "npu-host", "site": "qiyang"},
                "mqtt": {
                    "host": mosquitto.host,
                    "port": mosquitto.port,
                    "topic_prefix": unique,
                    "flush_interval_s": 0.2,
                },
                "defaults": {"jitter_s": 0},
                "health_interval_s": 1,
                "accelerators": {
                    "host": "npu-node-01",
                    "room": "hall-2",
                    "row": "C",
                    "rack": "C07",
                    "interval_s": 1,
                    "tags": {"cluster": "ascend-10k"},
                    "ascend": {"command": str(NPU_SMI / "npu-smi")},
                },
            }
        )
    )
    received: list[bytes] = []
    listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
    await asyncio.sleep(0.3)
    agent = await rackwatch_process("agent", config, tmp_path / "agent.log")

    def measurements() -> set[str]:
        return {parse_line(line).measurement for line in received}

    try:
        await eventually(
            lambda: {"accelerator", "accelerator_host", "rackwatch_agent"} <= measurements(), 20
        )
    finally:
        agent.send_signal(signal.SIGTERM)
        await asyncio.wait_for(agent.wait(), 20)
        listener.cancel()
    points = [parse_line(line) for line in received]
    cards = [p for p in points if p.measurement == "accelerator"]
    first_poll = [p for p in cards if p.time_ns == cards[0].time_ns]
    assert sorted(p.tags["index"] for p in first_poll) == [str(i) for i in range(8)]
    card = first_poll[0]
    assert card.tags["vendor"] == "huawei"
    assert card.tags["model"] == "910B3"
    assert {k: card.tags[k] for k in ("host", "site", "room", "row", "rack", "cluster")} == {
        "host": "npu-node-01",
        "site": "qiyang",
        "room": "hall-2",
        "row": "C",
        "rack": "C07",
        "cluster": "ascend-10k",
    }
    host = next(p for p in points if p.measurement == "accelerator_host")
    same_poll = [p for p in cards if p.time_ns == host.time_ns]
    assert host.fields["count"] == 8
    assert host.fields["power_w"] == pytest.approx(
        sum(float(p.fields["power_w"]) for p in same_poll)
    )
    assert host.tags["rack"] == "C07"
    health = [
        p
        for p in points
        if p.measurement == "rackwatch_agent" and p.tags.get("device") == "accelerators:ascend"
    ]
    assert health
    assert health[-1].fields["up"] is True


@pytest.mark.integration
async def test_agent_without_an_nvidia_driver_says_so_and_keeps_running(
    mosquitto: Running, unique: str, tmp_path: Path
) -> None:
    """This machine has no GPU: NVML cannot start. The poll fails with the reason, counted in
    the health samples, the event listener says why too, and the agent keeps running."""
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "agent": {"name": "gpu-host", "site": "qiyang"},
                "mqtt": {
                    "host": mosquitto.host,
                    "port": mosquitto.port,
                    "topic_prefix": unique,
                    "flush_interval_s": 0.2,
                },
                "health_interval_s": 1,
                "accelerators": {"host": "gpu-node-01", "interval_s": 1, "nvidia": {}},
            }
        )
    )
    received: list[bytes] = []
    listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
    await asyncio.sleep(0.3)
    log = tmp_path / "agent.log"
    agent = await rackwatch_process("agent", config, log)

    def failed_polls() -> int:
        health = [
            parse_line(line)
            for line in received
            if line.startswith(b"rackwatch_agent,") and b"device=accelerators:nvidia" in line
        ]
        return int(health[-1].fields["polls_failed_total"]) if health else 0

    try:
        await eventually(lambda: failed_polls() >= 2, 20)
        assert agent.returncode is None
    finally:
        agent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(agent.wait(), 20) == 0
        listener.cancel()
    text = log.read_text()
    assert "NVML" in text
    assert "libnvidia-ml" in text or "driver" in text.lower()


def test_the_side_by_side_table_names_every_accelerator_field() -> None:
    # Issue 18's "Done when": docs/schema.md lists every field of the accelerator measurements
    # with its NVIDIA and Ascend source beside dcgm-exporter's and npu-exporter's names, each
    # by its own name (a `throttle_*` pattern would hide a field added later).
    from telemetry.schema import schema

    root = Path(__file__).parent.parent
    document = (root / "docs" / "schema.md").read_text(encoding="utf-8")
    table = document.split("### Side by side: NVML, npu-smi, dcgm-exporter, npu-exporter")[1]
    table = table.split("\n\n")[2]  # heading, paragraph, then the table
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert all(len(row) == 5 for row in rows), "each row: field, NVML, Ascend, dcgm, npu"
    named = {name for row in rows for name in row[0].split("`")[1::2]}
    measurements = schema().measurements
    accelerators = [name for name in measurements if name.startswith("accelerator")]
    assert len(accelerators) == 5  # accelerator, _mig, _host, _job, _event
    for measurement in accelerators:
        missing = set(measurements[measurement].fields) - named
        assert not missing, f"{measurement}: {sorted(missing)}"
