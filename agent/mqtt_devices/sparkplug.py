"""Sparkplug B (Eclipse Sparkplug 3.0) as a host application: births, data, deaths, rebirths.

Per edge node it keeps what the last NBIRTH and the DBIRTHs defined (metric names, aliases,
data types), the node's bdSeq and the next expected `seq` (0-255, wrapping). DATA messages are
decoded through those definitions. A sequence gap, an unknown alias, or data from a node whose
birth we never saw is answered with a rebirth request (NCMD `Node Control/Rebirth`), at most one
per node per `rebirth_interval_s`. NDEATH (whose bdSeq must match the birth's, else it is an old
session's will) and DDEATH become `mqtt_device_event` samples marking the device offline.

This module does no I/O: `handle` returns what to emit and what to publish, so the subscriber
stays a thin loop and every rule here is tested without a broker.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from agent.mapping import Counters
from agent.mqtt_devices.config import SPARKPLUG_NAMESPACE, SparkplugMapping, SparkplugSettings
from agent.mqtt_devices.fields import BadPayload, field_value
from agent.mqtt_devices.sparkplug_b_pb2 import Payload
from agent.mqtt_devices.topics import render
from telemetry.sample import FieldValue, Sample

log = logging.getLogger(__name__)

REBIRTH_METRIC = "Node Control/Rebirth"
BD_SEQ_METRIC = "bdSeq"
EVENT_MEASUREMENT = "mqtt_device_event"

# Sparkplug data type codes (specification 3.0, section 6.4.16).
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15
TYPE_NAMES = {
    0: "Unknown", 1: "Int8", 2: "Int16", 3: "Int32", 4: "Int64", 5: "UInt8", 6: "UInt16",
    7: "UInt32", 8: "UInt64", 9: "Float", 10: "Double", 11: "Boolean", 12: "String",
    13: "DateTime", 14: "Text", 15: "UUID", 16: "DataSet", 17: "Bytes", 18: "File",
    19: "Template", 20: "PropertySet", 21: "PropertySetList",
}  # fmt: skip
# data type -> the value field that carries it, and the bit width of signed integers
_CARRIER = {
    INT8: "int_value", INT16: "int_value", INT32: "int_value", INT64: "long_value",
    UINT8: "int_value", UINT16: "int_value", UINT32: "int_value", UINT64: "long_value",
    FLOAT: "float_value", DOUBLE: "double_value", BOOLEAN: "boolean_value",
    STRING: "string_value", TEXT: "string_value", UUID: "string_value", DATETIME: "long_value",
}  # fmt: skip
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
_UNSIGNED_BITS = {UINT8: 8, UINT16: 16, UINT32: 32, UINT64: 64}


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    group: str
    kind: str  # NBIRTH, NDATA, NDEATH, NCMD, DBIRTH, DDATA, DDEATH, DCMD
    edge_node: str
    device: str | None

    @classmethod
    def parse(cls, topic: str) -> SparkplugTopic | None:
        parts = topic.split("/")
        if len(parts) not in (4, 5) or parts[0] != SPARKPLUG_NAMESPACE or parts[1] == "STATE":
            return None
        return cls(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else None)


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    datatype: int


@dataclass(slots=True)
class DeviceState:
    mapping: SparkplugMapping | None
    name: str  # the device tag
    tags: dict[str, str]
    names: dict[str, int] = field(default_factory=dict)  # metric name -> data type, from birth


@dataclass(slots=True)
class NodeState:
    bd_seq: int | None = None
    next_seq: int | None = None
    aliases: dict[int, Definition] = field(default_factory=dict)  # unique across the node
    node: DeviceState | None = None  # the node's own metrics
    devices: dict[str, DeviceState] = field(default_factory=dict)
    online: bool = False
    last_rebirth: float | None = None


@dataclass(slots=True)
class Outcome:
    samples: list[Sample] = field(default_factory=list)  # mapped metrics and events
    heard: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (device, tags)
    offline: list[str] = field(default_factory=list)  # device tags now offline
    rebirth_topic: str | None = None  # publish a rebirth request here
    problem: str | None = None  # a bad payload, counted against its topic
    culprit: tuple[str, dict[str, str]] | None = None  # the mapped device that sent it


class SparkplugHost:
    def __init__(
        self,
        settings: SparkplugSettings,
        site: str,
        agent: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.site = site
        self.agent = agent
        self.clock = clock
        self.nodes: dict[tuple[str, str], NodeState] = {}
        self.rebirth_requests = 0
        self.counters = Counters()  # counter metrics, kept monotonic as a polled device's

    def filters(self) -> list[str]:
        return [f"{SPARKPLUG_NAMESPACE}/{group}/#" for group in self.settings.groups]

    def expected_devices(self) -> list[tuple[str, dict[str, str]]]:
        expected = []
        for mapping in self.settings.mappings:
            static = {key: value for key, value in mapping.tags.items() if "{" not in value}
            for name, tags in mapping.devices.items():
                expected.append((name, {"site": self.site} | static | tags | {"device": name}))
        return expected

    def handle(self, topic: str, payload: bytes, received_ns: int) -> Outcome:
        """What one message means; never raises for anything a gateway can send."""
        outcome = Outcome()
        where = SparkplugTopic.parse(topic)
        if where is None or where.kind in ("NCMD", "DCMD"):
            return outcome  # commands (ours included) and foreign topics carry no telemetry
        try:
            message = Payload.FromString(payload)
        except DecodeError as exc:
            outcome.problem = f"not a Sparkplug B payload: {exc}"
            return outcome
        key = (where.group, where.edge_node)
        node = self.nodes.get(key)
        try:
            if where.kind == "NBIRTH":
                self._node_birth(where, message, received_ns, outcome)
            elif where.kind == "NDEATH":
                self._node_death(where, node, message, received_ns, outcome)
            elif node is None or not node.online:
                self._request_rebirth(where, node, outcome, "no NBIRTH seen from this edge node")
            else:
                self._check_seq(where, node, message, outcome)
                if where.kind == "DBIRTH":
                    self._device_birth(where, node, message, received_ns, outcome)
                elif where.kind == "DDEATH":
                    self._device_death(where, node, received_ns, outcome)
                elif where.kind in ("NDATA", "DDATA"):
                    self._data(where, node, message, received_ns, outcome)
        except BadPayload as exc:
            outcome.problem = str(exc)
        return outcome

    # -- births and deaths ---------------------------------------------------------------

    def _node_birth(
        self, where: SparkplugTopic, message: Payload, received_ns: int, outcome: Outcome
    ) -> None:
        seq = _seq(message)
        node = NodeState(online=True, next_seq=(seq + 1) % 256)
        previous = self.nodes.get((where.group, where.edge_node))
        if previous is not None:
            node.last_rebirth = previous.last_rebirth
        node.node = self._device_state(where, None)
        for metric in message.metrics:
            if metric.name == BD_SEQ_METRIC:
                node.bd_seq = _integer(metric)
        self.nodes[(where.group, where.edge_node)] = node
        self._define(node, node.node, message)
        self._event(where, node.node, "online", message, received_ns, outcome, node.bd_seq)
        self._emit_metrics(where, node, node.node, message, received_ns, outcome)

    def _device_birth(
        self,
        where: SparkplugTopic,
        node: NodeState,
        message: Payload,
        received_ns: int,
        outcome: Outcome,
    ) -> None:
        assert where.device is not None
        device = self._device_state(where, where.device)
        node.devices[where.device] = device
        self._define(node, device, message)
        self._event(where, device, "online", message, received_ns, outcome)
        self._emit_metrics(where, node, device, message, received_ns, outcome)

    def _node_death(
        self,
        where: SparkplugTopic,
        node: NodeState | None,
        message: Payload,
        received_ns: int,
        outcome: Outcome,
    ) -> None:
        if node is None or not node.online:
            return  # nothing of it is online; a retained or repeated will
        bd_seq = next((_integer(m) for m in message.metrics if m.name == BD_SEQ_METRIC), None)
        if node.bd_seq is not None and bd_seq is not None and bd_seq != node.bd_seq:
            log.info(
                "Sparkplug %s/%s: NDEATH with bdSeq %d is from an earlier session (now %d); "
                "ignored",
                where.group,
                where.edge_node,
                bd_seq,
                node.bd_seq,
            )
            return
        node.online = False
        for device_id, device in node.devices.items():
            gone = SparkplugTopic(where.group, "NDEATH", where.edge_node, device_id)
            self._event(gone, device, "offline", message, received_ns, outcome)
        assert node.node is not None
        self._event(where, node.node, "offline", message, received_ns, outcome, bd_seq)
        node.devices.clear()

    def _device_death(
        self, where: SparkplugTopic, node: NodeState, received_ns: int, outcome: Outcome
    ) -> None:
        assert where.device is not None
        device = node.devices.pop(where.device, None)
        if device is None:
            device = self._device_state(where, where.device)
        self._event(where, device, "offline", Payload(), received_ns, outcome)

    def _event(
        self,
        where: SparkplugTopic,
        device: DeviceState,
        event: str,
        message: Payload,
        received_ns: int,
        outcome: Outcome,
        bd_seq: int | None = None,
    ) -> None:
        tags = device.tags | {"agent": self.agent, "group": where.group}
        tags["edge_node"] = where.edge_node
        fields: dict[str, FieldValue] = {"event": event, "message": where.kind}
        if bd_seq is not None:
            fields["bd_seq"] = bd_seq
        time_ns = message.timestamp * 10**6 if message.HasField("timestamp") else received_ns
        outcome.samples.append(Sample(EVENT_MEASUREMENT, tags, fields, time_ns))
        if device.mapping is None:
            return
        if event == "offline":
            outcome.offline.append(device.name)
        else:
            outcome.heard.append((device.name, device.tags))

    # -- data ------------------------------------------------------------------------------

    def _data(
        self,
        where: SparkplugTopic,
        node: NodeState,
        message: Payload,
        received_ns: int,
        outcome: Outcome,
    ) -> None:
        if where.device is None:
            device = node.node
        else:
            device = node.devices.get(where.device)
            if device is None:
                self._request_rebirth(where, node, outcome, f"no DBIRTH seen for {where.device}")
                return
        assert device is not None
        self._emit_metrics(where, node, device, message, received_ns, outcome)

    def _check_seq(
        self, where: SparkplugTopic, node: NodeState, message: Payload, outcome: Outcome
    ) -> None:
        seq = _seq(message)
        expected = node.next_seq
        node.next_seq = (seq + 1) % 256
        if expected is not None and seq != expected:
            self._request_rebirth(where, node, outcome, f"seq {seq} where {expected} was due")

    def _request_rebirth(
        self, where: SparkplugTopic, node: NodeState | None, outcome: Outcome, why: str
    ) -> None:
        if node is None:
            node = self.nodes.setdefault((where.group, where.edge_node), NodeState())
        now = self.clock()
        if node.last_rebirth is not None and now - node.last_rebirth < (
            self.settings.rebirth_interval_s
        ):
            return
        node.last_rebirth = now
        self.rebirth_requests += 1
        log.info("Sparkplug %s/%s: %s; rebirth requested", where.group, where.edge_node, why)
        outcome.rebirth_topic = f"{SPARKPLUG_NAMESPACE}/{where.group}/NCMD/{where.edge_node}"

    # -- metrics ---------------------------------------------------------------------------

    def _define(self, node: NodeState, device: DeviceState, message: Payload) -> None:
        for metric in message.metrics:
            if not metric.HasField("name"):
                raise BadPayload("a birth metric without a name")
            device.names[metric.name] = metric.datatype
            if metric.HasField("alias"):
                node.aliases[metric.alias] = Definition(metric.name, metric.datatype)

    def _emit_metrics(
        self,
        where: SparkplugTopic,
        node: NodeState,
        device: DeviceState,
        message: Payload,
        received_ns: int,
        outcome: Outcome,
    ) -> None:
        """The mapped metrics as samples, one per timestamp. A metric that cannot be read is
        reported (the first one names the problem) without losing the others."""
        mapping = device.mapping
        wanted = {spec.metric: (f, spec) for f, spec in mapping.metrics.items()} if mapping else {}
        default_ns = message.timestamp * 10**6 if message.HasField("timestamp") else received_ns
        points: dict[int, dict[str, FieldValue]] = {}
        problems = []
        for metric in message.metrics:
            try:
                name, datatype = self._identify(where, node, device, metric, outcome)
                if name not in wanted:
                    continue
                field, spec = wanted[name]
                key = (mapping and mapping.measurement, tuple(sorted(device.tags.items())), field)
                raw = _metric_value(name, metric, datatype)
                value = field_value(field, spec, raw, self.counters, key)
            except BadPayload as exc:
                problems.append(str(exc))
                continue
            if value is not None:
                time_ns = metric.timestamp * 10**6 if metric.HasField("timestamp") else default_ns
                points.setdefault(time_ns, {})[field] = value
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            outcome.problem = problems[0] + more
        if mapping is None:
            return
        if problems:
            outcome.culprit = (device.name, device.tags)
        outcome.heard.append((device.name, device.tags))
        for time_ns, fields in sorted(points.items()):
            outcome.samples.append(Sample(mapping.measurement, device.tags, fields, time_ns))

    def _identify(
        self,
        where: SparkplugTopic,
        node: NodeState,
        device: DeviceState,
        metric: Payload.Metric,
        outcome: Outcome,
    ) -> tuple[str, int]:
        """A metric's name and data type, from itself or from the birth that defined its alias."""
        if metric.HasField("name"):
            datatype = metric.datatype if metric.HasField("datatype") else None
            return metric.name, datatype or device.names.get(metric.name, 0)
        if metric.HasField("alias") and metric.alias in node.aliases:
            definition = node.aliases[metric.alias]
            return definition.name, definition.datatype
        self._request_rebirth(where, node, outcome, f"unknown alias {metric.alias}")
        raise BadPayload(f"metric with unknown alias {metric.alias}")

    def _device_state(self, where: SparkplugTopic, device_id: str | None) -> DeviceState:
        ids = {"group": where.group, "edge_node": where.edge_node, "device": device_id or ""}
        mapping = next((m for m in self.settings.mappings if _matches(m, ids, device_id)), None)
        base = {"site": self.site}
        if mapping is None:
            name = device_id or where.edge_node
            return DeviceState(None, name, base | {"device": name})
        name = render(mapping.name_template(), ids)
        tags = base | {key: render(value, ids) for key, value in mapping.tags.items()}
        tags |= mapping.devices.get(name, {})
        tags["device"] = name
        return DeviceState(mapping, name, {k: v for k, v in tags.items() if v})


def rebirth_request(now_ms: int) -> bytes:
    """The NCMD payload asking an edge node to publish its births again."""
    metric = Payload.Metric(
        name=REBIRTH_METRIC, timestamp=now_ms, datatype=BOOLEAN, boolean_value=True
    )
    return Payload(timestamp=now_ms, metrics=[metric]).SerializeToString()


def state_topic(host_id: str) -> str:
    return f"{SPARKPLUG_NAMESPACE}/STATE/{host_id}"


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    """Sparkplug 3.0 primary host STATE: JSON, the birth reusing its will's timestamp."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}).encode()


def parse_state(payload: bytes) -> tuple[bool, int] | None:
    try:
        state = json.loads(payload)
        online, timestamp = state["online"], state["timestamp"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(online, bool) or not isinstance(timestamp, int):
        return None
    return online, timestamp


def _matches(mapping: SparkplugMapping, ids: dict[str, str], device_id: str | None) -> bool:
    if (mapping.level == "node") != (device_id is None):
        return False
    return all(
        fnmatch.fnmatchcase(ids[key], getattr(mapping, key))
        for key in ("group", "edge_node", *(("device",) if device_id is not None else ()))
    )


def _seq(message: Payload) -> int:
    if not message.HasField("seq"):
        raise BadPayload("no seq")
    if not 0 <= message.seq <= 255:
        raise BadPayload(f"seq {message.seq} is outside 0-255")
    return message.seq


def _integer(metric: Payload.Metric) -> int | None:
    kind = metric.WhichOneof("value")
    if kind == "long_value":
        return metric.long_value
    if kind == "int_value":
        return metric.int_value
    return None


def _metric_value(name: str, metric: Payload.Metric, datatype: int) -> object:
    """The metric's value as Python sees it; BadPayload when it does not fit its data type."""
    if metric.is_null:
        return None
    carrier = _CARRIER.get(datatype)
    type_name = TYPE_NAMES.get(datatype, str(datatype))
    if carrier is None:
        raise BadPayload(f"metric {name!r}: data type {type_name} cannot become a field")
    found = metric.WhichOneof("value")
    if found is None:
        return None
    if found != carrier:
        raise BadPayload(f"metric {name!r}: a {type_name} carried in {found}")
    value: object = getattr(metric, carrier)
    if isinstance(value, int) and datatype in _SIGNED_BITS:
        bits = _SIGNED_BITS[datatype]
        raw = value & ((1 << bits) - 1)  # two's complement, as the specification encodes
        return raw - (1 << bits) if raw >> (bits - 1) else raw
    if isinstance(value, int) and datatype in _UNSIGNED_BITS:
        return value & ((1 << _UNSIGNED_BITS[datatype]) - 1)
    return value
