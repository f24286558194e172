"""Alert rule files: the shipped defaults load, and every mistake names file:line: key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from collector.alerting.durations import format_duration, parse_duration
from collector.alerting.matchers import Matcher
from collector.alerting.rules import RuleFile
from telemetry import config
from telemetry.config import ConfigError

DEFAULT_RULES = Path(__file__).parents[1] / "configs" / "alert-rules.yaml"


def load_text(tmp_path: Path, text: str) -> RuleFile:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return config.load(path, RuleFile)


def test_default_rules_load_and_cover_the_issue() -> None:
    rules = config.load(DEFAULT_RULES, RuleFile)
    names = {rule.alert for rule in rules.rules}
    assert {
        "PduPhaseCurrentHigh",
        "PduBankCurrentHigh",
        "RackInletHot",
        "CoolingUnitAlarm",
        "UpsOnBattery",
        "UpsRuntimeLow",
        "GpuTemperatureHigh",
        "GpuXidError",
        "GpuUncorrectedEcc",
        "NpuHealthAlarm",
        "NpuRoceLinkDown",
        "DeviceUnreachable",
        "AgentDown",
        "EnvLeak",
        "EnvDoorOpen",
        "EnvHumidityHigh",
        "EnvHumidityLow",
    } <= names
    by_name = {rule.alert: rule for rule in rules.rules}
    assert by_name["RackInletHot"].above == 27
    assert by_name["PduPhaseCurrentHigh"].relative_to_tag == "rated_a"
    assert by_name["PduPhaseCurrentHigh"].above == 0.8
    assert by_name["AgentDown"].kind == "absent"
    assert by_name["GpuXidError"].kind == "event"
    assert by_name["GpuUncorrectedEcc"].change == "increase"
    assert by_name["DeviceUnreachable"].equals is False
    assert by_name["EnvHumidityHigh"].above == 60  # ASHRAE's recommended envelope
    assert by_name["EnvDewPointLow"].below == -9


def test_rackwatch_check_takes_a_rules_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad-rules.yaml"
    bad.write_text(
        "rules:\n  - alert: X\n    measurement: m\n    field: f\n    above: 1\n    for: soon\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "rackwatch", "check", "-c", str(DEFAULT_RULES), "-c", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert f"{DEFAULT_RULES}: ok (alert rules)" in result.stdout
    assert f"{bad}:6: rules[0].for: 'soon' is not a duration" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules:\n"
            "  - alert: Hot\n"
            "    measurement: cooling\n"
            "    field: rack_inlet_c\n"
            "    above: 27\n"
            "    clear_below: 30\n",
            "rules.yaml:6: rules[0].clear_below: clear_below (30) must not be over above (27)",
        ),
        (
            "rules:\n"
            "  - alert: Low\n"
            "    measurement: ups\n"
            "    field: runtime_s\n"
            "    below: 600\n"
            "    clear_below: 900\n",
            "rules.yaml:6: rules[0].clear_below: clear_below goes with above",
        ),
        (
            "rules:\n"
            "  - alert: Two\n"
            "    measurement: ups\n"
            "    field: runtime_s\n"
            "    above: 1\n"
            "    below: 2\n",
            "rules.yaml:4: rules[0].field: a threshold rule needs exactly one of above, below, "
            "equals; found above, below",
        ),
        (
            "rules:\n"
            "  - alert: Both\n"
            "    measurement: rackwatch_agent\n"
            "    field: up\n"
            "    equals: false\n"
            "    absent: {by: [agent], interval: 30s}\n",
            "rules.yaml:2: rules[0]: a rule needs exactly one of field (threshold), absent: or "
            "event:; found field, absent",
        ),
        (
            "rules:\n"
            "  - alert: M\n"
            "    measurement: pdu\n"
            "    matchers:\n"
            "      - 'rack=A01'\n"
            "      - 'rack=~\"A[0-\"'\n"
            "    field: power_w\n"
            "    above: 1\n",
            "rules.yaml:6: rules[0].matchers[1]: 'rack=~\"A[0-\"': bad regular expression",
        ),
        (
            "rules:\n  - alert: bad name\n    measurement: pdu\n    field: power_w\n    above: 1\n",
            "rules.yaml:2: rules[0].alert: String should match pattern",
        ),
        (
            "rules:\n"
            "  - alert: E\n"
            "    measurement: accelerator_event\n"
            "    event: {resolve_after: 1h}\n"
            "    for: 5m\n",
            "rules.yaml:5: rules[0].for: for is for threshold rules (with field:)",
        ),
        (
            "rules:\n"
            "  - alert: T\n"
            "    measurement: pdu\n"
            "    field: power_w\n"
            "    above: 1\n"
            "    summary: '{device'\n",
            "rules.yaml:6: rules[0].summary: bad template",
        ),
        (
            "rules:\n"
            "  - alert: R\n"
            "    measurement: pdu\n"
            "    field: power_w\n"
            "    above: 1\n"
            "    treshold: 2\n",
            "rules.yaml:6: rules[0].treshold: unknown key",
        ),
        (
            "rules:\n"
            "  - alert: R\n"
            "    measurement: pdu\n"
            "    field: power_w\n"
            "    above: 1\n"
            "dependencies:\n"
            "  - source: []\n"
            "    equal: [site]\n",
            "rules.yaml:7: dependencies[0].source: List should have at least 1 item",
        ),
    ],
)
def test_mistakes_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    assert expected in str(caught.value).replace(str(tmp_path) + "/", "")


def test_two_rules_that_would_make_one_alert_are_refused(tmp_path: Path) -> None:
    text = (
        "rules:\n"
        "  - {alert: A, measurement: pdu, field: power_w, above: 1}\n"
        "  - {alert: A, measurement: pdu, field: power_w, above: 2}\n"
    )
    with pytest.raises(ConfigError, match=r"rules\.yaml:3: rules\[1\]\.alert: another rule"):
        load_text(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1d", 86400.0),
        ("2.5", 2.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_durations_format_back() -> None:
    assert format_duration(5400) == "1h30m"
    assert format_duration(0.25) == "250ms"
    assert format_duration(61) == "1m1s"


@pytest.mark.parametrize(
    ("matcher", "labels", "matches"),
    [
        ('rack="A01"', {"rack": "A01"}, True),
        ('rack="A01"', {"rack": "A010"}, False),
        ("rack=A01", {"rack": "A01"}, True),
        ('rack!="A01"', {}, True),  # a missing label reads as ""
        ('rack!="A01"', {"rack": "A01"}, False),
        ('rack=~"A0[1-3]"', {"rack": "A02"}, True),
        ('rack=~"A0[1-3]"', {"rack": "A02x"}, False),  # anchored
        ('rack!~"A0[1-3]"', {"rack": "B01"}, True),
        ('rack!~"A0[1-3]"', {"rack": "A03"}, False),
        ('device=~"pdu-.*"', {"device": "pdu-a01-a"}, True),
        ('rack=""', {}, True),
        ('summary="a \\"quoted\\" word"', {"summary": 'a "quoted" word'}, True),
    ],
)
def test_matchers(matcher: str, labels: dict[str, str], matches: bool) -> None:
    assert Matcher.parse(matcher).matches(labels) is matches


def test_matcher_prints_back_the_same() -> None:
    for text in ['rack="A01"', 'device=~"pdu-.*"', 'alertname!~"Gpu.*"', 'x!="a\\"b"']:
        assert str(Matcher.parse(text)) == text
        assert Matcher.parse(str(Matcher.parse(text))) == Matcher.parse(text)


def test_a_matcher_that_is_no_matcher_is_refused() -> None:
    with pytest.raises(ValueError, match="is not a matcher"):
        Matcher.parse("rack")


def test_the_collectors_alerting_section_names_file_line_and_key(tmp_path: Path) -> None:
    from collector.config import CollectorConfig

    path = tmp_path / "collector.yaml"
    path.write_text(
        "alerting:\n"
        "  rules_file: rules.yaml\n"
        "  receivers:\n"
        "    - {name: noc, kind: webhook, url: 'http://x'}\n"
        "    - {name: noc, kind: wecom, key: k}\n"
        "    - {name: pd, kind: pagerduty}\n"
        "  route:\n"
        "    receiver: nobody\n"
        "    group_wait: a while\n"
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path, CollectorConfig)
    assert str(caught.value).splitlines() == [
        f"{path}:6: alerting.receivers[2].pagerduty.routing_key: Field required",
        f"{path}:9: alerting.route.group_wait: 'a while' is not a duration "
        "(e.g. 30s, 5m, 1h30m, 500ms)",
    ]
    path.write_text(
        "alerting:\n"
        "  rules_file: rules.yaml\n"
        "  receivers:\n"
        "    - {name: noc, kind: webhook, url: 'http://x'}\n"
        "    - {name: noc, kind: wecom, key: k}\n"
        "  route:\n"
        "    receiver: nobody\n"
        "  ownership: {source: subscription, shards: 2, shard: 2}\n"
    )
    with pytest.raises(ConfigError) as caught:
        config.load(path, CollectorConfig)
    assert str(caught.value).splitlines() == [
        f"{path}:5: alerting.receivers[1].name: duplicate receiver 'noc'",
        f"{path}:7: alerting.route.receiver: no receiver named 'nobody'; have noc",
        f"{path}:8: alerting.ownership.shard: shard 2 of 2: shards are numbered 0 to 1",
    ]
