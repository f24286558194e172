"""What fires now: `alert_active` snapshots, and the hub overview's "Firing now" table run
against a real InfluxDB holding them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from collector.alerting.service import Alerting
from collector.alerting.settings import AlertingSettings
from dashboards.build import OUT
from dashboards.macros import interpolate, variables_used
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.lineproto import encode, parse_line
from telemetry.sample import Sample

RULES = """
rules:
  - alert: Hot
    severity: critical
    measurement: cooling
    field: rack_inlet_c
    above: 27
    summary: "{device}: {value} C"
"""


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def alerting(tmp_path: Path, clock: Clock, lines: list[bytes], **extra: object) -> Alerting:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = AlertingSettings.model_validate(
        {
            "rules_file": str(rules),
            "state_path": str(tmp_path / "state.json"),
            "receivers": [{"name": "noc", "kind": "webhook", "url": "http://127.0.0.1:9/"}],
            "route": {"receiver": "noc"},
            **extra,
        }
    )
    return Alerting(settings, lines.extend, clock=clock)


def cooling(device: str, rack: str, value: float, at: float) -> bytes:
    tags = {"site": "s1", "room": "hall-1", "row": "A", "rack": rack, "device": device}
    return encode(Sample("cooling", tags, {"rack_inlet_c": value}, int(at * 1e9))).encode()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def snapshots(lines: list[bytes], state: str = "firing") -> dict[str, Sample]:
    return {
        s.tags["device"]: s
        for s in (parse_line(line) for line in lines)
        if s.measurement == "alert_active" and s.fields["state"] == state
    }


def test_each_firing_alert_is_written_every_active_interval_with_age_and_silence(
    tmp_path: Path,
) -> None:
    t0 = 1_800_000_000.0
    clock = Clock(t0)
    lines: list[bytes] = []
    silence = {
        "matchers": ['device="inrow-2"'],
        "starts_at": iso(t0 - 60),
        "ends_at": iso(t0 + 3600),
        "comment": "fan swap",
    }
    a = alerting(tmp_path, clock, lines, silences=[silence], active_interval="30s")
    a.observe([cooling("inrow-1", "A01", 30.0, t0), cooling("inrow-2", "A02", 31.0, t0)])
    a.observe([cooling("inrow-3", "A03", 20.0, t0)])  # not firing: never in a snapshot
    a.tick()
    assert snapshots(lines) == {}  # the first snapshot comes one interval after the start
    clock.now = t0 + 30
    a.tick()
    now = snapshots(lines)
    assert sorted(now) == ["inrow-1", "inrow-2"]
    one = now["inrow-1"]
    assert one.tags["alertname"] == "Hot"
    assert one.tags["severity"] == "critical"
    assert (one.tags["rack"], one.tags["row"], one.tags["room"]) == ("A01", "A", "hall-1")
    assert one.fields == {
        "state": "firing",
        "summary": "inrow-1: 30.0 C",
        "age_s": 30.0,
        "silenced_by": "",
        "value": 30.0,
    }
    assert one.time_ns == int((t0 + 30) * 1e9)
    assert str(now["inrow-2"].fields["silenced_by"]).startswith("silence ")
    assert a.health_fields()["alert_active_lines_total"] == 2

    lines.clear()
    clock.now = t0 + 45
    a.tick()
    assert snapshots(lines) == {}  # not due yet
    a.observe([cooling("inrow-1", "A01", 20.0, t0 + 50)])  # resolved: said once, then left out
    clock.now = t0 + 60
    a.tick()
    assert sorted(snapshots(lines)) == ["inrow-2"]
    assert snapshots(lines)["inrow-2"].fields["age_s"] == 60.0
    assert sorted(snapshots(lines, "resolved")) == ["inrow-1"]
    lines.clear()
    clock.now = t0 + 90
    a.tick()
    assert sorted(snapshots(lines)) == ["inrow-2"]
    assert snapshots(lines, "resolved") == {}


def test_active_interval_zero_writes_no_snapshots(tmp_path: Path) -> None:
    clock = Clock(1_800_000_000.0)
    lines: list[bytes] = []
    a = alerting(tmp_path, clock, lines, active_interval=0)
    a.observe([cooling("inrow-1", "A01", 30.0, clock.now)])
    clock.now += 3600
    a.tick()
    assert snapshots(lines) == {}


def firing_now_query() -> str:
    hub = json.loads((OUT / "hub-overview.json").read_text(encoding="utf-8"))
    (panel,) = [p for p in hub["panels"] if p["title"] == "Firing now"]
    (target,) = panel["targets"]
    return str(target["query"])


@pytest.mark.integration
def test_the_firing_now_panel_lists_what_fires_not_what_fired(
    tmp_path: Path, influxdb: Running, database: str
) -> None:
    """Real time: an alert that resolved a minute ago and one whose last snapshot is an hour
    old are not listed; one firing now is, once (its newest snapshot), with its place,
    severity, age and silence."""
    start = time.time() - 120
    clock = Clock(start)
    lines: list[bytes] = []
    a = alerting(tmp_path, clock, lines, active_interval="60s")
    a.observe([cooling("inrow-1", "A01", 30.0, start), cooling("old", "A09", 33.0, start)])
    clock.now = start + 60
    a.tick()
    a.observe([cooling("old", "A09", 20.0, start + 61)])
    clock.now = start + 120
    a.tick()  # inrow-1 firing, "old" resolved
    # An alert that fired an hour ago and was never seen again by a snapshot.
    stale = Sample(
        "alert_active",
        {"alertname": "Hot", "severity": "critical", "site": "s1", "device": "gone"},
        {"state": "firing", "summary": "gone", "age_s": 5.0, "silenced_by": ""},
        int((start - 3600) * 1e9),
    )
    body = b"\n".join([*lines, encode(stale).encode()])
    answer = httpx.post(f"{influxdb.url()}/write", params={"db": database}, content=body)
    assert answer.status_code == 204, answer.text

    query = firing_now_query()
    for site in (None, ["s1"]):
        variables = dict.fromkeys(variables_used(query), site)
        series = localservices.influx_query(influxdb, database, interpolate(query, variables))
        rows = {
            str(one["tags"]["device"]): dict(zip(one["columns"], one["values"][0], strict=True))  # type: ignore[index, call-overload]
            for one in series
        }
        assert sorted(rows) == ["inrow-1"], rows
        row = rows["inrow-1"]
        assert row["age_s"] == 120.0  # the newest snapshot, not the first
        assert row["summary"] == "inrow-1: 30.0 C"
        assert row["silenced_by"] == ""
        (tags,) = [one["tags"] for one in series]
        assert tags == {
            "alertname": "Hot",
            "severity": "critical",
            "site": "s1",
            "room": "hall-1",
            "row": "A",
            "rack": "A01",
            "device": "inrow-1",
        }
