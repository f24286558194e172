"""Alert state on disk: written whole or not at all, read back by a new collector, and a file
that cannot be read costs the state, never the start."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from collector.alerting.service import Alerting
from collector.alerting.settings import AlertingSettings
from telemetry.lineproto import encode, parse_line
from telemetry.sample import Sample
from telemetry.statefile import StateFile

RULES = """
rules:
  - alert: Hot
    measurement: cooling
    field: rack_inlet_c
    above: 27
    summary: "{device}: {value} C"
"""
HUMID = """
  - alert: Humid
    measurement: cooling
    field: humidity_pct
    above: 80
"""
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def alerting(tmp_path: Path, clock: Clock, lines: list[bytes]) -> Alerting:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = AlertingSettings.model_validate(
        {
            "rules_file": str(rules),
            "state_path": str(tmp_path / "state.json"),
            "receivers": [{"name": "noc", "kind": "webhook", "url": "http://127.0.0.1:9/"}],
            "route": {"receiver": "noc", "group_wait": "10s"},
        }
    )
    return Alerting(settings, lines.extend, clock=clock)


def cooling(value: float, at: float) -> bytes:
    tags = {"site": "s1", "device": "inrow-1"}
    return encode(Sample("cooling", tags, {"rack_inlet_c": value}, int(at * 1e9))).encode()


def humidity(value: float, at: float) -> bytes:
    tags = {"site": "s1", "device": "inrow-1"}
    return encode(Sample("cooling", tags, {"humidity_pct": value}, int(at * 1e9))).encode()


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "sub" / "state.json", "alert state")
    assert state.load() == {}
    assert state.save({"evaluator": {"alerts": []}})
    assert state.load() == {"version": 1, "evaluator": {"alerts": []}}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["state.json"]


def test_an_unreadable_state_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{ half a file")
    assert StateFile(path, "alert state").load() == {}
    (aside,) = tmp_path.glob("state.json.corrupt-*")
    assert aside.read_text() == "{ half a file"
    assert not path.exists()


def test_a_disk_that_refuses_is_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    state = StateFile(blocker / "state.json", "alert state")
    assert not state.save({})
    assert state.errors == 1


async def test_a_new_collector_takes_the_alerts_and_history_goes_to_the_pipeline(
    tmp_path: Path,
) -> None:
    clock = Clock()
    lines: list[bytes] = []
    first = alerting(tmp_path, clock, lines)
    first.observe([cooling(30.0, T0)])
    first.tick()  # saves
    written = [parse_line(line) for line in lines]
    assert [(s.measurement, s.tags["alertname"], s.fields["state"]) for s in written] == [
        ("alert", "Hot", "firing")
    ]
    assert written[0].fields["summary"] == "inrow-1: 30.0 C"
    assert written[0].fields["value"] == 30.0
    saved: dict[str, Any] = json.loads((tmp_path / "state.json").read_text())
    assert [a["state"] for a in saved["evaluator"]["alerts"]] == ["firing"]

    clock.now = T0 + 60
    lines.clear()
    second = alerting(tmp_path, clock, lines)
    assert [a.state for a in second.evaluator.alerts.values()] == ["firing"]
    second.observe([cooling(31.0, T0 + 60)])
    assert lines == []  # no new transition: it was firing already
    second.observe([cooling(20.0, T0 + 61)])
    assert [parse_line(line).fields["state"] for line in lines] == ["resolved"]


async def test_a_corrupt_state_costs_the_state_not_the_start(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"version": 1, "evaluator": {"alerts": [{}]}}))
    lines: list[bytes] = []
    started = alerting(tmp_path, Clock(), lines)
    assert started.evaluator.alerts == {}
    task = asyncio.create_task(started.run())
    await asyncio.sleep(0)
    await started.close(task, 1.0)
    assert json.loads((tmp_path / "state.json").read_text())["evaluator"]["alerts"] == []


def test_reload_reads_the_rules_again_and_keeps_what_fires(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGHUP: a firing alert whose rule stays keeps firing (no second page); a new rule works
    at once; a rule taken out resolves its alerts; a broken file leaves the rules in use."""
    clock = Clock()
    lines: list[bytes] = []
    service = alerting(tmp_path, clock, lines)
    service.observe([cooling(30.0, T0)])
    assert [parse_line(line).fields["state"] for line in lines] == ["firing"]
    rules = tmp_path / "rules.yaml"

    rules.write_text(RULES + HUMID)  # Hot stays, Humid is new
    assert service.reload_rules()
    lines.clear()
    service.observe([cooling(30.5, T0 + 1), humidity(85.0, T0 + 1)])
    assert [(parse_line(x).tags["alertname"], parse_line(x).fields["state"]) for x in lines] == [
        ("Humid", "firing")
    ]

    rules.write_text("rules: [{alert: Broken, measurement: cooling}]")  # no condition
    assert not service.reload_rules()
    assert "alert rules not reloaded, the old ones stay in use" in caplog.text
    assert "rules[0]" in caplog.text  # the file's own error, with where

    rules.write_text("rules:" + HUMID.split("rules:", 1)[-1])  # Hot is gone
    lines.clear()
    assert service.reload_rules()
    assert [(parse_line(x).tags["alertname"], parse_line(x).fields["state"]) for x in lines] == [
        ("Hot", "resolved")
    ]
    assert [a.labels["alertname"] for a in service.evaluator.alerts.values()] == ["Humid"]
