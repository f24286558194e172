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

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from agent import snmp
from agent.mapping import Value
from agent.snmp import SnmpDevice, SnmpTarget
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry import lineproto
from telemetry.sample import FieldValue, Sample
from tests.conftest import RECORDINGS

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
    """Humidity rows read -1 with status notFound, temperature rows -410 (unit 1 with status
    normal, unit 2 notFound) while st4TempSensorScale is readable (celsius): no env_sensor
    sample, no -1 % and no -41 C anywhere."""
    recorded = _recording("sentry4")
    assert recorded[ST4_TEMP_SCALE] == "2|0"
    assert {recorded[f"{ST4_TEMP_MON}.1.{i}"] for i in ("1.1", "1.2", "2.1", "2.2")} == {"2|-410"}
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
    units = ("_a", "_v", "_w", "_va", "_kwh", "_hz", "_pct", "_c")
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


# ---------------------------------------------------------------- temperature probes
# The shared PDU recordings have no connected temperature probe (Sentry4: all -410; Eaton,
# Vertiv, Raritan: no probe table and, for Eaton and Vertiv, no unit setting either), so the
# Celsius and Fahrenheit paths are proven on copies of them with probes and settings added.

ST4_TEMP_SCALE = "1.3.6.1.4.1.1718.4.1.9.1.10.0"  # st4TempSensorScale: celsius 0, fahrenheit 1
ST4_TEMP_CFG = "1.3.6.1.4.1.1718.4.1.9.2.1"  # st4TempSensorConfigEntry, index unit.sensor
ST4_TEMP_MON = "1.3.6.1.4.1.1718.4.1.9.3.1"  # st4TempSensorMonitorEntry: 1 value, 2 status
EATON_UNIT = "1.3.6.1.4.1.534.6.6.7.1.2.1"  # unitEntry; column 9 temperatureScale (C 0, F 1)
EATON_TEMP = "1.3.6.1.4.1.534.6.6.7.7.1.1"  # temperatureEntry, index unit.probe
EATON_HUMID = "1.3.6.1.4.1.534.6.6.7.7.2.1"  # humidityEntry, index unit.probe
VERTIV_UNITS = "1.3.6.1.4.1.21239.5.2.1.7.0"  # temperatureUnits: fahrenheit 0, celsius 1
VERTIV_RT = "1.3.6.1.4.1.21239.5.2.4.1"  # tempSensorEntry
VERTIV_THD = "1.3.6.1.4.1.21239.5.2.9.1"  # thdSensorEntry
VERTIV_T3HD = "1.3.6.1.4.1.21239.5.2.8.1"  # t3hdSensorEntry
VERTIV_AIRFLOW = "1.3.6.1.4.1.21239.5.2.5.1"  # airFlowSensorEntry


def _recording(name: str) -> dict[str, str]:
    """A shared recording as OID -> "TYPE|VALUE"."""
    text = (RECORDINGS / f"{name}.snmprec").read_text(encoding="utf-8")
    return {line.split("|", 1)[0]: line.split("|", 1)[1] for line in text.splitlines() if line}


def _write_recording(path: Path, lines: dict[str, str]) -> None:
    ordered = sorted(lines.items(), key=lambda item: tuple(int(p) for p in item[0].split(".")))
    path.write_text("".join(f"{oid}|{value}\n" for oid, value in ordered), encoding="utf-8")


def _row(entry: str, index: str, columns: dict[int, str]) -> dict[str, str]:
    return {f"{entry}.{column}.{index}": value for column, value in columns.items()}


def _vertiv_probes(temps: dict[str, int]) -> dict[str, str]:
    """One probe of each Vertiv kind, temperatures (tenths, in the device's unit) by name."""
    return {
        **_row(VERTIV_RT, "1", {2: "4|RT001", 3: "4|Top", 4: "66|1", 5: f"2|{temps['rt']}"}),
        **_row(VERTIV_RT, "2", {2: "4|RT002", 3: "4|Gone", 4: "66|0", 5: "2|0"}),
        **_row(
            VERTIV_THD,
            "1",
            {2: "4|THD001", 3: "4|Rack 12 inlet", 4: "66|1", 5: f"2|{temps['thd']}", 6: "2|40"}
            | {7: f"2|{temps['thd_dew']}"},
        ),
        **_row(
            VERTIV_T3HD,
            "1",
            {2: "4|T3HD01", 3: "4|Rack 14", 4: "66|1", 5: "4|Int", 6: f"2|{temps['int']}"}
            | {7: "2|45", 8: f"2|{temps['int_dew']}", 9: "66|1", 10: "4|Front top"}
            | {11: f"2|{temps['ext_a']}", 12: "66|0", 13: "4|Front bottom", 14: "2|0"},
        ),
        **_row(
            VERTIV_AIRFLOW,
            "1",
            {2: "4|AF01", 3: "4|Aisle", 4: "66|1", 5: f"2|{temps['af']}", 6: "2|50", 7: "2|35"}
            | {8: f"2|{temps['af_dew']}"},
        ),
    }


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """snmpsim serving copies of sentry4, eatonpdu_2 and vertiv-pdu_mn03edr1 with probes."""
    data = tmp_path_factory.mktemp("probes")

    sentry4 = _recording("sentry4")
    sentry4[f"{ST4_TEMP_MON}.1.1.1"] = "2|253"  # A1: 25.3 (status normal(0) as recorded)
    _write_recording(data / "sentry4_celsius.snmprec", sentry4)
    fahrenheit = sentry4 | {
        ST4_TEMP_SCALE: "2|1",
        f"{ST4_TEMP_MON}.1.1.1": "2|770",  # 77.0 F
        f"{ST4_TEMP_MON}.1.2.1": "2|680",  # B1: a value, but status notFound(7) as recorded
    }
    _write_recording(data / "sentry4_fahrenheit.snmprec", fahrenheit)
    no_scale = sentry4.copy()
    del no_scale[ST4_TEMP_SCALE]
    _write_recording(data / "sentry4_no_scale.snmprec", no_scale)

    eaton = _recording("eatonpdu_2") | {
        f"{EATON_UNIT}.9.0": "2|0",  # master: celsius
        f"{EATON_UNIT}.9.1": "2|1",  # first daisy-chained unit: fahrenheit; unit 2: unreadable
        **_row(EATON_TEMP, "0.1", {2: "4|Rack inlet", 3: "2|1", 4: "2|245"}),
        **_row(EATON_TEMP, "0.2", {2: "4|Rack exhaust", 3: "2|1", 4: "2|-1"}),
        **_row(EATON_TEMP, "1.1", {2: "4|Inlet B", 3: "2|1", 4: "2|860"}),
        **_row(EATON_TEMP, "1.2", {2: "4|Unplugged", 3: "2|0", 4: "2|250"}),
        **_row(EATON_TEMP, "2.1", {2: "4|Inlet C", 3: "2|1", 4: "2|230"}),
        **_row(EATON_HUMID, "2.1", {2: "4|Inlet C", 3: "2|1", 4: "2|455"}),
    }
    _write_recording(data / "eaton_probes.snmprec", eaton)

    celsius = {"rt": 241, "thd": 235, "thd_dew": 92, "int": 220, "int_dew": 95, "ext_a": 230}
    celsius |= {"af": 210, "af_dew": 50}
    vertiv = _recording("vertiv-pdu_mn03edr1") | _vertiv_probes(celsius)
    _write_recording(data / "vertiv_celsius.snmprec", vertiv | {VERTIV_UNITS: "2|1"})
    _write_recording(data / "vertiv_no_units.snmprec", vertiv)
    fahrenheit_temps = {"rt": 770, "thd": 743, "thd_dew": 482, "int": 680, "int_dew": 500}
    fahrenheit_temps |= {"ext_a": 806, "af": 320, "af_dew": 140}
    vertiv_f = _recording("vertiv-pdu_mn03edr1") | _vertiv_probes(fahrenheit_temps)
    _write_recording(data / "vertiv_fahrenheit.snmprec", vertiv_f | {VERTIV_UNITS: "2|0"})

    service = localservices.start_snmpsim(data, tmp_path_factory.mktemp("probes-snmpsim"))
    yield service
    localservices.stop(service)


async def test_sentry4_celsius_probe_in_tenths(probes: Running) -> None:
    """Scale celsius(0): A1 reads 253 -> 25.3 C, named st4TempSensorName; -410 rows and
    notFound rows give no sample."""
    _, samples = await poll(probes, "sentry4_celsius")
    sensors = points(samples, "env_sensor", "unit", "sensor")
    assert sensors == {("1", "1"): {"temperature_c": pytest.approx(25.3)}}
    assert names(samples, "env_sensor", "unit", "sensor") == {
        ("1", "1"): {"sensor_name": "Temp_Sensor_A1"}
    }


async def test_sentry4_fahrenheit_probe_is_converted(probes: Running) -> None:
    """Scale fahrenheit(1): 770 -> 77.0 F -> 25.0 C; B1's 680 has status notFound: nothing."""
    _, samples = await poll(probes, "sentry4_fahrenheit")
    sensors = points(samples, "env_sensor", "unit", "sensor")
    assert sensors == {("1", "1"): {"temperature_c": pytest.approx(25.0)}}


async def test_sentry4_without_the_scale_gives_no_temperature(probes: Running) -> None:
    """st4TempSensorScale unreadable: the 253 reading is not guessed into a unit."""
    _, samples = await poll(probes, "sentry4_no_scale")
    assert not points(samples, "env_sensor")
    assert points(samples, "pdu_inlet", "unit", "inlet")  # the PDU itself still reports


def test_eatonpdu_recording_has_no_probes_and_no_temperature_scale() -> None:
    """eatonpdu_2 has no temperatureTable and no temperatureScale (unitEntry 9): it proves
    neither path; the copy below does."""
    recorded = _recording("eatonpdu_2")
    assert not [oid for oid in recorded if oid.startswith(("1.3.6.1.4.1.534.6.6.7.7.",))]
    assert not [oid for oid in recorded if oid.startswith(f"{EATON_UNIT}.9.")]


async def test_eatonpdu_recording_gives_no_environment_sample(snmpsim: Running) -> None:
    _, samples = await poll(snmpsim, "eatonpdu_2")
    assert not points(samples, "env_sensor")


async def test_eatonpdu_probes_follow_their_own_units_scale(probes: Running) -> None:
    """Each strapped unit has its own temperatureScale: unit 0 celsius (245 -> 24.5 C), unit 1
    fahrenheit (860 -> 86.0 F -> 30.0 C), unit 2 unreadable (no temperature, humidity still
    45.5 %). -1 and a disconnected probe give nothing."""
    _, samples = await poll(probes, "eaton_probes")
    sensors = points(samples, "env_sensor", "unit", "sensor", "sensor_name")
    assert sensors == {
        ("0", "1", "Rack inlet"): {"temperature_c": pytest.approx(24.5)},
        ("1", "1", "Inlet B"): {"temperature_c": pytest.approx(30.0)},
        ("2", "1", "Inlet C"): {"humidity_pct": pytest.approx(45.5)},
    }


async def test_vertiv_recording_has_no_probes_and_no_temperature_units(snmpsim: Running) -> None:
    """vertiv-pdu_mn03edr1 has no sensor table and no temperatureUnits: no env_sensor."""
    recorded = _recording("vertiv-pdu_mn03edr1")
    assert VERTIV_UNITS not in recorded
    _, samples = await poll(snmpsim, "vertiv-pdu_mn03edr1")
    assert not points(samples, "env_sensor")


async def test_vertiv_celsius_probes_with_dew_points(probes: Running) -> None:
    """temperatureUnits celsius(1): tenths of a degree; THD, T3HD and AFHT3 give dew points;
    the T3HD's available external probe A is its own series (tag probe=ext_a), B is not
    available; an unavailable RT sensor gives nothing."""
    _, samples = await poll(probes, "vertiv_celsius")
    sensors = points(samples, "env_sensor", "sensor", "probe")
    assert sensors == {
        ("RT001", ""): {"temperature_c": pytest.approx(24.1)},
        ("THD001", ""): pytest.approx(
            {"temperature_c": 23.5, "humidity_pct": 40.0, "dew_point_c": 9.2}
        ),
        ("T3HD01", ""): pytest.approx(
            {"temperature_c": 22.0, "humidity_pct": 45.0, "dew_point_c": 9.5}
        ),
        ("T3HD01", "ext_a"): {"temperature_c": pytest.approx(23.0)},
        ("AF01", ""): pytest.approx(
            {"temperature_c": 21.0, "humidity_pct": 35.0, "dew_point_c": 5.0}
        ),
    }
    labels = names(samples, "env_sensor", "sensor", "probe")
    assert labels[("THD001", "")] == {"sensor_name": "Rack 12 inlet"}
    assert labels[("T3HD01", "ext_a")] == {"sensor_name": "Front top"}


async def test_vertiv_fahrenheit_probes_are_converted(probes: Running) -> None:
    """temperatureUnits fahrenheit(0) (reversed coding): 74.3 F -> 23.5 C, dew point 48.2 F
    -> 9.0 C, 80.6 F -> 27.0 C, 32.0 F -> 0.0 C, 14.0 F -> -10.0 C; humidity unchanged."""
    _, samples = await poll(probes, "vertiv_fahrenheit")
    sensors = points(samples, "env_sensor", "sensor", "probe")
    expected = {
        ("RT001", ""): {"temperature_c": 25.0},
        ("THD001", ""): {"temperature_c": 23.5, "humidity_pct": 40.0, "dew_point_c": 9.0},
        ("T3HD01", ""): {"temperature_c": 20.0, "humidity_pct": 45.0, "dew_point_c": 10.0},
        ("T3HD01", "ext_a"): {"temperature_c": 27.0},
        ("AF01", ""): {"temperature_c": 0.0, "humidity_pct": 35.0, "dew_point_c": -10.0},
    }
    assert sensors == {key: pytest.approx(fields, abs=0.001) for key, fields in expected.items()}


async def test_vertiv_without_temperature_units_reports_humidity_only(probes: Running) -> None:
    """temperatureUnits unreadable: no temperature or dew point is guessed; humidity stays."""
    _, samples = await poll(probes, "vertiv_no_units")
    sensors = points(samples, "env_sensor", "sensor", "probe")
    assert sensors == {
        ("THD001", ""): {"humidity_pct": 40.0},
        ("T3HD01", ""): {"humidity_pct": 45.0},
        ("AF01", ""): {"humidity_pct": 35.0},
    }


async def test_raritan_external_sensors_by_their_joined_type(snmpsim: Running) -> None:
    """External probes say what they are only in the configuration table (externalSensorType
    10 temperature, 11 humidity): read by a pivot on that joined column, scaled by its decimal
    digits; the contact closures and the absolute humidity probe are left out."""
    _, samples = await poll(snmpsim, "raritan-pdu_px2-temp")
    assert points(samples, "env_sensor", "sensor") == {
        ("1",): {"temperature_c": 22.9},
        ("2",): {"humidity_pct": 15.0},
        ("3",): {"temperature_c": 22.6},
        ("4",): {"temperature_c": 23.7},
    }
    assert names(samples, "env_sensor", "sensor")[("2",)] == {"sensor_name": "Relative Humidity 1"}


class CountingDevice(SnmpDevice):
    """Notes each GET (the OIDs asked for) and each column walked."""

    def __init__(self, snmpsim: Running, recording: str) -> None:
        super().__init__(recording, SnmpTarget(snmpsim.host, snmpsim.port, recording), {})
        self.asked: list[int] = []
        self.walked: list[str] = []

    async def get(self, oids: Iterable[str], what: str = "") -> dict[str, Value]:
        wanted = list(oids)
        self.asked.append(len(wanted))
        return await super().get(wanted, what)

    async def _walk_once(self, base: str) -> dict[str, Value]:
        self.walked.append(base)
        return await super()._walk_once(base)


@pytest.mark.parametrize("recording", ["raritan-pdu_px2-temp", "rittal-lcp_cmciii-pu-lcp"])
async def test_pivoted_tables_cost_no_extra_requests_per_poll(
    snmpsim: Running, recording: str
) -> None:
    """After the poll that makes the plan, a poll of pivoted, joined and self-describing tables
    walks nothing and asks one GET list: every field's OID once, and sysUpTime (batched 24 per
    request, the fewest requests that can carry them)."""
    device = CountingDevice(snmpsim, recording)
    await device.collect()
    device.asked.clear()
    device.walked.clear()
    samples = await device.collect()
    assert device.walked == []
    assert device.asked == [sum(len(s.fields) for s in samples) + 1]


async def test_the_plan_is_made_again_when_it_is_old(
    snmpsim: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every LAYOUT_REFRESH_S the tables are walked again (a probe plugged in, an outlet
    added shows up), with the same columns as the first time and the same samples."""
    device = CountingDevice(snmpsim, "raritan-pdu_px2")
    first = await device.collect()
    walked = list(device.walked)
    monkeypatch.setattr(snmp, "LAYOUT_REFRESH_S", 0.0)
    device.walked.clear()
    second = await device.collect()
    assert device.walked == walked
    assert [(s.measurement, s.tags, s.fields) for s in second] == [
        (s.measurement, s.tags, s.fields) for s in first
    ]


async def test_digipower_outlet_states_are_split_from_one_string(snmpsim: Running) -> None:
    """pdu01OutletStatus "1,1,...,1" is 24 outlets' relay states; at steady state the string is
    still one OID of the one GET list (4 inlet values, the states, sysUpTime)."""
    device = CountingDevice(snmpsim, "digipower")
    await device.collect()
    device.asked.clear()
    device.walked.clear()
    samples = await device.collect()
    outlets = points(samples, "pdu_outlet", "unit", "outlet")
    assert outlets == {("1", str(n)): {"state": "on"} for n in range(1, 25)}
    assert points(samples, "pdu_inlet", "unit") == {
        ("1",): {
            "current_a": 0.0,
            "current_warning_a": 12.0,
            "current_critical_a": 16.0,
            "voltage_v": 230.0,
        }
    }
    assert device.walked == []
    assert device.asked == [6]


async def test_aten_relay_states_and_readings_are_one_series_with_the_outlet_name(
    snmpsim: Running,
) -> None:
    """Each outlet's relay state (a scalar per outlet) takes the outlet's name read from the
    device, as the outlet table's row does: one series per outlet; the names are read with the
    plan, not every poll."""
    device = CountingDevice(snmpsim, "atenpdu")
    await device.collect()
    device.asked.clear()
    samples = await device.collect()
    outlets = points(samples, "pdu_outlet", "outlet")  # asserts one tag set per outlet
    assert len(outlets) == 16
    assert outlets[("13",)] == {
        "current_a": 0.95,
        "voltage_v": 238.85,
        "power_w": 216.226,
        "power_factor": 0.91,
        "state": "on",
    }
    assert names(samples, "pdu_outlet", "outlet")[("13",)] == {"outlet_name": "13"}
    assert len(device.asked) == 1  # one GET list (in batches), no name lookups
