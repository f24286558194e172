"""A device that answers with a corrupted SNMP packet: every poll is a counted failure named
"malformed answer", never an exception that escapes a task (gufo-snmp panics on some of them:
a Rust panic, which pyo3 raises as PanicException, a BaseException), and the probe says it in
one line. The device is a real UDP server that misbehaves: it answers every request with the
request's own id, in a packet the SNMP library cannot decode."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import cast

import pytest

from agent.config import AgentConfig
from agent.scheduler import PeriodicPoller
from agent.service import Agent
from agent.snmp import DeviceError, SnmpDevice, SnmpTarget
from tests.test_end_to_end import eventually


def _tlv(tag: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([tag, len(body)]) + body


def _request_id(request: bytes) -> bytes:
    """The request-id of an SNMPv1/v2c request (short-form lengths, as gufo-snmp sends)."""
    at = 2  # inside the message SEQUENCE
    for _ in range(2):  # version, community
        at += 2 + request[at + 1]
    at += 2  # into the PDU
    return request[at + 2 : at + 2 + request[at + 1]]


def _response(request_id: bytes, varbinds: bytes) -> bytes:
    pdu = _tlv(0x02, request_id) + _tlv(0x02, b"\x00") + _tlv(0x02, b"\x00") + varbinds
    return _tlv(0x30, _tlv(0x02, b"\x01") + _tlv(0x04, b"public") + _tlv(0xA2, pdu))


# A varbind in BER's indefinite-length form: gufo-snmp 0.13 indexes past the end of its
# (empty) OID and panics ("index out of bounds").
PANICS = _tlv(0x30, b"\x30\x80\x00\x00")
# A varbind whose value has no type the library knows (undecodable, an ordinary SnmpError).
UNDECODABLE = _tlv(0x30, _tlv(0x30, _tlv(0x06, b"\x2b\x06\x01") + b"\x45\x01\x01"))


class Responder(asyncio.DatagramProtocol):
    def __init__(self, varbinds: bytes) -> None:
        self.varbinds = varbinds
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.requests += 1
        self.transport.sendto(_response(_request_id(data), self.varbinds), addr)


async def _serve(varbinds: bytes) -> tuple[asyncio.DatagramTransport, Responder, int]:
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        lambda: Responder(varbinds), local_addr=("127.0.0.1", 0)
    )
    return transport, responder, transport.get_extra_info("sockname")[1]


@pytest.fixture
async def corrupt_device() -> AsyncIterator[int]:
    transport, _, port = await _serve(PANICS)
    yield port
    transport.close()


@pytest.mark.parametrize("varbinds", [PANICS, UNDECODABLE], ids=["panics", "undecodable"])
async def test_a_corrupted_answer_is_a_device_error_named_malformed(varbinds: bytes) -> None:
    transport, responder, port = await _serve(varbinds)
    try:
        device = SnmpDevice("pdu-x", SnmpTarget("127.0.0.1", port, "public", timeout_s=2.0), {})
        with pytest.raises(DeviceError, match=r"pdu-x \(127.0.0.1:\d+\): malformed answer") as err:
            await device.collect()
    finally:
        transport.close()
    assert err.value.reason == "malformed"
    if varbinds is PANICS:  # the library's own words, so this test keeps testing a panic
        assert "index out of bounds" in str(err.value)
    assert responder.requests == 1  # a malformed answer is not retried like a lost one


async def test_each_poll_of_a_corrupting_device_is_counted_and_nothing_escapes(
    corrupt_device: int,
) -> None:
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: escaped.append(context))
    config = AgentConfig.model_validate(
        {
            "agent": {"name": "a1", "site": "s1"},
            "defaults": {"interval_s": 0.1, "jitter_s": 0, "timeout_s": 2.0},
            "credentials": {"default": {"community": "public"}},
            "devices": [{"name": "pdu-x", "address": f"127.0.0.1:{corrupt_device}"}],
        }
    )
    agent = Agent(config)
    poller = agent.pollers["pdu-x"]
    task = asyncio.create_task(poller.run())
    try:
        await eventually(lambda: poller.stats.polls_failed >= 3, 20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        loop.set_exception_handler(None)
    assert escaped == []
    (health,) = [s for s in agent.health_samples() if s.tags.get("device") == "pdu-x"]
    assert health.fields["state"] == "failed"
    assert health.fields["up"] is False
    assert health.fields["polls_failed_malformed_total"] == health.fields["polls_failed_total"]
    assert "malformed answer to system group GET" in str(health.fields["error"])


async def test_a_panic_from_any_source_is_a_counted_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scheduler's own guard, for sources other than SNMP: a BaseException that is not a
    cancellation is that poll's failure."""

    class PanicException(BaseException):  # what pyo3 raises, by name
        pass

    async def panics() -> list[object]:
        raise PanicException("index out of bounds")

    poller = PeriodicPoller("gpu", panics, lambda *_: None, interval_s=0.05)  # type: ignore[arg-type]
    caplog.set_level(logging.WARNING)
    assert poller.poll_now()
    await eventually(lambda: poller.stats.polls_failed == 1, 5)
    assert poller.stats.failures["error"] == 1
    assert "index out of bounds" in poller.stats.last_error
    assert "device gpu: poll failed: index out of bounds" in caplog.text


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rackwatch", "probe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_probe_says_malformed_in_one_line(corrupt_device: int) -> None:
    result = await asyncio.to_thread(_probe, f"127.0.0.1:{corrupt_device}", "--retries", "0")
    assert result.returncode == 1
    assert result.stdout == ""
    ours = [line for line in result.stderr.splitlines() if line.startswith("rackwatch probe:")]
    assert len(ours) == 1, result.stderr
    assert "malformed answer to system group GET" in ours[0]
    assert "Traceback" not in result.stderr  # (the Rust panic hook still prints its own note)
