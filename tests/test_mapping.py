"""Value mapping and poll plans, without a device: scaling, sentinels, enums, row selection,
pivots, joins, counters, strings. A plan is built from walks served from memory (the walk is
the plan's only I/O) and executed against values as a GET would return them."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from agent import plan
from agent.mapping import Counters, Value, convert, device_scale, text
from agent.profile import FieldSpec, Fragment, Profile, TableSpec
from telemetry import config
from telemetry.sample import Sample

ENTRY = "1.3.6.1.4.1.9.1"


def table(**spec: object) -> TableSpec:
    return TableSpec.model_validate({"measurement": "m", "entry": ENTRY, **spec})


def walked(
    rows: Mapping[str, Mapping[int, Value]], entry: str = ENTRY
) -> dict[str, dict[str, Value]]:
    """Rows {index: {column: value}} as the column walks {entry.column: {index: value}}."""
    columns: dict[str, dict[str, Value]] = {}
    for index, row in rows.items():
        for column, value in row.items():
            columns.setdefault(f"{entry}.{column}", {})[index] = value
    return columns


async def make_plan(
    tables: list[TableSpec], walks: Mapping[str, Mapping[str, Value]]
) -> tuple[plan.PollPlan, dict[str, Value]]:
    async def walk(column: str) -> Mapping[str, Value]:
        return walks.get(column, {})

    part = Fragment(tables=tables)
    return await plan.build([part], {"site": "s"}, walk)


async def poll(tables: list[TableSpec], walks: Mapping[str, Mapping[str, Value]]) -> list[Sample]:
    """The first poll: plan, then execute on what the walks read."""
    made, values = await make_plan(tables, walks)
    samples, complete = plan.execute(made, values, 1, Counters())
    assert complete
    return samples


def fields_by(samples: list[Sample], tag: str) -> dict[str, dict[str, object]]:
    return {s.tags.get(tag, ""): dict(s.fields) for s in samples}


def test_hex_strings_are_decoded_and_text_is_trimmed() -> None:
    """OCTET STRINGs: printable UTF-8 as text, anything else as colon-separated hex."""
    assert text(b"PDU A\x00") == "PDU A"
    assert text(b"\x00\x1b\x21\xaa\xbb\xcc") == "00:1b:21:aa:bb:cc"
    assert text(b"\xff\xfe") == "ff:fe"
    assert text("1.3.6.1.4.1.476.1.42.3.4.1.1.2") == "1.3.6.1.4.1.476.1.42.3.4.1.1.2"
    assert text(None) == ""


def test_counter_wraps_are_smoothed() -> None:
    """A Counter32 passing 2**32 keeps counting up instead of dropping to zero."""
    counters = Counters()
    top = 2**32 - 100
    assert counters.smooth(("k",), top, 32) == top
    assert counters.smooth(("k",), 50, 32) == top + 150


def test_a_reboot_never_steps_the_counter_down() -> None:
    """sysUpTime going back means the device restarted: its counter counts on from zero."""
    counters = Counters()
    counters.observe_uptime(None, 1000)
    assert counters.smooth(("k",), 5_000, 32) == 5_000
    counters.observe_uptime(1000, 2000)
    assert counters.smooth(("k",), 5_500, 32) == 5_500
    counters.observe_uptime(2000, 30)  # rebooted
    assert counters.smooth(("k",), 20, 32) == 5_520
    counters.observe_uptime(30, 130)
    assert counters.smooth(("k",), 70, 32) == 5_570


def test_a_reset_meter_without_reboot_is_not_taken_for_a_wrap() -> None:
    """An energy meter reset by a user (mid-range drop, no reboot) counts on; no 2**32 jump."""
    counters = Counters()
    counters.smooth(("k",), 1_000_000, 32)
    assert counters.smooth(("k",), 10, 32) == 1_000_010


def test_missing_and_unparseable_values_give_no_field() -> None:
    gauge = FieldSpec(column=1, absent=(-1, -410))
    assert convert(gauge, None) is None
    assert convert(gauge, -410) is None
    assert convert(gauge, b"n/a") is None
    assert convert(gauge, b" 12.5 ") == 12.5
    assert convert(FieldSpec(column=1), -26) == -26.0  # negative readings are real readings
    # "nan"/"inf" as text (or an Opaque float): no reading, rather than a value line protocol
    # cannot carry, which would cost the sample's other fields at encoding
    for raw in (b"nan", b"NaN", b"inf", b"-Infinity", float("nan"), float("inf")):
        assert convert(gauge, raw) is None, raw


def test_a_sentinel_is_absent_whatever_its_wire_type() -> None:
    """Some agents send numbers as DisplayString: "-1" is the sentinel -1, as is -1.0."""
    gauge = FieldSpec(column=1, absent=(-1, 2**64 - 1))
    for raw in (-1, b"-1", "-1", b" -1 ", -1.0, b"-1.0", b"18446744073709551615", 2**64 - 1):
        assert convert(gauge, raw) is None, raw
    assert convert(gauge, b"-2") == -2.0
    assert convert(gauge, b"18446744073709551614") == float(2**64 - 2)
    inside = FieldSpec(column=1, pattern=r"(-?\d+) ?C", absent=(-1,))
    assert convert(inside, b"-1 C") is None
    assert convert(inside, b"21 C") == 21.0
    state = FieldSpec(column=1, type="enum", enum={1: "on"}, absent=(0,))
    assert convert(state, b"0") is None
    assert convert(state, b"1") == "on"


def test_an_integer_gauge_is_a_whole_number_after_scaling() -> None:
    """Levels that are counts (a PCIe generation, bytes) are ints in the schema, not floats."""
    generation = FieldSpec(type="integer")
    assert convert(generation, 4) == 4
    assert isinstance(convert(generation, 4), int)
    assert convert(generation, b"5") == 5
    mebibytes = FieldSpec(type="integer", scale=1024**2)
    assert convert(mebibytes, b"65536") == 64 * 1024**3
    assert convert(FieldSpec(type="integer", scale=0.1), 1234) == 123
    assert convert(FieldSpec(type="integer", absent=(0,)), 0) is None
    big = 2**60 + 1  # exact at scale 1, past a float's 53 bits
    assert convert(generation, big) == big


def test_bool_and_absolute_fields() -> None:
    flag = FieldSpec.model_validate({"column": 1, "type": "bool", "true_values": [1]})
    assert convert(flag, 1) is True
    assert convert(flag, 2) is False
    power_factor = FieldSpec(column=1, scale=0.001, absolute=True)
    assert convert(power_factor, -946) == 0.946


def test_scales_read_from_the_device() -> None:
    """Raritan decimal digits divide by 10**d; Rittal's signed factor divides or multiplies;
    ENTITY-SENSOR-MIB's scale is a table of factors, its precision decimal digits."""
    digits = FieldSpec.model_validate(
        {"column": 4, "scale_from": {"column": 7, "kind": "decimal_digits"}}
    )
    assert device_scale(digits, [3]) == 0.001
    assert convert(digits, 680, device_scale(digits, [3])) == 0.68
    signed = FieldSpec.model_validate(
        {"column": 4, "scale": 0.001, "scale_from": {"column": 5, "kind": "signed_factor"}}
    )
    assert convert(signed, 80, device_scale(signed, [-1])) == 0.08
    assert device_scale(signed, [10]) == 0.01
    assert device_scale(signed, [0]) == 0.001
    assert device_scale(signed, [None]) is None  # unknown scale: no value rather than a wrong one
    entity = FieldSpec.model_validate(
        {
            "column": 4,
            "scale_from": [
                {"column": 2, "kind": "map", "factors": {8: 0.001, 9: 1, 10: 1000}},
                {"column": 3, "kind": "decimal_digits"},
            ],
        }
    )
    assert convert(entity, 12345, device_scale(entity, [8, 1])) == 1.2345  # milli, 1 digit
    assert convert(entity, 23, device_scale(entity, [10, 0])) == 23000.0  # kilo
    assert device_scale(entity, [3, 0]) is None  # a scale the profile does not list


def test_index_parts_are_named_and_the_last_takes_the_rest() -> None:
    names = ("pdu", "inlet", "sensor")
    assert plan.index_parts(names, "1.1.4") == {"pdu": "1", "inlet": "1", "sensor": "4"}
    assert plan.index_parts(names, "1.2.3.4") == {"pdu": "1", "inlet": "2", "sensor": "3.4"}
    assert plan.index_parts(names, "1.2") is None


async def test_rows_are_selected_by_index_part_and_by_column_text() -> None:
    spec = table(
        index=["pdu", "inlet", "sensor"],
        where=[{"index": "sensor", "in": [1]}, {"column": 2, "not_in": ["Err"]}],
        tags={"inlet": {"index": "inlet"}, "name": {"column": 2}},
        fields={"current_a": {"column": 4, "scale": 0.001}},
    )
    rows: dict[str, dict[int, Value]] = {
        "1.1.1": {2: b"I1", 4: 680},
        "1.1.4": {2: b"I1", 4: 233},
        "1.2.1": {2: b"Err", 4: 1},
        "1.3.1": {4: 1},  # unclassifiable: no column 2
    }
    samples = await poll([spec], walked(rows))
    assert [(dict(s.tags), dict(s.fields)) for s in samples] == [
        ({"site": "s", "inlet": "1", "name": "I1"}, {"current_a": 0.68})
    ]


async def test_oid_pointer_conditions_ignore_a_leading_dot() -> None:
    spec = table(
        where=[{"column": 2, "in": [".1.3.6.1.4.1.476.1.42.3.4.1.1.2"]}],
        fields={"supply_air_c": {"column": 3}},
    )
    samples = await poll([spec], walked({"2": {2: "1.3.6.1.4.1.476.1.42.3.4.1.1.2", 3: 25}}))
    assert [dict(s.fields) for s in samples] == [{"supply_air_c": 25.0}]


async def test_counter_fields_in_rows_are_monotonic_and_scaled() -> None:
    spec = table(
        fields={"energy_kwh": {"column": 3, "type": "counter", "counter_bits": 32, "scale": 0.001}}
    )
    made, first = await make_plan([spec], walked({"1": {3: 2**32 - 1000}}))
    counters = Counters()
    one, _ = plan.execute(made, first, 1, counters)
    two, _ = plan.execute(made, {f"{ENTRY}.3.1": 1000}, 2, counters)
    assert one[0].fields["energy_kwh"] == (2**32 - 1000) / 1000
    assert two[0].fields["energy_kwh"] == (2**32 + 1000) / 1000


async def test_tags_joined_from_another_table_with_a_pattern() -> None:
    """Outlet readings indexed pdu.outlet.sensor take the outlet's name from the config table
    indexed pdu.outlet; a pattern trims "Phase AB" to "AB"."""
    spec = table(
        index=["pdu", "outlet", "sensor"],
        tags={
            "outlet_name": {"entry": "1.3.6.1.4.1.9.2", "column": 3, "join": ["pdu", "outlet"]},
            "phase": {"column": 2, "pattern": r"Phase (\S+)"},
        },
        fields={"current_a": {"column": 4}},
    )
    walks = walked({"1.7.1": {2: b"Phase AB", 4: 2}}) | {"1.3.6.1.4.1.9.2.3": {"1.7": b"web-07"}}
    samples = await poll([spec], walks)
    assert [dict(s.tags) for s in samples] == [
        {"site": "s", "outlet_name": "web-07", "phase": "AB"}
    ]


async def test_a_condition_may_keep_rows_that_lack_its_column() -> None:
    spec = table(
        where=[{"column": 5, "not_in": [0], "missing": "keep"}],
        fields={"current_a": {"column": 2}},
    )
    samples = await poll([spec], walked({"1": {2: 3}, "2": {2: 3, 5: 0}}))
    assert [s.fields for s in samples] == [{"current_a": 3.0}]


async def test_temperatures_in_fahrenheit_are_converted_or_dropped_when_unknown() -> None:
    """A device set to display Fahrenheit reports 77.0: that is 25 C. No setting: no value.
    The setting is read with the values on every poll, so a switch applies at once."""
    spec = table(
        index=["unit", "sensor"],
        fields={
            "temperature_c": {
                "column": 3,
                "scale": 0.1,
                "temperature_unit": {
                    "entry": "1.3.6.1.4.1.9.5",
                    "column": 9,
                    "join": ["unit"],
                    "fahrenheit": [1],
                },
            }
        },
    )
    made, _ = await make_plan([spec], walked({"0.1": {3: 770}}))
    assert made.oids() == [f"{ENTRY}.3.0.1", "1.3.6.1.4.1.9.5.9.0"]
    value, setting = made.oids()
    counters = Counters()

    def temperature(values: dict[str, Value]) -> object:
        samples, _ = plan.execute(made, values, 1, counters)
        return samples[0].fields["temperature_c"] if samples else None

    assert temperature({value: 770, setting: 1}) == 25.0
    assert temperature({value: 250, setting: 0}) == 25.0
    assert temperature({value: 250}) is None


# ---------------------------------------------------------------- the compact language


async def test_a_pivot_on_an_index_part_names_the_field_and_merges_one_point() -> None:
    """Raritan-style sensor tables: the sensor type (last index part) names the field, the
    value column is scaled by the configuration table's decimal digits, energy gets its own
    scale, current also reads its state column; unlisted types are left out. All fields of
    one inlet are one point."""
    config_entry = "1.3.6.1.4.1.9.4"
    spec = table(
        index=["pdu", "inlet", "sensor"],
        tags={"inlet": {"index": "inlet"}},
        pivot={
            "index": "sensor",
            "value": {
                "column": 4,
                "scale_from": {"entry": config_entry, "column": 7, "kind": "decimal_digits"},
            },
            "keys": {
                1: {
                    "field": "current_a",
                    "also": {"load_state": {"column": 3, "type": "enum", "enum": {4: "normal"}}},
                },
                4: "voltage_v",
                8: {"field": "energy_kwh", "scale": 0.001},
            },
        },
    )
    rows: dict[str, dict[int, Value]] = {
        "1.1.1": {3: 4, 4: 3497},
        "1.1.4": {3: 4, 4: 2301},
        "1.1.8": {3: 4, 4: 123456},
        "1.1.23": {3: 4, 4: 600},  # frequency: not listed
    }
    digits: dict[str, dict[str, Value]] = {
        f"{config_entry}.7": {"1.1.1": 3, "1.1.4": 1, "1.1.8": 0, "1.1.23": 1}
    }
    samples = await poll([spec], walked(rows) | digits)
    assert [(dict(s.tags), dict(s.fields)) for s in samples] == [
        (
            {"site": "s", "inlet": "1"},
            {"current_a": 3.497, "load_state": "normal", "voltage_v": 230.1, "energy_kwh": 123.456},
        )
    ]


async def test_a_pivot_on_a_column_with_tags_per_key() -> None:
    """Rittal-style named variables: the name column picks the field and the key's tags."""
    spec = table(
        index=["device", "variable"],
        lookup=True,
        tags={"unit": {"index": "device"}},
        pivot={
            "column": 3,
            "value": {"column": 11, "scale_from": {"column": 7, "kind": "signed_factor"}},
            "keys": {
                "Fans.Fan1.Value": {"field": "speed_pct", "tags": {"fan": "1"}},
                "Fans.Fan2.Value": {"field": "speed_pct", "tags": {"fan": "2"}},
            },
        },
    )
    rows: dict[str, dict[int, Value]] = {
        "2.10": {3: b"Fans.Fan1.Value", 7: -10},
        "2.11": {3: b"Fans.Fan2.Value", 7: 1},
        "2.12": {3: b"Fans.Fan3.Value", 7: 1},
    }
    made, walked_values = await make_plan([spec], walked(rows))
    assert walked_values == {}  # a lookup table: values are read by GET
    assert made.oids() == [f"{ENTRY}.11.2.10", f"{ENTRY}.11.2.11"]
    samples, complete = plan.execute(made, dict.fromkeys(made.oids(), 160), 1, Counters())
    assert complete
    assert fields_by(samples, "fan") == {"1": {"speed_pct": 16.0}, "2": {"speed_pct": 160.0}}


async def test_where_and_pivot_on_a_joined_type_column() -> None:
    """Raritan external sensors: the measurement row (pdu.sensor) does not say what it
    measures; the configuration table's type column, joined on the same index, does."""
    config_entry = "1.3.6.1.4.1.9.3"
    spec = table(
        measurement="env_sensor",
        index=["pdu", "sensor"],
        where=[{"entry": config_entry, "column": 3, "in": [10, 11]}],
        tags={"sensor": {"index": "sensor"}},
        pivot={
            "entry": config_entry,
            "column": 3,
            "value": {
                "column": 4,
                "scale_from": {"entry": config_entry, "column": 17, "kind": "decimal_digits"},
            },
            "keys": {10: "temperature_c", 11: "humidity_pct"},
        },
    )
    rows: dict[str, dict[int, Value]] = {"1.1": {4: 229}, "1.2": {4: 15}, "1.3": {4: 1}}
    config_rows: dict[str, dict[int, Value]] = {
        "1.1": {3: 10, 17: 1},
        "1.2": {3: 11, 17: 0},
        "1.3": {3: 14, 17: 0},  # a contact closure: neither
    }
    samples = await poll([spec], walked(rows) | walked(config_rows, config_entry))
    assert fields_by(samples, "sensor") == {
        "1": {"temperature_c": 22.9},
        "2": {"humidity_pct": 15.0},
    }


async def test_a_condition_on_a_value_column_is_tested_every_poll() -> None:
    """A contact whose state column says "not found" is left out on the poll that says so,
    without a new walk."""
    spec = table(where=[{"column": 1, "not_in": [7]}], fields={"alarm": {"column": 1}})
    made, first = await make_plan([spec], walked({"1": {1: 0}}))
    assert plan.execute(made, first, 1, Counters())[0][0].fields == {"alarm": 0.0}
    samples, complete = plan.execute(made, {f"{ENTRY}.1.1": 7}, 2, Counters())
    assert samples == []
    assert complete


async def test_a_vanished_row_asks_for_a_new_plan() -> None:
    spec = table(fields={"current_a": {"column": 2}})
    made, _ = await make_plan([spec], walked({"1": {2: 3}, "2": {2: 4}}))
    samples, complete = plan.execute(made, {f"{ENTRY}.2.1": 3}, 1, Counters())
    assert [s.fields for s in samples] == [{"current_a": 3.0}]
    assert not complete


async def test_tables_that_share_an_index_are_one_spec() -> None:
    """A field may read a column of a sibling table with the same index (Eaton's outlet
    current, power and voltage tables): one spec, one point per outlet."""
    sibling = "1.3.6.1.4.1.9.6"
    spec = table(
        tags={"outlet": {"index": True}},
        fields={"current_a": {"column": 3}, "power_w": {"entry": sibling, "column": 3}},
    )
    walks = walked({"1": {3: 2}}) | walked({"1": {3: 460}, "2": {3: 5}}, sibling)
    samples = await poll([spec], walks)
    assert [dict(s.fields) for s in samples] == [
        {"current_a": 2.0, "power_w": 460.0},
        {"power_w": 5.0},
    ]


def test_a_bad_pivot_key_is_an_error_with_file_and_line(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "bad.yaml"
    path.write_text(
        "name: x\nvendor: v\nkind: pdu\ndetect: {}\ntables:\n"
        "  - measurement: m\n    entry: 1.3.6.1.4.1.9.1\n"
        "    pivot:\n      column: 2\n      value: {column: 4}\n"
        "      keys: {1: {field: a_c, type: enum}}\n"
    )
    with pytest.raises(config.ConfigError, match=r"bad.yaml:\d+: .*key 1: .*enum"):
        config.load(path, Profile)


async def test_a_self_describing_table_with_unit_and_scale_columns() -> None:
    """PowerNet coolingUnitStatusAnalogTable (an APC Uniflair): each row has a description, a
    value, a unit and a divisor, and some readings come twice, in °F and in °C. A condition on
    the unit column keeps the metric rows, the description names the field, the divisor column
    scales it (rows from the apc_uniflair-sp recording)."""
    spec = table(
        measurement="cooling",
        where=[{"column": 4, "in": ["C", "%"]}],
        pivot={
            "column": 2,
            "value": {"column": 3, "scale_from": {"column": 5, "kind": "divisor"}},
            "keys": {
                "Supply Temperature": "supply_air_c",
                "Room Temperature": "return_air_c",
                "Commanded Evap. Fan Speed": "fan_speed_pct",
            },
        },
    )
    rows: dict[str, dict[int, Value]] = {
        "1.7": {2: b"Supply Temperature", 3: 766, 4: b"F", 5: 10},
        "1.8": {2: b"Supply Temperature", 3: 248, 4: b"C", 5: 10},
        "1.5": {2: b"Commanded Evap. Fan Speed", 3: 90, 4: b"%", 5: 1},
        "1.11": {2: b"Room Temperature", 3: 706, 4: b"F", 5: 10},
        "1.12": {2: b"Room Temperature", 3: 214, 4: b"C", 5: 10},
        "1.2": {2: b"Discharge Pressure", 3: 148, 4: b"bar", 5: 10},
    }
    samples = await poll([spec], walked(rows))
    assert [dict(s.fields) for s in samples] == [
        {"supply_air_c": 24.8, "fan_speed_pct": 90.0, "return_air_c": 21.4}
    ]
