"""Turning one raw SNMP value into one field value: pure functions and counter state.

Nothing here does I/O, so every rule (scaling, scales read from the device, sentinels, enums,
Fahrenheit, counter wraps and device reboots) is tested without a device. Which value gets
which rule is decided once per device layout, in agent/plan.py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.profile import FieldSpec, TemperatureUnit
from telemetry.sample import FieldValue

Value = None | str | bytes | int | float


def text(value: Value) -> str:
    """An SNMP value as text; OCTET STRINGs that are not printable UTF-8 become hex (aa:bb:cc)."""
    if isinstance(value, bytes):
        try:
            decoded = value.decode("utf-8").strip("\x00 \t\r\n")
        except UnicodeDecodeError:
            return value.hex(":")
        return decoded if decoded.isprintable() else value.hex(":")
    return "" if value is None else str(value)


def index_text(part: str, form: str) -> str:
    """An index part that is an OCTET STRING (one arc per byte, after its length unless the
    index is IMPLIED) as text, hex or a MAC address; unchanged if it is not bytes."""
    arcs = [int(arc) for arc in part.split(".") if arc.isdigit()]
    if form == "number" or len(arcs) != part.count(".") + 1 or any(a > 255 for a in arcs):
        return part
    # A length in front: a MAC is 6 bytes; other strings say their length in the first arc.
    if (form == "mac" and len(arcs) == 7) or (form != "mac" and arcs[0] == len(arcs) - 1):
        arcs = arcs[1:]
    data = bytes(arcs)
    if form == "text":
        return text(data)
    return data.hex(":") if form == "mac" else data.hex()


def device_scale(spec: FieldSpec, raws: Sequence[Value]) -> float | None:
    """The field's scale with the factors its scale columns' raw values stand for (one raw
    value per `scale_from`); None if one is unknown: better no value than a wrong one."""
    multiply, divide = spec.scale, 1
    for scale, raw in zip(spec.scale_from, raws, strict=True):
        number = _number(raw)
        if number is None:
            return None
        n = int(number)
        if scale.kind == "decimal_digits":
            multiply, divide = (multiply, divide * 10**n) if n >= 0 else (multiply * 10**-n, divide)
        elif scale.kind == "signed_factor":
            multiply, divide = (multiply, divide * -n) if n < 0 else (multiply * (n or 1), divide)
        elif scale.kind == "divisor":
            if n == 0:
                return None
            divide *= n
        elif (factor := scale.factors.get(n)) is None:
            return None
        elif 0 < factor < 1 and (1 / factor) == round(1 / factor):
            divide *= round(1 / factor)  # milli is 1/1000: divide, so 1234 milli is 1.234
        else:
            multiply *= factor
    return multiply / divide if divide != 1 else multiply


def _number(raw: Value) -> int | float | None:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return _finite(raw)
    # Some agents send numbers as DisplayString: an integer stays one (a 64-bit sentinel or
    # counter as text is exact), anything else is read as a float.
    written = text(raw)
    try:
        return int(written)
    except ValueError:
        pass
    try:
        return _finite(float(written))
    except ValueError:
        return None


def _finite(number: float) -> float | None:
    """No reading from "nan" or "inf" text: line protocol cannot carry them, and one such
    field would cost its whole sample at encoding."""
    return number if math.isfinite(number) else None


class UnlistedUnit(ValueError):
    """A number whose unit text the field's `units` map does not list ("35 K" where only C
    and F are): no value, since a wrong one is worse, but unlike an absent reading the
    device said something the profile cannot read, so the caller counts it under its name."""

    def __init__(self, unit: str) -> None:
        super().__init__(f"unit {unit!r} is not in the field's units")
        self.unit = unit


def convert(spec: FieldSpec, raw: Value, scale: float | None = None) -> FieldValue | None:
    """One raw value as a field value, or None when absent (sentinel, missing, unparseable).
    UnlistedUnit when its text names a unit the field's `units` map does not list."""
    if raw is None:
        return None
    unit = None
    if spec.pattern is not None:
        match = re.search(spec.pattern, text(raw))
        if match is None:
            return None
        raw, unit = (match["value"], match["unit"]) if spec.units else (match.group(1), None)
    if spec.type == "string":
        return text(raw)
    if spec.type == "bool":
        return text(raw) in {str(v) for v in spec.true_values}
    number = _number(raw)
    if number is None:
        return None
    if number in spec.absent:  # whatever the wire type: "-1" as text, -1.0 as a float
        return None
    if spec.type == "enum":
        return spec.enum.get(int(number), f"unknown_{int(number)}")
    if spec.absolute:
        number = abs(number)
    scale = spec.scale if scale is None else scale
    if spec.units or spec.unit:
        conversion: float | str | None = spec.unit
        if spec.units:
            named = (unit or "").strip()
            if named not in spec.units:
                raise UnlistedUnit(named)
            conversion = spec.units[named]
        number = in_unit(scaled(number, scale), conversion)
        if number is None:
            return None
        scale = 1
    if spec.type == "integer":
        return round(number if scale == 1 else scaled(number, scale))
    if spec.type == "counter" and scale == 1:
        return int(number)
    return scaled(number, scale)


def in_unit(number: float, conversion: float | str | None) -> float | None:
    """A number converted by what its unit means (a factor, or `fahrenheit` to Celsius)."""
    if conversion is None:
        return None
    if conversion == "fahrenheit":
        return fahrenheit_to_celsius(number)
    return scaled(number, float(conversion))


def fahrenheit_to_celsius(value: float) -> float:
    return round((value - 32) * 5 / 9, 3)


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


def in_celsius(value: FieldValue | None, unit: TemperatureUnit, setting: Value) -> float | None:
    """A temperature as Celsius, given the device's unit setting; None if that is unknown."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if setting is None:
        return None
    if text(setting) in {str(v) for v in unit.fahrenheit}:
        return fahrenheit_to_celsius(value)
    return float(value)


def counted(spec: FieldSpec, raw: int, key: tuple[object, ...], counters: Counters) -> FieldValue:
    """A counter field's value: smoothed across wraps and reboots, then scaled."""
    total = counters.smooth(key, raw, spec.counter_bits or 64)
    return total if spec.scale == 1 else scaled(total, spec.scale)
