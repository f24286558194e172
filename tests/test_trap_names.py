"""Traps by name: `rackwatch mibs compile` turns MIBs into agent/trapnames.json, and real traps
(net-snmp's snmptrap, as in test_traps) reach MQTT named, with a severity and varbinds by name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.config import AgentConfig
from agent.service import Agent
from agent.traps import SHIPPED_NAMES, TrapNames, TrapNamesError
from rackwatch.cli import main
from rackwatch.loader import load_agent
from rackwatch.localservices import Running, free_port
from telemetry.config import ConfigError
from telemetry.lineproto import parse_line
from telemetry.sample import Sample
from tests.conftest import SHARED
from tests.test_end_to_end import eventually
from tests.test_traps import send, traps

StartAgent = Callable[[dict[str, Any]], AbstractAsyncContextManager[tuple[int, list[Sample]]]]

SITE_NAMES = """\
traps:
  1.3.6.1.4.1.99999.0.1: {name: chillerPumpLost, module: SITE-CHILLER-MIB, objects: [pumpId]}
  1.3.6.1.4.1.318.0.5: {name: siteUpsOnBattery, module: SITE-APC-OVERRIDES, objects: []}
objects:
  1.3.6.1.4.1.99999.1.1: {name: pumpId}
"""


@pytest.fixture
def start_agent(snmpsim: Running, mosquitto: Running, unique: str) -> StartAgent:
    """An agent with a trap receiver (v2c community `trap-community`) and one known PDU;
    `traps` adds to its config's traps section."""

    @asynccontextmanager
    async def start(extra: dict[str, Any]) -> AsyncIterator[tuple[int, list[Sample]]]:
        port = free_port("udp")
        config = AgentConfig.model_validate(
            {
                "agent": {"name": "trap-agent", "site": "qiyang-a1"},
                "mqtt": {
                    "host": mosquitto.host,
                    "port": mosquitto.port,
                    "topic_prefix": unique,
                    "flush_interval_s": 0.1,
                },
                "defaults": {"interval_s": 3600},
                "credentials": {"pdu": {"community": "apc_ap8853"}},
                "traps": {
                    "listen": f"127.0.0.1:{port}",
                    "communities": ["trap-community"],
                    "poll_on_trap": False,
                    **extra,
                },
                "devices": [
                    {
                        "name": "pdu-a01-a",
                        "address": f"127.0.0.1:{snmpsim.port}",
                        "credentials": "pdu",
                        "rack": "A01",
                    }
                ],
            }
        )
        agent = Agent(config)
        received: list[Sample] = []
        stop = asyncio.Event()
        subscribed = asyncio.Event()

        async def listen() -> None:
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
                await client.subscribe(f"{unique}/#", qos=1)
                subscribed.set()
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    received.extend(parse_line(line) for line in message.payload.splitlines())

        listener = asyncio.create_task(listen())
        await asyncio.wait_for(subscribed.wait(), 10)
        task = asyncio.create_task(agent.run(stop))
        await eventually(lambda: agent._traps is not None, 10)
        try:
            yield port, received
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
            listener.cancel()

    return start


async def trap(port: int, oid: str, *varbinds: str) -> None:
    await send(
        "snmptrap", "-v", "2c", "-c", "trap-community", f"127.0.0.1:{port}", "", oid, *varbinds
    )


async def received_trap(received: list[Sample], oid: str) -> Sample:
    await eventually(lambda: any(s.tags["trap_oid"] == oid for s in traps(received)), 10)
    return next(s for s in traps(received) if s.tags["trap_oid"] == oid)


@pytest.mark.integration
async def test_powernet_and_ups_mib_traps_are_named(start_agent: StartAgent) -> None:
    async with start_agent({}) as (port, received):
        await trap(port, "1.3.6.1.4.1.318.0.5", "1.3.6.1.4.1.318.2.3.3.0", "s", "On battery")
        await trap(port, "1.3.6.1.4.1.318.0.9", "1.3.6.1.4.1.318.2.3.3.0", "s", "Power back")
        await trap(
            port,
            "1.3.6.1.2.1.33.2.2",  # UPS-MIB upsTrapTestCompleted
            "1.3.6.1.2.1.33.1.7.1.0",
            "i",
            "7",
            "1.3.6.1.2.1.33.1.7.3.0",
            "i",
            "3",  # upsTestResultsSummary doneError
        )
        await trap(port, "1.3.6.1.2.1.33.2.1", "1.3.6.1.2.1.33.1.2.3.0", "i", "12")
        on_battery = await received_trap(received, "1.3.6.1.4.1.318.0.5")
        restored = await received_trap(received, "1.3.6.1.4.1.318.0.9")
        test = await received_trap(received, "1.3.6.1.2.1.33.2.2")
        ups_on_battery = await received_trap(received, "1.3.6.1.2.1.33.2.1")

    assert on_battery.tags["trap_name"] == "upsOnBattery"
    assert on_battery.tags["trap_severity"] == "critical"
    assert on_battery.tags["device"] == "pdu-a01-a"  # the sender is a known device
    assert on_battery.fields["trap_module"] == "PowerNet-MIB"
    assert on_battery.fields["varbinds_named"] == "mtrapargsString.0=On battery"
    assert on_battery.fields["varbinds"] == "1.3.6.1.4.1.318.2.3.3.0=On battery"  # kept
    assert (restored.tags["trap_name"], restored.tags["trap_severity"]) == ("powerRestored", "info")
    assert test.tags["trap_name"] == "upsTrapTestCompleted"
    assert test.tags["trap_severity"] == "warning"  # no rule matches it
    assert test.fields["trap_module"] == "UPS-MIB"
    assert test.fields["varbinds_named"] == "upsTestId.0=7; upsTestResultsSummary.0=doneError"
    assert ups_on_battery.tags["trap_name"] == "upsTrapOnBattery"
    assert ups_on_battery.tags["trap_severity"] == "critical"
    assert ups_on_battery.fields["varbinds_named"] == "upsEstimatedMinutesRemaining.0=12"


@pytest.mark.integration
async def test_an_unknown_trap_stays_numeric_with_severity_warning(
    start_agent: StartAgent,
) -> None:
    async with start_agent({}) as (port, received):
        await trap(port, "1.3.6.1.4.1.99999.0.1", "1.3.6.1.4.1.99999.1.1.4", "i", "2")
        event = await received_trap(received, "1.3.6.1.4.1.99999.0.1")
    assert event.tags["trap_name"] == "1.3.6.1.4.1.99999.0.1"
    assert event.tags["trap_severity"] == "warning"
    assert "trap_module" not in event.fields
    assert event.fields["varbinds_named"] == "1.3.6.1.4.1.99999.1.1.4=2"


@pytest.mark.integration
async def test_a_site_names_file_and_severity_rules_override(
    start_agent: StartAgent, tmp_path: Path
) -> None:
    names = tmp_path / "site-traps.yaml"
    names.write_text(SITE_NAMES)
    severity = [{"match": "PumpLost", "severity": "critical"}]
    async with start_agent({"names_file": str(names), "severity": severity}) as (port, received):
        await trap(port, "1.3.6.1.4.1.99999.0.1", "1.3.6.1.4.1.99999.1.1.4", "i", "2")
        await trap(port, "1.3.6.1.4.1.318.0.5")
        await trap(port, "1.3.6.1.2.1.33.2.1")
        chiller = await received_trap(received, "1.3.6.1.4.1.99999.0.1")
        apc = await received_trap(received, "1.3.6.1.4.1.318.0.5")
        ups = await received_trap(received, "1.3.6.1.2.1.33.2.1")
    assert chiller.tags["trap_name"] == "chillerPumpLost"
    assert chiller.tags["trap_severity"] == "critical"
    assert chiller.fields["trap_module"] == "SITE-CHILLER-MIB"
    assert chiller.fields["varbinds_named"] == "pumpId.4=2"
    assert apc.tags["trap_name"] == "siteUpsOnBattery"  # the site's name wins
    assert apc.tags["trap_severity"] == "warning"  # the site's rules replace the shipped ones
    assert ups.tags["trap_name"] == "upsTrapOnBattery"  # the shipped names are still there


def test_a_bad_severity_regex_is_refused() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        AgentConfig.model_validate(
            {
                "agent": {"name": "a", "site": "s"},
                "mqtt": {"host": "127.0.0.1"},
                "traps": {"severity": [{"match": "(unclosed", "severity": "info"}]},
            }
        )


SMIV1_MIB = """\
TEST-TRAP-MIB DEFINITIONS ::= BEGIN
IMPORTS enterprises FROM RFC1155-SMI
        OBJECT-TYPE FROM RFC-1212
        TRAP-TYPE FROM RFC-1215;
testCo OBJECT IDENTIFIER ::= { enterprises 99998 }
testState OBJECT-TYPE
    SYNTAX INTEGER { normal(1), fault(2) }
    ACCESS read-only
    STATUS mandatory
    DESCRIPTION "The state."
    ::= { testCo 1 }
testFault TRAP-TYPE
    ENTERPRISE testCo
    VARIABLES { testState }
    DESCRIPTION "A fault. More text here."
    ::= 7
END
"""


def test_compile_writes_smiv1_traps_as_enterprise_0_specific(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mibs").mkdir()
    (tmp_path / "mibs" / "TEST-TRAP-MIB").write_text(SMIV1_MIB)
    out = tmp_path / "names.json"
    deps = ["--deps", str(SHARED / "mibs")]  # RFC1155-SMI, RFC-1212, RFC-1215
    assert main(["mibs", "compile", str(tmp_path / "mibs"), *deps, "-o", str(out)]) == 0
    assert "1 traps" in capsys.readouterr().out
    names = json.loads(out.read_text())
    assert names["traps"] == {  # none of the --deps folder's traps
        "1.3.6.1.4.1.99998.0.7": {
            "name": "testFault",
            "module": "TEST-TRAP-MIB",
            "description": "A fault",
            "objects": ["testState"],
        }
    }
    assert names["objects"]["1.3.6.1.4.1.99998.1"] == {
        "name": "testState",
        "values": {"1": "normal", "2": "fault"},
    }


def test_compile_of_a_missing_folder_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mibs", "compile", str(tmp_path / "nope"), "-o", str(tmp_path / "x.json")]) == 2
    assert f"{tmp_path / 'nope'}: not a directory" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_the_shipped_trap_names_are_what_the_shared_mibs_compile_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Drift: regenerate with `rackwatch mibs compile ../shared/mibs -o agent/trapnames.json`."""
    out = tmp_path / "trapnames.json"
    assert main(["mibs", "compile", str(SHARED / "mibs"), "-o", str(out)]) == 0
    compiled, shipped = json.loads(out.read_text()), json.loads(SHIPPED_NAMES.read_text())
    assert (compiled["traps"], compiled["objects"]) == (shipped["traps"], shipped["objects"])
    assert shipped["traps"]["1.3.6.1.4.1.318.0.5"]["name"] == "upsOnBattery"
    assert shipped["traps"]["1.3.6.1.2.1.33.2.1"]["name"] == "upsTrapOnBattery"
    assert "PowerNet-MIB: failed" not in capsys.readouterr().err


AGENT_YAML = """\
agent: {name: a, site: s}
mqtt: {host: 127.0.0.1}
traps:
  names_file: site-traps.yaml
"""


def test_a_site_names_file_is_read_from_the_configs_folder_and_checked(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(AGENT_YAML)
    (tmp_path / "site-traps.yaml").write_text(SITE_NAMES)
    loaded = load_agent(tmp_path / "agent.yaml")
    assert loaded.traps is not None
    assert loaded.traps.names_file == tmp_path / "site-traps.yaml"
    (tmp_path / "site-traps.yaml").write_text("traps:\n  1.3.6.1.4.1.9.0.1: {nmae: typo}\n")
    with pytest.raises(ConfigError) as exc:
        load_agent(tmp_path / "agent.yaml")
    assert "site-traps.yaml:2" in str(exc.value)
    assert "nmae" in str(exc.value)
    with pytest.raises(TrapNamesError, match=r"site-traps\.yaml: .*nmae: Extra inputs"):
        TrapNames(tmp_path / "site-traps.yaml", [])
