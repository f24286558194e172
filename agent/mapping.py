"""Turning raw SNMP values into samples, as a profile says: pure functions and counter state.

Nothing here does I/O, so every rule (scaling, sentinels, enums, row selection, counter wraps
and device reboots) is tested without a device.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.profile import FieldSpec, ScaleFrom, TableSpec, TagSpec, TemperatureUnit
from telemetry.sample import FieldValue, Sample

Value = None | str | bytes | int | float
Columns = Mapping[int, Value]


def text(value: Value) -> str:
    """An SNMP value as text; OCTET STRINGs that are not printable UTF-8 become hex (aa:bb:cc)."""
    if isinstance(value, bytes):
        try:
            decoded = value.decode("utf-8").strip("\x00 \t\r\n")
        except UnicodeDecodeError:
            return value.hex(":")
        return decoded if decoded.isprintable() else value.hex(":")
    return "" if value is None else str(value)


def index_parts(table: TableSpec, index: str) -> dict[str, str] | None:
    """Name the parts of a row index; the last name takes any remaining parts."""
    if not table.index:
        return {}
    parts = index.split(".")
    if len(parts) < len(table.index):
        return None
    named = dict(zip(table.index[:-1], parts, strict=False))
    named[table.index[-1]] = ".".join(parts[len(table.index) - 1 :])
    return named


def row_selected(table: TableSpec, parts: Mapping[str, str], columns: Columns) -> bool:
    for condition in table.where:
        if condition.index is not None:
            present = condition.index in parts
            value = parts.get(condition.index, "")
        else:
            present = condition.column in columns
            value = text(columns.get(condition.column or 0)).strip(".")
        if not present:
            if condition.missing == "keep":
                continue
            return False  # a row that cannot be classified is left out
        if (value in condition.texts()) == (condition.in_ is None):
            return False
    return True


Joined = Mapping[str, Value]
"""Values read this poll beyond the row itself, by OID: joined columns and scalars."""


def joined_index(index: str, parts: Mapping[str, str], join: tuple[str, ...]) -> str:
    return ".".join(parts[name] for name in join) if join else index


def tag_value(
    table: TableSpec,
    tag: TagSpec,
    index: str,
    parts: Mapping[str, str],
    columns: Columns,
    joined: Joined,
) -> str:
    if tag.value is not None:
        found = tag.value
    elif tag.index is True:
        found = index
    elif tag.index is not None:
        found = parts[tag.index]
    elif tag.entry or tag.join:
        key = f"{tag.entry or table.entry}.{tag.column}.{joined_index(index, parts, tag.join)}"
        found = text(joined.get(key))
    else:
        found = text(columns.get(tag.column or 0))
    if tag.pattern and found:
        match = re.search(tag.pattern, found)
        found = match.group(1) if match else found
    return found


def scale_of(spec: FieldSpec, scale_raw: Value) -> float | None:
    """The field's scale, read from the device where the profile says so; None if unknown."""
    if spec.scale_from is None:
        return spec.scale
    factor = _number(scale_raw)
    if factor is None:
        return None
    factor = int(factor)
    if spec.scale_from.kind == "decimal_digits":
        return spec.scale * 10.0**-factor
    if factor < 0:
        return spec.scale / -factor
    return spec.scale * (factor or 1)


def _number(raw: Value) -> int | float | None:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int | float):
        return raw
    try:
        return float(text(raw))  # some agents send numbers as DisplayString
    except ValueError:
        return None


def convert(spec: FieldSpec, raw: Value, scale: float | None = None) -> FieldValue | None:
    """One raw value as a field value, or None when absent (sentinel, missing, unparseable)."""
    if raw is None:
        return None
    if spec.type == "string":
        return text(raw)
    if spec.type == "bool":
        return text(raw) in {str(v) for v in spec.true_values}
    number = _number(raw)
    if number is None:
        return None
    if isinstance(number, int) and number in spec.absent:
        return None
    if spec.type == "enum":
        return spec.enum.get(int(number), f"unknown_{int(number)}")
    if spec.absolute:
        number = abs(number)
    scale = spec.scale if scale is None else scale
    if spec.type == "counter" and scale == 1:
        return int(number)
    return scaled(number, scale)


def scaled(number: int | float, scale: float) -> float:
    # 49 * 0.1 is 4.9000000000000004; 49 / 10 is 4.9. Divide where the scale is 1/N.
    if 0 < abs(scale) < 1:
        divisor = 1 / scale
        if divisor == round(divisor):
            return number / round(divisor)
    return float(number * scale)


@dataclass
class Counters:
    """Keeps counter fields monotonic across wraps, resets and device reboots.

    The first reading is taken as it is; after that each poll adds the increase. A reading below
    the last one is a wrap when the counter was in the top quarter of its range and is now in the
    bottom quarter (and the device did not reboot); otherwise the counter restarted (reboot, or a
    user reset of an energy meter) and counts on from zero. Either way the series never steps
    down and never jumps by a wrap's worth.
    """

    _last: dict[tuple[object, ...], tuple[int, int]] = field(default_factory=dict)
    rebooted: bool = False

    def observe_uptime(self, previous_ticks: int | None, ticks: int | None) -> None:
        self.rebooted = previous_ticks is not None and ticks is not None and ticks < previous_ticks

    def smooth(self, key: tuple[object, ...], raw: int, bits: int) -> int:
        last = self._last.get(key)
        if last is None:
            self._last[key] = (raw, raw)
            return raw
        last_raw, total = last
        span = 2**bits
        if raw >= last_raw:
            total += raw - last_raw
        elif not self.rebooted and last_raw >= span * 3 // 4 and raw < span // 4:
            total += raw + span - last_raw  # wrapped
        else:
            total += raw  # restarted from zero
        self._last[key] = (raw, total)
        return total


def row_sample(
    table: TableSpec,
    index: str,
    columns: Columns,
    joined: Joined,
    base_tags: Mapping[str, str],
    time_ns: int,
    counters: Counters,
) -> Sample | None:
    """One table row as a sample, or None when the row is filtered out or has no fields."""
    parts = index_parts(table, index)
    if parts is None or not row_selected(table, parts, columns):
        return None
    tags = dict(base_tags)
    for name, tag in table.tags.items():
        tags[name] = tag_value(table, tag, index, parts, columns, joined)
    fields: dict[str, FieldValue] = {}
    for name, spec in table.fields.items():
        raw = columns.get(spec.column or 0)
        value = _field(spec, raw, _scale_key(table, spec.scale_from, index, parts), joined)
        if spec.temperature_unit:
            setting = joined.get(_unit_key(table, spec.temperature_unit, index, parts))
            value = in_celsius(value, spec.temperature_unit, setting)
        if value is not None and spec.type == "counter" and isinstance(raw, int):
            key = (table.measurement, tuple(sorted(tags.items())), name)
            value = _counter(spec, raw, key, counters)
        if value is not None:
            fields[name] = value
    return Sample(table.measurement, tags, fields, time_ns) if fields else None


def _scale_key(
    table: TableSpec, scale_from: ScaleFrom | None, index: str, parts: Mapping[str, str]
) -> str | None:
    if scale_from is None:
        return None
    entry = scale_from.entry or table.entry
    return f"{entry}.{scale_from.column}.{joined_index(index, parts, scale_from.join)}"


def _unit_key(
    table: TableSpec | None, unit: TemperatureUnit, index: str, parts: Mapping[str, str]
) -> str:
    if unit.oid:
        return unit.oid
    entry = unit.entry or (table.entry if table else "")
    return f"{entry}.{unit.column}.{joined_index(index, parts, unit.join)}"


def unit_oid(table: TableSpec, unit: TemperatureUnit, index: str) -> str:
    """The OID of the C/F setting that applies to one row of `table`."""
    return _unit_key(table, unit, index, index_parts(table, index) or {})


def in_celsius(value: FieldValue | None, unit: TemperatureUnit, setting: Value) -> float | None:
    """A temperature as Celsius, given the device's unit setting; None if that is unknown."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if setting is None:
        return None
    if text(setting) in {str(v) for v in unit.fahrenheit}:
        return round((value - 32) * 5 / 9, 3)
    return float(value)


def _field(
    spec: FieldSpec,
    raw: Value,
    scale_key: str | None,
    joined: Joined,
) -> FieldValue | None:
    scale = scale_of(spec, joined.get(scale_key)) if scale_key else spec.scale
    if scale is None:
        return None  # the device did not say how to scale this value: better none than wrong
    return convert(spec, raw, scale)


def _counter(spec: FieldSpec, raw: int, key: tuple[object, ...], counters: Counters) -> FieldValue:
    total = counters.smooth(key, raw, spec.counter_bits or 64)
    return total if spec.scale == 1 else scaled(total, spec.scale)


def scalar_sample(
    measurement: str,
    tags: Mapping[str, str],
    fields_spec: Mapping[str, FieldSpec],
    values: Mapping[str, Value],
    time_ns: int,
    counters: Counters,
) -> Sample | None:
    fields: dict[str, FieldValue] = {}
    for name, spec in fields_spec.items():
        raw = values.get(spec.oid or "")
        value = convert(spec, raw)
        if spec.temperature_unit:
            setting = values.get(_unit_key(None, spec.temperature_unit, "", {}))
            value = in_celsius(value, spec.temperature_unit, setting)
        if value is not None and spec.type == "counter" and isinstance(raw, int):
            value = _counter(spec, raw, (measurement, tuple(sorted(tags.items())), name), counters)
        if value is not None:
            fields[name] = value
    return Sample(measurement, tags, fields, time_ns) if fields else None
