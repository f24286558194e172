"""A fast SNMP v2c responder for benchmarks: one recording served under every community.

    .venv/bin/python bench/snmp_responder.py RECORDING [--host 127.0.0.1] [--port 0] [--cpu N]

snmpsim answers about 6,000 varbinds/s on one core, too few to replay thousands of devices. This
answers GET, GETNEXT and GETBULK from one parsed .snmprec (parsed by snmpsim's own record
grammar), whatever the community, so one recording stands for any number of devices. A request
is answered once with pysnmp/pyasn1 (decode, look up, encode); the encoded answer is cached under
the request's bytes after its request-id, and every later equal request (the same OIDs from
another device or the next poll) is answered from the cache, with only its request-id and
community put around it. The values never change: it replays a recording, not a live device.

Started as a program it prints `listening on HOST:PORT` once bound (the port the kernel chose for
--port 0) and serves until SIGTERM/SIGINT; --cpu pins it to one CPU (os.sched_setaffinity).
`start()` runs it as a child process that way and returns its address.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]
from pyasn1.type import univ  # type: ignore[import-untyped]
from pysnmp.proto import api, rfc1905
from snmpsim.record.snmprec import SnmprecRecord  # type: ignore[import-untyped]

V2C = api.v2c
GET, GETNEXT, GETBULK = 0xA0, 0xA1, 0xA5
MAX_VARBINDS = 2000  # a GETBULK answer stops here (a UDP datagram carries at most ~64 KiB)


class Recording:
    """A recording's OIDs in order, for GET and GETNEXT."""

    def __init__(self, path: Path) -> None:
        record = SnmprecRecord()
        found: dict[tuple[int, ...], Any] = {}
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip() or line.startswith(b"#"):
                continue
            try:
                oid, value = record.evaluate(line)
            except Exception as exc:  # snmpsim's error names the record
                raise ValueError(f"{path}:{number}: {exc}") from None
            found[tuple(univ.ObjectIdentifier(oid))] = value
        self.oids = sorted(found)
        self.values = [found[oid] for oid in self.oids]

    def get(self, oid: tuple[int, ...]) -> Any:
        i = bisect.bisect_left(self.oids, oid)
        if i < len(self.oids) and self.oids[i] == oid:
            return self.values[i]
        return rfc1905.noSuchInstance

    def next(self, oid: tuple[int, ...]) -> tuple[tuple[int, ...], Any]:
        i = bisect.bisect_right(self.oids, oid)
        if i < len(self.oids):
            return self.oids[i], self.values[i]
        return oid, rfc1905.endOfMibView


def _tlv(data: bytes, position: int) -> tuple[int, int, int]:
    """BER at `position`: (tag, where the value starts, where it ends)."""
    tag, first = data[position], data[position + 1]
    start = position + 2
    if first < 0x80:
        return tag, start, start + first
    size = first & 0x7F
    return tag, start + size, start + size + int.from_bytes(data[start : start + size], "big")


def _wrap(tag: int, body: bytes) -> bytes:
    """One BER TLV with a definite length."""
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + body


@dataclass(slots=True)
class Stats:
    requests: int = 0
    answered_from_cache: int = 0
    malformed: int = 0


class Responder(asyncio.DatagramProtocol):
    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self.stats = Stats()
        self._cache: dict[tuple[int, bytes], bytes] = {}
        self._transport: Any = None  # uvloop's UDPTransport is no asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.stats.requests += 1
        try:
            answer = self.answer(data)
        except (IndexError, ValueError, LookupError, TypeError) as exc:
            self.stats.malformed += 1
            if self.stats.malformed == 1:
                print(f"snmp_responder: malformed request from {addr}: {exc}", file=sys.stderr)
            return
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)

    def answer(self, data: bytes) -> bytes | None:
        """The response to one request message, or None for what is not v2c."""
        _, body, _ = _tlv(data, 0)
        _, version_at, version_end = _tlv(data, body)
        if data[version_at:version_end] != b"\x01":  # v2c only
            return None
        _, _, community_end = _tlv(data, version_end)
        pdu_tag, pdu_at, pdu_end = _tlv(data, community_end)
        _, _, request_id_end = _tlv(data, pdu_at)
        key = (pdu_tag, data[request_id_end:pdu_end])
        rest = self._cache.get(key)
        if rest is None:
            rest = self._cache[key] = self._compute(data, pdu_tag)
        else:
            self.stats.answered_from_cache += 1
        pdu = _wrap(0xA2, data[pdu_at:request_id_end] + rest)
        return _wrap(0x30, data[body:community_end] + pdu)

    def _compute(self, data: bytes, pdu_tag: int) -> bytes:
        """A response PDU's bytes after its request-id, made with pysnmp's codec."""
        message, _ = decoder.decode(data, asn1Spec=V2C.Message())
        pdu = V2C.apiMessage.get_pdu(message)
        requested = [tuple(oid) for oid, _ in V2C.apiPDU.get_varbinds(pdu)]
        rec = self.recording
        if pdu_tag == GET:
            varbinds = [(oid, rec.get(oid)) for oid in requested]
        elif pdu_tag == GETNEXT:
            varbinds = [rec.next(oid) for oid in requested]
        elif pdu_tag == GETBULK:
            varbinds = self._bulk(
                requested,
                int(V2C.apiBulkPDU.get_non_repeaters(pdu)),
                int(V2C.apiBulkPDU.get_max_repetitions(pdu)),
            )
        else:
            raise ValueError(f"PDU type {pdu_tag:#x} not answered")
        response = V2C.apiPDU.get_response(pdu)
        V2C.apiPDU.set_varbinds(response, [(univ.ObjectIdentifier(o), v) for o, v in varbinds])
        encoded: bytes = encoder.encode(response)
        _, at, end = _tlv(encoded, 0)
        _, _, request_id_end = _tlv(encoded, at)
        return encoded[request_id_end:end]

    def _bulk(
        self, requested: list[tuple[int, ...]], non_repeaters: int, repetitions: int
    ) -> list[tuple[tuple[int, ...], Any]]:
        rec = self.recording
        varbinds = [rec.next(oid) for oid in requested[:non_repeaters]]
        cursors = requested[non_repeaters:]
        for _ in range(repetitions):
            if not cursors or len(varbinds) + len(cursors) > MAX_VARBINDS:
                break
            row = [rec.next(oid) for oid in cursors]
            varbinds += row
            if all(value is rfc1905.endOfMibView for _, value in row):
                break
            cursors = [oid for oid, _ in row]
        return varbinds


async def serve(recording: Path, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        lambda: Responder(Recording(recording)), local_addr=(host, port)
    )
    bound = transport.get_extra_info("sockname")
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        transport.close()
        stats = responder.stats
        print(
            f"requests {stats.requests}, from cache {stats.answered_from_cache}, "
            f"malformed {stats.malformed}",
            file=sys.stderr,
        )


@dataclass
class Running:
    host: str
    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start(recording: Path, host: str = "127.0.0.1", cpu: int | None = None) -> Running:
    """Run a responder as a child process (pinned to `cpu`), on a port the kernel chooses."""
    command = [sys.executable, __file__, str(recording), "--host", host, "--port", "0"]
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline().decode()  # its first line, once bound
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"snmp_responder did not start: {line!r}")
    bound_host, port = line.split()[-1].rsplit(":", 1)
    return Running(bound_host, int(port), process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recording", type=Path, help="an .snmprec file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--cpu", type=int, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import uvloop

    uvloop.run(serve(args.recording, args.host, args.port))


if __name__ == "__main__":
    main()
