"""How one value from a message becomes one schema field, or why it cannot (BadPayload).

The rules are the SNMP profiles' (agent/mapping.py), applied to the same field spec: sentinels
(`absent`), enums by number, scaling, Fahrenheit rounded as a polled device's, counters kept
monotonic across wraps and restarts. What is MQTT's own is only the checking of the message:
a value of the wrong kind (text where a number belongs, a list, NaN, a fraction for a counter)
is a bad payload, counted, never a field of another type, and JSON true/false are flags.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from agent.mapping import Counters, convert, in_celsius
from agent.mqtt_devices.config import FieldSpec
from agent.mqtt_devices.units import conversion
from agent.profile import TemperatureUnit
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
# in_celsius() reads only `fahrenheit`; a mapping names its unit instead of a device setting.
_FAHRENHEIT = TemperatureUnit(oid="0.0", fahrenheit=("fahrenheit",))

Key = tuple[object, ...]


def field_value(
    field: str,
    spec: FieldSpec,
    raw: object,
    counters: Counters | None = None,
    key: Key = (),
) -> FieldValue | None:
    """The field's value, None when the reading is absent (null or a sentinel). A counter is
    smoothed in `counters` under `key` (its series); without them it is taken as sent."""
    if raw is None:
        return None
    if isinstance(raw, list | dict | bytes):
        raise BadPayload(f"{field}: expected a single value, got {_kind(raw)}")
    if spec.type == "string":
        return _text(raw)
    if spec.type == "bool" and not spec.true_values:
        return _flag(field, raw)
    if spec.type == "bool":
        return convert(spec.rules, _text(raw))
    number = _number(field, raw)
    if spec.type == "enum" and not isinstance(number, int):
        raise BadPayload(f"{field}: an enum value is a whole number, got {number!r}")
    if spec.type == "counter" and not isinstance(number, int):
        raise BadPayload(f"{field}: a counter must be a whole number, got {number!r}")
    value = convert(spec.rules, number)
    if value is None or spec.type == "enum":
        return value
    if spec.type == "counter":
        if isinstance(number, int) and number < 0:
            raise BadPayload(f"{field}: a counter cannot be negative, got {number}")
        if counters is None:
            return value
        return counters.smooth(key, int(number), spec.counter_bits or 64)  # unscaled, as sent
    if spec.unit == "fahrenheit":
        return in_celsius(value, _FAHRENHEIT, "fahrenheit")
    if spec.unit is not None and isinstance(value, float):
        return conversion(field, spec.unit).apply(value)
    return value


def _number(field: str, raw: object) -> int | float:
    """A number as the profiles' rules take it: a whole number as an int (so that -1.0 and "-1"
    meet the sentinel -1 and 2.0 is enum 2), any other as a float."""
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
    return int(number) if number.is_integer() else number


def _flag(field: str, raw: object) -> bool:
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
        return str(int(raw))  # 2.0 is "2"
    return str(raw)


def _kind(raw: object) -> str:
    if isinstance(raw, list):
        return "a list"
    if isinstance(raw, dict):
        return "an object"
    return type(raw).__name__
