"""A stale alert's end through the real path: Mosquitto -> collector -> two webhook receivers
(real HTTP servers), with InfluxDB taking the data and the alert history."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.service import Agent
from collector.alerting.settings import AlertingSettings
from collector.service import Collector
from rackwatch.localservices import Running
from tests.recording_http import RecordingServer
from tests.test_alerting_end_to_end import PHASE_RULE, pages, phase, publish, server
from tests.test_end_to_end import agent_config, collector_config, eventually, query, running

pytestmark = pytest.mark.integration
__all__ = ["server"]  # the receiver fixture

STALE_AFTER_S = 2.0


async def test_a_series_that_stops_resolves_as_stale_at_every_receiver_that_was_paged(
    mosquitto: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    server: RecordingServer,
) -> None:
    prefix = f"rackwatch/v1-{unique}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(PHASE_RULE)
    hooks = {"oncall": "/hook", "noc": "/noc"}
    settings = AlertingSettings.model_validate(
        {
            "rules_file": str(rules),
            "state_path": str(tmp_path / "alert-state.json"),
            "receivers": [
                {"name": name, "kind": "webhook", "url": server.url(path)}
                for name, path in hooks.items()
            ],
            "route": {
                "receiver": "noc",
                "group_by": ["alertname", "device"],
                "group_wait": 0.5,
                "group_interval": "1s",
                "repeat_interval": "1h",
                # Both hear of every alert: the first route goes on to the second.
                "routes": [{"receiver": "oncall", "continue": True}, {"receiver": "noc"}],
            },
            "evaluation_interval": 0.2,
            "stale_after": STALE_AFTER_S,
        }
    )
    config = collector_config(mosquitto, influxdb, database, prefix, tmp_path)
    collector = Collector(config.model_copy(update={"alerting": settings}))
    alerting = collector.alerting
    assert alerting is not None
    topic = f"{prefix}/s1/agent-1/metrics"

    def hook_pages(path: str, status: str) -> list[dict[str, Any]]:
        return [
            r.json()
            for r in server.to(path)
            if r.json()["status"] == status and r.json()["alerts"][0]["labels"]["device"] == "pdu-a"
        ]

    async with running(collector):
        await eventually(lambda: collector.ingest.connection.connected, 10)
        for _ in range(3):  # over 4 A for over `for`
            await publish(mosquitto, topic, [phase("pdu-a", 9.0)])
            await asyncio.sleep(0.6)
        for path in hooks.values():
            await server.wait_for(functools.partial(hook_pages, path, "firing"), f"paged at {path}")
        # pdu-a is gone (removed, renamed, its feed lost): nothing more arrives for it.
        for path in hooks.values():
            await server.wait_for(functools.partial(hook_pages, path, "resolved"), f"end at {path}")
        health = collector.health_sample().fields

    for path in hooks.values():
        (resolved,) = hook_pages(path, "resolved")
        (alert,) = resolved["alerts"]
        assert alert["status"] == "resolved"
        assert alert["end_reason"].startswith("stale: series not seen for ")
        assert alert["end_reason"].endswith(" (stale after 2s)")
        assert alert["ends_at"] is not None
    assert len(pages(server, "firing", "pdu-a")) == 1  # /hook, once
    assert health["alerts_stale_total"] == 1
    assert health["alerts_firing"] == 0

    history = query(
        influxdb,
        database,
        'SELECT "state", "end_reason" FROM "alert" WHERE "alertname" = \'PhaseCurrentHigh\'',
    )
    rows: list[list[object]] = history[0]["values"]  # type: ignore[assignment]
    assert [row[1] for row in rows] == ["pending", "firing", "resolved"]
    assert rows[0][2] is None
    assert str(rows[2][2]).startswith("stale: series not seen for ")


RATING_RULE = """
rules:
  - alert: PduPhaseCurrentHigh
    severity: critical
    measurement: pdu_phase
    field: current_a
    relative_to_tag: rated_a
    above: 0.80
    clear_below: 0.75
    for: 1s
    summary: "{device} phase {phase}: {reading} A is {value:.0%} of its {rating:g} A rating"
"""


async def test_a_corrected_rating_tag_resolves_the_old_alert_as_stale(
    mosquitto: Running,
    snmpsim: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    server: RecordingServer,
) -> None:
    """Issue 20 item 2 through a real agent: a PDU's rating tag set too low pages; corrected
    (a reload with a new `rated_a`), its readings form a new series, and the old alert ends as
    stale instead of firing for ever."""
    prefix = f"rackwatch/v1-{unique}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RATING_RULE)
    settings = AlertingSettings.model_validate(
        {
            "rules_file": str(rules),
            "state_path": str(tmp_path / "alert-state.json"),
            "receivers": [{"name": "oncall", "kind": "webhook", "url": server.url("/hook")}],
            "route": {
                "receiver": "oncall",
                "group_by": ["alertname", "device", "rated_a"],
                "group_wait": 0.5,
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "evaluation_interval": 0.2,
            "stale_after": STALE_AFTER_S,
        }
    )
    config = collector_config(mosquitto, influxdb, database, prefix, tmp_path)
    collector = Collector(config.model_copy(update={"alerting": settings}))
    base = agent_config(mosquitto, snmpsim, prefix, ["apc_ap8853"])

    def rated(amperes: str) -> AgentConfig:
        data = base.model_dump(mode="json", by_alias=True)
        data["devices"][0]["tags"] = {"rated_a": amperes}
        return AgentConfig.model_validate(data)

    def hooks(status: str, rating: str) -> list[dict[str, Any]]:
        return [
            alert
            for r in server.to("/hook")
            for alert in r.json()["alerts"]
            if alert["status"] == status and alert["labels"].get("rated_a") == rating
        ]

    agent = Agent(rated("5"))  # the recording reads 4.9 A on phase 1: 98 % of 5 A
    async with running(collector), running(agent):
        await server.wait_for(functools.partial(hooks, "firing", "5"), "the page at 5 A")
        await agent.reload(rated("20"))  # corrected: 4.9 A is 25 % of 20 A
        await server.wait_for(functools.partial(hooks, "resolved", "5"), "the 5 A page's end")
        ends = hooks("resolved", "5")
        fired = {a["fingerprint"] for a in hooks("firing", "5")}
        assert {a["fingerprint"] for a in ends} == fired  # every page ended
        for alert in ends:
            assert alert["end_reason"].startswith("stale: series not seen for ")
        # The corrected series is judged (three polls stored, so evaluated), and fires nothing.
        corrected = (
            'SELECT count("current_a") FROM "pdu_phase" WHERE "rated_a" = \'20\' '
            "AND \"phase\" = '1'"
        )

        def polls_at_20() -> int:
            rows = query(influxdb, database, corrected)
            return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]

        await eventually(lambda: polls_at_20() >= 3, 20)
        alerting = collector.alerting
        assert alerting is not None
        assert [a for a in alerting.evaluator.alerts.values() if a.labels["rated_a"] == "20"] == []
    assert hooks("firing", "20") == []
