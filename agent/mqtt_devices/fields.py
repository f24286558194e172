"""How one value from a message becomes one schema field, or why it cannot (BadPayload).

Every field keeps one type forever, as the schema requires: a gauge is always a float, a counter
always an integer, whatever the device sends. A value of the wrong kind (text where a number
belongs, a list, NaN) is a bad payload, never a field of another type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from agent.mapping import scaled
from agent.mqtt_devices.config import FieldSpec
from agent.mqtt_devices.units import conversion
from telemetry.sample import FieldValue, Sample


class BadPayload(ValueError):
    """A message that cannot be used; the text says what is wrong with it.

    `kept` holds what the message had that was good (the valid lines of a line protocol payload
    with one bad line), so nothing usable is lost to a neighbour's fault.
    """

    def __init__(self, reason: str, kept: Sequence[Sample] = ()) -> None:
        super().__init__(reason)
        self.kept = list(kept)


_DEFAULT_TRUE = {"true", "1", "on", "yes"}
_DEFAULT_FALSE = {"false", "0", "off", "no"}


def field_value(field: str, spec: FieldSpec, raw: object) -> FieldValue | None:
    """The field's value, None when the reading is absent (null or a sentinel)."""
    if raw is None:
        return None
    if isinstance(raw, list | dict | bytes):
        raise BadPayload(f"{field}: expected a single value, got {_kind(raw)}")
    if spec.type == "string":
        return _text(raw)
    if spec.type == "bool":
        return _flag(field, spec, raw)
    if spec.type == "enum":
        key = _text(raw)
        return spec.enum.get(key, f"unknown_{key}")
    number = _number(field, raw)
    if number in spec.absent:
        return None
    if spec.type == "counter":
        if isinstance(number, float) and not number.is_integer():
            raise BadPayload(f"{field}: a counter must be a whole number, got {number!r}")
        return int(number)
    value = scaled(number, spec.scale)
    if spec.unit is not None:
        value = conversion(field, spec.unit).apply(value)
    return value


def _number(field: str, raw: object) -> int | float:
    if isinstance(raw, bool):  # JSON true is not the number 1 for a gauge
        raise BadPayload(f"{field}: expected a number, got a boolean")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        number = raw
    elif isinstance(raw, str):
        try:
            number = float(raw)  # gateways that send "21.5"
        except ValueError:
            raise BadPayload(f"{field}: expected a number, got {raw[:40]!r}") from None
    else:
        raise BadPayload(f"{field}: expected a number, got {_kind(raw)}")
    if not math.isfinite(number):
        raise BadPayload(f"{field}: {number} is not a reading")
    return number


def _flag(field: str, spec: FieldSpec, raw: object) -> bool:
    if spec.true_values:
        return _text(raw) in spec.true_values
    if isinstance(raw, bool):
        return raw
    text = _text(raw).lower()
    if text in _DEFAULT_TRUE or text in _DEFAULT_FALSE:
        return text in _DEFAULT_TRUE
    raise BadPayload(f"{field}: expected true or false, got {text[:40]!r}")


def _text(raw: object) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))  # enum key 2.0 is "2"
    return str(raw)


def _kind(raw: object) -> str:
    if isinstance(raw, list):
        return "a list"
    if isinstance(raw, dict):
        return "an object"
    return type(raw).__name__
