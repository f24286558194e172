"""The units a device may publish in, per schema field suffix, and how to reach the schema's unit.

A field's suffix names its unit (docs/schema.md): `_c` is degrees Celsius, `_w` watts, ... A
mapping names the unit the device sends (`unit: fahrenheit`); the value becomes
`(raw + add) * multiply / divide`, kept to 12 significant digits: no sensor is better than
that, and a fraction of 0.041 becomes 4.1 % rather than 4.1000000000000005. Fahrenheit is
named here but converted by agent/mapping.in_celsius(), as a polled device's (fields.py).
"""

from __future__ import annotations

from typing import NamedTuple

from telemetry.schema import schema


class Conversion(NamedTuple):
    add: float
    multiply: float
    divide: float

    def apply(self, value: float) -> float:
        return float(f"{(value + self.add) * self.multiply / self.divide:.12g}")


SAME = Conversion(0, 1, 1)

# suffix -> unit name -> conversion into the suffix's unit
UNITS: dict[str, dict[str, Conversion]] = {
    "_c": {
        "celsius": SAME,
        "fahrenheit": Conversion(-32, 5, 9),
        "kelvin": Conversion(-273.15, 1, 1),
    },
    "_pct": {"percent": SAME, "fraction": Conversion(0, 100, 1), "permille": Conversion(0, 1, 10)},
    "_w": {
        "watt": SAME,
        "kilowatt": Conversion(0, 1000, 1),
        "btu_per_hour": Conversion(0, 0.29307107017, 1),
        "ton_of_refrigeration": Conversion(0, 3516.8528421, 1),
    },
    "_va": {"volt_ampere": SAME, "kilovolt_ampere": Conversion(0, 1000, 1)},
    "_kwh": {"kilowatt_hour": SAME, "watt_hour": Conversion(0, 1, 1000)},
    "_v": {"volt": SAME},
    "_a": {"ampere": SAME, "milliampere": Conversion(0, 1, 1000)},
    "_hz": {"hertz": SAME},
    "_s": {
        "second": SAME,
        "millisecond": Conversion(0, 1, 1000),
        "minute": Conversion(0, 60, 1),
        "hour": Conversion(0, 3600, 1),
    },
    "_lpm": {
        "litre_per_minute": SAME,
        "litre_per_second": Conversion(0, 60, 1),
        "cubic_metre_per_hour": Conversion(0, 1000, 60),
        "us_gallon_per_minute": Conversion(0, 3.785411784, 1),
    },
    "_cfm": {
        "cubic_foot_per_minute": SAME,
        "cubic_metre_per_hour": Conversion(0, 1, 1.6990108),
    },
}


def suffix_of(field: str) -> str | None:
    """The unit suffix of a schema field name (`supply_air_c` -> `_c`) that a device may send
    in other units, if it has one (`pcie_tx_bytes_per_s` is `_bytes_per_s`, not `_s`)."""
    suffix = schema().suffix_of(field)
    return suffix if suffix in UNITS else None


def conversion(field: str, unit: str) -> Conversion:
    """How a value in `unit` becomes `field`'s unit; ValueError naming the choices if none."""
    suffix = suffix_of(field)
    if suffix is None:
        raise ValueError(
            f"{field!r} has no unit suffix ({', '.join(UNITS)}), so it takes no unit conversion"
        )
    known = UNITS[suffix]
    if unit not in known:
        raise ValueError(
            f"unit {unit!r} does not convert to {field!r} ({suffix}); "
            f"known for {suffix}: {', '.join(known)}"
        )
    return known[unit]
