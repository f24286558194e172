"""Alerting through the real path: snmpsim -> agent -> Mosquitto -> collector -> webhook, with
InfluxDB taking the data and the alert history, and a real HTTP server as the receiver."""

from __future__ import annotations

import asyncio
import functools
import time
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.service import Agent
from collector.alerting.matchers import Matcher
from collector.alerting.settings import AlertingSettings
from collector.alerting.silences import Silence, SilenceFile
from collector.config import CollectorConfig
from collector.service import Collector
from rackwatch.localservices import Running
from telemetry.lineproto import encode
from telemetry.sample import Sample
from tests.recording_http import Recorded, RecordingServer
from tests.test_end_to_end import agent_config, collector_config, eventually, query, running

pytestmark = pytest.mark.integration

PHASE_RULE = """
rules:
  - alert: PhaseCurrentHigh
    severity: critical
    measurement: pdu_phase
    field: current_a
    above: 4.0
    clear_below: 3.0
    for: 1s
    summary: "{device} phase {phase}: {value} A"
"""
FOR_S = 1.0
GROUP_WAIT_S = 0.5


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as running_server:
        yield running_server


def with_alerting(
    config: CollectorConfig, tmp_path: Path, server: RecordingServer, **overrides: Any
) -> CollectorConfig:
    rules = tmp_path / "rules.yaml"
    rules.write_text(PHASE_RULE)
    receiver: dict[str, Any] = {
        "name": "oncall",
        "kind": "webhook",
        "url": server.url("/hook"),
        "secret": "s3cret",
        **overrides.pop("receiver", {}),
    }
    settings = AlertingSettings.model_validate(
        {
            "rules_file": str(rules),
            "state_path": str(tmp_path / "alert-state.json"),
            "silences_file": str(tmp_path / "silences.json"),
            "receivers": [receiver],
            "route": {
                "receiver": "oncall",
                "group_by": ["alertname", "device"],
                "group_wait": GROUP_WAIT_S,
                "group_interval": overrides.pop("group_interval", "1s"),
                "repeat_interval": "1h",
            },
            "evaluation_interval": 0.2,
            **overrides,
        }
    )
    return config.model_copy(update={"alerting": settings})


def pages(server: RecordingServer, status: str, device: str) -> list[Recorded]:
    return [
        r
        for r in server.to("/hook")
        if r.json()["status"] == status
        and any(a["labels"].get("device") == device for a in r.json()["alerts"])
    ]


async def publish(mosquitto: Running, topic: str, samples: list[Sample]) -> None:
    payload = "".join(f"{encode(s)}\n" for s in samples).encode()
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(topic, payload, qos=1)


def phase(device: str, current_a: float) -> Sample:
    tags = {"site": "s1", "rack": "A01", "device": device, "phase": "1"}
    return Sample("pdu_phase", tags, {"current_a": current_a}, time.time_ns())


async def test_a_pdu_over_its_threshold_pages_and_the_page_resolves(
    mosquitto: Running,
    snmpsim: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    server: RecordingServer,
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    config = with_alerting(
        collector_config(mosquitto, influxdb, database, prefix, tmp_path), tmp_path, server
    )
    collector = Collector(config)
    agent = Agent(agent_config(mosquitto, snmpsim, prefix, ["apc_ap8853"]))
    device = "pdu-apc_ap8853"

    async with running(collector):
        async with running(agent):  # the recording reads 4.9 A on phase 1: over 4.0
            await server.wait_for(lambda: pages(server, "firing", device), "the firing page")
        (page,) = pages(server, "firing", device)
        body = page.json()
        (alert,) = body["alerts"]
        assert alert["labels"] == {
            "alertname": "PhaseCurrentHigh",
            "severity": "critical",
            "site": "qiyang-a1",
            "room": "hall-1",
            "row": "A",
            "rack": "A01",
            "device": device,
            "vendor": "apc",
            "model": "AP8853",
            "phase": "1",
        }
        assert alert["summary"] == f"{device} phase 1: 4.9 A"
        # Sent within `for` + group_wait of the alert becoming active (plus the clock's tick
        # and the HTTP round trip).
        starts = datetime.fromisoformat(alert["starts_at"]).timestamp()
        assert page.at - starts <= FOR_S + GROUP_WAIT_S + 2.0

        # The agent has stopped; the same series now reads 1.2 A.
        tags = {k: v for k, v in alert["labels"].items() if k not in ("alertname", "severity")}
        sample = Sample("pdu_phase", tags, {"current_a": 1.2}, time.time_ns())
        await publish(mosquitto, f"{prefix}/qiyang-a1/e2e-agent/metrics", [sample])
        await server.wait_for(lambda: pages(server, "resolved", device), "the resolved page")

    assert len(pages(server, "firing", device)) == 1
    history = query(
        influxdb,
        database,
        'SELECT "state", "value" FROM "alert" WHERE "alertname" = \'PhaseCurrentHigh\'',
    )
    rows: list[list[object]] = history[0]["values"]  # type: ignore[assignment]
    assert [row[1:] for row in rows] == [
        ["pending", 4.9],
        ["firing", 4.9],
        ["resolved", 1.2],
    ]


async def test_no_page_during_a_silence(
    mosquitto: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    server: RecordingServer,
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    config = with_alerting(
        collector_config(mosquitto, influxdb, database, prefix, tmp_path), tmp_path, server
    )
    assert config.alerting is not None
    assert config.alerting.silences_file is not None
    silences = SilenceFile(config.alerting.silences_file)
    now = time.time()
    silence = Silence("planned", (Matcher.parse('device="pdu-a"'),), now - 1, now + 600, "t", "")
    silences.add(silence)
    collector = Collector(config)
    topic = f"{prefix}/s1/agent-1/metrics"

    async with running(collector):
        await eventually(lambda: collector.ingest.connection.connected, 10)
        alerting = collector.alerting
        assert alerting is not None
        for _ in range(3):  # over `for`
            await publish(mosquitto, topic, [phase("pdu-a", 9.0), phase("pdu-b", 9.0)])
            await asyncio.sleep(0.6)
        await server.wait_for(lambda: pages(server, "firing", "pdu-b"), "pdu-b's page")
        await eventually(lambda: alerting.notifier.grouper.muted_alerts >= 2, 10)
        assert pages(server, "firing", "pdu-a") == []  # flushed twice, muted both times

        silences.expire(["planned"], time.time())
        await server.wait_for(lambda: pages(server, "firing", "pdu-a"), "pdu-a, unsilenced")


async def test_a_restarted_collector_neither_pages_again_nor_forgets(
    mosquitto: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    server: RecordingServer,
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    config = with_alerting(
        collector_config(mosquitto, influxdb, database, prefix, tmp_path), tmp_path, server
    )
    topic = f"{prefix}/s1/agent-1/metrics"
    first = Collector(config)
    async with running(first):
        await eventually(lambda: first.ingest.connection.connected, 10)
        for _ in range(3):
            await publish(mosquitto, topic, [phase("pdu-a", 9.0)])
            await asyncio.sleep(0.6)
        await server.wait_for(lambda: pages(server, "firing", "pdu-a"), "the page")

    second = Collector(config)
    alerting = second.alerting
    assert alerting is not None
    assert [a.state for a in alerting.evaluator.alerts.values()] == ["firing"]
    async with running(second):
        await eventually(lambda: second.ingest.connection.connected, 10)
        flushed = alerting.notifier.grouper.flushes
        for _ in range(3):
            await publish(mosquitto, topic, [phase("pdu-a", 9.5)])
            await asyncio.sleep(0.6)
        await eventually(lambda: alerting.notifier.grouper.flushes >= flushed + 2, 10)
        assert len(pages(server, "firing", "pdu-a")) == 1  # not paged again

        await publish(mosquitto, topic, [phase("pdu-a", 1.0)])
        await server.wait_for(lambda: pages(server, "resolved", "pdu-a"), "the resolution")


async def test_a_receiver_that_is_down_costs_retries_not_data(
    mosquitto: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    server: RecordingServer,
) -> None:
    server.respond("/hook", 503, b"maintenance")
    prefix = f"rackwatch/v1-{unique}"
    config = with_alerting(
        collector_config(mosquitto, influxdb, database, prefix, tmp_path),
        tmp_path,
        server,
        receiver={"max_attempts": 4, "retry_initial_s": 1.0, "retry_max_s": 2.0},
        # The failed group is tried again at its next group_interval: not within this test.
        group_interval="10m",
    )
    collector = Collector(config)
    topic = f"{prefix}/s1/agent-1/metrics"
    alerting = collector.alerting
    assert alerting is not None

    def stored() -> int:
        rows = query(influxdb, database, 'SELECT count("current_a") FROM "pdu_phase"')
        return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]

    async with running(collector):
        await eventually(lambda: collector.ingest.connection.connected, 10)
        for _ in range(3):
            await publish(mosquitto, topic, [phase("pdu-a", 9.0)])
            await asyncio.sleep(0.6)
        await server.wait_for(lambda: len(server.to("/hook")) >= 1, "a first attempt")
        # While the receiver is retried, data keeps flowing.
        now_ns = time.time_ns()  # a real time: the ingest refuses 1970
        batch = [
            Sample(
                "pdu_phase", {"device": f"pdu-{i}", "phase": "1"}, {"current_a": 1.0}, now_ns + i
            )
            for i in range(1, 201)
        ]
        await publish(mosquitto, topic, batch)
        await eventually(lambda: stored() == 203, 20)
        assert alerting.notifier.stats().failed == 0  # still retrying when the data landed
        await eventually(lambda: alerting.notifier.stats().failed == 1, 20)
        health = collector.health_sample().fields

    assert len(server.to("/hook")) == 4
    assert health["notifications_failed_total"] == 1
    assert health["notification_attempts_total"] == 4
    assert health["notifications_sent_total"] == 0
    assert health["alerts_firing"] == 1


async def test_collectors_sharing_the_stream_give_every_alert_one_owner(
    mosquitto: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    server: RecordingServer,
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    # Two agents whose `site/agent` fall in different shards.
    agents = {zlib.crc32(f"s1/agent-{i}".encode()) % 2: f"agent-{i}" for i in range(20)}
    collectors = []
    for shard in (0, 1):
        home = tmp_path / f"c{shard}"
        home.mkdir()
        config = collector_config(
            mosquitto, influxdb, database, prefix, home, name=f"c{shard}", group=f"g-{unique}"
        )
        ownership = {"source": "subscription", "shards": 2, "shard": shard}
        collectors.append(Collector(with_alerting(config, home, server, ownership=ownership)))

    async with running(*collectors):
        await eventually(
            lambda: all(
                c.ingest.connection.connected
                and c.alerting
                and c.alerting.feed
                and c.alerting.feed.connection.connected
                for c in collectors
            ),
            10,
        )
        for _ in range(3):
            for shard, agent in agents.items():
                topic = f"{prefix}/s1/{agent}/metrics"
                await publish(mosquitto, topic, [phase(f"pdu-of-shard-{shard}", 9.0)])
            await asyncio.sleep(0.6)
        for shard in (0, 1):
            device = f"pdu-of-shard-{shard}"
            await server.wait_for(functools.partial(pages, server, "firing", device), device)
        flushes = [c.alerting.notifier.grouper.flushes for c in collectors if c.alerting]
        await eventually(
            lambda: all(
                c.alerting.notifier.grouper.flushes >= n + 2
                for c, n in zip(collectors, flushes, strict=True)
                if c.alerting
            ),
            10,
        )

    for shard, collector in enumerate(collectors):
        assert collector.alerting is not None
        owned = {a.labels["device"] for a in collector.alerting.evaluator.alerts.values()}
        assert owned == {f"pdu-of-shard-{shard}"}
    assert len(pages(server, "firing", "pdu-of-shard-0")) == 1
    assert len(pages(server, "firing", "pdu-of-shard-1")) == 1
