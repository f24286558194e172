"""Value mapping rules, without a device: scaling, sentinels, enums, rows, counters, strings."""

from __future__ import annotations

from agent.mapping import Counters, Value, convert, index_parts, row_sample, scale_of, text
from agent.profile import FieldSpec, TableSpec


def table(**spec: object) -> TableSpec:
    return TableSpec.model_validate({"measurement": "m", "entry": "1.3.6.1.4.1.9.1", **spec})


def test_hex_strings_are_decoded_and_text_is_trimmed() -> None:
    """OCTET STRINGs: printable UTF-8 as text, anything else as colon-separated hex."""
    assert text(b"PDU A\x00") == "PDU A"
    assert text(b"\x00\x1b\x21\xaa\xbb\xcc") == "00:1b:21:aa:bb:cc"
    assert text(b"\xff\xfe") == "ff:fe"
    assert text("1.3.6.1.4.1.476.1.42.3.4.1.1.2") == "1.3.6.1.4.1.476.1.42.3.4.1.1.2"
    assert text(None) == ""


def test_scales_read_from_the_device() -> None:
    """Raritan decimal digits divide by 10**d; Rittal's signed factor divides or multiplies."""
    digits = FieldSpec.model_validate(
        {"column": 4, "scale_from": {"column": 7, "kind": "decimal_digits"}}
    )
    assert scale_of(digits, 3) == 0.001
    assert convert(digits, 680, scale_of(digits, 3)) == 0.68
    signed = FieldSpec.model_validate(
        {"column": 4, "scale_from": {"column": 5, "kind": "signed_factor"}}
    )
    assert convert(signed, 1900, scale_of(signed, -100)) == 19.0
    assert convert(signed, 53, scale_of(signed, -10)) == 5.3
    assert scale_of(signed, 10) == 10
    assert scale_of(signed, 0) == 1
    assert scale_of(signed, None) is None  # unknown scale: no value rather than a wrong one


def test_index_parts_are_named_and_the_last_takes_the_rest() -> None:
    spec = table(index=["pdu", "inlet", "sensor"], fields={"v_v": {"column": 4}})
    assert index_parts(spec, "1.1.4") == {"pdu": "1", "inlet": "1", "sensor": "4"}
    assert index_parts(spec, "1.2.3.4") == {"pdu": "1", "inlet": "2", "sensor": "3.4"}
    assert index_parts(spec, "1.2") is None


def test_rows_are_selected_by_index_part_and_by_column_text() -> None:
    spec = table(
        index=["pdu", "inlet", "sensor"],
        where=[{"index": "sensor", "in": [1]}, {"column": 2, "not_in": ["Err"]}],
        tags={"inlet": {"index": "inlet"}, "name": {"column": 2}},
        fields={"current_a": {"column": 4, "scale": 0.001}},
    )
    counters = Counters()
    keep = row_sample(spec, "1.1.1", {2: b"I1", 4: 680}, {}, {"site": "s"}, 7, counters)
    assert keep is not None
    assert dict(keep.tags) == {"site": "s", "inlet": "1", "name": "I1"}
    assert keep.fields == {"current_a": 0.68}
    assert row_sample(spec, "1.1.4", {2: b"I1", 4: 233}, {}, {}, 7, counters) is None
    assert row_sample(spec, "1.1.1", {2: b"Err", 4: 1}, {}, {}, 7, counters) is None
    assert row_sample(spec, "1.1.1", {4: 1}, {}, {}, 7, counters) is None  # unclassifiable


def test_oid_pointer_conditions_ignore_a_leading_dot() -> None:
    spec = table(
        where=[{"column": 2, "in": [".1.3.6.1.4.1.476.1.42.3.4.1.1.2"]}],
        fields={"supply_air_c": {"column": 3}},
    )
    row: dict[int, Value] = {2: "1.3.6.1.4.1.476.1.42.3.4.1.1.2", 3: 25}
    sample = row_sample(spec, "2", row, {}, {}, 1, Counters())
    assert sample is not None
    assert sample.fields == {"supply_air_c": 25.0}


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


def test_counter_fields_in_rows_are_monotonic_and_scaled() -> None:
    spec = table(
        fields={"energy_kwh": {"column": 3, "type": "counter", "counter_bits": 32, "scale": 0.001}}
    )
    counters = Counters()
    first = row_sample(spec, "1", {3: 2**32 - 1000}, {}, {}, 1, counters)
    second = row_sample(spec, "1", {3: 1000}, {}, {}, 2, counters)
    assert first is not None
    assert second is not None
    assert first.fields["energy_kwh"] == (2**32 - 1000) / 1000
    assert second.fields["energy_kwh"] == (2**32 + 1000) / 1000


def test_missing_and_unparseable_values_give_no_field() -> None:
    gauge = FieldSpec(column=1, absent=(-1, -410))
    assert convert(gauge, None) is None
    assert convert(gauge, -410) is None
    assert convert(gauge, b"n/a") is None
    assert convert(gauge, b" 12.5 ") == 12.5
    assert convert(FieldSpec(column=1), -26) == -26.0  # negative readings are real readings


def test_tags_joined_from_another_table_with_a_pattern() -> None:
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
    joined: dict[str, Value] = {"1.3.6.1.4.1.9.2.3.1.7": b"web-07"}
    sample = row_sample(spec, "1.7.1", {2: b"Phase AB", 4: 2}, joined, {}, 1, Counters())
    assert sample is not None
    assert dict(sample.tags) == {"outlet_name": "web-07", "phase": "AB"}


def test_bool_and_absolute_fields() -> None:
    flag = FieldSpec.model_validate({"column": 1, "type": "bool", "true_values": [1]})
    assert convert(flag, 1) is True
    assert convert(flag, 2) is False
    power_factor = FieldSpec(column=1, scale=0.001, absolute=True)
    assert convert(power_factor, -946) == 0.946


def test_a_condition_may_keep_rows_that_lack_its_column() -> None:
    spec = table(
        where=[{"column": 5, "not_in": [0], "missing": "keep"}],
        fields={"current_a": {"column": 2}},
    )
    assert row_sample(spec, "1", {2: 3}, {}, {}, 1, Counters()) is not None
    assert row_sample(spec, "1", {2: 3, 5: 0}, {}, {}, 1, Counters()) is None


def test_temperatures_in_fahrenheit_are_converted_or_dropped_when_unknown() -> None:
    """A device set to display Fahrenheit reports 77.0: that is 25 C. No setting: no value."""
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
    counters = Counters()
    fahrenheit: dict[str, Value] = {"1.3.6.1.4.1.9.5.9.0": 1}
    celsius: dict[str, Value] = {"1.3.6.1.4.1.9.5.9.0": 0}
    in_f = row_sample(spec, "0.1", {3: 770}, fahrenheit, {}, 1, counters)
    in_c = row_sample(spec, "0.1", {3: 250}, celsius, {}, 1, counters)
    assert in_f is not None
    assert in_c is not None
    assert in_f.fields["temperature_c"] == 25.0
    assert in_c.fields["temperature_c"] == 25.0
    assert row_sample(spec, "0.1", {3: 250}, {}, {}, 1, counters) is None
