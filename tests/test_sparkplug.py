"""Sparkplug B host behaviour, with payloads built by the encoder generated from the schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.mqtt_devices import sparkplug_b_pb2
from agent.mqtt_devices.config import MqttDevicesConfig, SparkplugSettings
from agent.mqtt_devices.sparkplug import (
    BOOLEAN,
    DOUBLE,
    FLOAT,
    INT16,
    INT64,
    STRING,
    UINT32,
    UINT64,
    SparkplugHost,
    parse_state,
    rebirth_request,
    state_payload,
)
from agent.mqtt_devices.subscriber import DeviceSubscriber
from telemetry.sample import Sample

Payload = sparkplug_b_pb2.Payload
Metric = Payload.Metric
ROOT = Path(__file__).resolve().parents[1]
NOW_NS = 1_790_000_000_000_000_000
T_MS = 1_790_000_000_500

SETTINGS = SparkplugSettings.model_validate(
    {
        "groups": ["bms"],
        "rebirth_interval_s": 30,
        "mappings": [
            {
                "edge_node": "gw-hall1-*",
                "device": "crah-*",
                "measurement": "cooling",
                "tags": {"room": "hall-1", "vendor": "vertiv"},
                "devices": {"crah-01": {"row": "B", "rack": "B00"}},
                "metrics": {
                    "supply_air_c": {"metric": "Temperatures/Supply Air", "unit": "fahrenheit"},
                    "return_air_c": {"metric": "Temperatures/Return Air"},
                    "fan_speed_pct": {"metric": "Fan/Speed"},
                    "operating_state": {
                        "metric": "Unit/Mode",
                        "type": "enum",
                        "enum": {"0": "off", "1": "on"},
                    },
                    "valve_pct": {"metric": "Valve/Offset", "unit": "percent"},
                },
            },
            {
                "level": "node",
                "edge_node": "gw-*",
                "measurement": "controller",
                "name": "{edge_node}",
                "metrics": {"temperature_c": {"metric": "Gateway/Temperature"}},
            },
        ],
    }
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def host(clock: Clock) -> SparkplugHost:
    return SparkplugHost(SETTINGS, "qiyang-a1", "a1-agent", clock)


def payload(seq: int | None, *metrics: Metric, timestamp: int | None = T_MS) -> bytes:
    message = Payload(metrics=metrics)
    if seq is not None:
        message.seq = seq
    if timestamp is not None:
        message.timestamp = timestamp
    return message.SerializeToString()


def nbirth(seq: int = 0, bd_seq: int = 3) -> bytes:
    return payload(
        seq,
        Metric(name="bdSeq", datatype=UINT64, long_value=bd_seq),
        Metric(name="Node Control/Rebirth", datatype=BOOLEAN, boolean_value=False),
        Metric(name="Gateway/Temperature", alias=100, datatype=DOUBLE, double_value=41.5),
    )


def dbirth(seq: int) -> bytes:
    return payload(
        seq,
        Metric(name="Temperatures/Supply Air", alias=1, datatype=FLOAT, float_value=64.5),
        Metric(name="Temperatures/Return Air", alias=2, datatype=DOUBLE, double_value=30.25),
        Metric(name="Fan/Speed", alias=3, datatype=UINT32, int_value=70),
        Metric(name="Unit/Mode", alias=4, datatype=INT64, long_value=1),
        Metric(name="Valve/Offset", alias=5, datatype=INT16, int_value=(1 << 32) - 5),
        Metric(name="Unit/Label", alias=6, datatype=STRING, string_value="CRAH 1"),
    )


def born(host: SparkplugHost) -> None:
    """An edge node and one CRAH, born as seq 0 and 1."""
    assert host.handle("spBv1.0/bms/NBIRTH/gw-hall1-a", nbirth(0), NOW_NS).problem is None
    assert host.handle("spBv1.0/bms/DBIRTH/gw-hall1-a/crah-01", dbirth(1), NOW_NS).problem is None


def by_measurement(samples: list[Sample], measurement: str) -> list[Sample]:
    return [s for s in samples if s.measurement == measurement]


def test_generated_module_matches_the_schema(tmp_path: Path) -> None:
    """sparkplug_b_pb2.py/.pyi are what protoc makes of sparkplug_b.proto today."""
    source = "agent/mqtt_devices/sparkplug_b.proto"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / source),
        ],
        check=True,
    )
    for generated in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        fresh = (tmp_path / "agent" / "mqtt_devices" / generated).read_text(encoding="utf-8")
        committed = (ROOT / "agent" / "mqtt_devices" / generated).read_text(encoding="utf-8")
        assert fresh == committed, f"{generated} is stale: regenerate it from {source}"


def test_births_define_aliases_and_carry_values(host: SparkplugHost) -> None:
    node = host.handle("spBv1.0/bms/NBIRTH/gw-hall1-a", nbirth(0, bd_seq=3), NOW_NS)
    (controller,) = by_measurement(node.samples, "controller")
    assert dict(controller.fields) == {"temperature_c": 41.5}
    assert controller.tags["device"] == "gw-hall1-a"
    (event,) = by_measurement(node.samples, "mqtt_device_event")
    assert dict(event.fields) == {"event": "online", "message": "NBIRTH", "bd_seq": 3}
    assert event.time_ns == T_MS * 10**6

    device = host.handle("spBv1.0/bms/DBIRTH/gw-hall1-a/crah-01", dbirth(1), NOW_NS)
    (cooling,) = by_measurement(device.samples, "cooling")
    assert dict(cooling.tags) == {
        "site": "qiyang-a1",
        "room": "hall-1",
        "vendor": "vertiv",
        "row": "B",
        "rack": "B00",
        "device": "crah-01",
    }
    assert dict(cooling.fields) == {
        "supply_air_c": 18.056,  # 64.5 °F, rounded as a polled device's (agent/mapping.py)
        "return_air_c": 30.25,
        "fan_speed_pct": 70.0,
        "operating_state": "on",
        "valve_pct": -5.0,  # Int16 -5, sent as a 32-bit two's complement
    }
    (online,) = by_measurement(device.samples, "mqtt_device_event")
    assert online.tags["edge_node"] == "gw-hall1-a"
    assert online.tags["group"] == "bms"
    assert device.heard[0][0] == "crah-01"


def test_data_by_alias_with_per_metric_timestamps(host: SparkplugHost) -> None:
    born(host)
    data = payload(
        2,
        Metric(alias=1, float_value=68.0),
        Metric(alias=2, double_value=31.0, timestamp=T_MS + 1000),
        Metric(alias=3, int_value=72, timestamp=T_MS + 1000),
    )
    outcome = host.handle("spBv1.0/bms/DDATA/gw-hall1-a/crah-01", data, NOW_NS)
    assert outcome.problem is None
    assert outcome.rebirth_topic is None
    first, second = outcome.samples
    assert (first.time_ns, dict(first.fields)) == (T_MS * 10**6, {"supply_air_c": 20.0})
    assert second.time_ns == (T_MS + 1000) * 10**6
    assert dict(second.fields) == {"return_air_c": 31.0, "fan_speed_pct": 72.0}


def test_seq_wraps_at_255_without_a_rebirth(host: SparkplugHost) -> None:
    host.handle("spBv1.0/bms/NBIRTH/gw-hall1-a", nbirth(254), NOW_NS)
    host.handle("spBv1.0/bms/DBIRTH/gw-hall1-a/crah-01", dbirth(255), NOW_NS)
    data = payload(0, Metric(alias=3, int_value=50))
    outcome = host.handle("spBv1.0/bms/DDATA/gw-hall1-a/crah-01", data, NOW_NS)
    assert outcome.rebirth_topic is None
    assert outcome.samples[0].fields["fan_speed_pct"] == 50.0


def test_a_seq_gap_asks_for_a_rebirth_at_most_once_per_interval(
    host: SparkplugHost, clock: Clock
) -> None:
    born(host)
    topic = "spBv1.0/bms/DDATA/gw-hall1-a/crah-01"
    gap = host.handle(topic, payload(5, Metric(alias=3, int_value=60)), NOW_NS)
    assert gap.rebirth_topic == "spBv1.0/bms/NCMD/gw-hall1-a"
    assert gap.samples[0].fields["fan_speed_pct"] == 60.0  # the data itself is still good
    again = host.handle(topic, payload(9, Metric(alias=3, int_value=61)), NOW_NS)
    assert again.rebirth_topic is None  # asked a moment ago
    clock.now += 31
    later = host.handle(topic, payload(20, Metric(alias=3, int_value=62)), NOW_NS)
    assert later.rebirth_topic == "spBv1.0/bms/NCMD/gw-hall1-a"
    assert host.rebirth_requests == 2


def test_data_before_any_birth_asks_for_a_rebirth_without_calling_it_bad(
    host: SparkplugHost,
) -> None:
    outcome = host.handle(
        "spBv1.0/bms/NDATA/gw-hall1-b", payload(7, Metric(alias=100, double_value=40)), NOW_NS
    )
    assert outcome.rebirth_topic == "spBv1.0/bms/NCMD/gw-hall1-b"
    assert outcome.problem is None
    assert outcome.samples == []


def test_rebirth_request_is_the_node_control_metric() -> None:
    request = Payload.FromString(rebirth_request(T_MS))
    (metric,) = request.metrics
    assert metric.name == "Node Control/Rebirth"
    assert (metric.datatype, metric.boolean_value) == (BOOLEAN, True)
    assert request.timestamp == T_MS


def test_unknown_alias_is_bad_but_the_other_metrics_are_kept(host: SparkplugHost) -> None:
    born(host)
    data = payload(2, Metric(alias=99, int_value=1), Metric(alias=2, double_value=29.5))
    outcome = host.handle("spBv1.0/bms/DDATA/gw-hall1-a/crah-01", data, NOW_NS)
    assert outcome.problem == "metric with unknown alias 99"
    assert outcome.rebirth_topic == "spBv1.0/bms/NCMD/gw-hall1-a"
    assert [dict(s.fields) for s in outcome.samples] == [{"return_air_c": 29.5}]
    assert outcome.culprit is not None
    assert outcome.culprit[0] == "crah-01"


def test_a_value_of_the_wrong_type_is_bad(host: SparkplugHost) -> None:
    born(host)
    data = payload(
        2, Metric(alias=1, string_value="warm"), Metric(alias=3, int_value=40), Metric(alias=2)
    )
    outcome = host.handle("spBv1.0/bms/DDATA/gw-hall1-a/crah-01", data, NOW_NS)
    assert outcome.problem == "metric 'Temperatures/Supply Air': a Float carried in string_value"
    assert [dict(s.fields) for s in outcome.samples] == [{"fan_speed_pct": 40.0}]


def test_garbage_is_not_a_sparkplug_payload(host: SparkplugHost) -> None:
    outcome = host.handle("spBv1.0/bms/NDATA/gw-hall1-a", b"\xff\xff\xff", NOW_NS)
    assert outcome.problem is not None
    assert outcome.problem.startswith("not a Sparkplug B payload")


def test_missing_seq_is_bad(host: SparkplugHost) -> None:
    born(host)
    data = payload(None, Metric(alias=3, int_value=40))
    outcome = host.handle("spBv1.0/bms/DDATA/gw-hall1-a/crah-01", data, NOW_NS)
    assert outcome.problem == "no seq"


def test_ndeath_takes_the_node_and_its_devices_offline(host: SparkplugHost) -> None:
    born(host)
    death = payload(None, Metric(name="bdSeq", datatype=UINT64, long_value=3), timestamp=None)
    outcome = host.handle("spBv1.0/bms/NDEATH/gw-hall1-a", death, NOW_NS)
    events = {(s.tags["device"], s.fields["event"], s.fields["message"]) for s in outcome.samples}
    assert events == {("crah-01", "offline", "NDEATH"), ("gw-hall1-a", "offline", "NDEATH")}
    assert all(s.time_ns == NOW_NS for s in outcome.samples)  # no timestamp: when received
    assert sorted(outcome.offline) == ["crah-01", "gw-hall1-a"]
    after = host.handle(
        "spBv1.0/bms/DDATA/gw-hall1-a/crah-01", payload(2, Metric(alias=3, int_value=1)), NOW_NS
    )
    assert after.samples == []
    assert after.rebirth_topic is not None


def test_an_ndeath_from_an_earlier_session_is_ignored(host: SparkplugHost) -> None:
    born(host)  # bdSeq 3
    stale = payload(None, Metric(name="bdSeq", datatype=UINT64, long_value=2), timestamp=None)
    outcome = host.handle("spBv1.0/bms/NDEATH/gw-hall1-a", stale, NOW_NS)
    assert outcome.samples == []
    assert outcome.offline == []
    data = payload(2, Metric(alias=3, int_value=65))
    assert host.handle("spBv1.0/bms/DDATA/gw-hall1-a/crah-01", data, NOW_NS).samples


def test_ddeath_takes_one_device_offline(host: SparkplugHost) -> None:
    born(host)
    outcome = host.handle("spBv1.0/bms/DDEATH/gw-hall1-a/crah-01", payload(2), NOW_NS)
    (event,) = outcome.samples
    assert (event.measurement, event.tags["device"]) == ("mqtt_device_event", "crah-01")
    assert dict(event.fields) == {"event": "offline", "message": "DDEATH"}
    assert outcome.offline == ["crah-01"]


def test_unmapped_devices_give_events_but_no_telemetry(host: SparkplugHost) -> None:
    host.handle("spBv1.0/bms/NBIRTH/gw-hall1-a", nbirth(0), NOW_NS)
    outcome = host.handle("spBv1.0/bms/DBIRTH/gw-hall1-a/ups-9", dbirth(1), NOW_NS)
    (event,) = outcome.samples
    assert (event.measurement, event.tags["device"]) == ("mqtt_device_event", "ups-9")
    assert outcome.heard == []


def test_commands_and_state_are_not_telemetry(host: SparkplugHost) -> None:
    for topic in ("spBv1.0/bms/NCMD/gw-hall1-a", "spBv1.0/STATE/other-host"):
        outcome = host.handle(topic, rebirth_request(T_MS), NOW_NS)
        assert outcome.samples == []
        assert outcome.problem is None


def test_state_payload_is_the_sparkplug_3_json() -> None:
    assert json.loads(state_payload(True, T_MS)) == {"online": True, "timestamp": T_MS}
    assert parse_state(state_payload(False, T_MS)) == (False, T_MS)
    assert parse_state(b"OFFLINE") is None  # Sparkplug 2.2's plain text


def test_the_subscriber_counts_sparkplug_problems_against_topic_and_device() -> None:
    config = MqttDevicesConfig(sparkplug=SETTINGS, max_payload_bytes=256)
    emitted: list[Sample] = []
    subscriber = DeviceSubscriber(config, "qiyang-a1", "a1-agent", lambda _, s: emitted.extend(s))
    subscriber.handle("spBv1.0/bms/NBIRTH/gw-hall1-a", nbirth(0), NOW_NS)
    subscriber.handle("spBv1.0/bms/DBIRTH/gw-hall1-a/crah-01", dbirth(1), NOW_NS)
    topic = "spBv1.0/bms/DDATA/gw-hall1-a/crah-01"
    unknown = payload(2, Metric(alias=99, int_value=1), Metric(alias=3, int_value=66))
    assert subscriber.handle(topic, unknown, NOW_NS) == "spBv1.0/bms/NCMD/gw-hall1-a"
    assert subscriber.handle(topic, b"\x00" * 300, NOW_NS) is None  # over max_payload_bytes
    assert subscriber.bad_payloads.per_topic == {topic: 2}
    assert subscriber.oversized == 1
    assert emitted[-1].fields == {"fan_speed_pct": 66.0}
    health = {s.tags.get("device"): s.fields for s in subscriber.health_samples(0)}
    assert health["crah-01"]["bad_payloads_total"] == 1  # the oversized one names no device
    assert health["crah-01"]["online"] is True
    assert health[None]["rebirth_requests_total"] == 1
