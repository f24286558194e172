"""The agent's `mqtt_devices:` section: a broker, what to subscribe to, and how messages map.

Devices that publish instead of answering SNMP (cooling units, BMS gateways, Modbus bridges) land
in the same measurements, tags and fields as polled ones (docs/schema.md). Each subscription
names a topic pattern whose `{name}` levels become tags, a payload format, and for JSON and
plain numbers the measurement and which value becomes which field. Sparkplug B gateways are
mapped by group, edge node and device id instead. docs/mqtt-devices.md is the reference.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from agent.mqtt_devices.topics import TopicPattern, template_names
from agent.mqtt_devices.units import conversion, suffix_of
from agent.profile import FieldSpec as ProfileFieldSpec
from telemetry.config import KeyPath, StrictModel
from telemetry.mqtt import BrokerSettings
from telemetry.schema import FieldType as SchemaType
from telemetry.schema import schema

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
SPARKPLUG_NAMESPACE = "spBv1.0"

FieldType = Literal["gauge", "counter", "enum", "string", "bool"]
VALUE_TYPES: dict[FieldType, SchemaType] = {
    "gauge": "float",
    "counter": "int",
    "enum": "string",
    "string": "string",
    "bool": "bool",
}


def _schema_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r}: use lower-case letters, digits and _ (as docs/schema.md)")
    return value


class FieldSpec(StrictModel):
    """How one value becomes one field: the SNMP profiles' vocabulary and rules (agent/mapping.py).

    gauge: a float, `* scale`, then from `unit` into the field's unit; counter: an integer,
    kept monotonic across wraps at `counter_bits` and restarts, as a polled counter; enum: a
    state name from `enum`, by number (unknown numbers become `unknown_<n>`); string: as sent;
    bool: JSON true/false, 0/1, or the `true_values`. `absent`: whole numbers that mean "no
    reading" (-1 and -1.0 alike).
    """

    type: FieldType = "gauge"
    unit: str | None = None  # what the device sends, e.g. fahrenheit; see units.py
    scale: float = 1.0
    absent: list[int] = []  # values that mean "no reading" (sentinels such as -1)
    enum: dict[int, str] = {}
    true_values: list[str] = []
    counter_bits: Literal[32, 64] | None = None  # where a counter wraps (default 64)
    _rules: ProfileFieldSpec = PrivateAttr()

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if (self.type == "enum") != bool(self.enum):
            raise ValueError("type enum needs an enum map, and an enum map needs type enum")
        if self.true_values and self.type != "bool":
            raise ValueError("true_values are for type bool")
        if self.type != "gauge" and (self.unit is not None or self.scale != 1.0):
            raise ValueError("unit and scale are for type gauge (a counter stays an integer)")
        if self.scale == 0:
            raise ValueError("scale must not be zero")
        if self.counter_bits is not None and self.type != "counter":
            raise ValueError("counter_bits is for type counter")
        return self

    def model_post_init(self, context: object, /) -> None:
        # The same spec the SNMP profiles convert with (flags without true_values are JSON's).
        plain = self.type == "bool" and not self.true_values
        self._rules = ProfileFieldSpec(
            type="string" if plain else self.type,
            scale=self.scale,
            absent=tuple(self.absent),
            enum=self.enum,
            true_values=tuple(self.true_values),
            counter_bits=(self.counter_bits or 64) if self.type == "counter" else None,
        )

    @property
    def rules(self) -> ProfileFieldSpec:
        return self._rules

    @property
    def value_type(self) -> SchemaType:
        """The type of the values it writes."""
        return VALUE_TYPES[self.type]

    def problem_with(self, field: str) -> str | None:
        """Why this spec cannot fill the schema field `field`, if it cannot."""
        if not _NAME.match(field):
            return f"field {field!r}: use lower-case letters, digits and _ (as docs/schema.md)"
        if self.unit is not None:
            try:
                conversion(field, self.unit)
            except ValueError as exc:
                return str(exc)
        if self.type == "counter" and suffix_of(field) is not None:
            return f"{field!r} has a unit, so it is a gauge (float); counters end in _total"
        return None


class PayloadField(FieldSpec):
    # JSON: where the value is (`temperatures.supply`, `fans[0].speed`). Number: the text of the
    # topic's `{field}` level that carries this field (empty when the topic has no `{field}`).
    path: str = ""


class MetricField(FieldSpec):
    metric: str  # the Sparkplug metric name, e.g. "Cooling/Supply Air Temperature"


class TimestampSpec(StrictModel):
    path: str
    format: Literal["unix_s", "unix_ms", "unix_us", "unix_ns", "iso8601"] = "unix_s"


Tags = dict[str, str]


class RecordsSpec(StrictModel):
    """A JSON payload that carries a list of readings, one per device (a BMS gateway's batch):
    `path` is where the list is ("" for the whole payload), `device` the path, inside each
    record, of the device's name. Field and timestamp paths are then read inside each record."""

    path: str = ""
    device: str


class Subscription(StrictModel):
    topic: str
    format: Literal["json", "number", "line_protocol"]
    measurement: str | None = None  # json and number; line protocol names its own
    device: str | None = None  # device tag template, e.g. "crah-{room}-{unit}"; default {device}
    tags: Tags = {}  # more tags; values may use the topic's {names}
    devices: dict[str, Tags] = {}  # devices expected here (stale until heard), with their tags
    fields: dict[str, PayloadField] = {}  # schema field -> where its value comes from
    timestamp: TimestampSpec | None = None  # json: the reading's own time; else when received
    records: RecordsSpec | None = None  # json: a list of readings of several devices
    qos: Literal[0, 1, 2] = 1
    stale_after_s: float | None = Field(default=None, gt=0)

    @field_validator("topic")
    @classmethod
    def _pattern(cls, value: str) -> str:
        TopicPattern.parse(value)
        if value.split("/")[0] == SPARKPLUG_NAMESPACE:
            raise ValueError(f"{SPARKPLUG_NAMESPACE}/... topics belong under sparkplug:")
        return value

    _measurement = field_validator("measurement")(_schema_name)

    @property
    def pattern(self) -> TopicPattern:
        return TopicPattern.parse(self.topic)

    def device_template(self) -> str | None:
        if self.records is not None:
            return None  # each record names its device
        if self.device is not None:
            return self.device
        return "{device}" if "device" in self.pattern.names else None

    def problems(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        names = set(self.pattern.names)
        tag_names = names - {"field"}
        structured = self.format != "line_protocol"
        for key, value in (("measurement", self.measurement), ("timestamp", self.timestamp)):
            if value is not None and not structured:
                found.append(((key,), "line protocol carries its own; leave this out"))
        if self.fields and not structured:
            found.append((("fields",), "line protocol carries its own; leave this out"))
        if self.timestamp is not None and self.format == "number":
            found.append((("timestamp",), "a plain number carries no time; leave this out"))
        if structured:
            if self.measurement is None:
                found.append((("measurement",), f"format {self.format} needs a measurement"))
            if not self.fields:
                found.append((("fields",), f"format {self.format} needs at least one field"))
            if self.device_template() is None and self.records is None:
                found.append(
                    (("device",), "name the device: a {device} level in topic, or device:")
                )
        if self.records is not None and self.format != "json":
            found.append((("records",), "records are for format json"))
        if self.records is not None and self.device is not None:
            found.append((("device",), "with records, each record names its device"))
        if "field" in names and self.format != "number":
            found.append((("topic",), "{field} is for format number"))
        template = self.device_template()
        if template is not None:
            found += _unknown_names(("device",), template, tag_names)
        for tag, value in self.tags.items():
            found += _unknown_names(("tags", tag), value, tag_names)
        for field, spec in self.fields.items():
            problem = spec.problem_with(field) or _schema_problem(self.measurement, field, spec)
            if problem:
                found.append((("fields", field), problem))
            if self.format == "json" and not spec.path:
                found.append((("fields", field, "path"), "format json needs the value's path"))
            if self.format == "number":
                if "field" in names and not spec.path:
                    found.append(
                        (("fields", field, "path"), "the {field} level text that carries it")
                    )
                if "field" not in names and (spec.path or len(self.fields) > 1):
                    found.append(
                        (("fields", field), "without a {field} level, one field and no path")
                    )
        return found


class SparkplugMapping(StrictModel):
    """Which Sparkplug devices (or edge nodes) this maps, and how their metrics become fields."""

    level: Literal["device", "node"] = "device"  # node: the edge node's own metrics
    group: str = "*"  # glob patterns over the Sparkplug ids
    edge_node: str = "*"
    device: str = "*"
    measurement: str
    name: str | None = None  # device tag template; default "{device}" (node: "{edge_node}")
    tags: Tags = {}  # values may use {group}, {edge_node}, {device}
    devices: dict[str, Tags] = {}  # devices expected here (by device tag), with their tags
    metrics: dict[str, MetricField] = {}  # schema field -> Sparkplug metric

    _measurement = field_validator("measurement")(_schema_name)

    def name_template(self) -> str:
        if self.name is not None:
            return self.name
        return "{device}" if self.level == "device" else "{edge_node}"

    def problems(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        known = {"group", "edge_node"} | ({"device"} if self.level == "device" else set())
        found += _unknown_names(("name",), self.name_template(), known)
        for tag, value in self.tags.items():
            found += _unknown_names(("tags", tag), value, known)
        if self.level == "node" and self.device != "*":
            found.append((("device",), "level node maps the edge node's own metrics"))
        for field, spec in self.metrics.items():
            problem = spec.problem_with(field) or _schema_problem(self.measurement, field, spec)
            if problem:
                found.append((("metrics", field), problem))
        return found


class SparkplugSettings(StrictModel):
    groups: list[str] = ["+"]  # group ids to subscribe to; "+" is every group
    # With a host id the agent is a Sparkplug primary host application: it keeps a retained
    # STATE message on spBv1.0/STATE/<host_id>, which edge nodes wait for before publishing.
    host_id: str | None = None
    rebirth_interval_s: float = Field(default=30.0, gt=0)  # at most one rebirth per node per
    mappings: list[SparkplugMapping] = []  # the first mapping that matches a device is used

    @field_validator("groups")
    @classmethod
    def _groups(cls, groups: list[str]) -> list[str]:
        for group in groups:
            if group != "+" and any(c in group for c in "+#/"):
                raise ValueError(f"group {group!r}: an id or '+', no '/', '#'")
        return groups

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, host_id: str | None) -> str | None:
        if host_id is not None and (not host_id or any(c in host_id for c in "+#/")):
            raise ValueError(f"host_id {host_id!r}: no '/', '+' or '#'")
        return host_id


class MqttDevicesConfig(StrictModel):
    broker: BrokerSettings = BrokerSettings()
    client_id: str | None = None  # default rackwatch-devices-<agent name>
    max_payload_bytes: int = Field(default=256 * 1024, ge=64)  # larger messages are bad payloads
    stale_after_s: float = Field(default=300.0, gt=0)  # a device silent this long is stale
    # QoS 1 messages the broker may send before the agent has mapped them (MQTT v5 Receive
    # Maximum; 65,535 is the protocol's most). Without it Mosquitto sends 20 and queues the
    # rest, up to its max_queued_messages (1,000 by default), then drops what it already
    # acknowledged to the devices: a burst the agent fell behind on was lost. A site's broker
    # is not ours to configure, so the backlog waits in the agent (docs/mqtt-devices.md).
    receive_maximum: int = Field(default=65_535, ge=1, le=65_535)
    subscriptions: list[Subscription] = []
    sparkplug: SparkplugSettings | None = None

    def problems(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        for i, subscription in enumerate(self.subscriptions):
            found += [(("subscriptions", i, *key), m) for key, m in subscription.problems()]
        if self.sparkplug is not None:
            for i, mapping in enumerate(self.sparkplug.mappings):
                found += [(("sparkplug", "mappings", i, *key), m) for key, m in mapping.problems()]
        if not self.subscriptions and self.sparkplug is None:
            found.append(((), "subscribe to something: subscriptions: or sparkplug:"))
        return found


def _unknown_names(key: KeyPath, template: str, known: set[str]) -> list[tuple[KeyPath, str]]:
    return [
        (key, f"{{{name}}} is not a named level here; known: {', '.join(sorted(known)) or '-'}")
        for name in template_names(template)
        if name not in known
    ]


def _schema_problem(measurement: str | None, field: str, spec: FieldSpec) -> str | None:
    """Why the schema (telemetry/schema.yaml) has no such field, or not of this type."""
    if measurement is None:
        return None
    problem = schema().field_problem(measurement, field, spec.value_type)
    return f"{problem} (docs/schema.md)" if problem else None
