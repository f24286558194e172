"""The agent's publisher against a real Mosquitto that holds back its acknowledgements: several
QoS 1 publishes in flight, back-pressure that stretches polls and spools the overflow instead of
dropping lines, and gzip payloads that a real collector stores (issue 21, item 1)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import time
from pathlib import Path

import aiomqtt
import pytest

from agent.config import MqttSettings
from agent.publisher import Publisher
from agent.scheduler import PeriodicPoller
from collector.service import Collector
from rackwatch.localservices import Running, free_port, influx_query
from telemetry.lineproto import encode
from telemetry.payload import GZIP_MAGIC, decode
from telemetry.sample import Sample
from tests.test_end_to_end import collector_config, eventually, running

pytestmark = pytest.mark.integration


class Valve:
    """A TCP forwarder in front of the real Mosquitto whose broker-to-client direction can be
    held: the broker still gets every PUBLISH, but its PUBACKs wait in the valve."""

    def __init__(self, target: Running) -> None:
        self.port = free_port()
        self.target = target
        self.open = asyncio.Event()
        self.open.set()
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Valve:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self.open.set()
        self._server.close()
        for writer in self._streams:
            writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        self._streams |= {writer, up_writer}

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, valve: asyncio.Event | None
        ) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if valve is not None:
                        await valve.wait()
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, None), pipe(up_reader, writer, self.open))


class Subscriber:
    """A plain aiomqtt subscriber that keeps every payload (inflated) it receives."""

    def __init__(self, mosquitto: Running, topic: str) -> None:
        self.mosquitto = mosquitto
        self.topic = topic
        self.payloads: list[bytes] = []
        self.subscribed = asyncio.Event()

    @property
    def lines(self) -> list[bytes]:
        return [line for p in self.payloads for line in decode(p, 1 << 30).splitlines()]

    async def run(self) -> None:
        async with aiomqtt.Client(self.mosquitto.host, self.mosquitto.port) as client:
            await client.subscribe(self.topic, qos=1)
            self.subscribed.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.payloads.append(message.payload)


def numbered(start: int, n: int) -> list[str]:
    return [f"flow,device=d{i} v={i}i {1700000000000000000 + i}" for i in range(start, start + n)]


async def test_several_publishes_await_their_pubacks_at_once(
    mosquitto: Running, unique: str
) -> None:
    subscriber = Subscriber(mosquitto, f"{unique}/#")
    listener = asyncio.create_task(subscriber.run())
    await subscriber.subscribed.wait()
    async with Valve(mosquitto) as valve:
        settings = MqttSettings(
            port=valve.port, max_batch_lines=100, max_inflight=4, flush_interval_s=0.1
        )
        publisher = Publisher(settings, f"{unique}/s/a/metrics", client_id=f"inflight-{unique}")
        task = asyncio.create_task(publisher.run())
        await eventually(lambda: publisher.connected, 10)
        valve.open.clear()  # PUBACKs wait in the valve from now on
        publisher.submit(numbered(0, 1000))

        def four_batches_arrived() -> bool:
            """the broker took four batches, none acknowledged"""
            return len(subscriber.payloads) == 4

        await eventually(four_batches_arrived, 10)
        await asyncio.sleep(0.5)  # time for a fifth, were the window wider than 4
        assert len(subscriber.payloads) == 4
        assert publisher.stats.published_batches == 0
        assert publisher.queued_lines == 600

        valve.open.set()
        await eventually(lambda: publisher.stats.published_lines == 1000, 10)
        assert sorted(subscriber.lines) == sorted(line.encode() for line in numbered(0, 1000))
        assert publisher.stats.dropped_lines == 0
        await publisher.close(task, timeout_s=5)
    listener.cancel()


async def test_stalled_broker_stretches_polls_and_spools_the_overflow(
    mosquitto: Running, unique: str, tmp_path: Path
) -> None:
    subscriber = Subscriber(mosquitto, f"{unique}/#")
    listener = asyncio.create_task(subscriber.run())
    await subscriber.subscribed.wait()
    async with Valve(mosquitto) as valve:
        settings = MqttSettings(
            port=valve.port,
            max_batch_lines=200,
            max_inflight=2,
            max_queue_lines=1000,
            flush_interval_s=0.05,
            spool_dir=tmp_path / "spool",
            spool_max_bytes=1 << 24,
            compression="gzip",
        )
        publisher = Publisher(settings, f"{unique}/s/a/metrics", client_id=f"stall-{unique}")
        task = asyncio.create_task(publisher.run())
        await eventually(lambda: publisher.connected, 10)
        polled = 0

        async def poll() -> list[Sample]:
            nonlocal polled
            polled += 1
            base = polled * 1000
            return [
                Sample("flow", {"device": f"d{base + i}"}, {"v": base + i}, 1700000000 * 10**9)
                for i in range(150)
            ]

        def emit(name: str, samples: list[Sample]) -> None:
            publisher.submit([encode(s) for s in samples])

        poller = PeriodicPoller("stretchy", poll, emit, interval_s=0.05, ready=publisher.room)
        polling = asyncio.create_task(poller.run())
        await eventually(lambda: publisher.stats.published_batches >= 2, 10)

        valve.open.clear()  # the broker stops acknowledging: a stalled broker
        await eventually(lambda: publisher.stats.backpressure_waits >= 1, 10)
        stalled_at = polled
        await asyncio.sleep(1.0)  # 20 intervals
        assert polled - stalled_at <= 1  # polls wait instead of filling the queue
        assert poller.stats.overruns >= 10  # the skipped ticks are counted
        assert publisher.queued_lines < settings.max_queue_lines

        # Lines the polls do not send (health, traps) still come; past the queue's bound the
        # oldest go to the spool, none are dropped.
        publisher.submit(numbered(0, 3000))
        assert publisher.stats.overflow_lines >= 2000
        assert publisher.stats.dropped_lines == 0
        assert publisher.spool is not None
        assert publisher.spool.stats.records >= 10

        valve.open.set()
        await eventually(lambda: polled - stalled_at >= 5, 10)  # polling resumes
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        assert await publisher.drain(20)
        expected = {line.encode() for line in numbered(0, 3000)}
        for n in range(1, polled + 1):
            expected |= {
                f"flow,device=d{n * 1000 + i} v={n * 1000 + i}i 1700000000000000000".encode()
                for i in range(150)
            }

        def all_arrived() -> bool:
            """every line polled or submitted reached the subscriber"""
            return expected <= set(subscriber.lines)

        await eventually(all_arrived, 10)
        assert publisher.stats.dropped_lines == 0
        assert all(p[:2] == GZIP_MAGIC for p in subscriber.payloads)
        await publisher.close(task, timeout_s=5)
    listener.cancel()


async def test_collector_stores_gzip_and_plain_and_sets_aside_broken_gzip(
    mosquitto: Running, influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    collector = Collector(collector_config(mosquitto, influxdb, database, prefix, tmp_path))

    def stored() -> int:
        rows = influx_query(influxdb, database, 'SELECT count("v") FROM "flow"')
        return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]

    now = time.time_ns()
    gzip_lines = [f"flow,device=g{i} v={i}i {now}" for i in range(500)]
    plain_lines = [f"flow,device=p{i} v={i}i {now}" for i in range(300)]
    broken = GZIP_MAGIC + b"\x08\x00 this is not deflate"
    async with running(collector):
        await eventually(lambda: collector.ingest.connection.connected, 10)
        await collector.ingest.subscribed.wait()
        for settings, batch in (
            (MqttSettings(port=mosquitto.port, compression="gzip"), gzip_lines),
            (MqttSettings(port=mosquitto.port), plain_lines),  # as from an agent before gzip
        ):
            name = settings.compression
            publisher = Publisher(settings, f"{prefix}/s/{name}/metrics", f"{unique}-{name}")
            task = asyncio.create_task(publisher.run())
            publisher.submit(batch)
            assert await publisher.drain(10)
            await publisher.close(task, timeout_s=5)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish(f"{prefix}/s/broken/metrics", broken, qos=1)
            # A small message that would inflate past max_message_bytes (16 MiB): refused too.
            bomb = gzip.compress(b"#" * (17 * 1024 * 1024), compresslevel=9)
            await client.publish(f"{prefix}/s/bomb/metrics", bomb, qos=1)
        await eventually(lambda: stored() == 800, 20)
        await eventually(lambda: collector.ingest.stats.malformed_compressed_messages == 2, 10)
        health = collector.health_sample().fields
        assert health["malformed_compressed_messages_total"] == 2
    assert collector.ingest.stats.lines_invalid == 0
    dead = [json.loads(line) for line in (tmp_path / "dead-e2e.jsonl").read_text().splitlines()]
    assert [d["origin"] for d in dead] == [f"{prefix}/s/broken/metrics", f"{prefix}/s/bomb/metrics"]
    assert "not valid gzip" in dead[0]["reason"]
    assert "inflates past max_message_bytes" in dead[1]["reason"]
    assert base64.b64decode(dead[0]["line"].removeprefix("base64:")) == broken  # nothing lost
