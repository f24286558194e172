"""The agent's health per device (`rackwatch_agent`), as the alert rules read it: nothing before
a device's first poll has finished, then one tag set for as long as its poller lives (an alert
on a series must be able to resolve on that series), `up=false` only after a real failure,
and a device that answers but that no profile reads is `unsupported`, not down."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.service import Agent
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.lineproto import parse_line
from telemetry.sample import Sample
from telemetry.schema import schema
from tests.test_agent_spool import collect_lines
from tests.test_end_to_end import eventually

pytestmark = pytest.mark.integration


def agent_config(mosquitto: Running | None, unique: str, **extra: Any) -> AgentConfig:
    broker = {"host": mosquitto.host, "port": mosquitto.port} if mosquitto else {}
    return AgentConfig.model_validate(
        {
            "agent": {"name": f"health-{unique}", "site": "s1"},
            "mqtt": {**broker, "topic_prefix": unique, "flush_interval_s": 0.1},
            "defaults": {"interval_s": 2.0, "jitter_s": 0, "timeout_s": 0.3, "retries": 0},
            "health_interval_s": 0.1,
            **extra,
        }
    )


def device_health(samples: list[Sample], name: str) -> list[Sample]:
    return [
        s for s in samples if s.measurement == "rackwatch_agent" and s.tags.get("device") == name
    ]


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A UDP port that takes requests and never answers: a dead device."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_nothing_is_reported_of_a_device_before_its_first_poll() -> None:
    config = agent_config(
        None,
        "before",
        credentials={"default": {"community": "public"}},
        devices=[{"name": "pdu-1", "address": "192.0.2.1", "rack": "A01"}],
    )
    samples = Agent(config).health_samples()
    assert device_health(samples, "pdu-1") == []
    assert [s.tags for s in samples] == [{"site": "s1", "agent": "health-before"}]


async def test_a_device_keeps_one_tag_set_and_is_never_down_while_it_answers(
    snmpsim: Running, mosquitto: Running, unique: str, black_hole: int
) -> None:
    """Health every 0.1 s, polls every 2 s from a random phase: the first health samples come
    before most devices' first polls. Detected and configured profiles, and a dead device."""
    sim = f"{snmpsim.host}:{snmpsim.port}"
    config = agent_config(
        mosquitto,
        unique,
        credentials={c: {"community": c} for c in ["apc_ap8853", "apc_ap8959eu3", "public"]},
        devices=[
            {"name": "detected", "address": sim, "credentials": "apc_ap8853", "rack": "A01"},
            {
                "name": "configured",
                "address": sim,
                "credentials": "apc_ap8959eu3",
                "profile": "apc_rpdu2",
                "rack": "A02",
            },
            {"name": "dead", "address": f"127.0.0.1:{black_hole}", "credentials": "public"},
        ],
    )
    received: list[bytes] = []
    listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
    await asyncio.sleep(0.3)  # subscribed before the agent's first health sample
    agent = Agent(config)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))

    def health() -> list[Sample]:
        return [parse_line(line) for line in received if line.startswith(b"rackwatch_agent,")]

    def polled_twice() -> bool:
        """every device reported after at least two finished polls"""
        finished = {
            s.tags["device"]
            for s in health()
            if "device" in s.tags
            and int(s.fields["polls_ok_total"]) + int(s.fields["polls_failed_total"]) >= 2
        }
        return finished == {"detected", "configured", "dead"}

    try:
        await eventually(polled_twice, 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        listener.cancel()
    samples = health()
    expected_kind = {"detected": "pdu", "configured": "pdu", "dead": "unknown"}
    for name, kind in expected_kind.items():
        reported = device_health(samples, name)
        assert len({tuple(sorted(s.tags.items())) for s in reported}) == 1, reported
        assert reported[0].tags["kind"] == kind
        assert (
            int(reported[0].fields["polls_ok_total"])
            + int(reported[0].fields["polls_failed_total"])
            >= 1
        )  # the first sample comes after the first finished poll
    for name in ("detected", "configured"):
        assert {(s.fields["up"], s.fields["state"]) for s in device_health(samples, name)} == {
            (True, "ok")
        }
    dead = device_health(samples, "dead")[-1]
    assert (dead.fields["up"], dead.fields["state"]) == (False, "failed")
    assert dead.fields["polls_failed_no_answer_total"] == dead.fields["polls_failed_total"]
    assert "no answer to system group GET" in str(dead.fields["error"])


async def test_after_a_reload_a_changed_device_is_reported_once_polled_again(
    snmpsim: Running, mosquitto: Running, unique: str
) -> None:
    sim = f"{snmpsim.host}:{snmpsim.port}"
    pdu = {"name": "pdu", "address": sim, "credentials": "apc_ap8853", "rack": "A01"}
    other = {"name": "other", "address": sim, "credentials": "apc_ap8853", "rack": "A09"}
    credentials = {"apc_ap8853": {"community": "apc_ap8853"}}
    received: list[bytes] = []  # a subscriber, so the agent's last flush is taken at once
    listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
    agent = Agent(agent_config(mosquitto, unique, credentials=credentials, devices=[pdu, other]))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await eventually(lambda: all(p.stats.polls_ok for p in agent.pollers.values()), 20)
        moved = {**pdu, "rack": "A02"}  # a changed device gets a new poller
        await agent.reload(
            agent_config(mosquitto, unique, credentials=credentials, devices=[moved, other])
        )
        samples = agent.health_samples()
        assert device_health(samples, "pdu") == []  # its new poller has not polled yet
        assert device_health(samples, "other")[0].tags["rack"] == "A09"
        await eventually(lambda: agent.pollers["pdu"].stats.polls_ok > 0, 20)
        (reported,) = device_health(agent.health_samples(), "pdu")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        listener.cancel()
    assert (reported.tags["rack"], reported.tags["kind"], reported.fields["up"]) == (
        "A02",
        "pdu",
        True,
    )


@pytest.fixture(scope="module")
def unknown_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """snmpsim serving a device that answers the system group and nothing rackwatch reads:
    an enterprise no profile knows, a sysDescr ending in CR LF as many do."""
    recordings = tmp_path_factory.mktemp("unknown-recordings")
    sys_descr = b"Acme Widget 3000 rev B\r\n".hex()
    (recordings / "widget.snmprec").write_text(
        f"1.3.6.1.2.1.1.1.0|4x|{sys_descr}\n"
        "1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.99999.7.1\n"
        "1.3.6.1.2.1.1.3.0|67|123456\n"
    )
    service = localservices.start_snmpsim(recordings, tmp_path_factory.mktemp("unknown-sim"))
    yield service
    localservices.stop(service)


async def test_a_device_no_profile_reads_is_unsupported_not_down(unknown_device: Running) -> None:
    config = agent_config(
        None,
        "unsupported",
        credentials={"widget": {"community": "widget"}},
        devices=[
            {
                "name": "widget",
                "address": f"{unknown_device.host}:{unknown_device.port}",
                "credentials": "widget",
                "timeout_s": 2.0,
            }
        ],
    )
    agent = Agent(config)
    poller = agent.pollers["widget"]
    assert poller.poll_now()
    await eventually(lambda: not poller.stats.stale, 20)
    assert poller.poll_now()
    await eventually(lambda: poller.stats.polls_unsupported == 2, 20)
    (health,) = device_health(agent.health_samples(), "widget")
    assert health.fields["up"] is True  # it answers
    assert health.fields["state"] == "unsupported"
    assert health.fields["sys_object_id"] == "1.3.6.1.4.1.99999.7.1"
    assert health.fields["sys_descr"] == "Acme Widget 3000 rev B"
    assert health.fields["polls_unsupported_total"] == 2
    assert health.fields["polls_failed_total"] == 0
    assert health.tags["kind"] == "unknown"
    assert "error" not in health.fields


async def test_a_name_that_does_not_resolve_is_a_named_failure() -> None:
    config = agent_config(
        None,
        "resolve",
        credentials={"default": {"community": "public"}},
        devices=[{"name": "pdu-a01", "address": "pdu-a01.invalid"}],  # RFC 6761: never resolves
    )
    agent = Agent(config)
    poller = agent.pollers["pdu-a01"]
    assert poller.poll_now()
    await eventually(lambda: poller.stats.polls_failed == 1, 20)
    (health,) = device_health(agent.health_samples(), "pdu-a01")
    assert health.fields["state"] == "failed"
    assert health.fields["polls_failed_resolve_total"] == 1
    assert str(health.fields["error"]).startswith(
        "pdu-a01 (pdu-a01.invalid:161): cannot resolve pdu-a01.invalid: "
    )


def test_every_health_field_is_in_the_schema(tmp_path: Path) -> None:
    """Each state a device can be in, as a health sample, against telemetry/schema.yaml."""
    from agent.snmp import UnsupportedDevice

    config = agent_config(
        None,
        "schema",
        credentials={"default": {"community": "public"}},
        devices=[{"name": n, "address": "192.0.2.1"} for n in ("ok", "failed", "unsupported")],
    )
    agent = Agent(config)
    agent.pollers["ok"].stats.state = "ok"
    failed = agent.pollers["failed"].stats
    failed.state, failed.last_error, failed.polls_failed = "failed", "no answer", 1
    failed.failures["no_answer"] = 1
    unsupported = agent.pollers["unsupported"].stats
    unsupported.state = "unsupported"
    unsupported.unsupported = UnsupportedDevice("x", "1.3.6.1.4.1.99999", "Acme")
    samples = agent.health_samples()
    assert len(device_health(samples, "unsupported")) == 1
    assert sorted({p for s in samples for p in schema().sample_problems(s, ())}) == []


def test_the_probe_says_unsupported_in_one_line(unknown_device: Running) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rackwatch",
            "probe",
            f"{unknown_device.host}:{unknown_device.port}",
            "--community",
            "widget",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "no profile matches sysObjectID 1.3.6.1.4.1.99999.7.1" in line
