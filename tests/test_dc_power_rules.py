"""The default alert rules for DC power plants (configs/alert-rules.yaml), evaluated on the
dc_power / dc_rectifier samples the DC profiles write: bus voltage low against the plant's
nominal voltage, batteries discharging, rectifiers failed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from collector.alerting.evaluator import Evaluator, Transition
from collector.alerting.rules import RuleFile
from telemetry import config
from telemetry.lineproto import encode
from telemetry.sample import FieldValue, Sample

DEFAULT_RULES = Path(__file__).parents[1] / "configs" / "alert-rules.yaml"
T0 = 1_800_000_000.0


class Plant:
    """The default rules, fed one device's samples at chosen times."""

    def __init__(self) -> None:
        self.now = T0
        self.seen: list[Transition] = []
        rules = config.load(DEFAULT_RULES, RuleFile)
        self.evaluator = Evaluator(rules, self.seen.append, clock=lambda: self.now)

    def feed(
        self, at: float, measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue]
    ) -> None:
        self.now = T0 + at
        sample = Sample(measurement, {"site": "s1", **tags}, fields, int(self.now * 1e9))
        self.evaluator.observe([encode(sample).encode()])
        self.evaluator.tick()

    def states(self, alert: str) -> list[str]:
        return [t.state for t in self.seen if t.alert.labels["alertname"] == alert]


def test_bus_voltage_low_is_judged_against_the_plants_nominal_voltage() -> None:
    plant = Plant()
    on_float = {"device": "dc-1", "dc_nominal_v": "48"}
    discharged = {"device": "dc-2", "dc_nominal_v": "48"}
    untagged = {"device": "dc-3"}
    for at in (0, 30, 61):
        plant.feed(at, "dc_power", on_float, {"voltage_v": 53.5})
        plant.feed(at, "dc_power", discharged, {"voltage_v": 46.5})  # 97 %: low
        plant.feed(at, "dc_power", untagged, {"voltage_v": 40.0})  # no nominal: not judged
    firing = [t for t in plant.seen if t.state == "firing"]
    assert [t.alert.labels["device"] for t in firing] == ["dc-2"]
    assert firing[0].summary == "dc-2: DC bus at 46.5 V, 97% of its 48 V nominal"
    plant.feed(70, "dc_power", discharged, {"voltage_v": 48.5})  # 101 %: not yet clear
    assert plant.states("DcBusVoltageLow")[-1] == "firing"
    plant.feed(80, "dc_power", discharged, {"voltage_v": 52.0})
    assert plant.states("DcBusVoltageLow")[-1] == "resolved"


def test_batteries_discharging_fire_after_two_minutes_and_clear_near_zero() -> None:
    plant = Plant()
    tags = {"device": "dc-1"}
    plant.feed(0, "dc_power", tags, {"battery_current_a": -0.3})  # a shunt's noise
    plant.feed(10, "dc_power", tags, {"battery_current_a": -25.0})
    plant.feed(100, "dc_power", tags, {"battery_current_a": -25.0})
    assert plant.states("DcBatteryDischarging") == ["pending"]
    plant.feed(131, "dc_power", tags, {"battery_current_a": -24.0})
    assert plant.states("DcBatteryDischarging") == ["pending", "firing"]
    plant.feed(140, "dc_power", tags, {"battery_current_a": -1.0})  # recharging soon: holds
    assert plant.states("DcBatteryDischarging")[-1] == "firing"
    plant.feed(150, "dc_power", tags, {"battery_current_a": 5.0})  # charging
    assert plant.states("DcBatteryDischarging")[-1] == "resolved"


def test_a_rectifier_in_a_vendors_failure_state_or_the_controllers_count_fires() -> None:
    plant = Plant()
    for at in (0, 61):
        plant.feed(at, "dc_rectifier", {"device": "dc-1", "rectifier": "1"}, {"state": "normal"})
        plant.feed(at, "dc_rectifier", {"device": "dc-1", "rectifier": "2"}, {"state": "fault"})
        plant.feed(at, "dc_power", {"device": "dc-1"}, {"rectifiers_failed": 1.0})
    firing = sorted(
        (t.alert.labels["alertname"], t.alert.labels.get("rectifier", ""))
        for t in plant.seen
        if t.state == "firing"
    )
    assert firing == [("DcRectifierFailed", "2"), ("DcRectifiersFailed", "")]
