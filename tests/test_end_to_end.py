"""The whole slice: snmpsim PDU -> agent -> Mosquitto -> collector -> InfluxDB, all real."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from agent.config import AgentConfig
from agent.service import Agent
from collector.config import CollectorConfig
from collector.service import Collector
from rackwatch.localservices import Running, influx_query

pytestmark = pytest.mark.integration


def agent_config(
    mosquitto: Running, snmpsim: Running, prefix: str, recordings: list[str]
) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent": {"name": "e2e-agent", "site": "qiyang-a1"},
            "mqtt": {
                "host": mosquitto.host,
                "port": mosquitto.port,
                "topic_prefix": prefix,
                "flush_interval_s": 0.2,
            },
            "defaults": {"interval_s": 1, "jitter_s": 0, "timeout_s": 1},
            "health_interval_s": 1,
            "credentials": {r: {"community": r} for r in recordings},
            "devices": [
                {
                    "name": f"pdu-{r}",
                    "address": f"{snmpsim.host}:{snmpsim.port}",
                    "credentials": r,
                    "room": "hall-1",
                    "row": "A",
                    "rack": f"A0{i}",
                }
                for i, r in enumerate(recordings, start=1)
            ],
        }
    )


def collector_config(
    mosquitto: Running,
    influxdb: Running,
    database: str,
    prefix: str,
    tmp_path: Path,
    name: str = "e2e",
    group: str = "g",
) -> CollectorConfig:
    return CollectorConfig.model_validate(
        {
            "name": name,
            "mqtt": {
                "host": mosquitto.host,
                "port": mosquitto.port,
                "topic": f"{prefix}/#",
                "group": group,
                # Persistent sessions outlive a test: one per test, so none inherits another's
                # unacknowledged messages (which is what they are for in production).
                "client_id": f"collector-{name}-{prefix}",
            },
            "influxdb": {"url": influxdb.url(), "database": database},
            "batch": {"max_lines": 5000, "max_delay_s": 0.2},
            "dead_letter_path": str(tmp_path / f"dead-{name}.jsonl"),
            "health_interval_s": 0.5,
        }
    )


@asynccontextmanager
async def running(*services: Agent | Collector) -> AsyncIterator[None]:
    """Run services; stop them in reverse order, as an operator would (agents first)."""
    stops = [asyncio.Event() for _ in services]
    tasks = [asyncio.create_task(s.run(stop)) for s, stop in zip(services, stops, strict=True)]
    try:
        yield
    finally:
        hung: list[asyncio.Task[None]] = []
        for stop, task in reversed(list(zip(stops, tasks, strict=True))):
            stop.set()
            _, late = await asyncio.wait([task], timeout=30)
            hung += late
        for task in hung:
            task.print_stack()
            task.cancel()
        assert not hung, "a service did not stop within 30 s"
        for task in tasks:
            task.result()


async def rackwatch_process(role: str, config: Path, log: Path) -> asyncio.subprocess.Process:
    """`rackwatch <role> -c config` as a real process, its output appended to `log`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rackwatch",
            role,
            "-c",
            str(config),
            stdout=fd,
            stderr=asyncio.subprocess.STDOUT,
        )
    finally:
        os.close(fd)  # the child has its own copy


async def eventually(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {check.__doc__}")
        await asyncio.sleep(0.2)


def query(influxdb: Running, database: str, q: str) -> list[dict[str, object]]:
    return influx_query(influxdb, database, q)


async def test_pdu_readings_land_in_influxdb(
    mosquitto: Running,
    snmpsim: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    agent = Agent(agent_config(mosquitto, snmpsim, prefix, ["apc_ap8853", "apc_ap8959eu3"]))
    collector = Collector(collector_config(mosquitto, influxdb, database, prefix, tmp_path))

    def landed() -> bool:
        """phase, device power and agent health of apc_ap8853 are in InfluxDB"""
        where = "WHERE \"device\" = 'pdu-apc_ap8853'"
        return all(
            query(influxdb, database, f"SELECT * FROM {m} {where} LIMIT 1")
            for m in ("pdu_phase", "pdu", "rackwatch_agent")
        ) and all(
            query(influxdb, database, q)
            for q in (
                "SELECT * FROM pdu_outlet LIMIT 1",
                f"SELECT * FROM rackwatch_agent {where} AND polls_ok_total > 0 LIMIT 1",
            )
        )

    async with running(collector, agent):
        await eventually(landed)

    phase = query(
        influxdb,
        database,
        'SELECT last("current_a") FROM "pdu_phase" '
        "WHERE \"device\" = 'pdu-apc_ap8853' AND \"phase\" = '1'",
    )
    assert phase[0]["values"][0][1] == 4.9  # type: ignore[index]
    power = query(
        influxdb,
        database,
        'SELECT last("power_w") FROM "pdu" WHERE "device" = \'pdu-apc_ap8853\' GROUP BY *',
    )
    assert power[0]["values"][0][1] == 1140  # type: ignore[index]
    assert power[0]["tags"] == {
        "device": "pdu-apc_ap8853",
        "model": "AP8853",
        "rack": "A01",
        "room": "hall-1",
        "row": "A",
        "site": "qiyang-a1",
        "vendor": "apc",
    }
    off = query(
        influxdb,
        database,
        'SELECT count("state") FROM "pdu_outlet" WHERE "state" = \'off\' GROUP BY "outlet"',
    )
    assert {s["tags"]["outlet"] for s in off} == {"23"}  # type: ignore[index]
    health = query(
        influxdb,
        database,
        'SELECT last("polls_ok_total") FROM "rackwatch_agent" WHERE "device" = \'pdu-apc_ap8853\'',
    )
    assert health[0]["values"][0][1] >= 1  # type: ignore[index]
    written = query(
        influxdb, database, 'SELECT last("lines_written_total") FROM "rackwatch_collector"'
    )
    assert written[0]["values"][0][1] > 0  # type: ignore[index]


async def test_bad_lines_are_set_aside_and_good_lines_in_the_same_message_land(
    mosquitto: Running, influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    config = collector_config(mosquitto, influxdb, database, prefix, tmp_path)
    collector = Collector(config)
    payload = (
        b"pdu,device=p1 power_w=100 1700000000000000000\n"
        b"pdu,device=p2 power_w=NaN 1700000000000000000\n"
        b"pdu,device=p3 power_w=300 1700000000000000000\n"
        b'pdu,device=p4 power_w="unterminated 1700000000000000000\n'
    )

    def stored() -> bool:
        """two good points in InfluxDB"""
        rows = query(influxdb, database, 'SELECT count("power_w") FROM "pdu"')
        return bool(rows) and rows[0]["values"][0][1] == 2  # type: ignore[index]

    async with running(collector):
        await eventually(lambda: collector.ingest.connection.connected, 10)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish(f"{prefix}/site/agent/metrics", payload, qos=1)
        await eventually(stored)

    dead = [json.loads(line) for line in config.dead_letter_path.read_text().splitlines()]
    assert [d["reason"].split(":")[0] for d in dead] == ["line 2", "line 4"]
    assert all(d["origin"] == f"{prefix}/site/agent/metrics" for d in dead)
    assert collector.ingest.stats.lines_invalid == 2


async def test_two_collectors_in_one_group_split_the_stream(
    mosquitto: Running, influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    collectors = [
        Collector(
            collector_config(
                mosquitto, influxdb, database, prefix, tmp_path, name=f"c{i}", group=f"g-{unique}"
            )
        )
        for i in range(2)
    ]
    messages = 40

    def all_stored() -> bool:
        """every point of every message in InfluxDB"""
        rows = query(influxdb, database, 'SELECT count("v") FROM "split"')
        return bool(rows) and rows[0]["values"][0][1] == messages * 10  # type: ignore[index]

    async with running(*collectors):
        await eventually(lambda: all(c.ingest.connection.connected for c in collectors), 10)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            for m in range(messages):
                lines = "".join(
                    f"split,m={m} v={i}i {1700000000000000000 + i}\n" for i in range(10)
                )
                await client.publish(f"{prefix}/s/a/metrics", lines.encode(), qos=1)
        await eventually(all_stored)

    counts = [c.ingest.stats.messages for c in collectors]
    assert sum(counts) == messages  # each message went to exactly one collector
    assert all(n > 0 for n in counts)  # and both took a share
