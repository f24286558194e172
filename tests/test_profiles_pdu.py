"""The Raritan, Eaton, ServerTech and Vertiv PDU profiles against the real recordings.

Each recording is served by snmpsim and polled with autodetection, as `rackwatch probe` does.
Expected values are the ones shared/devices/README.md names for each recording (what LibreNMS
reads from the same data), so a scaling or mapping mistake shows up as a disagreement with an
independent reader. Samples from several table specs with the same tags are merged the way
InfluxDB merges them (one point per series and timestamp). Element tags (`unit`, `inlet`,
`outlet`, `bank`, ...) are the device's index numbers; names the device gives its elements are
extra `*_name` tags, checked here as line protocol carries them (an empty name is no tag).
"""

from __future__ import annotations

import pytest

from agent.snmp import SnmpDevice, SnmpTarget
from rackwatch.localservices import Running
from telemetry import lineproto
from telemetry.sample import FieldValue, Sample

pytestmark = pytest.mark.integration

Fields = dict[str, FieldValue]
Tags = dict[str, str]


async def poll(snmpsim: Running, recording: str) -> tuple[SnmpDevice, list[Sample]]:
    device = SnmpDevice(recording, SnmpTarget(snmpsim.host, snmpsim.port, recording), {})
    return device, await device.collect()


def points(samples: list[Sample], measurement: str, *tags: str) -> dict[tuple[str, ...], Fields]:
    """Fields of one measurement merged per series, keyed by the values of the given tags."""
    merged: dict[tuple[str, ...], Fields] = {}
    series: dict[tuple[str, ...], dict[str, str]] = {}
    for sample in samples:
        if sample.measurement != measurement:
            continue
        key = tuple(sample.tags.get(tag, "") for tag in tags)
        if key in series:
            assert series[key] == dict(sample.tags), f"{measurement} {key}: tags differ"
        series[key] = dict(sample.tags)
        merged.setdefault(key, {}).update(sample.fields)
    return merged


def numeric(fields: Fields, *names: str) -> dict[str, FieldValue]:
    return {name: fields[name] for name in names}


def names(samples: list[Sample], measurement: str, *tags: str) -> dict[tuple[str, ...], Tags]:
    """The `*_name` tags of each series as written (line protocol drops empty tag values)."""
    found: dict[tuple[str, ...], Tags] = {}
    for sample in samples:
        if sample.measurement == measurement:
            written = lineproto.parse_line(lineproto.encode(sample)).tags
            key = tuple(written.get(tag, "") for tag in tags)
            found[key] = {k: v for k, v in written.items() if k.endswith("_name")}
    return found


# ---------------------------------------------------------------- Raritan PX2 (PDU2-MIB)


async def test_raritan_px2_is_detected_with_its_model(snmpsim: Running) -> None:
    """sysObjectID raritan.pdu2 picks raritan_pdu2; the model comes from sysDescr."""
    device, samples = await poll(snmpsim, "raritan-pdu_px2")
    assert device.identity is not None
    assert device.identity.profile.name == "raritan_pdu2"
    assert device.identity.model == "PX2"
    assert {(s.tags["vendor"], s.tags["model"]) for s in samples} == {("raritan", "PX2")}


async def test_raritan_inlet_readings_are_scaled_by_their_decimal_digits(
    snmpsim: Running,
) -> None:
    """Inlet 1 (I1): 680 at 3 digits is 0.680 A, 500 at 1 digit is 50.0 Hz, 233 V and 138 W."""
    _, samples = await poll(snmpsim, "raritan-pdu_px2")
    inlets = points(samples, "pdu_inlet", "unit", "inlet")
    assert list(inlets) == [("1", "1")]
    assert inlets[("1", "1")] == pytest.approx(
        {"current_a": 0.680, "voltage_v": 233.0, "power_w": 138.0, "frequency_hz": 50.0}
    )


async def test_raritan_sensors_the_inlet_lacks_give_no_field(snmpsim: Running) -> None:
    """No apparent-power, power-factor, energy or unbalance sensor rows: no such fields."""
    _, samples = await poll(snmpsim, "raritan-pdu_px2")
    inlet = points(samples, "pdu_inlet", "inlet")[("1",)]
    for absent in ("apparent_power_va", "power_factor", "energy_kwh", "out_of_balance_pct"):
        assert absent not in inlet
    assert not points(samples, "pdu_line")
    assert not points(samples, "pdu_bank")


async def test_raritan_outlets_report_current_and_power(snmpsim: Running) -> None:
    """12 outlets; outlet 3 draws 0.311 A at 68 W, outlets 10/11 0.184/0.185 A at 35 W."""
    _, samples = await poll(snmpsim, "raritan-pdu_px2")
    outlets = points(samples, "pdu_outlet", "outlet")
    assert sorted(int(o) for (o,) in outlets) == list(range(1, 13))
    assert outlets[("3",)] == pytest.approx({"current_a": 0.311, "power_w": 68.0})
    assert outlets[("10",)] == pytest.approx({"current_a": 0.184, "power_w": 35.0})
    assert outlets[("11",)] == pytest.approx({"current_a": 0.185, "power_w": 35.0})
    assert outlets[("1",)] == {"current_a": 0.0, "power_w": 0.0}  # a real zero, not absent
    assert all("state" not in f for f in outlets.values())  # metered: no onOff sensor


async def test_raritan_names_come_from_the_configuration_tables(snmpsim: Running) -> None:
    """inletLabel I1 names the inlet; outletName names outlets 2-12 (outlet 1's is empty)."""
    _, samples = await poll(snmpsim, "raritan-pdu_px2")
    assert names(samples, "pdu_inlet", "unit", "inlet") == {("1", "1"): {"inlet_name": "I1"}}
    outlets = names(samples, "pdu_outlet", "unit", "outlet")
    assert outlets[("1", "3")] == {"outlet_name": "OUTLET3"}
    assert outlets[("1", "12")] == {"outlet_name": "OUTLET12"}
    assert outlets[("1", "1")] == {}  # an empty name is no tag, and the outlet still reports


# ---------------------------------------------------------------- Eaton ePDU (EATON-EPDU-MIB)


async def test_eatonpdu_is_detected_with_its_part_number(snmpsim: Running) -> None:
    """sysObjectID eatonEpdu picks eaton_epdu; the model is the master unit's part number."""
    device, samples = await poll(snmpsim, "eatonpdu_2")
    assert device.identity is not None
    assert device.identity.profile.name == "eaton_epdu"
    assert device.identity.model == "EMA114-10"
    assert {s.tags["model"] for s in samples} == {"EMA114-10"}


async def test_eatonpdu_input_phase_readings_from_milli_units(snmpsim: Running) -> None:
    """Input 0.1.1: 14.108 A, 118.45 V, 1589 W, 1674 VA, in a high-warning current state."""
    _, samples = await poll(snmpsim, "eatonpdu_2")
    phases = points(samples, "pdu_phase", "unit", "inlet", "phase")
    assert list(phases) == [("0", "1", "1")]
    phase = phases[("0", "1", "1")]
    expected = {
        "current_a": 14.108,
        "voltage_v": 118.45,
        "power_w": 1589.0,
        "apparent_power_va": 1674.0,
    }
    assert numeric(phase, *expected) == pytest.approx(expected)
    assert phase["load_state"] == "near_overload"  # inputCurrentThStatus highWarning(3)


async def test_eatonpdu_power_factor_is_its_magnitude(snmpsim: Running) -> None:
    """inputPowerFactor -946 (the sign tells leading/lagging) reads 0.946, as the total does."""
    _, samples = await poll(snmpsim, "eatonpdu_2")
    phase = points(samples, "pdu_phase", "phase")[("1",)]
    assert phase["power_factor"] == pytest.approx(0.946)
    inlet = points(samples, "pdu_inlet", "unit", "inlet")[("0", "1")]
    assert inlet == pytest.approx(
        {
            "frequency_hz": 60.0,
            "power_w": 1584.0,
            "apparent_power_va": 1673.0,
            "power_factor": 0.946,
            "energy_kwh": 8185.493,
        }
    )


async def test_eatonpdu_outlets_report_current_power_and_state(snmpsim: Running) -> None:
    """24 outlets, all on; A2 (index 2) draws 2.202 A at 142 W, A12 1.804 A at 211 W."""
    _, samples = await poll(snmpsim, "eatonpdu_2")
    outlets = points(samples, "pdu_outlet", "unit", "outlet")
    assert sorted(int(o) for _, o in outlets) == list(range(1, 25))
    assert numeric(outlets[("0", "2")], "current_a", "power_w") == pytest.approx(
        {"current_a": 2.202, "power_w": 142.0}
    )
    assert numeric(outlets[("0", "12")], "current_a", "power_w") == pytest.approx(
        {"current_a": 1.804, "power_w": 211.0}
    )
    assert {f["state"] for f in outlets.values()} == {"on"}
    assert all("voltage_v" not in f for f in outlets.values())  # no outletVoltageTable here


async def test_eatonpdu_names_outlets_by_designator_and_inputs_by_feed(snmpsim: Running) -> None:
    """outletDesignator A2 names outlet 2 (its outletID is "2"); inputFeedName is "Feed A"."""
    _, samples = await poll(snmpsim, "eatonpdu_2")
    outlets = names(samples, "pdu_outlet", "unit", "outlet")
    assert outlets[("0", "2")] == {"outlet_name": "A2"}
    assert {n["outlet_name"] for n in outlets.values()} == {f"A{n}" for n in range(1, 25)}
    assert names(samples, "pdu_inlet", "unit", "inlet") == {("0", "1"): {"inlet_name": "Feed A"}}
    assert names(samples, "pdu_phase", "phase") == {("1",): {"inlet_name": "Feed A"}}


# ---------------------------------------------------------------- ServerTech Sentry4


async def test_sentry4_is_detected_with_the_master_unit_model(snmpsim: Running) -> None:
    """sysObjectID sentry4 picks servertech_sentry4; the model is st4UnitModel of unit 1."""
    device, samples = await poll(snmpsim, "sentry4")
    assert device.identity is not None
    assert device.identity.profile.name == "servertech_sentry4"
    assert device.identity.model == "C2S42CE-YCMFAM00"
    assert {s.tags["vendor"] for s in samples} == {"servertech"}


async def test_sentry4_cords_per_unit(snmpsim: Running) -> None:
    """Master_Cord_A (unit 1) 1701 W, 60.0 Hz, 2.6 % out of balance; Link1_Cord_A 1265 W."""
    _, samples = await poll(snmpsim, "sentry4")
    cords = points(samples, "pdu_inlet", "unit", "inlet")
    assert sorted(cords) == [("1", "1"), ("2", "1")]
    master = cords[("1", "1")]
    assert numeric(master, "power_w", "frequency_hz", "out_of_balance_pct") == pytest.approx(
        {"power_w": 1701.0, "frequency_hz": 60.0, "out_of_balance_pct": 2.6}
    )
    assert master["load_state"] == "normal"
    assert cords[("2", "1")]["power_w"] == pytest.approx(1265.0)


async def test_sentry4_line_currents_and_phase_voltages(snmpsim: Running) -> None:
    """Unit AA lines 5.60/3.69/5.60 A, unit BA 3.84/3.63/3.46 A; AA phases 207.9/208.9/209.4 V."""
    _, samples = await poll(snmpsim, "sentry4")
    lines = points(samples, "pdu_line", "unit", "inlet", "line")
    assert {k: f["current_a"] for k, f in lines.items()} == pytest.approx(
        {
            ("1", "1", "1"): 5.60,
            ("1", "1", "2"): 3.69,
            ("1", "1", "3"): 5.60,
            ("2", "1", "1"): 3.84,
            ("2", "1", "2"): 3.63,
            ("2", "1", "3"): 3.46,
        }
    )
    phases = points(samples, "pdu_phase", "unit", "phase")
    assert [phases[("1", p)]["voltage_v"] for p in "123"] == pytest.approx([207.9, 208.9, 209.4])
    assert [phases[("1", p)]["current_a"] for p in "123"] == pytest.approx([2.09, 2.22, 4.29])


async def test_sentry4_branches_are_banks_without_unrecorded_current(snmpsim: Running) -> None:
    """Six branches (3 per unit) are on and normal; st4BranchCurrent is not recorded."""
    _, samples = await poll(snmpsim, "sentry4")
    banks = points(samples, "pdu_bank", "unit", "bank")
    assert sorted(banks) == [(u, b) for u in "12" for b in "123"]
    assert all(f == {"state": "on", "load_state": "normal"} for f in banks.values())


async def test_sentry4_names_cords_and_labels_lines_phases_branches(snmpsim: Running) -> None:
    """Cord AA (unit 1, cord 1) is Master_Cord_A, BA Link1_Cord_A; lines, phases and branches
    carry their system labels (AA:L1, AA:L1-L2, AA:L1-L2-BR1). st4UnitName is not recorded."""
    _, samples = await poll(snmpsim, "sentry4")
    assert names(samples, "pdu_inlet", "unit", "inlet") == {
        ("1", "1"): {"inlet_name": "Master_Cord_A"},
        ("2", "1"): {"inlet_name": "Link1_Cord_A"},
    }
    cord_aa = {"inlet_name": "Master_Cord_A"}
    lines = names(samples, "pdu_line", "unit", "inlet", "line")
    assert lines[("1", "1", "1")] == {**cord_aa, "line_name": "AA:L1"}
    assert lines[("2", "1", "3")] == {"inlet_name": "Link1_Cord_A", "line_name": "BA:L3"}
    phases = names(samples, "pdu_phase", "unit", "inlet", "phase")
    assert phases[("1", "1", "3")] == {**cord_aa, "phase_name": "AA:L3-L1"}
    banks = names(samples, "pdu_bank", "unit", "inlet", "bank")
    assert banks[("1", "1", "1")] == {**cord_aa, "bank_name": "AA:L1-L2-BR1"}


async def test_sentry4_absent_probes_give_no_environment_sample(snmpsim: Running) -> None:
    """Humidity rows read -1 with status notFound: no env_sensor sample, no -1 % anywhere."""
    _, samples = await poll(snmpsim, "sentry4")
    assert not points(samples, "env_sensor")
    assert -1.0 not in [v for s in samples for v in s.fields.values()]


# ---------------------------------------------------------------- Vertiv / Geist (VERTIV-V5-MIB)


async def test_vertiv_is_detected_with_its_model_number(snmpsim: Running) -> None:
    """sysObjectID 21239.42.1.53 picks vertiv_geist; the model is productModelNumber."""
    device, samples = await poll(snmpsim, "vertiv-pdu_mn03edr1")
    assert device.identity is not None
    assert device.identity.profile.name == "vertiv_geist"
    assert device.identity.model == "MN03EDR1-15P3B8-6PS15D0H10-S"
    assert {s.tags["model"] for s in samples} == {"MN03EDR1-15P3B8-6PS15D0H10-S"}


async def test_vertiv_line_currents(snmpsim: Running) -> None:
    """pduLineTable: lines A/B/C ("Line A": the tag is the letter) carry 12.55/12.64/12.59 A."""
    _, samples = await poll(snmpsim, "vertiv-pdu_mn03edr1")
    lines = points(samples, "pdu_line", "line")
    assert {k: f["current_a"] for (k,), f in lines.items()} == pytest.approx(
        {"A": 12.55, "B": 12.64, "C": 12.59}
    )
    assert names(samples, "pdu_line", "line")[("A",)] == {"line_name": "Line A"}


async def test_vertiv_phase_readings_in_schema_units(snmpsim: Running) -> None:
    """Phase AB: 7.25 A, 206.8 V, 1464 W, 1500 VA, power factor 97 % -> 0.97, 5207918 Wh."""
    _, samples = await poll(snmpsim, "vertiv-pdu_mn03edr1")
    phases = points(samples, "pdu_phase", "phase")
    assert sorted(phases) == [("AB",), ("BC",), ("CA",)]  # "Phase AB" -> AB
    assert names(samples, "pdu_phase", "phase")[("AB",)] == {"phase_name": "Phase AB"}
    assert phases[("AB",)] == pytest.approx(
        {
            "current_a": 7.25,
            "voltage_v": 206.8,
            "power_w": 1464.0,
            "apparent_power_va": 1500.0,
            "power_factor": 0.97,
            "energy_kwh": 5207.918,
        }
    )
    assert phases[("BC",)]["voltage_v"] == pytest.approx(207.9)
    assert phases[("CA",)]["current_a"] == pytest.approx(7.23)


async def test_vertiv_breakers_are_banks_with_current_only(snmpsim: Running) -> None:
    """Circuits 1-6 read 4.67/4.70/4.66/2.57/2.56/2.52 A; unrecorded columns give no field.
    The bank tag is the index; the breaker label ("Circuit 1 - Phase AB") is bank_name."""
    _, samples = await poll(snmpsim, "vertiv-pdu_mn03edr1")
    banks = points(samples, "pdu_bank", "bank")
    assert banks == {
        (str(n),): {"current_a": pytest.approx(amps)}
        for n, amps in enumerate([4.67, 4.70, 4.66, 2.57, 2.56, 2.52], start=1)
    }
    assert names(samples, "pdu_bank", "bank")[("1",)] == {"bank_name": "Circuit 1 - Phase AB"}
    assert names(samples, "pdu_bank", "bank")[("6",)] == {"bank_name": "Circuit 6 - Phase CA"}


# ---------------------------------------------------------------- all four


@pytest.mark.parametrize(
    "recording", ["raritan-pdu_px2", "eatonpdu_2", "sentry4", "vertiv-pdu_mn03edr1"]
)
async def test_fields_follow_the_schema_conventions(snmpsim: Running, recording: str) -> None:
    """Numeric fields carry a unit suffix (or are power_factor, 0..1); states are text."""
    _, samples = await poll(snmpsim, recording)
    assert samples
    units = ("_a", "_v", "_w", "_va", "_kwh", "_hz", "_pct")
    for sample in samples:
        for tag in ("unit", "inlet", "bank", "outlet"):  # stable identifiers: index numbers
            if tag in sample.tags:
                assert sample.tags[tag].isdigit(), f"{sample.measurement} {dict(sample.tags)}"
        for name, value in sample.fields.items():
            where = f"{sample.measurement}.{name} = {value!r}"
            if name in ("state", "load_state", "alarm"):
                assert isinstance(value, str), where
                assert value == value.lower(), where
            elif name == "power_factor":
                assert isinstance(value, float), where
                assert 0.0 <= value <= 1.0, where
            else:
                assert isinstance(value, float), where
                assert name.endswith(units), where
