"""The profile language's later constructs, without a device: numbers inside text, values
that are lists, scalar groups tagged from the device, string indexes, `for_each` copies and
pivot keys with a measurement of their own. Plans are built from walks served from memory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent import plan
from agent.mapping import Counters, UnlistedUnit, Value, convert, index_text
from agent.profile import FieldSpec, Fragment, Profile, ScalarGroup
from telemetry import config
from tests.test_mapping import ENTRY, fields_by, make_plan, poll, table, walked


def test_a_number_inside_text_is_its_pattern_group() -> None:
    """ "32A", "35 C", "230.5V": the capture group is the value, then scaled as usual."""
    amps = FieldSpec(column=1, pattern=r"([-\d.]+)\s*A")
    assert convert(amps, b"32A") == 32.0
    assert convert(amps, b"n/a") is None  # no match: absent, never zero
    volts = FieldSpec(column=1, pattern=r"([-\d.]+)\s*V", scale=0.5)
    assert convert(volts, "230.5V") == 115.25
    state = FieldSpec.model_validate(
        {"column": 1, "type": "enum", "enum": {1: "on"}, "pattern": r"state=(\d)"}
    )
    assert convert(state, b"state=1") == "on"
    with pytest.raises(ValidationError, match="one capture group"):
        FieldSpec(column=1, pattern=r"\d+")


async def test_a_list_in_one_value_is_split_into_rows() -> None:
    """DigiPower's "1,0,1" outlet states: element i is outlet i+1, one sample each; a list
    that gets shorter asks for a new plan (an outlet went away)."""
    spec = table(
        index=["zero"],
        split={"index": "outlet"},
        tags={"outlet": {"index": "outlet"}},
        fields={
            "state": {"column": 13, "type": "enum", "absent": [-1], "enum": {0: "off", 1: "on"}}
        },
    )
    samples = await poll([spec], walked({"0": {13: b"1, 0,-1,1"}}))
    assert fields_by(samples, "outlet") == {
        "1": {"state": "on"},
        "2": {"state": "off"},
        "4": {"state": "on"},  # outlet 3 is "not available": no field, no sample
    }
    made, _ = await make_plan([spec], walked({"0": {13: b"1,0,1"}}))
    later, complete = plan.execute(made, {f"{ENTRY}.13.0": b"0,0"}, 2, Counters())
    assert not complete
    assert fields_by(later, "outlet") == {"1": {"state": "off"}, "2": {"state": "off"}}
    with pytest.raises(ValidationError, match="no lookup"):
        table(index=["zero"], lookup=True, split={"index": "outlet"}, fields={"a": {"column": 1}})


async def test_a_scalar_group_is_tagged_with_a_name_read_from_the_device() -> None:
    """ATEN's per-outlet scalars take the outlet's name from another OID, so they are the same
    series as the outlet table's row with that name."""
    group = ScalarGroup.model_validate(
        {
            "measurement": "pdu_outlet",
            "tags": {"outlet": {"value": "1"}, "outlet_name": {"oid": "1.3.6.1.4.1.9.2.1"}},
            "fields": {"state": {"oid": "1.3.6.1.4.1.9.3.0", "type": "enum", "enum": {2: "on"}}},
        }
    )
    rows = table(
        measurement="pdu_outlet",
        index=["outlet"],
        tags={"outlet": {"index": "outlet"}, "outlet_name": {"column": 2}},
        fields={"current_a": {"column": 3}},
    )
    asked: list[list[str]] = []

    async def get(oids: list[str]) -> Mapping[str, Value]:
        asked.append(oids)
        return {"1.3.6.1.4.1.9.2.1": b"web01"}

    async def walk(column: str) -> Mapping[str, Value]:
        return walked({"1": {2: b"web01", 3: 2}}).get(column, {})

    made, values = await plan.build([Fragment(scalars=[group], tables=[rows])], {}, walk, get)
    assert asked == [["1.3.6.1.4.1.9.2.1"]]  # one GET for all names, with the plan
    samples, _ = plan.execute(made, {**values, "1.3.6.1.4.1.9.3.0": 2}, 1, Counters())
    assert [(s.tags, dict(s.fields)) for s in samples] == [
        ({"outlet": "1", "outlet_name": "web01"}, {"state": "on", "current_a": 2.0})
    ]
    with pytest.raises(ValidationError, match="no oid"):
        table(tags={"n": {"oid": "1.3.6.1.4.1.9.2.1"}}, fields={"a": {"column": 1}})


def test_string_index_parts_are_decoded() -> None:
    """OCTET STRING indexes: length-prefixed or IMPLIED, as text, hex or a MAC address."""
    assert index_text("4.80.68.85.49", "text") == "PDU1"
    assert index_text("80.68.85.49", "text") == "PDU1"  # IMPLIED: no length
    assert index_text("6.0.27.33.170.187.204", "mac") == "00:1b:21:aa:bb:cc"
    assert index_text("5.1.2.3.4.5", "mac") == "05:01:02:03:04:05"  # IMPLIED, first byte 5
    assert index_text("2.1.255", "hex") == "01ff"
    assert index_text("3.700", "text") == "3.700"  # not bytes: left as it is


async def test_a_string_index_becomes_a_text_tag() -> None:
    spec = table(
        index=["pdu", "sensor"],
        tags={"pdu": {"index": "pdu"}, "sensor": {"index": "sensor", "format": "text"}},
        fields={"temperature_c": {"column": 4}},
    )
    samples = await poll([spec], walked({"1.5.73.110.108.101.116": {4: 21}}))
    assert [s.tags for s in samples] == [{"site": "s", "pdu": "1", "sensor": "Inlet"}]
    with pytest.raises(ValidationError, match="format is for index parts"):
        table(tags={"n": {"column": 2, "format": "text"}}, fields={"a": {"column": 1}})


async def test_for_each_makes_one_spec_per_unit() -> None:
    """DigiPower's 16 daisy-chained units are one spec: `{unit}` in the OID and the tag."""
    spec = table(
        for_each={"unit": "1-3"},
        entry="1.3.6.1.4.1.17420.1.2.9.{unit}",
        index=["zero"],
        tags={"unit": {"value": "{unit}"}},
        fields={"current_a": {"column": 11, "scale": 0.1}},
    )
    assert [copy.entry for copy in spec.copies()] == [f"1.3.6.1.4.1.17420.1.2.9.{n}" for n in "123"]
    walks = {
        **walked({"0": {11: 52}}, "1.3.6.1.4.1.17420.1.2.9.1"),
        **walked({"0": {11: 7}}, "1.3.6.1.4.1.17420.1.2.9.3"),
    }
    samples = await poll([spec], walks)  # unit 2 is not chained: no rows, no sample
    assert fields_by(samples, "unit") == {"1": {"current_a": 5.2}, "3": {"current_a": 0.7}}
    stepped = ScalarGroup.model_validate(
        {
            "for_each": {"outlet": "1-3", "arc": "2,11-12"},
            "measurement": "pdu_outlet",
            "tags": {"outlet": {"value": "{outlet}"}},
            "fields": {"state": {"oid": "1.3.6.1.4.1.21317.{arc}.0"}},
        }
    )
    found = [(g.tags["outlet"].value, g.fields["state"].oid) for g in stepped.copies()]
    assert found == [("1", "1.3.6.1.4.1.21317.2.0"), ("2", "1.3.6.1.4.1.21317.11.0"),
                     ("3", "1.3.6.1.4.1.21317.12.0")]  # fmt: skip


def test_a_bad_for_each_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: x\nvendor: v\nkind: pdu\ndetect: {}\ntables:\n"
        "  - measurement: m\n    for_each: {unit: 1-4, arc: 1-3}\n"
        "    entry: 1.3.6.1.4.1.9.{unit}\n    fields: {a: {column: 1}}\n"
    )
    with pytest.raises(config.ConfigError, match=r"bad.yaml:\d+: .*as many values"):
        config.load(path, Profile)
    path.write_text(
        "name: x\nvendor: v\nkind: pdu\ndetect: {}\ntables:\n"
        "  - measurement: m\n    for_each: {unit: 1-4}\n"
        "    entry: 1.3.6.1.4.1.9.{units}\n    fields: {a: {column: 1}}\n"
    )
    with pytest.raises(config.ConfigError, match=r"bad.yaml:8: .*not a numeric OID"):
        config.load(path, Profile)


async def test_a_pivot_key_names_its_measurement() -> None:
    """Rittal's variable table: one spec, each variable name says its measurement."""
    spec = table(
        index=["device", "variable"],
        tags={"unit": {"index": "device"}},
        pivot={
            "column": 3,
            "value": {"column": 11},
            "keys": {
                "Water.Flowrate.Value": "water_flow_lpm",
                "Fans.Speed.Fan1": {
                    "field": "speed_pct",
                    "measurement": "fan",
                    "tags": {"fan": "1"},
                },
            },
        },
    )
    walks = walked(
        {"2.1": {3: b"Water.Flowrate.Value", 11: 40}, "2.2": {3: b"Fans.Speed.Fan1", 11: 55}}
    )
    samples = await poll([spec], walks)
    assert [(s.measurement, s.tags, dict(s.fields)) for s in samples] == [
        ("m", {"site": "s", "unit": "2"}, {"water_flow_lpm": 40.0}),
        ("fan", {"site": "s", "unit": "2", "fan": "1"}, {"speed_pct": 55.0}),
    ]


def test_a_number_and_its_unit_inside_text_are_converted_by_the_unit() -> None:
    """SiteBoss's "35 C" / "70 F": the text says the unit, the value is converted by it."""
    temperature = FieldSpec.model_validate(
        {
            "column": 7,
            "pattern": r"^(?P<value>-?[\d.]+)\s*(?P<unit>[CF])$",
            "units": {"C": 1, "F": "fahrenheit"},
        }
    )
    assert convert(temperature, b"35 C") == 35.0
    assert convert(temperature, b"95 F") == 35.0
    assert convert(temperature, "70 F") == 21.111
    assert convert(temperature, b"-40 F") == -40.0
    assert convert(temperature, b"300 K") is None  # a unit not listed: absent, never wrong
    assert convert(temperature, b"Unavailable") is None
    current = FieldSpec.model_validate(
        {
            "column": 1,
            "scale": 10,
            "pattern": r"(?P<value>[\d.]+) ?(?P<unit>m?A)",
            "units": {"mA": 0.001, "A": 1},
        }
    )
    assert convert(current, b"25 mA") == 0.25  # scale first, then the unit's factor
    assert convert(current, b"1.5A") == 15.0
    whole = FieldSpec.model_validate(
        {"column": 1, "type": "integer", "pattern": r"(?P<value>\S+) (?P<unit>\S+)",
         "units": {"F": "fahrenheit"}}
    )  # fmt: skip
    assert convert(whole, b"100 F") == 38  # rounded after the conversion


def test_a_value_always_in_fahrenheit_is_converted_after_its_scale() -> None:
    """CyberPower's envirTemperature: 1/10 degF by its MIB, with no setting that says so."""
    spec = FieldSpec.model_validate({"oid": "1.3.6.1.4.1.3808.1.1.4.2.1.0", "scale": 0.1,
                                     "unit": "fahrenheit"})  # fmt: skip
    assert convert(spec, 683) == 20.167
    assert convert(spec, "-400") == -40.0
    assert convert(FieldSpec(oid="1.3.6.1.4.1.9.1", absent=(-1,), unit="fahrenheit"), -1) is None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"units": {"C": 1}}, "units need a pattern"),
        ({"pattern": r"([\d.]+) C", "units": {"C": 1}}, "named groups"),
        ({"pattern": r"(?P<value>\d+)", "units": {"C": 1}}, "named groups"),
        (
            {"type": "string", "pattern": r"(?P<value>\d+)(?P<unit>C)", "units": {"C": 1}},
            "gauge and integer",
        ),
        ({"type": "enum", "enum": {1: "a"}, "unit": "fahrenheit"}, "gauge and integer"),
        (
            {"pattern": r"(?P<value>\d+)(?P<unit>C)", "units": {"C": 1}, "unit": "fahrenheit"},
            "unit \\(always the same\\) or units",
        ),
        ({"unit": "kelvin"}, "fahrenheit"),
        (
            {
                "pattern": r"(?P<value>\d+)(?P<unit>C)",
                "units": {"C": 1},
                "temperature_unit": {"oid": "1.3.6.1.4.1.9.1", "fahrenheit": [1]},
            },
            "without temperature_unit",
        ),
        ({"pattern": r"(?P<value>\d+)(?P<unit>C)", "units": {"C": 0}}, "must not be zero"),
        ({"pattern": r"(?P<value>\d+)(?P<unit>C)", "units": {"C": "kelvin"}}, "fahrenheit"),
    ],
)
def test_units_are_checked_at_load(spec: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        FieldSpec.model_validate({"column": 1, **spec})


async def test_a_pivot_key_reads_the_text_column_with_its_unit() -> None:
    """SiteBoss's point table: class 1 (temperature) from the text column, whatever scale each
    probe is set to; class 3 (humidity) from the integer column."""
    spec = table(
        index=["es", "class", "point"],
        tags={"sensor": {"index": "es"}},
        pivot={
            "index": "class",
            "value": {"column": 6},
            "keys": {
                1: {
                    "field": "temperature_c",
                    "column": 7,
                    "pattern": r"^(?P<value>-?\d+(?:\.\d+)?) (?P<unit>[CF])$",
                    "units": {"C": 1, "F": "fahrenheit"},
                },
                3: "humidity_pct",
            },
        },
    )
    walks = walked(
        {
            "7.1.1": {6: 77, 7: b"77 F"},
            "8.1.1": {6: 64, 7: b"65 F"},  # the text is the newer reading
            "200.1.1": {6: 35, 7: b"35 C"},
            "200.3.1": {6: 41, 7: b"41"},
        }
    )
    samples = await poll([spec], walks)
    assert fields_by(samples, "sensor") == {
        "7": {"temperature_c": 25.0},
        "8": {"temperature_c": 18.333},
        "200": {"temperature_c": 35.0, "humidity_pct": 41.0},
    }


async def test_a_row_is_kept_when_a_column_matches_a_pattern() -> None:
    """ServersCheck: what a sensor measures is only in the name its user gave it."""
    spec = table(
        index=["sensor"],
        where=[{"column": 1, "matches": "(?i)temp"}],
        tags={"sensor_name": {"column": 1}},
        fields={"temperature_c": {"column": 2}},
    )
    walks = walked(
        {
            "1": {1: b"X105Y013 back Temp", 2: b"26.44"},
            "2": {1: b"TEMPERATURE", 2: b"21.88"},
            "3": {1: b"X105Y013 down Humid", 2: b"48.75"},
            "4": {1: b"\x00", 2: b"\x00"},
        }
    )
    samples = await poll([spec], walks)
    assert fields_by(samples, "sensor_name") == {
        "X105Y013 back Temp": {"temperature_c": 26.44},
        "TEMPERATURE": {"temperature_c": 21.88},
    }
    with pytest.raises(ValidationError, match="exactly one of in, not_in or matches"):
        table(where=[{"column": 1, "matches": "x", "in": [1]}], fields={"a": {"column": 2}})
    with pytest.raises(ValidationError, match="bad regular expression"):
        table(where=[{"column": 1, "matches": "(temp"}], fields={"a": {"column": 2}})


async def test_a_renamed_sensor_changes_what_it_is_read_as() -> None:
    """A name condition on a column that is also read is tested again every poll: a sensor
    renamed from "Temp" to "Humidity" stops giving a temperature."""
    spec = table(
        index=["sensor"],
        where=[{"column": 1, "matches": "(?i)temp"}],
        fields={"temperature_c": {"column": 2}, "name": {"column": 1, "type": "string"}},
    )
    made, values = await make_plan([spec], walked({"1": {1: b"Temp", 2: b"20.5"}}))
    samples, _ = plan.execute(made, values, 1, Counters())
    assert [dict(s.fields) for s in samples] == [{"temperature_c": 20.5, "name": "Temp"}]
    renamed = {f"{ENTRY}.1.1": b"Humidity", f"{ENTRY}.2.1": b"40.1"}
    samples, _ = plan.execute(made, renamed, 2, Counters())
    assert samples == []


def test_a_unit_the_map_does_not_list_is_an_unlisted_unit_not_an_absent_value() -> None:
    """With a pattern that takes any unit, "300 K" is named (UnlistedUnit, which the device
    counts in values_unlisted_unit_total), unlike text that is no reading at all."""
    temperature = FieldSpec.model_validate(
        {"column": 7, "pattern": r"^(?P<value>-?[\d.]+) ?(?P<unit>\S*)$",
         "units": {"C": 1, "F": "fahrenheit"}}
    )  # fmt: skip
    assert convert(temperature, b"35 C") == 35.0
    with pytest.raises(UnlistedUnit) as unlisted:
        convert(temperature, b"300 K")
    assert unlisted.value.unit == "K"
    with pytest.raises(UnlistedUnit) as bare:
        convert(temperature, b"35")  # no unit at all: not guessed to be C
    assert bare.value.unit == ""
    assert convert(temperature, b"Unavailable") is None  # no number: absent


async def test_an_unlisted_unit_is_reported_and_the_rest_of_the_row_kept() -> None:
    spec = table(
        index=["sensor"],
        tags={"sensor": {"index": "sensor"}},
        fields={
            "temperature_c": {"column": 7, "pattern": r"^(?P<value>[\d.]+) ?(?P<unit>\S*)$",
                              "units": {"C": 1}},
            "humidity_pct": {"column": 8},
        },
    )  # fmt: skip
    made, values = await make_plan([spec], walked({"1": {7: b"35 K", 8: 40}, "2": {7: b"21 C"}}))
    told: list[tuple[str, str, Value]] = []
    samples, complete = plan.execute(
        made, values, 1, Counters(), unlisted=lambda r, unit, raw: told.append((r.oid, unit, raw))
    )
    assert complete
    assert fields_by(samples, "sensor") == {
        "1": {"humidity_pct": 40.0},
        "2": {"temperature_c": 21.0},
    }
    assert told == [(f"{ENTRY}.7.1", "K", b"35 K")]


POWER_WATTS = "1.3.6.1.4.1.318.1.1.12.1.16.0"  # rPDUIdentDevicePowerWatts.0


async def test_a_field_falls_back_to_the_first_spec_that_gives_a_value() -> None:
    """APC's rPDU2 power is -1 on an AP7900B: `fallback` reads the field elsewhere, in order,
    each spec in its own way (another column of the row, its own scale; a scalar), and only
    where the ones before it gave nothing."""
    spec = table(
        index=["row"],
        tags={"row": {"index": "row"}},
        fields={
            "power_w": {
                "column": 5,
                "scale": 10,
                "absent": [-1],
                "fallback": [{"column": 6, "absent": [-1]}, {"oid": POWER_WATTS, "absent": [-1]}],
            }
        },
    )
    rows = {"1": {5: -1, 6: -1}, "2": {5: 11, 6: 999}, "3": {5: -1, 6: 200}, "4": {6: 70}}
    made, values = await make_plan([spec], walked(rows))
    samples, complete = plan.execute(made, {**values, POWER_WATTS: 312}, 1, Counters())
    assert complete
    assert fields_by(samples, "row") == {
        "1": {"power_w": 312.0},  # both columns -1: the scalar
        "2": {"power_w": 110.0},  # its own value, scaled: the others are not used
        "3": {"power_w": 200.0},  # the second column, unscaled
        "4": {"power_w": 70.0},  # no column 5 in this row at all
    }
    later = {**values, f"{ENTRY}.5.1": 30, POWER_WATTS: -1, f"{ENTRY}.6.3": -1}
    samples, _ = plan.execute(made, later, 2, Counters())
    assert fields_by(samples, "row") == {
        "1": {"power_w": 300.0},  # its own value is back
        "2": {"power_w": 110.0},
        "4": {"power_w": 70.0},  # row 3: nothing gives a value, no field, no sample
    }


async def test_a_scalar_field_falls_back_to_another_oid() -> None:
    group = ScalarGroup.model_validate(
        {
            "measurement": "pdu",
            "fields": {
                "power_w": {"oid": "1.3.6.1.4.1.9.1.0", "absent": [-1],
                            "fallback": {"oid": POWER_WATTS}}
            },
        }
    )  # fmt: skip

    async def walk(column: str) -> Mapping[str, Value]:
        return {}

    made, _ = await plan.build([Fragment(scalars=[group])], {}, walk)
    assert made.oids() == ["1.3.6.1.4.1.9.1.0", POWER_WATTS]
    for own, expected in ((-1, 312.0), (250, 250.0), (None, 312.0)):
        values = {POWER_WATTS: 312} | ({} if own is None else {"1.3.6.1.4.1.9.1.0": own})
        samples, complete = plan.execute(made, values, 1, Counters())
        assert complete
        assert [dict(s.fields) for s in samples] == [{"power_w": expected}]


@pytest.mark.parametrize(
    ("where", "spec", "problem"),
    [
        ("table", {"column": 5, "fallback": {"oid": POWER_WATTS, "type": "integer"}}, "same type"),
        ("table", {"column": 5, "fallback": {"scale": 2}}, "needs column or oid"),
        ("table", {"column": 5, "fallback": {"column": 6, "oid": POWER_WATTS}}, "not both"),
        (
            "table",
            {"column": 5, "fallback": {"column": 6, "fallback": {"oid": POWER_WATTS}}},
            "without fallbacks of its own",
        ),
        (
            "table",
            {"column": 5, "type": "counter", "counter_bits": 64, "fallback": {"column": 6,
             "type": "counter", "counter_bits": 64}},
            "a counter has no fallback",
        ),
        ("scalar", {"oid": "1.3.6.1.4.1.9.1.0", "fallback": {"column": 6}}, "needs oid"),
    ],
)  # fmt: skip
def test_fallbacks_are_checked_at_load(where: str, spec: dict[str, object], problem: str) -> None:
    def load() -> object:
        if where == "table":
            return table(fields={"power_w": spec})
        return ScalarGroup.model_validate({"measurement": "pdu", "fields": {"power_w": spec}})

    with pytest.raises(ValidationError, match=problem):
        load()
