"""A collector leaving its share group for good loses nothing.

Mosquitto keeps routing a share of the group's messages to a stopped collector's persistent
session (and drops them when the session expires). `rackwatch collector --leave-group` takes
what was queued for it, writes it, and ends the session, after which the remaining collector
gets every message.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiomqtt
import pytest

from rackwatch.localservices import Running, influx_query
from tests.test_end_to_end import eventually, rackwatch_process
from tests.test_influxdb_outage import collector_config

pytestmark = pytest.mark.integration

LINES = 200


async def publish(mosquitto: Running, unique: str, first: int, count: int) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for m in range(first, first + count):
            start = 1700000000000000000 + m * LINES
            body = "".join(f"load,m={m} v={i}i {start + i}\n" for i in range(LINES))
            await client.publish(f"{unique}/s/a/metrics", body.encode(), qos=1)


async def test_leaving_collector_hands_over_its_queue(
    mosquitto: Running, influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    def stored() -> int:
        rows = influx_query(influxdb, database, 'SELECT count("v") FROM "load"')
        return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]

    configs = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        configs[name] = collector_config(tmp_path / name, mosquitto, influxdb, unique, name)
        # collector_config writes database "outage"; point both at this test's database.
        text = configs[name].read_text().replace("database: outage", f"database: {database}")
        configs[name].write_text(text)
    logs = {name: tmp_path / name / "collector.log" for name in configs}
    a = await rackwatch_process("collector", configs["a"], logs["a"])
    b = await rackwatch_process("collector", configs["b"], logs["b"])
    try:
        for path in logs.values():
            await eventually(lambda path=path: b"subscribed to" in path.read_bytes(), 20)  # type: ignore[misc]
        a.send_signal(signal.SIGTERM)  # a stops; its session stays in the group
        assert await asyncio.wait_for(a.wait(), 30) == 0

        await publish(mosquitto, unique, 0, 40)
        await asyncio.sleep(3)
        held_for_a = 40 * LINES - stored()
        assert held_for_a > 0  # the broker kept a share for the stopped collector

        with logs["a"].open("ab") as output:
            leaving = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "rackwatch", "collector", "-c", str(configs["a"])],
                "--leave-group",
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
            assert await asyncio.wait_for(leaving.wait(), 60) == 0
        assert stored() == 40 * LINES

        await publish(mosquitto, unique, 40, 20)  # all to b now
        await eventually(lambda: stored() == 60 * LINES, 20)
    finally:
        b.terminate()
        await asyncio.wait_for(b.wait(), 30)
    print(f"\n{held_for_a} lines were held for the stopped collector; all 12,000 stored")
