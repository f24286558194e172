"""The rule evaluator on line-protocol input, on a clock the test turns by hand."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.alerting.evaluator import Evaluator, Transition
from collector.alerting.points import find_fields, read_head, split_fields
from collector.alerting.rules import RuleFile
from telemetry import config
from telemetry.config import parse_yaml, validate
from telemetry.lineproto import encode, parse_line
from telemetry.sample import FieldValue, Sample

T0 = 1_800_000_000.0  # the clock's start, seconds
DEFAULT_RULES = Path(__file__).parents[1] / "configs" / "alert-rules.yaml"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def rules(text: str) -> RuleFile:
    data, lines = parse_yaml(text, "rules.yaml")
    return validate(data, RuleFile, "rules.yaml", lines)


def line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], at: float
) -> bytes:
    return encode(Sample(measurement, tags, fields, int(at * 1e9))).encode()


class Harness:
    def __init__(self, text: str, **options: Any) -> None:
        self.clock = Clock()
        self.seen: list[Transition] = []
        self.evaluator = Evaluator(rules(text), self.seen.append, clock=self.clock, **options)

    def feed(self, *lines: bytes) -> None:
        self.evaluator.observe(list(lines))

    def at(self, seconds: float) -> None:
        self.clock.now = T0 + seconds

    def tick(self, seconds: float) -> None:
        self.at(seconds)
        self.evaluator.tick()

    def states(self) -> list[tuple[str, str]]:
        return [(t.alert.labels["alertname"], t.state) for t in self.seen]


INLET = """
rules:
  - alert: RackInletHot
    severity: warning
    measurement: cooling
    field: rack_inlet_c
    above: 27
    clear_below: 26
    for: 60s
    summary: "{device}: {value:.1f} C"
"""
TAGS = {"site": "s1", "rack": "A01", "device": "inrow-1"}


def inlet(h: Harness, value: float) -> None:
    h.feed(line("cooling", TAGS, {"rack_inlet_c": value}, h.clock.now))


def test_threshold_fires_after_for_and_clears_only_below_the_clear_threshold() -> None:
    h = Harness(INLET)
    inlet(h, 26.5)
    assert h.seen == []
    h.at(10)
    inlet(h, 28.0)
    assert h.states() == [("RackInletHot", "pending")]
    h.at(40)
    inlet(h, 28.5)
    assert h.states() == [("RackInletHot", "pending")]  # 30 s of 60
    h.at(70)
    inlet(h, 28.2)
    assert h.states()[-1] == ("RackInletHot", "firing")
    assert h.seen[-1].summary == "inrow-1: 28.2 C"
    assert h.seen[-1].alert.labels == {
        **TAGS,
        "alertname": "RackInletHot",
        "severity": "warning",
    }
    h.at(80)
    inlet(h, 26.5)  # below 27 but not below the clear threshold: still firing
    assert h.states()[-1] == ("RackInletHot", "firing")
    h.at(90)
    inlet(h, 25.9)
    assert h.states() == [
        ("RackInletHot", "pending"),
        ("RackInletHot", "firing"),
        ("RackInletHot", "resolved"),
    ]
    assert h.evaluator.alerts == {}


def test_a_pending_alert_that_clears_before_for_never_fires() -> None:
    h = Harness(INLET)
    inlet(h, 30.0)
    h.at(30)
    inlet(h, 26.9)  # back under 27: the pending alert is dropped
    h.tick(120)
    assert h.states() == [("RackInletHot", "pending"), ("RackInletHot", "inactive")]


def test_the_clock_promotes_a_pending_alert_between_samples() -> None:
    h = Harness(INLET)
    inlet(h, 30.0)
    h.at(20)
    inlet(h, 30.0)  # two samples: the series' cadence is known
    h.tick(59)
    assert h.states() == [("RackInletHot", "pending")]
    h.tick(61)
    assert h.states() == [("RackInletHot", "pending"), ("RackInletHot", "firing")]


def test_keep_firing_for_holds_through_a_short_dip() -> None:
    h = Harness(
        """
rules:
  - {alert: Hot, measurement: cooling, field: rack_inlet_c, above: 27, keep_firing_for: 60s}
"""
    )
    inlet(h, 30.0)
    assert h.states() == [("Hot", "firing")]  # no `for`: at once, without a pending step
    h.at(10)
    inlet(h, 20.0)
    h.at(40)
    inlet(h, 29.0)  # back above: the hold starts over
    h.at(50)
    inlet(h, 20.0)
    h.tick(100)
    assert h.states() == [("Hot", "firing")]
    h.tick(111)
    assert h.states() == [("Hot", "firing"), ("Hot", "resolved")]


def test_below_with_clear_above() -> None:
    h = Harness(
        """
rules:
  - {alert: Low, measurement: ups, field: runtime_s, below: 600, clear_above: 900}
"""
    )
    for at, runtime in [(0, 1200), (1, 500), (2, 700), (3, 950)]:
        h.at(at)
        h.feed(line("ups", {"device": "ups-1"}, {"runtime_s": float(runtime)}, h.clock.now))
    assert h.states() == [("Low", "firing"), ("Low", "resolved")]
    assert h.seen[-1].at == T0 + 3


def test_equals_on_strings_and_booleans() -> None:
    h = Harness(
        """
rules:
  - {alert: OnBattery, measurement: ups, field: output_source, equals: battery}
  - {alert: Down, measurement: rackwatch_agent, field: up, equals: false}
  - {alert: BatteryBad, measurement: ups, field: battery_status, equals: [low, depleted]}
"""
    )
    h.feed(
        line("ups", {"device": "u"}, {"output_source": "battery", "battery_status": "low"}, T0),
        line("rackwatch_agent", {"agent": "a", "device": "d"}, {"up": False}, T0),
        line("rackwatch_agent", {"agent": "a"}, {"devices": 3}, T0),  # no `up`: not judged
    )
    assert sorted(h.states()) == [
        ("BatteryBad", "firing"),
        ("Down", "firing"),
        ("OnBattery", "firing"),
    ]
    h.at(1)
    h.feed(
        line(
            "ups", {"device": "u"}, {"output_source": "normal", "battery_status": "normal"}, T0 + 1
        ),
        line("rackwatch_agent", {"agent": "a", "device": "d"}, {"up": True}, T0 + 1),
    )
    assert sorted(h.states()[3:]) == [
        ("BatteryBad", "resolved"),
        ("Down", "resolved"),
        ("OnBattery", "resolved"),
    ]


PHASE = """
rules:
  - alert: PduPhaseCurrentHigh
    measurement: pdu_phase
    field: current_a
    relative_to_tag: rated_a
    above: 0.8
    clear_below: 0.75
    summary: "{device} phase {phase}: {reading} A is {value:.0%} of {rating:g} A"
"""


def test_relative_to_a_rating_tag() -> None:
    h = Harness(PHASE)
    rated = {"device": "pdu-1", "phase": "1", "rated_a": "32"}
    unrated = {"device": "pdu-2", "phase": "1"}
    h.feed(
        line("pdu_phase", rated, {"current_a": 25.0}, T0),  # 78 %
        line("pdu_phase", unrated, {"current_a": 99.0}, T0),  # no rating: not judged
        line("pdu_phase", {**unrated, "rated_a": "n/a"}, {"current_a": 99.0}, T0),
    )
    assert h.seen == []
    h.feed(line("pdu_phase", rated, {"current_a": 26.0}, T0 + 1))  # 81 %
    assert h.states() == [("PduPhaseCurrentHigh", "firing")]
    assert h.seen[0].summary == "pdu-1 phase 1: 26.0 A is 81% of 32 A"


def test_change_rules_increase_and_rate() -> None:
    h = Harness(
        """
rules:
  - alert: Ecc
    measurement: accelerator
    field: ecc_uncorrected_total
    change: increase
    above: 0
  - alert: Warming
    measurement: cooling
    field: supply_air_c
    change: rate
    per: 1m
    above: 2
"""
    )
    gpu = {"host": "h1", "gpu": "0"}
    unit = {"device": "crah-1"}
    h.feed(line("accelerator", gpu, {"ecc_uncorrected_total": 5}, T0))
    h.feed(line("cooling", unit, {"supply_air_c": 18.0}, T0))
    assert h.seen == []  # one sample: no change yet
    h.feed(line("accelerator", gpu, {"ecc_uncorrected_total": 5}, T0 + 10))
    h.feed(line("cooling", unit, {"supply_air_c": 18.2}, T0 + 10))  # 1.2 °C/min
    assert h.seen == []
    h.feed(line("accelerator", gpu, {"ecc_uncorrected_total": 7}, T0 + 20))
    h.feed(line("cooling", unit, {"supply_air_c": 18.8}, T0 + 20))  # 3.6 °C/min
    assert sorted(h.states()) == [("Ecc", "firing"), ("Warming", "firing")]
    ecc = next(t for t in h.seen if t.alert.labels["alertname"] == "Ecc")
    assert ecc.alert.value == 2
    warming = next(t for t in h.seen if t.alert.labels["alertname"] == "Warming")
    assert warming.alert.value == pytest.approx(3.6)
    h.feed(line("accelerator", gpu, {"ecc_uncorrected_total": 0}, T0 + 30))  # reset: skipped
    assert ("Ecc", "resolved") not in h.states()
    h.feed(line("accelerator", gpu, {"ecc_uncorrected_total": 0}, T0 + 40))
    assert ("Ecc", "resolved") in h.states()


AGENT_DOWN = """
rules:
  - alert: AgentDown
    measurement: rackwatch_agent
    absent: {by: [site, agent], interval: 10s, intervals: 3}
    summary: "agent {agent} silent for {silent_s} s"
"""


def health(agent: str, at: float, device: str | None = None) -> bytes:
    tags = {"site": "s1", "agent": agent, **({"device": device} if device else {})}
    return line("rackwatch_agent", tags, {"up": True} if device else {"devices": 1}, at)


def test_absence_fires_after_n_intervals_and_resolves_when_back() -> None:
    h = Harness(AGENT_DOWN)
    h.feed(health("a1", T0), health("a2", T0))
    h.tick(25)
    h.feed(health("a2", T0 + 25))
    h.tick(31)
    assert h.states() == [("AgentDown", "firing")]
    assert h.seen[0].alert.labels == {
        "site": "s1",
        "agent": "a1",
        "alertname": "AgentDown",
        "severity": "warning",
    }
    assert h.seen[0].summary == "agent a1 silent for 31 s"
    h.tick(40)
    assert len(h.seen) == 1  # fires once
    h.at(45)
    h.feed(health("a1", T0 + 45))
    assert h.states() == [("AgentDown", "firing"), ("AgentDown", "resolved")]


def test_absence_after_a_restart_gives_every_key_a_fresh_grace_period() -> None:
    h = Harness(AGENT_DOWN)
    h.feed(health("a1", T0))
    saved = h.evaluator.snapshot()
    later = Harness(AGENT_DOWN)
    later.at(600)  # the collector was away ten minutes; the agent was not
    later.evaluator.restore(saved)
    later.tick(620)
    assert later.seen == []
    later.tick(631)
    assert later.states() == [("AgentDown", "firing")]  # still known, and still silent


def test_events_fire_per_label_field_and_resolve_when_quiet() -> None:
    h = Harness(
        """
rules:
  - alert: Xid
    measurement: accelerator_event
    label_fields: [xid]
    matchers: ['xid!="13"']
    event: {resolve_after: 60s}
    summary: "{host} gpu {gpu}: XID {xid}"
"""
    )
    gpu = {"host": "h1", "gpu": "3"}
    h.feed(
        line("accelerator_event", gpu, {"xid": 79}, T0),
        line("accelerator_event", gpu, {"xid": 13}, T0),  # matched out
        line("accelerator_event", gpu, {"xid": 48}, T0),
    )
    assert [(t.alert.labels["xid"], t.state) for t in h.seen] == [
        ("79", "firing"),
        ("48", "firing"),
    ]
    assert h.seen[0].summary == "h1 gpu 3: XID 79"
    h.tick(30)
    h.feed(line("accelerator_event", gpu, {"xid": 79}, T0 + 30))  # again: still one alert
    h.tick(61)
    assert [(t.alert.labels["xid"], t.state) for t in h.seen][2:] == [("48", "resolved")]
    h.tick(91)
    assert [(t.alert.labels["xid"], t.state) for t in h.seen][3:] == [("79", "resolved")]


def test_label_matchers_select_series() -> None:
    h = Harness(
        """
rules:
  - alert: Hot
    measurement: cooling
    matchers: ['site="s1"', 'rack=~"A0[1-3]"', 'vendor!="rittal"', 'row!~"Z.*"']
    field: rack_inlet_c
    above: 27
"""
    )
    hot = {"rack_inlet_c": 30.0}
    h.feed(
        line("cooling", {"site": "s1", "rack": "A02", "device": "yes", "row": "A"}, hot, T0),
        line("cooling", {"site": "s2", "rack": "A02", "device": "other-site"}, hot, T0),
        line("cooling", {"site": "s1", "rack": "A04", "device": "other-rack"}, hot, T0),
        line("cooling", {"site": "s1", "rack": "A01", "device": "r", "vendor": "rittal"}, hot, T0),
        line("cooling", {"site": "s1", "rack": "A01", "device": "z", "row": "Z9"}, hot, T0),
    )
    assert [t.alert.labels["device"] for t in h.seen] == ["yes"]


def test_only_lines_of_named_measurements_are_read() -> None:
    h = Harness(INLET)
    h.feed(
        line("cooling_fan", TAGS, {"speed_pct": 50.0}, T0),  # shares a prefix, not the name
        line("pdu_outlet", TAGS, {"current_a": 1.0}, T0),
        line("cooling", TAGS, {"rack_inlet_c": 22.0}, T0),
        b"cooling,device=x rack_inlet_c=30 " + str(int(T0 * 1e9)).encode(),
    )
    assert h.evaluator.stats.lines_seen == 4
    assert h.evaluator.stats.lines_parsed == 2
    assert h.states() == [("RackInletHot", "pending")]


def test_old_and_out_of_order_samples_are_not_evaluated() -> None:
    h = Harness(INLET, max_age_s=300)
    h.at(1000)
    h.feed(line("cooling", TAGS, {"rack_inlet_c": 40.0}, T0))  # a spool replayed late
    assert h.seen == []
    assert h.evaluator.stats.samples_stale == 1
    inlet(h, 30.0)
    h.at(1050)
    inlet(h, 30.0)
    h.at(1100)
    h.feed(line("cooling", TAGS, {"rack_inlet_c": 20.0}, T0 + 1049))  # older than the last
    h.tick(1100)
    assert h.states() == [("RackInletHot", "pending"), ("RackInletHot", "firing")]


def test_lines_with_escapes_take_the_full_parser() -> None:
    h = Harness(INLET)
    tags = {"site": "s 1", "rack": "A,01", "device": "inrow=1"}
    h.feed(line("cooling", tags, {"rack_inlet_c": 30.0}, T0))
    assert h.seen[0].alert.labels["rack"] == "A,01"
    assert h.seen[0].alert.labels["device"] == "inrow=1"
    h.feed(line("cooling", tags, {"rack_inlet_c": 20.0}, T0 + 1))
    assert h.states() == [("RackInletHot", "pending"), ("RackInletHot", "inactive")]


def test_a_field_name_inside_a_string_value_is_not_read() -> None:
    h = Harness(INLET)
    h.feed(line("cooling", TAGS, {"note": "x,rack_inlet_c=99", "rack_inlet_c": 20.0}, T0))
    h.feed(line("cooling", TAGS, {"rack_inlet_c": 20.0, "note": "rack_inlet_c=99 1"}, T0))
    assert h.seen == []
    assert h.evaluator.stats.lines_parsed == 2


def test_a_quote_in_a_field_key_takes_the_full_parser() -> None:
    h = Harness(INLET)
    h.feed(line("cooling", TAGS, {'odd"key': "a,rack_inlet_c=99", "rack_inlet_c": 30.0}, T0))
    assert [t.alert.value for t in h.seen] == [30.0]


def test_a_bad_line_is_counted_not_raised() -> None:
    h = Harness(INLET)
    h.feed(
        b"cooling,device=x rack_inlet_c=hot 1", line("cooling", TAGS, {"rack_inlet_c": 30.0}, T0)
    )
    assert h.evaluator.stats.errors == 1
    assert h.states() == [("RackInletHot", "pending")]


DEPENDENT = """
rules:
  - alert: PduPhaseCurrentHigh
    measurement: pdu_phase
    field: current_a
    above: 10
  - alert: GpuTemperatureHigh
    measurement: accelerator
    field: temp_c
    above: 85
  - alert: DeviceUnreachable
    measurement: rackwatch_agent
    field: up
    equals: false
  - alert: AgentDown
    measurement: rackwatch_agent
    absent: {by: [site, agent], interval: 10s, intervals: 3}
dependencies:
  - name: agent down
    source: ['alertname="AgentDown"']
    equal: [site, agent]
  - source: ['alertname="DeviceUnreachable"', 'device=~"pdu-.*"']
    target: ['alertname=~"Gpu.*"']
    equal: [site, rack]
"""


def test_an_agent_down_mutes_the_alerts_of_its_devices() -> None:
    h = Harness(DEPENDENT)
    pdu = {"site": "s1", "rack": "A01", "device": "pdu-a01-a"}
    other = {"site": "s1", "rack": "B01", "device": "pdu-b01-a"}
    h.feed(
        line("rackwatch_agent", {**pdu, "agent": "ag1"}, {"up": True}, T0),
        line("rackwatch_agent", {**other, "agent": "ag2"}, {"up": True}, T0),
        line("pdu_phase", {**pdu, "phase": "1"}, {"current_a": 12.0}, T0),
        line("pdu_phase", {**other, "phase": "1"}, {"current_a": 12.0}, T0),
    )
    phase_a = next(t.alert for t in h.seen if t.alert.labels["device"] == "pdu-a01-a")
    phase_b = next(t.alert for t in h.seen if t.alert.labels["device"] == "pdu-b01-a")
    assert h.evaluator.muted_by(phase_a.labels) is None
    h.at(20)
    h.feed(line("rackwatch_agent", {**other, "agent": "ag2"}, {"up": True}, T0 + 20))
    h.tick(31)  # ag1 silent: AgentDown
    down = [t.alert for t in h.seen if t.alert.labels["alertname"] == "AgentDown"]
    assert [a.labels["agent"] for a in down] == ["ag1"]
    assert h.evaluator.muted_by(phase_a.labels) == "agent down"
    assert h.evaluator.muted_by(phase_b.labels) is None
    assert h.evaluator.muted_by(down[0].labels) is None  # a source never mutes itself


def test_an_unreachable_pdu_mutes_the_accelerator_alerts_of_its_rack() -> None:
    h = Harness(DEPENDENT)
    h.feed(
        line(
            "accelerator",
            {"site": "s1", "rack": "A01", "host": "g1", "gpu": "0"},
            {"temp_c": 90.0},
            T0,
        ),
        line(
            "accelerator",
            {"site": "s1", "rack": "A02", "host": "g2", "gpu": "0"},
            {"temp_c": 90.0},
            T0,
        ),
    )
    gpus = [t.alert for t in h.seen if t.alert.labels["alertname"] == "GpuTemperatureHigh"]
    assert all(h.evaluator.muted_by(g.labels) is None for g in gpus)
    pdu = {"site": "s1", "rack": "A01", "device": "pdu-a01-a", "agent": "ag1"}
    h.feed(line("rackwatch_agent", pdu, {"up": False}, T0 + 1))
    muted = {g.labels["rack"]: h.evaluator.muted_by(g.labels) for g in gpus}
    assert muted == {"A01": "DeviceUnreachable (site=s1, agent=ag1, device=pdu-a01-a)", "A02": None}


def test_state_survives_a_restart_without_new_transitions() -> None:
    h = Harness(INLET)
    inlet(h, 30.0)
    h.at(30)
    inlet(h, 30.0)
    h.tick(61)
    assert h.states()[-1] == ("RackInletHot", "firing")
    saved = h.evaluator.snapshot()

    later = Harness(INLET)
    later.at(120)
    later.evaluator.restore(saved)
    inlet(later, 30.0)
    later.tick(200)
    assert later.seen == []  # neither pending nor firing again
    assert [a.state for a in later.evaluator.alerts.values()] == ["firing"]
    inlet(later, 20.0)
    assert later.states() == [("RackInletHot", "resolved")]


def test_alerts_of_a_rule_that_is_gone_are_resolved_on_restore() -> None:
    h = Harness(INLET)
    inlet(h, 30.0)
    h.tick(61)
    saved = h.evaluator.snapshot()
    later = Harness("rules:\n  - {alert: Other, measurement: ups, field: load_pct, above: 90}\n")
    later.evaluator.restore(saved)
    assert later.states() == [("RackInletHot", "resolved")]
    assert later.evaluator.alerts == {}


def test_default_rules_read_a_realistic_mix() -> None:
    seen: list[Transition] = []
    evaluator = Evaluator(config.load(DEFAULT_RULES, RuleFile), seen.append, clock=lambda: T0)
    pdu = {"site": "s1", "room": "h1", "row": "A", "rack": "A01", "device": "pdu-a01-a"}
    evaluator.observe(
        [
            line("pdu_phase", {**pdu, "phase": "1", "rated_a": "32"}, {"current_a": 30.0}, T0),
            line("pdu_outlet", {**pdu, "outlet": "1"}, {"current_a": 3.0, "state": "on"}, T0),
            line("ups", {**pdu, "device": "ups-1"}, {"output_source": "battery"}, T0),
            line("cooling", {**pdu, "device": "inrow-1"}, {"leak_state": "leak"}, T0),
        ]
    )
    assert sorted(t.alert.labels["alertname"] for t in seen) == [
        "CoolingLeak",
        "PduPhaseCurrentHigh",
        "UpsOnBattery",
    ]
    assert evaluator.stats.lines_parsed == 3  # not the outlet


def test_default_rules_page_xid_and_lost_gpu_separately() -> None:
    """The NVML source's events as it writes them (agent/accelerators/nvml*.py)."""
    seen: list[Transition] = []
    evaluator = Evaluator(config.load(DEFAULT_RULES, RuleFile), seen.append, clock=lambda: T0)
    card = {"site": "s1", "host": "gpu-07", "vendor": "nvidia", "index": "3", "uuid": "GPU-1"}
    evaluator.observe(
        [
            line(
                "accelerator_event",
                card,
                {"event": "xid", "xid": 79, "meaning": "GPU has fallen off the bus"},
                T0,
            ),
            line(
                "accelerator_event",
                {**card, "index": "5", "uuid": "GPU-2"},
                {"event": "gpu_lost", "meaning": "GPU is lost", "error": "NVML_ERROR_GPU_IS_LOST"},
                T0,
            ),
        ]
    )
    summaries = {t.alert.labels["alertname"]: t.summary for t in seen}
    assert summaries == {
        "GpuXidError": "gpu-07 accelerator 3: XID 79: GPU has fallen off the bus",
        "GpuLost": "gpu-07 accelerator 5 fell off the bus (NVML_ERROR_GPU_IS_LOST)",
    }


def test_default_rules_page_an_npu_in_alarm_with_its_fault_codes_and_a_roce_link_down() -> None:
    """A 910A chip's health detail as npu-smi printed it in Alarm (three codes), through the
    real parser, and a chip whose RoCE link went down; both clear when they are well again."""
    from agent.accelerators.npu_smi import fault_fields

    capture = Path(__file__).parent / "data" / "npu_smi" / "health_i0_c0_910a_alarm.txt"
    faults = fault_fields(capture.read_text(), chip=0)
    seen: list[Transition] = []
    clock = Clock()
    evaluator = Evaluator(config.load(DEFAULT_RULES, RuleFile), seen.append, clock=clock)
    chip = {"site": "s1", "host": "npu-b07-01", "vendor": "huawei", "index": "0", "chip": "0"}
    other = {**chip, "index": "1"}

    def poll(at: float, health: str, link_up: bool) -> None:
        clock.now = T0 + at
        fields: dict[str, FieldValue] = {"health": health, **(faults if health != "OK" else {})}
        evaluator.observe(
            [
                line("accelerator", chip, fields, clock.now),
                line("accelerator", other, {"health": "OK", "roce_link_up": link_up}, clock.now),
            ]
        )
        evaluator.tick()

    for at in (0, 30, 60):
        poll(at, "Alarm", link_up=False)
    firing = {t.alert.labels["alertname"]: t.summary for t in seen if t.state == "firing"}
    assert set(firing) == {"NpuHealthAlarm", "NpuRoceLinkDown"}
    assert firing["NpuHealthAlarm"].startswith(
        "npu-b07-01 NPU 0 chip 0: Alarm, fault codes A4025021,8C03A000,8C084E00 "
        "(handling: RestartNPU): A4025021: "
    )
    assert firing["NpuRoceLinkDown"] == "npu-b07-01 NPU 1 chip 0: RoCE link down"
    poll(90, "OK", link_up=True)
    resolved = {t.alert.labels["alertname"] for t in seen if t.state == "resolved"}
    assert resolved == {"NpuHealthAlarm", "NpuRoceLinkDown"}


# --- the fast reader agrees with the full parser ---------------------------------------------

names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=8
).filter(lambda s: not s.endswith("\\") and not s.startswith("#"))
values = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=12),
)


@settings(max_examples=1000)
@given(
    measurement=names,
    tags=st.dictionaries(names, names, max_size=4),
    fields=st.dictionaries(names, values, min_size=1, max_size=4),
    time_ns=st.integers(0, 2**62),
)
def test_fast_reader_matches_parse_line(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], time_ns: int
) -> None:
    encoded = encode(Sample(measurement, tags, fields, time_ns)).encode()
    expected = parse_line(encoded)
    if b"\\" in encoded:
        return  # escapes take the full parser
    head, _, rest = encoded.partition(b" ")
    section, stamp = split_fields(rest)
    keys = tuple((name, name.encode() + b"=") for name in fields)
    assert read_head(head) == (expected.measurement, dict(expected.tags))
    found = find_fields(section, keys, quoted=b'"' in rest)
    if found is None:
        assert any('"' in key for key in fields)  # only then does it defer to the full parser
    else:
        assert found == dict(expected.fields)
    assert int(stamp) == expected.time_ns
