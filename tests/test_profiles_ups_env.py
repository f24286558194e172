"""The UPS and environment-monitor profiles (ups_rfc1628, apc_ups, eaton_ups, apc_emu) against
the shared recordings, served by snmpsim, plus a few recordings derived from them for the
paths the shared set does not exercise (three-phase and old-firmware APC UPSes).

Expected values are the README's (shared/devices/README.md), in our schema's units.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.registry import builtin_profiles, detect, with_includes
from agent.snmp import SnmpDevice, SnmpTarget
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.sample import FieldValue, Sample
from tests.conftest import RECORDINGS

pytestmark = pytest.mark.integration

Point = dict[str, FieldValue]
DEVICE_TAGS = {"vendor", "model", "site", "device"}


async def poll(snmpsim: Running, community: str) -> tuple[str, str, list[Sample]]:
    """One poll of a recording: (detected profile, model tag, samples)."""
    device = SnmpDevice(community, SnmpTarget(snmpsim.host, snmpsim.port, community), {})
    samples = await device.collect()
    assert device.identity is not None
    return device.identity.profile.name, device.identity.model, samples


def points(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], Point]:
    """Samples merged as InfluxDB merges them: one point per measurement and element tags.

    A field written twice into one point would be two readings for one value: refused.
    """
    merged: dict[tuple[str, tuple[tuple[str, str], ...]], Point] = {}
    for sample in samples:
        element = tuple(sorted((k, v) for k, v in sample.tags.items() if k not in DEVICE_TAGS))
        point = merged.setdefault((sample.measurement, element), {})
        for name, value in sample.fields.items():
            assert name not in point, f"{sample.measurement}{dict(element)}.{name} written twice"
            point[name] = value
    return merged


def point(samples: list[Sample], measurement: str, **tags: str) -> Point:
    return points(samples)[(measurement, tuple(sorted(tags.items())))]


def elements(samples: list[Sample], measurement: str, tag: str) -> dict[str, Point]:
    """The points of one measurement by one element tag (e.g. phase, sensor)."""
    return {
        dict(element)[tag]: fields
        for (name, element), fields in points(samples).items()
        if name == measurement
    }


# --- RFC 1628 UPS-MIB: Generex CS141 on a three-phase Multimatic UPS ---------------------


async def test_generex_is_read_with_the_generic_ups_mib_profile(snmpsim: Running) -> None:
    """A card whose sysObjectID is the upsMIB node gets ups_rfc1628 and its upsIdentModel."""
    profile, model, _ = await poll(snmpsim, "generex-ups_cs141")
    assert (profile, model) == ("ups_rfc1628", "Upscale")


async def test_generex_battery_runtime_and_output_source(snmpsim: Running) -> None:
    """Battery scalars are scaled to our units; runtime minutes become seconds."""
    _, _, samples = await poll(snmpsim, "generex-ups_cs141")
    ups = point(samples, "ups")
    assert ups["runtime_s"] == 544 * 60
    assert ups["battery_charge_pct"] == 100.0
    assert ups["battery_voltage_v"] == 271.6
    assert ups["battery_temperature_c"] == 25.0
    assert ups["battery_status"] == "normal"
    assert ups["seconds_on_battery_s"] == 0.0
    assert ups["output_source"] == "bypass"
    assert ups["output_frequency_hz"] == 50.0
    assert ups["bypass_frequency_hz"] == 50.0


async def test_generex_three_phases_in_and_out(snmpsim: Running) -> None:
    """Each UPS-MIB line is one phase; negative output watts are kept as measured."""
    _, _, samples = await poll(snmpsim, "generex-ups_cs141")
    inputs = elements(samples, "ups_input", "phase")
    assert {p: f["voltage_v"] for p, f in inputs.items()} == {"1": 233.0, "2": 233.0, "3": 235.0}
    assert {f["frequency_hz"] for f in inputs.values()} == {50.0}
    outputs = elements(samples, "ups_output", "phase")
    assert {p: f["power_w"] for p, f in outputs.items()} == {"1": -4.0, "2": 469.0, "3": -26.0}
    assert {p: f["current_a"] for p, f in outputs.items()} == {"1": 0.3, "2": 2.1, "3": 0.2}
    assert {p: f["load_pct"] for p, f in outputs.items()} == {"1": 2.0, "2": 14.0, "3": 2.0}
    bypass = elements(samples, "ups_bypass", "phase")
    assert {p: f["voltage_v"] for p, f in bypass.items()} == {"1": 233.0, "2": 233.0, "3": 235.0}


async def test_generex_columns_the_card_lacks_give_no_field(snmpsim: Running) -> None:
    """The recording has no input current or power: no zero is made up for them."""
    _, _, samples = await poll(snmpsim, "generex-ups_cs141")
    for fields in elements(samples, "ups_input", "phase").values():
        assert set(fields) == {"voltage_v", "frequency_hz"}


# --- Eaton 9PX on an MGE-tree card: eaton_ups + ups_rfc1628 -------------------------------


async def test_eaton_9px_is_detected_with_its_model(snmpsim: Running) -> None:
    """The MGE-tree sysObjectID picks eaton_ups; the model comes from sysDescr."""
    profile, model, samples = await poll(snmpsim, "eaton-mgeups_9px")
    assert (profile, model) == ("eaton_ups", "Eaton 9PX 1000i RT 2U")
    assert {s.tags["vendor"] for s in samples} == {"eaton"}


async def test_eaton_9px_readings_through_the_included_ups_mib(snmpsim: Running) -> None:
    """UPS-MIB (included) gives the electrical readings, XUPS-MIB the ambient temperature."""
    _, _, samples = await poll(snmpsim, "eaton-mgeups_9px")
    ups = point(samples, "ups")
    assert ups["runtime_s"] == 24 * 60  # upsEstimatedMinutesRemaining, not upsmg's 1464 s
    assert ups["battery_charge_pct"] == 100.0
    assert ups["battery_voltage_v"] == 52.0
    assert ups["ambient_temperature_c"] == 17.0
    assert ups["output_source"] == "normal"
    assert ups["battery_replace"] == "ok"
    assert point(samples, "ups_output", phase="1") == {
        "voltage_v": 230.0,
        "current_a": 1.6,
        "power_w": 310.0,
        "load_pct": 35.0,
    }
    ups_input = point(samples, "ups_input", phase="1")
    assert (ups_input["voltage_v"], ups_input["frequency_hz"]) == (237.0, 50.1)
    assert point(samples, "ups_bypass", phase="1")["voltage_v"] == 238.0


# --- APC Smart-UPS 1500 on an AP9631 -----------------------------------------------------


async def test_smart_ups_is_detected_as_an_apc_ups(snmpsim: Running) -> None:
    """sysObjectID .318.1.3.27 picks apc_ups; the NMC's own model number is not the UPS's."""
    profile, model, _ = await poll(snmpsim, "apc_smart1500")
    assert (profile, model) == ("apc_ups", "")


async def test_smart_ups_high_precision_readings(snmpsim: Running) -> None:
    """upsHighPrec tenths, TimeTicks runtime and the output status land in `ups`."""
    _, _, samples = await poll(snmpsim, "apc_smart1500")
    ups = point(samples, "ups")
    assert ups["runtime_s"] == 4560.0
    assert ups["battery_charge_pct"] == 100.0
    assert ups["battery_temperature_c"] == 30.0
    assert ups["battery_voltage_v"] == 27.0
    assert ups["output_voltage_v"] == 247.6
    assert ups["output_frequency_hz"] == 50.0
    assert ups["input_frequency_hz"] == 50.0
    assert ups["load_pct"] == 17.6
    assert ups["output_current_a"] == 1.0
    assert ups["output_power_w"] == 169.0
    assert (ups["output_status"], ups["output_source"]) == ("online", "normal")
    assert point(samples, "ups_input", phase="1") == {"voltage_v": 247.6}


async def test_smart_ups_objects_it_lacks_give_nothing(snmpsim: Running) -> None:
    """No battery current, apparent power, bypass or per-phase table in the recording."""
    _, _, samples = await poll(snmpsim, "apc_smart1500")
    ups = point(samples, "ups")
    assert "battery_current_a" not in ups
    assert "output_apparent_power_va" not in ups
    assert "bypass_frequency_hz" not in ups
    assert not elements(samples, "ups_output", "phase")
    assert not elements(samples, "ups_bypass", "phase")


async def test_smart_ups_uio_probes_without_humidity(snmpsim: Running) -> None:
    """The NMC's universal I/O probes are env_sensor points; humidity -1 gives no field."""
    _, _, samples = await poll(snmpsim, "apc_smart1500")
    probes = elements(samples, "env_sensor", "sensor")
    assert probes == {"1.1": {"temperature_c": 30.0}, "2.1": {"temperature_c": 21.0}}
    names = {
        s.tags["sensor"]: s.tags["sensor_name"] for s in samples if s.measurement == "env_sensor"
    }
    assert names == {"1.1": "Temp. Rack", "2.1": "Temp. Room"}


# --- APC AP9340 EMU ----------------------------------------------------------------------


async def test_emu_is_detected_with_its_model(snmpsim: Running) -> None:
    """The EMU's monitor sysObjectID picks apc_emu, not the UPS or PDU profile."""
    profile, model, _ = await poll(snmpsim, "apc_emu")
    assert (profile, model) == ("apc_emu", "AP9340")


EMU_MEM = "1.3.6.1.4.1.318.1.1.10.4.2.3.1"  # memSensorsStatusEntry, index module.sensor
EMU_EMS = "1.3.6.1.4.1.318.1.1.10.3.13.1.1"  # emsProbeStatusEntry, index probe
EMU_MEM_UNITS = "1.3.6.1.4.1.318.1.1.10.4.2.1.0"  # memSensorsStatusSysTempUnits: C 1, F 2
EMU_EMS_UNITS = "1.3.6.1.4.1.318.1.1.10.3.12.11.0"  # emsStatusSysTempUnits: C 1, F 2


def test_emu_recording_has_no_temperature_unit_setting() -> None:
    """The recorded AP9340 answers neither unit scalar: it cannot prove a Celsius reading."""
    recorded = _recording("apc_emu")
    assert EMU_MEM_UNITS not in recorded
    assert EMU_EMS_UNITS not in recorded
    assert f"{EMU_MEM}.5.0.1" in recorded  # while it does have temperatures


async def test_emu_probe_temperatures_and_humidities(snmpsim: Running) -> None:
    """Without a unit setting: mem sensors and the named ems probes (the same probes, in the
    same device-wide unit) read as Celsius (LibreNMS's reading, the ground truth); a probe
    without humidity element has no humidity field."""
    _, _, samples = await poll(snmpsim, "apc_emu")
    probes = elements(samples, "env_sensor", "sensor")
    assert probes == {
        "0.1": {"temperature_c": 18.0, "humidity_pct": 30.0},
        "0.2": {"temperature_c": 26.0},
        "0.3": {"temperature_c": 27.0},
        "0.5": {"temperature_c": 26.0},
        "0.6": {"temperature_c": 21.0, "humidity_pct": 38.0},
        "1": {"temperature_c": 18.0, "humidity_pct": 30.0},
        "2": {"temperature_c": 26.0},
        "3": {"temperature_c": 27.0},
    }
    names = {
        s.tags["sensor"]: s.tags["sensor_name"] for s in samples if s.measurement == "env_sensor"
    }
    assert names["1"] == "Airco uitstroom"


async def test_emu_placeholder_probe_slots_are_left_out(snmpsim: Running) -> None:
    """Never-discovered ems slots ("Temp Sensor MM:x", "Err", bogus 27 C) give no sample."""
    _, _, samples = await poll(snmpsim, "apc_emu")
    sensors = [s for s in samples if s.measurement == "env_sensor"]
    assert not [s for s in sensors if s.tags["sensor_name"].startswith(("Temp Sensor", "Err"))]
    assert all(s.fields.get("humidity_pct") != 29.0 for s in sensors)


async def test_emu_fire_alarm_contact_is_in_alarm(snmpsim: Running) -> None:
    """memInputs contacts are env_contact points; "Brand storing" reports its alarm."""
    _, _, samples = await poll(snmpsim, "apc_emu")
    contacts = {s.tags["contact_name"]: s.fields for s in samples if s.measurement == "env_contact"}
    assert contacts["Brand storing"] == {"state": "closed", "alarm": "alarm"}
    others = {name: fields["alarm"] for name, fields in contacts.items() if name != "Brand storing"}
    assert others == {
        "Brand vooralarm": "normal",
        "Brand alarm": "normal",
        "Brandblus in werking": "normal",
    }


# --- detection rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sys_object_id", "profile"),
    [
        ("1.3.6.1.2.1.33", "ups_rfc1628"),
        ("1.3.6.1.4.1.705.1", "eaton_ups"),
        ("1.3.6.1.4.1.534.1", "eaton_ups"),
        ("1.3.6.1.4.1.318.1.3.27", "apc_ups"),
        ("1.3.6.1.4.1.318.1.3.23.3", "apc_ups"),  # Symmetra PX
        ("1.3.6.1.4.1.318.1.3.28.58", "apc_ups"),  # Galaxy VX
        ("1.3.6.1.4.1.318.1.3.8.4", "apc_emu"),
        ("1.3.6.1.4.1.318.1.3.4.6", "apc_rpdu2"),
    ],
)
def test_profiles_are_detected_by_sys_object_id(sys_object_id: str, profile: str) -> None:
    """Each family's product OIDs pick its profile, with the longest prefix winning."""
    found = detect(sys_object_id, "")
    assert found is not None
    assert found.name == profile


@pytest.mark.parametrize(
    "sys_object_id",
    ["1.3.6.1.4.1.318.1.3.14.5", "1.3.6.1.4.1.318.1.3.4.6", "1.3.6.1.2.1.330", "1.3.6.1.4.1.7050"],
)
def test_other_devices_are_not_taken_for_ups(sys_object_id: str) -> None:
    """InRow coolers, rack PDUs and look-alike OIDs do not match the UPS profiles."""
    found = detect(sys_object_id, "")
    assert found is None or found.kind != "ups"


def test_a_generex_card_is_recognised_by_its_sys_descr() -> None:
    """A CS141 that reports a foreign sysObjectID still gets the UPS-MIB profile."""
    found = detect("1.3.6.1.4.1.8072.3.2.10", "The Cs141 SNMP Agent")
    assert found is not None
    assert found.name == "ups_rfc1628"


def test_ups_mib_is_one_fragment_that_several_profiles_include() -> None:
    """UPS-MIB's tables are written once (fragments/ups_mib.yaml) and polled with the generic
    UPS profile, eaton_ups and liebert_gp alike."""
    profiles = builtin_profiles()
    for name in ("ups_rfc1628", "eaton_ups", "liebert_gp"):
        assert profiles[name].include[0] == "ups_mib"  # eaton_ups adds eaton_xups after it
        parts = with_includes(profiles[name])
        assert len(parts[1].tables) == 3, name  # input, output, bypass


# --- derived recordings: APC firmware and models the shared set does not have ------------

UPS_PHASE_IN = "1.3.6.1.4.1.318.1.1.1.9.2.3.1"  # upsPhaseInputPhaseEntry, index input.phase
UPS_PHASE_OUT = "1.3.6.1.4.1.318.1.1.1.9.3.3.1"  # upsPhaseOutputPhaseEntry, index output.phase


def _write_recording(path: Path, lines: dict[str, str]) -> None:
    """An snmprec file from OID -> "TYPE|VALUE", in OID order."""
    ordered = sorted(lines.items(), key=lambda item: tuple(int(p) for p in item[0].split(".")))
    path.write_text("".join(f"{oid}|{value}\n" for oid, value in ordered), encoding="utf-8")


def _recording(name: str) -> dict[str, str]:
    """A shared recording as OID -> "TYPE|VALUE"."""
    text = (RECORDINGS / f"{name}.snmprec").read_text(encoding="utf-8")
    return {line.split("|", 1)[0]: line.split("|", 1)[1] for line in text.splitlines() if line}


def _smart1500() -> dict[str, str]:
    return _recording("apc_smart1500")


@pytest.fixture(scope="module")
def derived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """snmpsim serving `apc_three_phase` and `apc_old_firmware`, made from apc_smart1500, and
    `apc_emu_celsius`, `apc_emu_fahrenheit`, `apc_emu_ems_units`, made from apc_emu."""
    data = tmp_path_factory.mktemp("derived")

    three_phase = _smart1500()
    three_phase["1.3.6.1.2.1.1.2.0"] = "6|1.3.6.1.4.1.318.1.3.23.3"  # Symmetra PX 250
    three_phase["1.3.6.1.4.1.318.1.1.1.3.2.1.0"] = "66|247"  # upsAdvInputLineVoltage: unused
    for phase, volts in (("1", 231), ("2", 232), ("3", 233)):
        three_phase[f"{UPS_PHASE_IN}.3.1.{phase}"] = f"2|{volts}"
        three_phase[f"{UPS_PHASE_IN}.6.1.{phase}"] = f"2|{100 + int(phase)}"
        three_phase[f"{UPS_PHASE_IN}.9.1.{phase}"] = "2|-1"  # power not supported
        three_phase[f"{UPS_PHASE_IN}.3.2.{phase}"] = f"2|{volts + 10}"  # input 2: bypass
        three_phase[f"{UPS_PHASE_OUT}.3.1.{phase}"] = "2|230"
        three_phase[f"{UPS_PHASE_OUT}.4.1.{phase}"] = f"2|{50 * int(phase)}"
        three_phase[f"{UPS_PHASE_OUT}.10.1.{phase}"] = f"2|{10 * int(phase)}"
        three_phase[f"{UPS_PHASE_OUT}.13.1.{phase}"] = f"2|{1000 * int(phase)}"
    _write_recording(data / "apc_three_phase.snmprec", three_phase)

    old = {
        oid: value
        for oid, value in _smart1500().items()
        if not oid.startswith(
            (
                "1.3.6.1.4.1.318.1.1.1.2.3.",  # upsHighPrecBattery
                "1.3.6.1.4.1.318.1.1.1.3.3.",  # upsHighPrecInput
                "1.3.6.1.4.1.318.1.1.1.4.3.",  # upsHighPrecOutput
                "1.3.6.1.4.1.318.1.1.25.",  # universal I/O
            )
        )
    }
    adv = "1.3.6.1.4.1.318.1.1.1"
    old |= {
        f"{adv}.2.2.1.0": "66|95",  # upsAdvBatteryCapacity
        f"{adv}.2.2.2.0": "66|255",  # upsAdvBatteryTemperature: 255 = no sensor
        f"{adv}.2.2.8.0": "2|27",  # upsAdvBatteryActualVoltage
        f"{adv}.2.2.9.0": "2|-1",  # upsAdvBatteryCurrent: not supported
        f"{adv}.3.2.1.0": "66|229",  # upsAdvInputLineVoltage
        f"{adv}.3.2.4.0": "66|50",  # upsAdvInputFrequency
        f"{adv}.4.2.1.0": "66|230",  # upsAdvOutputVoltage
        f"{adv}.4.2.2.0": "66|50",
        f"{adv}.4.2.3.0": "66|18",
        f"{adv}.4.2.4.0": "66|1",
    }
    iem = "1.3.6.1.4.1.318.1.1.10.2.3.2.1"  # iemStatusProbesEntry: C probe, F probe, unplugged
    for probe, name, status, temp, units, humid in (
        ("1", "Rack", 2, 24, 1, 0),
        ("2", "Aisle", 2, 75, 2, 40),
        ("3", "Spare", 1, 0, 1, 0),
    ):
        old |= {
            f"{iem}.1.{probe}": f"2|{probe}",
            f"{iem}.2.{probe}": f"4|{name}",
            f"{iem}.3.{probe}": f"2|{status}",
            f"{iem}.4.{probe}": f"2|{temp}",
            f"{iem}.5.{probe}": f"2|{units}",
            f"{iem}.6.{probe}": f"2|{humid}",
        }
    old |= {  # probe 4: connected, but its row has no unit column
        f"{iem}.1.4": "2|4",
        f"{iem}.2.4": "4|NoUnit",
        f"{iem}.3.4": "2|2",
        f"{iem}.4.4": "2|20",
        f"{iem}.6.4": "2|35",
    }
    _write_recording(data / "apc_old_firmware.snmprec", old)

    # EMUs whose firmware answers the unit scalars (the recorded one answers neither).
    emu_celsius = _recording("apc_emu") | {EMU_MEM_UNITS: "2|1", EMU_EMS_UNITS: "2|1"}
    _write_recording(data / "apc_emu_celsius.snmprec", emu_celsius)
    emu_fahrenheit = _recording("apc_emu") | {
        EMU_MEM_UNITS: "2|2",
        EMU_EMS_UNITS: "2|2",
        f"{EMU_MEM}.5.0.1": "2|77",
        f"{EMU_MEM}.5.0.6": "2|68",
        f"{EMU_EMS}.3.1": "2|77",
        f"{EMU_EMS}.3.2": "2|50",
    }
    _write_recording(data / "apc_emu_fahrenheit.snmprec", emu_fahrenheit)
    # Only the ems application's scalar: the mem table takes the same preference from it.
    emu_ems_units_only = emu_fahrenheit.copy()
    del emu_ems_units_only[EMU_MEM_UNITS]
    _write_recording(data / "apc_emu_ems_units.snmprec", emu_ems_units_only)

    service = localservices.start_snmpsim(data, tmp_path_factory.mktemp("derived-snmpsim"))
    yield service
    localservices.stop(service)


async def test_three_phase_apc_ups_reads_phases_from_the_phase_tables(derived: Running) -> None:
    """upsPhase rows give the per-phase points; the single-line input objects step aside."""
    profile, _, samples = await poll(derived, "apc_three_phase")
    assert profile == "apc_ups"
    inputs = elements(samples, "ups_input", "phase")
    assert inputs == {
        "1": {"voltage_v": 231.0, "current_a": 10.1},
        "2": {"voltage_v": 232.0, "current_a": 10.2},
        "3": {"voltage_v": 233.0, "current_a": 10.3},
    }
    bypass = elements(samples, "ups_bypass", "phase")
    assert {p: f["voltage_v"] for p, f in bypass.items()} == {"1": 241.0, "2": 242.0, "3": 243.0}
    outputs = elements(samples, "ups_output", "phase")
    assert outputs["3"] == {
        "voltage_v": 230.0,
        "current_a": 15.0,
        "load_pct": 30.0,
        "power_w": 3000.0,
    }
    ups = point(samples, "ups")
    assert (ups["input_frequency_hz"], ups["load_pct"]) == (50.0, 17.6)


async def test_old_apc_firmware_falls_back_to_whole_unit_objects(derived: Running) -> None:
    """Without upsHighPrec the upsAdv objects are read, with their sentinels left out."""
    _, _, samples = await poll(derived, "apc_old_firmware")
    ups = point(samples, "ups")
    assert ups["battery_charge_pct"] == 95.0
    assert ups["battery_voltage_v"] == 27.0
    assert "battery_temperature_c" not in ups  # 255: no sensor
    assert "battery_current_a" not in ups  # -1: not supported
    assert (ups["output_voltage_v"], ups["load_pct"], ups["output_current_a"]) == (230.0, 18.0, 1.0)
    assert ups["input_frequency_hz"] == 50.0
    assert point(samples, "ups_input", phase="1") == {"voltage_v": 229.0}


async def test_old_apc_firmware_reads_the_integrated_probe_table(derived: Running) -> None:
    """iem probes stand in for uio: each row's own unit column says C or F, F is converted
    (75 F is 23.889 C), and a row without a unit column gives no temperature."""
    _, _, samples = await poll(derived, "apc_old_firmware")
    probes = elements(samples, "env_sensor", "sensor")
    assert probes == {
        "1": {"temperature_c": 24.0},
        "2": {"temperature_c": pytest.approx(23.889), "humidity_pct": 40.0},
        "4": {"humidity_pct": 35.0},
    }


async def test_smart_ups_uio_temperatures_need_no_unit_setting(snmpsim: Running) -> None:
    """uioSensorStatusTemperatureDegC is Celsius by definition: read with no setting at all."""
    parts = with_includes(builtin_profiles()["apc_ups"])  # the card's tables: apc_nmc
    uio = [t for p in parts for t in p.tables if t.entry == "1.3.6.1.4.1.318.1.1.25.1.2.1"]
    assert [t.fields["temperature_c"].temperature_unit for t in uio] == [None]
    _, _, samples = await poll(snmpsim, "apc_smart1500")
    temperatures = {
        k: f["temperature_c"] for k, f in elements(samples, "env_sensor", "sensor").items()
    }
    assert temperatures == {"1.1": 30.0, "2.1": 21.0}


async def test_emu_set_to_celsius_reads_both_tables(derived: Running) -> None:
    """With the unit scalars answering celsius(1), the named ems probes report too."""
    profile, _, samples = await poll(derived, "apc_emu_celsius")
    assert profile == "apc_emu"
    probes = elements(samples, "env_sensor", "sensor")
    assert probes == {
        "0.1": {"temperature_c": 18.0, "humidity_pct": 30.0},
        "0.2": {"temperature_c": 26.0},
        "0.3": {"temperature_c": 27.0},
        "0.5": {"temperature_c": 26.0},
        "0.6": {"temperature_c": 21.0, "humidity_pct": 38.0},
        "1": {"temperature_c": 18.0, "humidity_pct": 30.0},
        "2": {"temperature_c": 26.0},
        "3": {"temperature_c": 27.0},
    }


async def test_emu_set_to_fahrenheit_converts_both_tables(derived: Running) -> None:
    """fahrenheit(2): 77 F is 25 C, 68 F 20 C, 50 F 10 C; whole degrees F become 3 decimals."""
    _, _, samples = await poll(derived, "apc_emu_fahrenheit")
    probes = elements(samples, "env_sensor", "sensor")
    assert {k: f.get("temperature_c") for k, f in probes.items()} == pytest.approx(
        {
            "0.1": 25.0,
            "0.2": (26 - 32) * 5 / 9,
            "0.3": (27 - 32) * 5 / 9,
            "0.5": (26 - 32) * 5 / 9,
            "0.6": 20.0,
            "1": 25.0,
            "2": 10.0,
            "3": (27 - 32) * 5 / 9,
        },
        abs=0.001,
    )
    assert probes["0.1"]["humidity_pct"] == 30.0  # humidity is not a temperature


async def test_emu_mem_table_takes_the_unit_from_the_ems_scalar(derived: Running) -> None:
    """Only emsStatusSysTempUnits answers (fahrenheit): the mem sensors are converted by it,
    not taken as Celsius."""
    _, _, samples = await poll(derived, "apc_emu_ems_units")
    probes = elements(samples, "env_sensor", "sensor")
    assert (probes["0.1"]["temperature_c"], probes["1"]["temperature_c"]) == (25.0, 25.0)
    assert probes["0.6"]["temperature_c"] == 20.0
