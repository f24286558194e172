"""A broker the agent cannot reach: lines wait in the agent's queue and arrive afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from agent.config import MqttSettings
from agent.publisher import Publisher
from collector.service import Collector
from rackwatch.localservices import Running, free_port, influx_query
from tests.test_end_to_end import collector_config, eventually, running

pytestmark = pytest.mark.integration


class Link:
    """A TCP forwarder in front of the real Mosquitto that the test can cut and restore."""

    def __init__(self, port: int, target: Running) -> None:
        self.port = port
        self.target = target
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._streams:
            writer.close()
        await self._server.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)
        self._streams |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def lines(start: int, n: int) -> list[str]:
    return [f"outage,device=p{i} v={i}i {1700000000000000000 + i}" for i in range(start, start + n)]


async def test_lines_queued_during_outage_arrive_after_it(
    mosquitto: Running, influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    collector = Collector(collector_config(mosquitto, influxdb, database, prefix, tmp_path))
    link = Link(free_port(), mosquitto)
    await link.up()
    settings = MqttSettings(host="127.0.0.1", port=link.port, flush_interval_s=0.1)
    publisher = Publisher(settings, f"{prefix}/s/agent/metrics", client_id=f"agent-{unique}")

    def stored(n: int) -> bool:
        rows = influx_query(influxdb, database, 'SELECT count("v") FROM "outage"')
        return bool(rows) and rows[0]["values"][0][1] == n  # type: ignore[index]

    async with running(collector):
        await eventually(lambda: collector.ingest.connection.connected, 10)
        task = asyncio.create_task(publisher.run())
        publisher.submit(lines(0, 100))
        await eventually(lambda: stored(100))

        await link.down()
        publisher.submit(lines(100, 100))  # the publish attempt finds the connection gone
        await eventually(lambda: publisher.connection.failures >= 2, 10)  # and retries fail
        assert not publisher.connected
        assert publisher.queued_lines == 100  # held, not lost, while the broker is away

        await link.up()
        await eventually(lambda: stored(200), 30)
        assert publisher.queued_lines == 0
        await publisher.close(task, timeout_s=5)
        await link.down()
