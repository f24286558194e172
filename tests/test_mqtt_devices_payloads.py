"""MQTT device payloads: topic patterns, JSON / number / line protocol mapping, bad payloads,
and the config checks that catch a mapping mistake at load, with file and line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from agent.config import AgentConfig
from agent.mapping import in_celsius
from agent.mqtt_devices.config import MqttDevicesConfig, Subscription
from agent.mqtt_devices.fields import BadPayload
from agent.mqtt_devices.payloads import SubscriptionDecoder
from agent.mqtt_devices.topics import TopicPattern
from agent.profile import TemperatureUnit
from telemetry import config
from telemetry.config import ConfigError
from telemetry.schema import schema

NOW_NS = 1_790_000_000_000_000_000

CRAH = {
    "topic": "bms/{building}/{room}/crah/{unit}/telemetry",
    "format": "json",
    "measurement": "cooling",
    "device": "crah-{room}-{unit}",
    "tags": {"vendor": "stulz", "model": "CyberAir 3PRO"},
    "devices": {"crah-hall-1-01": {"row": "A", "rack": "A00"}},
    "fields": {
        "supply_air_c": {"path": "temperatures.supply", "unit": "fahrenheit"},
        "return_air_c": {"path": "temperatures.return", "unit": "fahrenheit"},
        "fan_speed_pct": {"path": "fans[0].speed", "unit": "fraction"},
        "cooling_output_w": {"path": "capacity_kw", "unit": "kilowatt"},
        "water_flow_lpm": {"path": "flow", "scale": 0.1},
        "operating_state": {"path": "mode", "type": "enum", "enum": {"0": "off", "1": "on"}},
        "filter_runtime_s": {"path": "filter_hours", "unit": "hour", "absent": [-1]},
    },
    "timestamp": {"path": "ts", "format": "unix_ms"},
}

GOOD_JSON = (
    b'{"ts": 1790000000123, "temperatures": {"supply": 64.4, "return": 86},'
    b' "fans": [{"speed": 0.55}], "capacity_kw": 41.5, "flow": 1234, "mode": 1,'
    b' "filter_hours": -1}'
)


def decoder(**overrides: object) -> SubscriptionDecoder:
    return SubscriptionDecoder(Subscription.model_validate(CRAH | overrides), "qiyang-a1")


def test_topic_pattern_gives_the_filter_and_the_named_levels() -> None:
    pattern = TopicPattern.parse("bms/{site}/+/crah/{unit}/#")
    assert pattern.filter == "bms/+/+/crah/+/#"
    assert pattern.match("bms/a1/x/crah/07/telemetry/fast") == {"site": "a1", "unit": "07"}
    assert pattern.match("bms/a1/x/crah/07") == {"site": "a1", "unit": "07"}  # '#' takes none
    assert pattern.match("bms/a1/x/pdu/07/telemetry") is None
    assert pattern.match("bms/a1/x/crah") is None
    exact = TopicPattern.parse("modbus/{device}/supply")
    assert exact.match("modbus/crah-1/supply/extra") is None


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("bms/crah-{unit}/x", "must be a whole level"),
        ("bms/#/x", "'#' must be the last level"),
        ("bms/{unit}/{unit}", "appears twice"),
        ("bms/a+b", "must be a whole level"),
        ("", "empty"),
    ],
)
def test_bad_topic_patterns_are_refused(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TopicPattern.parse(pattern)


def test_json_crah_lands_in_cooling_with_converted_units_and_its_own_time() -> None:
    captures = decoder().pattern.match("bms/b1/hall-1/crah/01/telemetry")
    assert captures is not None
    (sample,) = decoder().decode(captures, GOOD_JSON, NOW_NS)
    assert sample.measurement == "cooling"
    assert dict(sample.tags) == {
        "site": "qiyang-a1",
        "building": "b1",
        "room": "hall-1",
        "unit": "01",
        "vendor": "stulz",
        "model": "CyberAir 3PRO",
        "row": "A",
        "rack": "A00",
        "device": "crah-hall-1-01",
    }
    assert dict(sample.fields) == {
        "supply_air_c": 18.0,
        "return_air_c": 30.0,
        "fan_speed_pct": 55.0,
        "cooling_output_w": 41500.0,
        "water_flow_lpm": 123.4,
        "operating_state": "on",
    }  # filter_hours -1 is the sentinel for "no reading": no field
    assert sample.time_ns == 1_790_000_000_123_000_000


def test_json_fields_have_the_types_a_polled_device_gives_them() -> None:
    """A CRAH over MQTT and an InRow over SNMP write the same field types into `cooling`: the
    schema's (tests/test_schema.py holds the profiles to it)."""
    captures = {"building": "b", "room": "r", "unit": "1"}
    (sample,) = decoder().decode(captures, GOOD_JSON.replace(b"-1}", b"12}"), NOW_NS)
    assert len(sample.fields) == 7
    assert schema().sample_problems(sample, extra_tags=captures) == []


def test_iso8601_timestamps_and_seconds() -> None:
    iso = decoder(timestamp={"path": "at", "format": "iso8601"})
    (sample,) = iso.decode({}, b'{"at": "2026-09-21T12:00:00+02:00", "flow": 5}', NOW_NS)
    assert sample.time_ns == int(datetime(2026, 9, 21, 10, tzinfo=UTC).timestamp()) * 10**9
    seconds = decoder(timestamp={"path": "at", "format": "unix_s"})
    (sample,) = seconds.decode({}, b'{"at": 1790000000.5, "flow": 5}', NOW_NS)
    assert sample.time_ns == 1_790_000_000_500_000_000
    (sample,) = seconds.decode({}, b'{"flow": 5}', NOW_NS)  # no time in the message: now
    assert sample.time_ns == NOW_NS


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"flow": 12', "invalid JSON"),
        (b"\xff\xfe", "invalid UTF-8"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"other": 1}', "none of the mapped fields"),
        (b'{"flow": "fast"}', "water_flow_lpm: expected a number, got 'fast'"),
        (b'{"flow": true}', "water_flow_lpm: expected a number, got a boolean"),
        (b'{"flow": [1]}', "water_flow_lpm: expected a single value, got a list"),
        (b'{"flow": 1, "ts": 1790000000}', "is not between 2000 and 2100 as unix_ms"),
        (b'{"flow": 1, "ts": "noon"}', "timestamp ts: expected a number"),
    ],
)
def test_bad_json_payloads_say_why(payload: bytes, problem: str) -> None:
    with pytest.raises(BadPayload, match=problem):
        decoder().decode({"room": "r", "unit": "1"}, payload, NOW_NS)


def test_numeric_strings_are_read_as_numbers() -> None:
    (sample,) = decoder().decode({}, b'{"flow": "250"}', NOW_NS)
    assert sample.fields["water_flow_lpm"] == 25.0


# --- the rules of a polled device (agent/mapping.py) -------------------------------------------


def test_fahrenheit_is_rounded_as_a_polled_device_rounds_it() -> None:
    (sample,) = decoder().decode({}, b'{"temperatures": {"supply": 70.1}}', NOW_NS)
    polled = in_celsius(70.1, TemperatureUnit(oid="1.3.6.1", fahrenheit=(2,)), 2)
    assert sample.fields["supply_air_c"] == polled == 21.167


@pytest.mark.parametrize("raw", [b"1", b"1.0", b'"1"', b'"1.0"'])
def test_an_enum_value_is_a_number_whatever_json_type_carries_it(raw: bytes) -> None:
    (sample,) = decoder().decode({}, b'{"mode": ' + raw + b"}", NOW_NS)
    assert dict(sample.fields) == {"operating_state": "on"}


def test_an_enum_value_that_is_not_a_whole_number_is_a_bad_payload() -> None:
    (sample,) = decoder().decode({}, b'{"mode": 7}', NOW_NS)
    assert dict(sample.fields) == {"operating_state": "unknown_7"}
    with pytest.raises(BadPayload, match="operating_state: an enum value is a whole number"):
        decoder().decode({}, b'{"mode": 1.5}', NOW_NS)
    with pytest.raises(BadPayload, match="operating_state: expected a number, got 'cooling'"):
        decoder().decode({}, b'{"mode": "cooling"}', NOW_NS)


@pytest.mark.parametrize("raw", [b"-1", b"-1.0", b'"-1"'])
def test_a_sentinel_is_absent_whatever_json_type_carries_it(raw: bytes) -> None:
    (sample,) = decoder().decode({}, b'{"flow": 5, "filter_hours": ' + raw + b"}", NOW_NS)
    assert "filter_runtime_s" not in sample.fields


def test_sentinels_and_enum_keys_are_whole_numbers_as_in_the_profiles() -> None:
    with pytest.raises(ValueError, match="absent"):
        Subscription.model_validate(
            CRAH | {"fields": {"humidity_pct": {"path": "h", "absent": [-1.5]}}}
        )
    with pytest.raises(ValueError, match="counter_bits is for type counter"):
        Subscription.model_validate(
            CRAH | {"fields": {"humidity_pct": {"path": "h", "counter_bits": 32}}}
        )
    with pytest.raises(ValueError, match="enum"):
        Subscription.model_validate(
            CRAH | {"fields": {"leak_state": {"path": "l", "type": "enum", "enum": {"dry": "ok"}}}}
        )


def test_counters_are_kept_monotonic_across_wraps_and_restarts_per_device() -> None:
    gpus = Subscription.model_validate(
        {
            "topic": "gpu/{device}",
            "format": "json",
            "measurement": "accelerator",
            "fields": {
                "ecc_corrected_total": {"path": "ecc", "type": "counter", "counter_bits": 32}
            },
        }
    )
    mapper = SubscriptionDecoder(gpus, "a1")

    def read(device: str, ecc: int) -> object:
        payload = f'{{"ecc": {ecc}}}'.encode()
        (sample,) = mapper.decode({"device": device}, payload, NOW_NS)
        return sample.fields["ecc_corrected_total"]

    # 2**32 - 6, then a wrap to 5 (+6), then a restart at 3 (+3); another GPU on its own
    assert [read("gpu-0", ecc) for ecc in (4294967290, 4294967295, 5, 3)] == [
        4294967290,
        4294967295,
        4294967301,
        4294967304,
    ]
    assert read("gpu-1", 7) == 7
    with pytest.raises(BadPayload, match="a counter cannot be negative"):
        read("gpu-1", -2)


@pytest.mark.parametrize(
    ("measurement", "field", "spec", "problem"),
    [
        (
            "cooling",
            "operating_state",
            {"path": "m"},
            "cooling.operating_state is string in the schema, not float",
        ),
        ("cooling", "supply_temp_c", {"path": "t"}, "cooling.supply_temp_c is not in the schema"),
        ("coolers", "supply_air_c", {"path": "t"}, "measurement 'coolers' is not in the schema"),
    ],
)
def test_a_mapping_writes_only_schema_fields_of_their_type(
    measurement: str, field: str, spec: dict[str, object], problem: str
) -> None:
    subscription = Subscription.model_validate(
        CRAH | {"measurement": measurement, "fields": {field: spec}}
    )
    assert [message for _, message in subscription.problems()] == [f"{problem} (docs/schema.md)"]


def test_plain_numbers_with_a_field_level() -> None:
    numbers = Subscription.model_validate(
        {
            "topic": "modbus/{device}/{field}",
            "format": "number",
            "measurement": "cooling",
            "tags": {"room": "hall-2"},
            "fields": {
                "supply_air_c": {"path": "supply_temp", "scale": 0.1},
                "operating_state": {"path": "run", "type": "enum", "enum": {"0": "off", "1": "on"}},
            },
        }
    )
    mapper = SubscriptionDecoder(numbers, "a1")
    (sample,) = mapper.decode({"device": "crah-7", "field": "supply_temp"}, b" 215\n", NOW_NS)
    assert dict(sample.fields) == {"supply_air_c": 21.5}
    assert dict(sample.tags) == {"site": "a1", "device": "crah-7", "room": "hall-2"}
    (sample,) = mapper.decode({"device": "crah-7", "field": "run"}, b"1", NOW_NS)
    assert dict(sample.fields) == {"operating_state": "on"}
    assert mapper.decode({"device": "crah-7", "field": "unmapped_register"}, b"7", NOW_NS) == []
    with pytest.raises(BadPayload, match="expected a number"):
        mapper.decode({"device": "crah-7", "field": "supply_temp"}, b"n/a", NOW_NS)


def test_line_protocol_keeps_good_lines_and_reports_the_bad_one() -> None:
    lines = Subscription.model_validate(
        {"topic": "gateways/{gateway}/influx", "format": "line_protocol", "tags": {"room": "h1"}}
    )
    mapper = SubscriptionDecoder(lines, "a1")
    payload = (
        b"cooling,device=crah-1 supply_air_c=18.5 1790000000000000000\n"
        b"cooling,device=crah-2 supply_air_c=\n"
        b"cooling,device=crah-3,room=h2 supply_air_c=19.0\n"
    )
    with pytest.raises(BadPayload, match="line 2: field 'supply_air_c' has no value") as caught:
        mapper.decode({"gateway": "gw1"}, payload, NOW_NS)
    first, third = caught.value.kept
    assert dict(first.tags) == {"site": "a1", "gateway": "gw1", "room": "h1", "device": "crah-1"}
    assert first.time_ns == 1_790_000_000_000_000_000
    assert third.tags["room"] == "h2"  # the line's own tag wins
    assert third.time_ns == NOW_NS


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"cooling,device=c operating_state=1i", "cooling.operating_state is string in the schema"),
        (b"cooling,device=c supply_temp=21.5", "cooling.supply_temp is not in the schema"),
        (b"coolers,device=c supply_air_c=21.5", "measurement 'coolers' is not in the schema"),
    ],
)
def test_line_protocol_lines_keep_to_the_schema(line: bytes, problem: str) -> None:
    lines = Subscription.model_validate({"topic": "gateways/{gateway}", "format": "line_protocol"})
    mapper = SubscriptionDecoder(lines, "a1")
    payload = b"cooling,device=crah-1 supply_air_c=21i,fan_speed_pct=55.5\n" + line
    with pytest.raises(BadPayload, match=f"line 2: {problem}") as caught:
        mapper.decode({"gateway": "gw1"}, payload, NOW_NS)
    (kept,) = caught.value.kept
    assert dict(kept.fields) == {"supply_air_c": 21.0, "fan_speed_pct": 55.5}
    assert isinstance(kept.fields["supply_air_c"], float)  # a gateway's 21i, as the schema types it


AGENT_WITH_DEVICES = """\
agent: {name: a1, site: qiyang-a1}
mqtt_devices:
  broker: {host: 127.0.0.1, port: 1883}
  subscriptions:
    - topic: bms/{room}/crah/{unit}
      format: json
      measurement: cooling
      device: crah-{unit}-{hall}
      fields:
        supply_air_c: {path: supply, unit: fahrenheit}
        fan_speed_pct: {path: fan, unit: kilowatt}
        runs_total: {type: counter}
        return_air_c: {path: return, type: counter}
    - topic: influx/{gw}
      format: line_protocol
      measurement: cooling
  sparkplug:
    mappings:
      - measurement: cooling
        name: "{edge_node}-{device}-{rack}"
"""


def test_mapping_mistakes_are_found_at_load_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(AGENT_WITH_DEVICES, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.load(path, AgentConfig)
    at = f"{path}:"
    assert str(caught.value).splitlines() == [
        f"{at}8: mqtt_devices.subscriptions[0].device: {{hall}} is not a named level here; "
        "known: room, unit",
        f"{at}11: mqtt_devices.subscriptions[0].fields.fan_speed_pct: unit 'kilowatt' does not "
        "convert to 'fan_speed_pct' (_pct); known for _pct: percent, fraction, permille",
        f"{at}12: mqtt_devices.subscriptions[0].fields.runs_total: cooling.runs_total is not in "
        "the schema (docs/schema.md)",
        f"{at}12: mqtt_devices.subscriptions[0].fields.runs_total.path: format json needs the "
        "value's path",
        f"{at}13: mqtt_devices.subscriptions[0].fields.return_air_c: 'return_air_c' has a unit, "
        "so it is a gauge (float); counters end in _total",
        f"{at}16: mqtt_devices.subscriptions[1].measurement: line protocol carries its own; "
        "leave this out",
        f"{at}20: mqtt_devices.sparkplug.mappings[0].name: {{rack}} is not a named level here; "
        "known: device, edge_node, group",
    ]


def test_a_section_without_subscriptions_is_refused() -> None:
    assert MqttDevicesConfig().problems() == [
        ((), "subscribe to something: subscriptions: or sparkplug:")
    ]


def test_the_schema_example_round_trips_through_yaml() -> None:
    """The CRAH mapping above, as YAML, loads to the same subscription."""
    text = yaml.safe_dump({"subscriptions": [CRAH]})
    loaded = MqttDevicesConfig.model_validate(yaml.safe_load(text))
    assert loaded.problems() == []
    assert loaded.subscriptions[0] == Subscription.model_validate(CRAH)


GATEWAY = {
    "topic": "bms/{building}/gateway/{gateway}/batch",
    "format": "json",
    "measurement": "cooling",
    "records": {"path": "units", "device": "id"},
    "devices": {"crah-07": {"row": "B", "rack": "B00"}},
    "fields": {
        "supply_air_c": {"path": "supply"},
        "return_air_c": {"path": "return"},
    },
    "timestamp": {"path": "ts", "format": "unix_s"},
}


def test_a_gateway_batch_becomes_one_sample_per_unit() -> None:
    gateway = SubscriptionDecoder(Subscription.model_validate(GATEWAY), "qiyang-a1")
    payload = (
        b'{"units": [{"id": "crah-07", "ts": 1790000000, "supply": 18.5, "return": 29.0},'
        b' {"id": "crah-08", "supply": 19.0, "return": 30.5}]}'
    )
    captures = {"building": "a1", "gateway": "gw-1"}
    first, second = gateway.decode(captures, payload, NOW_NS)
    assert (first.tags["device"], first.tags["row"], first.tags["gateway"]) == (
        "crah-07",
        "B",
        "gw-1",
    )
    assert dict(first.fields) == {"supply_air_c": 18.5, "return_air_c": 29.0}
    assert first.time_ns == 1790000000 * 10**9
    assert second.tags["device"] == "crah-08"
    assert second.time_ns == NOW_NS  # no ts in that record: the time it arrived


def test_a_bad_record_costs_only_itself() -> None:
    gateway = SubscriptionDecoder(Subscription.model_validate(GATEWAY), "qiyang-a1")
    payload = (
        b'{"units": [{"id": "crah-07", "supply": 18.5}, "garbage", {"supply": 20.0},'
        b' {"id": "crah-09", "supply": "hot"}, {"id": "crah-10", "return": 28.0}]}'
    )
    with pytest.raises(BadPayload) as caught:
        gateway.decode({"building": "a1", "gateway": "gw-1"}, payload, NOW_NS)
    reason = str(caught.value)
    assert "record 1: expected an object, got str" in reason
    assert "record 2: no device name at 'id'" in reason
    assert [s.tags["device"] for s in caught.value.kept] == ["crah-07", "crah-10"]
    with pytest.raises(BadPayload, match="records: expected a list at 'units'"):
        gateway.decode({"building": "a1", "gateway": "gw-1"}, b'{"units": 5}', NOW_NS)


def test_records_are_checked_at_load() -> None:
    bad = GATEWAY | {"format": "number", "device": "x"}
    problems = dict(Subscription.model_validate(bad).problems())
    assert problems[("records",)] == "records are for format json"
    assert problems[("device",)] == "with records, each record names its device"
