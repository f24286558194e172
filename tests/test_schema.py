"""A field keeps its type and unit forever: every producer, every dashboard query and
docs/schema.md held against telemetry/schema.yaml.

Producers are checked on what they really write where that is cheap (SNMP devices polled from
the shared recordings, the NVML source on a real H100 capture, npu-smi recordings, roll-ups,
health, alert history), and on their configuration where a message would be needed (MQTT and
Sparkplug mappings: a mapping's field type decides the value's type).
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from agent.accelerators.npu_smi import DETAIL_KEYS, SUMMARY_FIELDS, detail_fields, parse_summary
from agent.accelerators.nvml import (
    ECC_COUNTERS,
    FIELD_VALUES,
    READINGS,
    THROTTLE_REASONS,
    NvmlSource,
)
from agent.accelerators.nvml_events import NvmlEvents
from agent.config import AgentConfig
from agent.mqtt_devices.config import FieldSpec as MqttFieldSpec
from agent.mqtt_devices.config import SparkplugMapping, Subscription
from agent.mqtt_devices.units import UNITS
from agent.registry import builtin_profiles, with_includes
from agent.service import Agent
from agent.snmp import DeviceError, SnmpDevice, SnmpTarget
from collector.alerting.alert import Alert
from collector.alerting.evaluator import Transition
from collector.alerting.history import history_sample
from collector.alerting.rules import RuleFile
from collector.config import CollectorConfig, RollupSettings
from collector.inventory import Inventory
from collector.rollup import Rollup
from collector.service import Collector
from rackwatch import demo, demo_mqtt_devices
from rackwatch.localservices import Running
from telemetry import config
from telemetry import schema as schema_module
from telemetry.config import ConfigError
from telemetry.lineproto import encode, parse_lines
from telemetry.sample import Sample
from telemetry.schema import FieldType, Schema, load_schema, markdown, schema
from tests.conftest import RECORDINGS
from tests.nvml_fake import FakeNvml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
HOST = {"host": "gpu-node-7", "site": "hub", "room": "hall-1", "row": "B", "rack": "B12"}


def problems_of(samples: list[Sample], extra_tags: tuple[str, ...] = ()) -> list[str]:
    return sorted({p for s in samples for p in schema().sample_problems(s, extra_tags)})


# --- the file itself -------------------------------------------------------------------------


PUBLISHED = DATA / "schema-published.csv"


def published() -> dict[str, tuple[str, str]]:
    rows = [r for r in PUBLISHED.read_text(encoding="utf-8").splitlines() if not r.startswith("#")]
    return {name: (kind, unit) for name, kind, unit in csv.reader(rows[1:])}


def test_a_published_field_keeps_its_type_and_unit_forever() -> None:
    """Dashboards, rules and stored data depend on them: a new meaning is a new field."""
    changed = [
        f"{name}: published as {kind} in {unit!r}"
        for name, (kind, unit) in published().items()
        if (now := schema().fields.get(name)) is None or (now.type, now.unit) != (kind, unit)
    ]
    assert not changed, "add a new field instead:\n" + "\n".join(changed)


def test_every_schema_field_is_published() -> None:
    new = [f"{n},{f.type},{f.unit}" for n, f in schema().fields.items() if n not in published()]
    assert not new, f"append to {PUBLISHED.relative_to(ROOT)}:\n" + "\n".join(new)


def test_a_field_whose_type_contradicts_its_unit_suffix_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    text = (ROOT / "telemetry" / "schema.yaml").read_text(encoding="utf-8")
    broken = text.replace(
        "  rack_inlet_c: {type: float, unit: °C,", "  rack_inlet_c: {type: int, unit: °F,"
    )
    assert broken != text
    path = tmp_path / "schema.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_schema(path)
    line = next(i for i, row in enumerate(broken.splitlines(), 1) if "rack_inlet_c:" in row)
    assert f"schema.yaml:{line}: fields.rack_inlet_c: a _c field is float in '°C'" in str(error)


def test_a_measurement_naming_an_undefined_field_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "telemetry" / "schema.yaml").read_text(encoding="utf-8")
    path = tmp_path / "schema.yaml"
    fields = text.replace("[speed_pct, speed_rpm", "[speed_pct, speed_rpm, speed_mph", 1)
    assert fields != text  # cooling_fan's list, whatever follows in it
    path.write_text(fields, encoding="utf-8")
    with pytest.raises(ConfigError, match="'speed_mph' is not under fields:"):
        load_schema(path)


def test_a_sample_is_judged_by_type_not_by_python_accident() -> None:
    ok = Sample("pdu", {"site": "s", "device": "p", "feed": "A"}, {"power_w": 1.0}, 0)
    assert schema().sample_problems(ok) == []
    wrong = Sample("pdu", {"device": "p", "colour": "red"}, {"power_w": 1, "load_state": True}, 0)
    assert schema().sample_problems(wrong) == [
        "pdu.power_w is float in the schema, not int",
        "pdu.load_state is string in the schema, not bool",
        "pdu: tag 'colour' is not in the schema",
    ]
    assert schema().sample_problems(Sample("pdus", {}, {"x": 1.0}, 0)) == [
        "measurement 'pdus' is not in the schema"
    ]


def test_the_mqtt_unit_conversions_cover_schema_suffixes_only() -> None:
    assert set(UNITS) <= set(schema().suffixes)


# --- SNMP profiles -----------------------------------------------------------------------------

SNMP_TYPES: dict[str, FieldType] = {
    "gauge": "float",
    "integer": "int",
    "enum": "string",
    "string": "string",
    "bool": "bool",
}


def snmp_type(spec: Any) -> FieldType:
    """The type a profile's field spec writes: a counter stays an integer unless scaled."""
    kind = getattr(spec, "type", "gauge")
    if kind == "counter":
        scaled = getattr(spec, "scale", 1) != 1 or getattr(spec, "scale_from", None) is not None
        return "float" if scaled else "int"
    return SNMP_TYPES[kind]


def profile_fields(node: object, measurement: str | None = None) -> Iterator[tuple[str, str, Any]]:
    """(measurement, field, spec) for every field a loaded profile can write, wherever the
    profile language keeps them: under any part with a `measurement`, a map of field names to
    specs (a `type` each) or a pivot's keys (`fields_of(key)`), at any depth."""
    if isinstance(node, BaseModel):
        measurement = getattr(node, "measurement", None) or measurement
        fields_of, keys = getattr(node, "fields_of", None), getattr(node, "keys", None)
        if measurement and callable(fields_of) and isinstance(keys, Mapping):  # a pivot
            for key, chosen in keys.items():
                own = getattr(chosen, "measurement", None) or measurement  # a key's own
                for field, spec in fields_of(key).items():
                    yield own, field, spec
        for name in type(node).model_fields:
            yield from profile_fields(getattr(node, name), measurement)
    elif isinstance(node, Mapping):
        for key, value in node.items():
            if measurement and isinstance(key, str) and hasattr(value, "type"):
                yield measurement, key, value
            else:
                yield from profile_fields(value, measurement)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from profile_fields(item, measurement)


@pytest.mark.parametrize("name", sorted(builtin_profiles()))
def test_every_field_of_a_builtin_profile_is_a_schema_field_of_its_type(name: str) -> None:
    parts = with_includes(builtin_profiles()[name])  # its fragments too
    found = [field for part in parts for field in profile_fields(part)]
    assert found, "the profile writes fields"
    problems = {
        problem
        for measurement, field, spec in found
        if (problem := schema().field_problem(measurement, field, snmp_type(spec)))
    }
    problems |= {
        f"{measurement}.{field} is a counter in the profile but a {definition.kind} in the schema"
        for measurement, field, spec in found
        if getattr(spec, "type", None) == "counter"
        and (definition := schema().field(measurement, field)) is not None
        and definition.kind != "counter"
    }
    assert not problems, "\n".join(sorted(problems))


@pytest.mark.integration
async def test_every_sample_polled_from_the_shared_recordings_is_in_the_schema(
    snmpsim: Running,
) -> None:
    """What the agent really writes, whatever language the profiles are in."""
    polled, problems = [], set()
    for recording in sorted(p.stem for p in RECORDINGS.glob("*.snmprec")):
        device = SnmpDevice(recording, SnmpTarget(snmpsim.host, snmpsim.port, recording), {})
        try:
            samples = await device.collect()
        except DeviceError:
            continue  # nothing understands it: no samples to check
        polled.append(recording)
        problems |= {f"{recording}: {p}" for p in problems_of(samples)}
    assert len(polled) >= 13, polled
    assert not problems, "\n".join(sorted(problems))


# --- MQTT and Sparkplug mappings -----------------------------------------------------------

MQTT_TYPES: dict[str, FieldType] = {
    "gauge": "float",
    "counter": "int",
    "enum": "string",
    "string": "string",
    "bool": "bool",
}


def mapping_problems(measurement: str, fields: Mapping[str, MqttFieldSpec]) -> list[str]:
    return [
        problem
        for field, spec in fields.items()
        if (problem := schema().field_problem(measurement, field, MQTT_TYPES[spec.type]))
    ]


def mqtt_sections() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every `mqtt_devices:` section in configs/ and the demo's."""
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and "mqtt_devices" in document:
            yield str(path.relative_to(ROOT)), document["mqtt_devices"]
    broker = Running("mosquitto", "127.0.0.1", 1883, None, Path(), Path())  # type: ignore[arg-type]
    yield "rackwatch/demo_mqtt_devices.py", demo_mqtt_devices.agent_section(broker)


MQTT_SECTIONS = dict(mqtt_sections())


def test_the_example_configs_and_the_demo_map_mqtt_devices() -> None:
    assert "configs/agent-mqtt-devices.example.yaml" in MQTT_SECTIONS
    assert "rackwatch/demo_mqtt_devices.py" in MQTT_SECTIONS


@pytest.mark.parametrize("source", sorted(MQTT_SECTIONS))
def test_every_mqtt_and_sparkplug_mapping_writes_schema_fields_of_their_type(source: str) -> None:
    section = MQTT_SECTIONS[source]
    problems = []
    for raw in section.get("subscriptions", []):
        subscription = Subscription.model_validate(raw)
        if subscription.measurement is not None:  # line protocol names its own
            problems += mapping_problems(subscription.measurement, subscription.fields)
    for raw in (section.get("sparkplug") or {}).get("mappings", []):
        mapping = SparkplugMapping.model_validate(raw)
        problems += mapping_problems(mapping.measurement, mapping.metrics)
    assert not problems, "\n".join(problems)


# --- accelerators --------------------------------------------------------------------------


async def test_the_nvml_source_on_a_real_h100_capture_writes_schema_fields() -> None:
    fake = FakeNvml((DATA / "nvml" / "h100-nvidia-smi-q.txt").read_text(encoding="utf-8"))
    source = NvmlSource(HOST, nvml=fake, slow_interval_s=0.0, energy_interval_s=0.0)
    samples = await source.collect()
    fake.lose(1)
    samples += await source.collect()
    measurements = {s.measurement for s in samples}
    assert {"accelerator", "accelerator_host", "accelerator_event"} <= measurements
    assert problems_of(samples) == []


def test_our_own_h100_probe_output_is_in_the_schema() -> None:
    text = (DATA / "nvml" / "h100-single-probe.lp").read_text(encoding="utf-8")
    samples = parse_lines(text)
    assert samples
    assert problems_of(samples) == []


def test_every_name_in_the_accelerator_field_tables_is_an_accelerator_field() -> None:
    """Fields a GPU or driver we have no capture of may still give."""
    names = {f"throttle_{reason}" for reason in THROTTLE_REASONS.values()}
    names |= {name for name, *_ in READINGS} | set(FIELD_VALUES.values()) | set(ECC_COUNTERS)
    names |= set(SUMMARY_FIELDS) | set(DETAIL_KEYS)
    missing = sorted(n for n in names if schema().field("accelerator", n) is None)
    assert not missing


async def test_an_xid_event_is_in_the_schema() -> None:
    fake = FakeNvml((DATA / "nvml" / "h100-nvidia-smi-q.txt").read_text(encoding="utf-8"))
    received: asyncio.Queue[Sample] = asyncio.Queue()

    def emit(samples: list[Sample]) -> None:
        for one in samples:
            received.put_nowait(one)

    events = NvmlEvents(HOST, emit, nvml=fake, wait_ms=50)
    events.start()
    try:
        assert await asyncio.to_thread(fake.all_registered.wait, 10)
        fake.xid(0, 79)
        async with asyncio.timeout(10):
            sample = await received.get()
    finally:
        await events.stop()
    assert sample.fields["xid"] == 79
    assert problems_of([sample]) == []


@pytest.mark.parametrize("name", sorted(p.name for p in (DATA / "npu_smi").glob("*.txt")))
def test_every_npu_smi_recording_gives_schema_fields(name: str) -> None:
    text = (DATA / "npu_smi" / name).read_text(encoding="utf-8")
    if name.startswith("info_"):
        readings = [chip.fields for chip in parse_summary(text)]
    elif name.startswith("board_"):
        pytest.skip("the board output gives a tag (uuid), no field")
    else:
        details = detail_fields(text, [0]).values()
        readings = [{k: v for k, v in d.items() if v is not None} for d in details]
    tags = {**HOST, "vendor": "huawei", "model": "910B3", "uuid": "u", "index": "0", "chip": "0"}
    samples = [Sample("accelerator", tags, dict(fields), 0) for fields in readings]
    assert any(s.fields for s in samples)
    assert problems_of(samples) == []


# --- roll-ups, health, alerts --------------------------------------------------------------

NOW = 1_800_000_000 * 10**9
RACK = {"site": "hub", "room": "hall-1", "row": "A", "rack": "A01"}


def test_every_rollup_measurement_is_in_the_schema() -> None:
    inventory = Inventory.model_validate(
        {
            "racks": [
                {
                    **RACK,
                    "feeds": {
                        "A": {"rated_a": 32, "voltage_v": 230},
                        "B": {"rated_a": 32, "voltage_v": 230},
                    },
                }
            ],
            "sites": {
                "hub": {
                    "facility": [
                        {"measurement": "ups", "field": "output_power_w", "tags": {"device": "u"}}
                    ]
                }
            },
        }
    )
    rollup = Rollup(inventory, RollupSettings(inventory=Path("unused.yaml")))
    lines = [
        Sample("pdu", {**RACK, "device": "pa", "feed": "A"}, {"power_w": 1000.0}, NOW),
        Sample("pdu", {**RACK, "device": "pb", "feed": "B"}, {"power_w": 900.0}, NOW),
        Sample("accelerator_host", {**RACK, "host": "h"}, {"power_w": 700.0}, NOW),
        Sample("ups", {**RACK, "device": "u"}, {"output_power_w": 2500.0}, NOW),
    ]
    rollup.observe([encode(s).encode() for s in lines])
    samples = rollup.compute(NOW)
    assert {s.measurement for s in samples} >= {
        "feed_power",
        "rack_power",
        "row_power",
        "room_power",
        "site_power",
        "pue",
    }
    assert problems_of(samples) == []


def test_the_agents_health_is_in_the_schema(tmp_path: Path) -> None:
    broker = Running("mosquitto", "127.0.0.1", 1883, None, Path(), Path())  # type: ignore[arg-type]
    config = AgentConfig.model_validate(
        {
            "agent": {"name": "a1", "site": "hub"},
            "mqtt": {"spool_dir": str(tmp_path / "spool")},
            "credentials": {"default": {"community": "public"}},
            "devices": [{"name": "pdu-1", "address": "192.0.2.1", "rack": "A01"}],
            "mqtt_devices": demo_mqtt_devices.agent_section(broker),
        }
    )
    samples = Agent(config).health_samples()
    assert {s.measurement for s in samples} == {"rackwatch_agent", "rackwatch_mqtt_device"}
    assert problems_of(samples) == []


def test_the_collectors_health_is_in_the_schema(tmp_path: Path) -> None:
    config = CollectorConfig.model_validate(
        {
            "dead_letter_path": str(tmp_path / "dead.jsonl"),
            "spool": {"directory": str(tmp_path / "spool")},
            "rollup": {"inventory": str(ROOT / "configs" / "inventory.example.yaml")},
            "alerting": {
                "rules_file": str(ROOT / "configs" / "alert-rules.yaml"),
                "state_path": str(tmp_path / "alerts.json"),
                "receivers": [{"name": "noc", "kind": "webhook", "url": "http://127.0.0.1:9/"}],
                "route": {"receiver": "noc"},
            },
        }
    )
    samples = Collector(config).health_samples()
    assert any("rollup_points_total" in s.fields for s in samples)
    assert any("alerts_firing" in s.fields for s in samples)
    assert problems_of(samples) == []


@pytest.mark.parametrize("value", [2.5, 3, True, None, "text"])
def test_alert_history_is_in_the_schema(value: object) -> None:
    labels = {"alertname": "PduPhaseCurrentHigh", "severity": "warning", "rack": "A01"}
    alert = Alert("f", "r", labels, "firing", active_since=1.8e9)
    alert.value = value  # type: ignore[assignment]
    samples = [
        history_sample(Transition(alert, "firing", "resolved", 1.8e9, "summary", "cleared")),
        history_sample(Transition(alert, "pending", "firing", 1.8e9, "summary")),
    ]
    assert problems_of(samples) == []


# --- readers: dashboards and the demo ------------------------------------------------------

_FROM = re.compile(r'\bFROM\s+(?:"[^"]+"\.)?(?:"(?P<name>[^"]+)"|(?P<regex>/[^/]+/))')
_FIELD = re.compile(r'\w+\(\s*(?:"(?P<name>[^"]+)"|/(?P<regex>[^/]+)/)')
# a GROUP BY ends at fill(), a subquery's closing bracket, or the outer query's next clause
_TAG = re.compile(
    r'"(?P<tag>[^"]+)"\s*=~|GROUP BY (?P<group>.*?)(?= fill\(|\)| WHERE | LIMIT | ORDER |$)'
)
_KEY = re.compile(r'WITH KEY = "(?P<key>[^"]+)"')
_ALIAS = re.compile(r'\bAS\s+"([^"]+)"')
_SELF_ALIAS = re.compile(r'\("([^"]+)"\)\s+AS\s+"\1"')


def queries(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "query" and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def measurements_of(found: re.Match[str]) -> list[str]:
    if found["name"]:
        return [found["name"]]
    pattern = re.compile(found["regex"].strip("/"))
    return [m for m in schema().measurements if pattern.search(m)]


def query_problems(query: str) -> list[str]:
    """Fields and tags a query reads that its measurement does not have."""
    source = _FROM.search(query)
    if source is None:
        return []  # SHOW TAG VALUES of every measurement
    measurements = measurements_of(source)
    if not measurements:
        return [f"{query}: no schema measurement matches {source[0]}"]
    found = []
    # names a subquery gives its columns (`FROM (SELECT last("x") AS "y" ...)`) are read outside it
    # (a column named as its own field licenses nothing: `last("typo") AS "typo"` is still a typo)
    aliases = set(_ALIAS.findall(query)) - set(_SELF_ALIAS.findall(query))
    readable = {f for m in measurements for f in schema().measurements[m].fields} | aliases
    select = query[: source.start()]
    for field in _FIELD.finditer(select):
        if field["name"] and field["name"] not in readable:
            found.append(f"{query}: no field {field['name']!r} in {measurements}")
        if field["regex"] and not any(re.search(field["regex"], f) for f in readable):
            found.append(f"{query}: no field matches /{field['regex']}/")
    if any(schema().measurements[m].open_tags for m in measurements):
        return found
    tags = (
        {t for m in measurements for t in schema().tags_of(m)} | set(schema().site_tags) | aliases
    )
    read = [m["tag"] for m in _TAG.finditer(query) if m["tag"]]
    read += [t for m in _TAG.finditer(query) if m["group"] for t in re.findall(r'"(\w+)"', m[0])]
    read += [m["key"] for m in _KEY.finditer(query)]
    found += [f"{query}: no tag {tag!r} in {measurements}" for tag in read if tag not in tags]
    return found


DASHBOARDS = sorted((ROOT / "dashboards" / "json").glob("*.json"))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_dashboard_query_reads_schema_fields_and_tags(path: Path) -> None:
    found = list(queries(json.loads(path.read_text(encoding="utf-8"))))
    assert any(q.startswith("SELECT") for q in found)
    problems = [p for q in found for p in query_problems(q)]
    assert not problems, "\n".join(problems)


def test_the_query_check_sees_a_misspelt_field_and_tag() -> None:
    bad = 'SELECT mean("power_kw") FROM "pdu" WHERE "rack" =~ /^$rack$/ GROUP BY "phase"'
    assert query_problems(bad) == [
        f"{bad}: no field 'power_kw' in ['pdu']",
        f"{bad}: no tag 'phase' in ['pdu']",
    ]


def test_every_default_alert_rule_reads_schema_fields() -> None:
    rules = config.load(ROOT / "configs" / "alert-rules.yaml", RuleFile).rules
    problems = []
    for rule in rules:
        fields = [rule.field, rule.relative_to_field, *rule.label_fields, *rule.summary_fields]
        problems += [
            f"{rule.alert}: {rule.measurement}.{field}"
            for field in fields
            if field is not None and schema().field(rule.measurement, field) is None
        ]
        tags = [*rule.absent.by] if rule.absent is not None else []
        tags += [rule.relative_to_tag] if rule.relative_to_tag else []
        known = {*schema().tags_of(rule.measurement), *schema().site_tags}
        problems += [
            f"{rule.alert}: tag {tag} of {rule.measurement}" for tag in tags if tag not in known
        ]
    assert not problems, problems


def test_the_demo_live_view_reads_schema_fields() -> None:
    """Each column of `rackwatch demo`'s table names its field (and maybe its measurements)."""
    problems, read = [], 0
    for kind, columns in demo.LATEST:
        for column in columns:
            measurements = [m for part in column if isinstance(part, tuple) for m in part]
            fields = [p for p in column if isinstance(p, str) and re.fullmatch("[a-z0-9_]+", p)]
            for measurement in measurements or [kind]:
                read += len(fields)
                problems += [
                    f"{measurement}.{field}"
                    for field in fields
                    if schema().field(measurement, field) is None
                ]
    assert read
    assert not problems, problems


# --- docs/schema.md ------------------------------------------------------------------------

DOCS = ROOT / "docs" / "schema.md"


def test_the_field_reference_in_the_docs_is_generated_from_the_schema() -> None:
    document = DOCS.read_text(encoding="utf-8")
    start = document.index(schema_module.DOCS_BEGIN)
    end = document.index(schema_module.DOCS_END) + len(schema_module.DOCS_END) + 1
    assert document[start:end] == markdown(schema()), (
        "run: python -m telemetry.schema --write-docs docs/schema.md"
    )


def test_every_measurement_and_field_the_docs_name_is_in_the_schema() -> None:
    document = DOCS.read_text(encoding="utf-8")
    prose = document[: document.index(schema_module.DOCS_BEGIN)]
    problems = [
        f"heading names {name!r}"
        for name in re.findall(r"^#+ .*?`([a-z_]+)`", prose, re.MULTILINE)
        if name not in schema().measurements
    ]
    problems += [
        f"`{measurement}.{field}`"
        for measurement, field in re.findall(r"`([a-z_]+)\.([a-z0-9_]+)`", prose)
        if measurement in schema().measurements and schema().field(measurement, field) is None
    ]
    assert not problems, problems


def test_the_shipped_schema_is_the_one_loaded() -> None:
    assert isinstance(schema(), Schema)
    assert schema() == load_schema(ROOT / "telemetry" / "schema.yaml")
