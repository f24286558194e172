"""The Prometheus endpoint serves every numeric field of the health samples, typed right."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.config import AgentConfig
from agent.service import Agent
from collector.config import CollectorConfig
from collector.service import Collector
from rackwatch.localservices import free_port
from telemetry.metrics import MetricsServer, MetricsSettings
from telemetry.sample import Sample

Labels = tuple[tuple[str, str], ...]


async def scrape(server: MetricsServer) -> dict[str, tuple[str, dict[Labels, float]]]:
    """name -> (type, {sorted labels: value}) of everything served."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    response.raise_for_status()
    found: dict[str, tuple[str, dict[Labels, float]]] = {}
    for family in text_string_to_metric_families(response.text):
        values = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        found[family.name] = (family.type, values)
    return found


def numeric_fields(samples: list[Sample]) -> set[str]:
    return {
        f"{s.measurement}_{name}"
        for s in samples
        for name, value in s.fields.items()
        if not isinstance(value, str)
    }


async def test_every_collector_health_counter_is_served(tmp_path: Path) -> None:
    collector = Collector(CollectorConfig(dead_letter_path=tmp_path / "dead.jsonl"))
    collector.ingest.stats.lines_received = 42
    server = MetricsServer(
        MetricsSettings(listen=f"127.0.0.1:{free_port()}"), collector.health_samples
    )
    try:
        served = await scrape(server)
    finally:
        await server.close()
    served_names = {
        name + ("_total" if kind == "counter" else "") for name, (kind, _) in served.items()
    }
    assert numeric_fields(collector.health_samples()) <= served_names
    kind, values = served["rackwatch_collector_lines_received"]
    assert kind == "counter"
    assert values == {(("collector", "collector"),): 42.0}
    assert served["rackwatch_collector_mqtt_connected"][0] == "gauge"  # a bool, as 0/1
    assert "process_resident_memory_bytes" in served


async def test_agent_labels_are_the_sample_tags_without_empty_ones() -> None:
    config = AgentConfig.model_validate(
        {
            "agent": {"name": "a1", "site": "qiyang-a1"},
            "credentials": {"default": {"community": "public"}},
            "devices": [{"name": "pdu-1", "address": "192.0.2.1", "rack": "A01"}],
        }
    )
    agent = Agent(config)
    stats = agent.pollers["pdu-1"].stats
    stats.polls_failed, stats.state = 3, "failed"  # reported once a poll has finished
    server = MetricsServer(MetricsSettings(listen=f"127.0.0.1:{free_port()}"), agent.health_samples)
    try:
        served = await scrape(server)
    finally:
        await server.close()
    assert numeric_fields(agent.health_samples()) <= {
        name + ("_total" if kind == "counter" else "") for name, (kind, _) in served.items()
    }
    labels = (
        ("agent", "a1"),
        ("device", "pdu-1"),
        ("kind", "unknown"),  # it never answered: no profile known
        ("rack", "A01"),
        ("site", "qiyang-a1"),
    )
    assert served["rackwatch_agent_polls_failed"][1] == {labels: 3.0}
    assert served["rackwatch_agent_up"][1] == {labels: 0.0}


async def test_a_taken_port_is_an_error_for_the_caller() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            MetricsServer(MetricsSettings(listen=f"127.0.0.1:{port}"), list)


def test_listen_must_be_host_and_port() -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        MetricsSettings(listen="9464")
