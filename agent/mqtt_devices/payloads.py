"""Turns one message of a subscription (JSON, a plain number, line protocol) into samples.

Tags come from the agent's site, the topic's named levels, the subscription's `tags:` and its
per-device tags, in that order (later wins), so a CRAH over MQTT carries the same tags as one
polled over SNMP. A message that cannot be used raises BadPayload with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from agent.mapping import Counters
from agent.mqtt_devices.config import Subscription, TimestampSpec
from agent.mqtt_devices.fields import BadPayload, field_value
from agent.mqtt_devices.topics import TopicPattern, render
from telemetry.lineproto import LineProtocolError, parse_line
from telemetry.sample import FieldValue, Sample
from telemetry.schema import schema, value_type

_INDEX = re.compile(r"\[(\d+)\]")
_UNIX_SCALE_NS = {"unix_s": 10**9, "unix_ms": 10**6, "unix_us": 10**3, "unix_ns": 1}
# A device timestamp outside these years is a unit mix-up (ms read as s), not a real reading.
_EARLIEST_NS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 10**9
_LATEST_NS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()) * 10**9


class SubscriptionDecoder:
    def __init__(self, subscription: Subscription, site: str) -> None:
        self.subscription = subscription
        self.pattern = TopicPattern.parse(subscription.topic)
        self.site = site
        self._device = subscription.device_template()
        self._paths = {field: _split_path(spec.path) for field, spec in subscription.fields.items()}
        self.counters = Counters()  # counter fields, kept monotonic as a polled device's

    def device_name(self, captures: Mapping[str, str]) -> str | None:
        return render(self._device, dict(captures)) if self._device else None

    def tags(self, captures: Mapping[str, str], device: str | None) -> dict[str, str]:
        values = dict(captures)
        tags = {"site": self.site}
        tags |= {name: value for name, value in captures.items() if name != "field"}
        tags |= {key: render(template, values) for key, template in self.subscription.tags.items()}
        if device is not None:
            tags |= self.subscription.devices.get(device, {})
            tags["device"] = device
        return {key: value for key, value in tags.items() if value}

    def decode(self, captures: Mapping[str, str], payload: bytes, now_ns: int) -> list[Sample]:
        """The message's samples; [] for a `{field}` level no field maps (not ours to read)."""
        device = self.device_name(captures)
        tags = self.tags(captures, device)
        if self.subscription.format == "line_protocol":
            return _line_protocol(payload, tags, now_ns)
        assert self.subscription.measurement is not None  # checked at config load
        if self.subscription.records is not None:
            return self._records(captures, _json_document(payload), now_ns)
        if self.subscription.format == "number":
            fields = self._number(captures, payload, tags)
            time_ns = now_ns
        else:
            document = _json_document(payload)
            if not isinstance(document, dict):
                raise BadPayload(f"expected a JSON object, got {type(document).__name__}")
            fields, time_ns = self._read(document, tags, now_ns)
        if not fields:
            return []
        return [Sample(self.subscription.measurement, tags, fields, time_ns)]

    def _records(self, captures: Mapping[str, str], document: object, now_ns: int) -> list[Sample]:
        """One sample per record; a record that cannot be read costs only itself."""
        spec = self.subscription.records
        assert spec is not None
        assert self.subscription.measurement is not None
        found, records = _lookup(document, _split_path(spec.path))
        if not found or not isinstance(records, list):
            raise BadPayload(f"records: expected a list at {spec.path or 'the top'!r}")
        samples, problems = [], []
        for i, record in enumerate(records):
            try:
                if not isinstance(record, dict):
                    raise BadPayload(f"expected an object, got {type(record).__name__}")
                named, device = _lookup(record, _split_path(spec.device))
                if not named or not isinstance(device, str | int) or device == "":
                    raise BadPayload(f"no device name at {spec.device!r}")
                tags = self.tags(captures, str(device))
                fields, time_ns = self._read(record, tags, now_ns)
            except BadPayload as exc:
                problems.append(f"record {i}: {exc}")
                continue
            if fields:
                samples.append(Sample(self.subscription.measurement, tags, fields, time_ns))
        if problems:  # the good records are kept; the bad ones are reported
            raise BadPayload("; ".join(problems[:3]), kept=samples)
        return samples

    def _number(
        self, captures: Mapping[str, str], payload: bytes, tags: Mapping[str, str]
    ) -> dict[str, FieldValue]:
        level = captures.get("field", "")
        for field, spec in self.subscription.fields.items():
            if spec.path == level:
                raw = _text(payload).strip()
                value = field_value(field, spec, raw, self.counters, self._key(tags, field))
                return {} if value is None else {field: value}
        return {}

    def _key(self, tags: Mapping[str, str], field: str) -> tuple[object, ...]:
        """A counter's series: the sample's measurement, tags and field."""
        return (self.subscription.measurement, tuple(sorted(tags.items())), field)

    def _read(
        self, document: dict[str, object], tags: Mapping[str, str], now_ns: int
    ) -> tuple[dict[str, FieldValue], int]:
        """The mapped fields of one JSON object, and its time."""
        fields: dict[str, FieldValue] = {}
        present = 0
        for field, spec in self.subscription.fields.items():
            found, raw = _lookup(document, self._paths[field])
            if not found:
                continue
            present += 1
            value = field_value(field, spec, raw, self.counters, self._key(tags, field))
            if value is not None:
                fields[field] = value
        if not present:
            raise BadPayload("none of the mapped fields is in the message")
        time_ns = now_ns
        if self.subscription.timestamp is not None:
            time_ns = _timestamp(document, self.subscription.timestamp, now_ns)
        return fields, time_ns


def _json_document(payload: bytes) -> object:
    try:
        return json.loads(payload.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise BadPayload(f"invalid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise BadPayload(f"invalid JSON: {exc}") from None


def _line_protocol(payload: bytes, tags: dict[str, str], now_ns: int) -> list[Sample]:
    """Every good line; a bad one is reported after the good ones are kept."""
    samples = []
    problem = None
    for number, line in enumerate(payload.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip() or line.startswith(b"#"):
            continue
        try:
            sample = parse_line(line, default_time_ns=now_ns)
            fields = _schema_fields(sample)
        except (LineProtocolError, BadPayload) as exc:
            problem = problem or f"line {number}: {exc}"
            continue
        samples.append(Sample(sample.measurement, tags | dict(sample.tags), fields, sample.time_ns))
    if problem is not None:
        raise BadPayload(problem, samples)
    return samples


def _schema_fields(sample: Sample) -> dict[str, FieldValue]:
    """A line's fields as the schema types them: a gateway's `21i` for a float field is 21.0;
    a field the measurement does not have, or of another type, makes the line a bad one."""
    fields = dict(sample.fields)
    for name, value in sample.fields.items():
        kind = value_type(value)
        definition = schema().field(sample.measurement, name)
        if definition is not None and definition.type == "float" and kind == "int":
            fields[name] = float(value)
            continue
        problem = schema().field_problem(sample.measurement, name, kind)
        if problem:
            raise BadPayload(f"{problem} (docs/schema.md)")
    return fields


def _split_path(path: str) -> tuple[str | int, ...]:
    """`fans[0].speed` or `fans.0.speed` -> ("fans", 0, "speed")."""
    parts: list[str | int] = []
    for part in _INDEX.sub(r".\1", path).split("."):
        if part:
            parts.append(int(part) if part.isdigit() else part)
    return tuple(parts)


def _lookup(document: object, path: tuple[str | int, ...]) -> tuple[bool, object]:
    node = document
    for part in path:
        if isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False, None
    return True, node


def _timestamp(document: dict[str, object], spec: TimestampSpec, now_ns: int) -> int:
    found, raw = _lookup(document, _split_path(spec.path))
    if not found or raw is None:
        return now_ns
    if spec.format == "iso8601":
        if not isinstance(raw, str):
            raise BadPayload(f"timestamp {spec.path}: expected ISO 8601 text, got {raw!r}")
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise BadPayload(f"timestamp {spec.path}: {raw[:40]!r} is not ISO 8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # documented: a time without offset is UTC
        time_ns = int(parsed.timestamp() * 10**6) * 10**3
    else:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise BadPayload(f"timestamp {spec.path}: expected a number, got {raw!r}")
        try:
            value = float(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise BadPayload(f"timestamp {spec.path}: expected a number, got {raw!r}") from None
        scale = _UNIX_SCALE_NS[spec.format]
        time_ns = value * scale if isinstance(value, int) else round(value * scale)
    if not _EARLIEST_NS <= time_ns < _LATEST_NS:
        raise BadPayload(
            f"timestamp {spec.path}: {raw!r} is not between 2000 and 2100 as {spec.format}"
        )
    return time_ns


def _text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError as exc:
        raise BadPayload(f"invalid UTF-8 at byte {exc.start}") from None
