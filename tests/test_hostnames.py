"""Devices, the probe, the broker and InfluxDB named by host name or IPv6 literal, not only by
IPv4 literal: gufo-snmp takes only IP addresses, so the agent resolves device names itself
(agent/resolve.py), again after a failed poll and periodically; paho-mqtt and httpx resolve
theirs."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from agent.config import AgentConfig, Device, MqttSettings
from agent.publisher import Publisher
from agent.resolve import ResolveError, Resolver
from agent.service import Agent
from agent.snmp import SnmpDevice, SnmpTarget
from collector.config import InfluxSettings, RetrySettings
from collector.deadletter import DeadLetters
from collector.influx import InfluxWriter
from rackwatch.localservices import Running, free_port, influx_query
from telemetry.lineproto import parse_line
from tests.test_agent_spool import collect_lines
from tests.test_end_to_end import eventually
from tests.test_traps import send

AddrInfo = list[tuple[Any, ...]]


class FakeDns:
    """socket.getaddrinfo for the names a test owns (a DNS change cannot be made for real on a
    shared machine); every other name goes to the real resolver."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> None:
        self.names = names
        self.lookups = 0
        self._real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> AddrInfo:
        if host not in self.names:
            return cast(AddrInfo, self._real(host, port, *args, **kwargs))
        self.lookups += 1
        if not self.names[host]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM, 17, "", (a, 0))
            for a in self.names[host]
        ]


async def test_ip_literals_are_used_as_they_are() -> None:
    for literal in ("192.0.2.7", "2001:db8::7", "fe80::1%lo"):
        resolver = Resolver(literal)
        assert not resolver.due()
        assert await resolver.address() == literal


async def test_a_name_prefers_ipv4_and_is_looked_up_again_when_forgotten_or_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dns = FakeDns(monkeypatch, {"pdu.test": ["2001:db8::1", "192.0.2.1"]})
    resolver = Resolver("pdu.test", refresh_s=3600)
    assert await resolver.address() == "192.0.2.1"
    assert await resolver.address() == "192.0.2.1"
    assert dns.lookups == 1  # cached
    dns.names["pdu.test"] = ["2001:db8::2"]  # renumbered, IPv6 only
    resolver.forget()
    assert await resolver.address() == "2001:db8::2"
    resolver.refresh_s = 0  # every lookup is due
    dns.names["pdu.test"] = ["192.0.2.3"]
    assert await resolver.address() == "192.0.2.3"
    assert dns.lookups == 3


async def test_a_failed_refresh_keeps_the_address_a_failed_lookup_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dns = FakeDns(monkeypatch, {"pdu.test": ["192.0.2.1"]})
    resolver = Resolver("pdu.test", refresh_s=0)
    assert await resolver.address() == "192.0.2.1"
    dns.names["pdu.test"] = []  # the DNS server has a bad minute
    assert await resolver.address() == "192.0.2.1"
    resolver.forget()  # the device stopped answering: now the lookup must succeed
    with pytest.raises(ResolveError, match=r"^cannot resolve pdu\.test: Name or service not known"):
        await resolver.address()


@pytest.mark.integration
async def test_a_device_named_localhost_is_polled(snmpsim: Running) -> None:
    target = SnmpTarget("localhost", snmpsim.port, "apc_ap8853")
    samples = await SnmpDevice("pdu-1", target, {}).collect()
    assert any(s.measurement == "pdu_phase" for s in samples)


@pytest.mark.integration
async def test_a_device_follows_its_name_after_a_failed_poll(
    snmpsim: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name points at a dead address, then (a DNS change) at the device: the poll after
    the failure looks it up again and reads the device."""
    dns = FakeDns(monkeypatch, {"pdu-a01.test": ["127.0.0.2"]})  # nothing listens there
    target = SnmpTarget("pdu-a01.test", snmpsim.port, "apc_ap8853", timeout_s=0.3, retries=0)
    device = SnmpDevice("pdu-a01", target, {})
    with pytest.raises(Exception, match="no answer"):
        await device.collect()
    dns.names["pdu-a01.test"] = [snmpsim.host]
    samples = await device.collect()
    assert any(s.measurement == "pdu_phase" for s in samples)
    assert dns.lookups == 2


class _Relay(asyncio.DatagramProtocol):
    """Passes datagrams from one client on to an upstream address and back (one client)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.client: tuple[str | int, ...] | None = None
        self.outbound: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.client = addr
        if self.outbound is not None:
            self.outbound.sendto(data, self.upstream)

    def answer(self, data: bytes) -> None:
        if self.client is not None:
            self.transport.sendto(data, self.client)


class _Back(asyncio.DatagramProtocol):
    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.relay.answer(data)


@pytest.fixture
async def ipv6_snmpsim(snmpsim: Running) -> AsyncIterator[int]:
    """snmpsim (IPv4 only) reached through [::1]:port."""
    loop = asyncio.get_running_loop()
    relay = _Relay((snmpsim.host, snmpsim.port))
    front, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=("::1", 0))
    back, _ = await loop.create_datagram_endpoint(lambda: _Back(relay), local_addr=("127.0.0.1", 0))
    relay.outbound = back
    yield front.get_extra_info("sockname")[1]
    front.close()
    back.close()


@pytest.mark.integration
async def test_a_device_at_an_ipv6_literal_is_polled(ipv6_snmpsim: int) -> None:
    host, port = Device(name="pdu-1", address=f"[::1]:{ipv6_snmpsim}").host_port()
    samples = await SnmpDevice("pdu-1", SnmpTarget(host, port, "apc_ap8853"), {}).collect()
    assert any(s.measurement == "pdu_phase" for s in samples)


@pytest.mark.integration
def test_the_probe_takes_a_host_name(snmpsim: Running) -> None:
    address = f"localhost:{snmpsim.port}"
    result = subprocess.run(
        [sys.executable, "-m", "rackwatch", "probe", address, "--community", "apc_ap8853"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "profile apc_rpdu2" in result.stdout.splitlines()[0]


def test_the_probe_names_a_host_that_does_not_resolve() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rackwatch", "probe", "pdu-a01.invalid"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("rackwatch probe: ")
    assert "cannot resolve pdu-a01.invalid: " in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.integration
async def test_the_broker_may_be_named_by_host_name(mosquitto: Running, unique: str) -> None:
    """paho-mqtt resolves the broker's name itself: `mqtt.host: localhost` works."""
    received: list[bytes] = []
    listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
    await asyncio.sleep(0.3)
    settings = MqttSettings(host="localhost", port=mosquitto.port, flush_interval_s=0.1)
    publisher = Publisher(settings, f"{unique}/s/a/metrics", client_id=f"name-{unique}")
    task = asyncio.create_task(publisher.run())
    try:
        publisher.submit(["m,device=d v=1i 1700000000000000000"])
        await eventually(lambda: received == [b"m,device=d v=1i 1700000000000000000"], 10)
    finally:
        await publisher.close(task, timeout_s=5.0)
        listener.cancel()


@pytest.mark.integration
async def test_a_trap_from_a_device_named_by_host_name_is_its_own(
    snmpsim: Running, mosquitto: Running, unique: str
) -> None:
    """Traps come from an IP address: a device configured as `localhost:PORT` is matched by the
    address its name resolved to, once it has been polled."""
    trap_port = free_port("udp")
    config = AgentConfig.model_validate(
        {
            "agent": {"name": "trap-agent", "site": "s1"},
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "topic_prefix": unique},
            "defaults": {"interval_s": 3600},  # polled only when the test (or a trap) says so
            "credentials": {"pdu": {"community": "apc_ap8853"}},
            "traps": {"listen": f"127.0.0.1:{trap_port}", "communities": ["trap-community"]},
            "devices": [
                {
                    "name": "pdu-a01",
                    "address": f"localhost:{snmpsim.port}",
                    "credentials": "pdu",
                    "rack": "A01",
                }
            ],
        }
    )
    received: list[bytes] = []
    listener = asyncio.create_task(collect_lines(mosquitto, f"{unique}/#", received))
    agent = Agent(config)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    poller = agent.pollers["pdu-a01"]
    try:
        await agent.ready.wait()
        assert poller.poll_now()
        await eventually(lambda: poller.stats.polls_ok == 1, 20)
        await send(
            "snmptrap", "-v", "2c", "-c", "trap-community", f"127.0.0.1:{trap_port}", "",
            "1.3.6.1.4.1.318.0.268",
        )  # fmt: skip
        await eventually(lambda: any(b"snmp_trap," in line for line in received), 10)
        await eventually(lambda: poller.stats.polls_ok == 2, 10)  # the trap polled it
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        listener.cancel()
    (event,) = [parse_line(line) for line in received if line.startswith(b"snmp_trap,")]
    assert (event.tags["device"], event.tags["rack"]) == ("pdu-a01", "A01")


@pytest.mark.parametrize(
    "address", ["pdu-a01.example", "pdu_a01:1161", "localhost", "[2001:db8::7]:161", "::1"]
)
def test_a_device_address_may_be_a_name_or_an_ip(address: str) -> None:
    assert Device(name="d", address=address).address == address


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("10.20.1.300", "10.20.1.300 is not an IPv4 address"),
        ("10.1", "10.1 is not an IPv4 address"),
        ("pdu a01", "'pdu a01' is neither an IP address nor a host name"),
        ("pdu..a01", "'pdu..a01' is neither an IP address nor a host name"),
    ],
)
def test_an_address_that_is_no_name_is_refused_when_checked(address: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        Device(name="d", address=address)
    result = subprocess.run(
        [sys.executable, "-m", "rackwatch", "probe", address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (2, f"rackwatch probe: {address!r}: {problem}\n")


@pytest.mark.integration
async def test_influxdb_may_be_named_by_host_name(
    influxdb: Running, database: str, tmp_path: Path
) -> None:
    """httpx resolves the URL's host itself: `influxdb.url: http://localhost:PORT` works."""
    settings = InfluxSettings(url=f"http://localhost:{influxdb.port}", database=database)
    writer = InfluxWriter(settings, RetrySettings(), DeadLetters(tmp_path / "dead.jsonl"))
    await writer.write([b"pdu,device=d power_w=5.0 1700000000000000000"])
    await writer.aclose()
    rows = influx_query(influxdb, database, 'SELECT count("power_w") FROM "pdu"')
    assert rows[0]["values"][0][1] == 1  # type: ignore[index]
