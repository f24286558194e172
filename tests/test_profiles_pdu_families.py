"""PDU families added for the second corpus release, against their real recordings.

tests/test_ground_truth.py compares every value LibreNMS reads; these check what it cannot:
which profile a recording gets (and that a UPS sharing a vendor's sysObjectID is not taken for
a PDU), how rows that say what they are land in measurements, and the traps each profile's
header names (neutral wires, stale meters, devices whose readings contradict their MIB text,
"no probe" zeros). A copy of a recording with rows changed proves the paths the recording does
not exercise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.snmp import SnmpDevice, SnmpTarget, UnsupportedDevice
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.sample import FieldValue, Sample
from tests.conftest import RECORDINGS

pytestmark = pytest.mark.integration

Fields = dict[str, FieldValue]


async def poll(snmpsim: Running, recording: str) -> tuple[SnmpDevice, list[Sample]]:
    device = SnmpDevice(recording, SnmpTarget(snmpsim.host, snmpsim.port, recording), {})
    return device, await device.collect()


def points(samples: list[Sample], measurement: str, *tags: str) -> dict[tuple[str, ...], Fields]:
    """Fields of one measurement merged per series, keyed by the values of the given tags."""
    merged: dict[tuple[str, ...], Fields] = {}
    for sample in samples:
        if sample.measurement == measurement:
            key = tuple(sample.tags.get(tag, "") for tag in tags)
            merged.setdefault(key, {}).update(sample.fields)
    return merged


PROFILES = {
    "apc-cpdu": "apc_cpdu",
    "apc-epdu_epdu1116s": "apc_epdu",
    "dell-rpdu": "dell_rpdu",
    "chatsworth-pdu": "chatsworth_econnect",
    "rnx-updu_rn3214": "rnx_updu",
    "conteg-pdu": "conteg_pdu",
    "atenpdu": "aten_pe",
    "digipower": "digipower_pdu",
    "planet-pdu": "digipdu",
    "ts-bspdu": "sps_pdu",
    "fs-net-pdu": "fs_netpdu",
    "cyberpower_pdu81005": "cyberpower_pdu",
    "hpe-mapdu_pdu2": "hpe_pdu2",
    "hpe-mapdu_pdu3": "hpe_pdu3",
    "e3meter": "e3meter_ipm",
    "e3meterdc": "e3meter_concentrator",
    "enlogic-pdu_v2": "enlogic_pdu",
}


@pytest.mark.parametrize("recording", sorted(PROFILES))
async def test_each_recording_gets_its_family_profile(snmpsim: Running, recording: str) -> None:
    device, samples = await poll(snmpsim, recording)
    assert device.identity is not None
    assert device.identity.profile.name == PROFILES[recording]
    assert any(s.measurement.startswith("pdu") for s in samples)


async def test_a_cyberpower_ups_is_not_taken_for_a_pdu(snmpsim: Running) -> None:
    """The OL2200 UPS answers sysObjectID 3808.1.1.3, the MIB's ePDU branch."""
    try:
        device, _ = await poll(snmpsim, "cyberpower")
    except UnsupportedDevice:
        return
    assert device.identity is not None
    assert device.identity.profile.kind != "pdu"


async def test_rnx_meter_rows_land_by_their_meter_type(snmpsim: Running) -> None:
    _, samples = await poll(snmpsim, "rnx-updu_rn3214")
    assert list(points(samples, "pdu_inlet", "inlet")) == [("0.0",)]
    assert sorted(points(samples, "pdu_phase", "phase")) == [("1",), ("2",), ("3",)]
    assert len(points(samples, "pdu_bank", "bank")) == 6  # one total per module
    outlets = points(samples, "pdu_outlet", "outlet")
    assert len(outlets) == 48
    assert outlets[("3.4",)] == {
        "energy_kwh": 508.756,
        "power_w": 41.0,
        "apparent_power_va": 57.0,
        "voltage_v": 232.25,
        "current_a": 0.247,
    }


async def test_e3meter_neutral_is_a_line_with_current_only(snmpsim: Running) -> None:
    _, samples = await poll(snmpsim, "e3meter")
    assert points(samples, "pdu_line", "line") == {("N",): {"current_a": 1.393}}
    phases = points(samples, "pdu_phase", "phase")
    assert sorted(phases) == [("L1",), ("L2",), ("L3",)]
    assert phases[("L1",)]["frequency_hz"] == 49.999
    assert phases[("L1",)]["voltage_v"] == 229.876
    assert "current_warning_a" not in phases[("L1",)]  # alarm levels not in the recording


async def test_hpe_pdu3_reads_load_in_tenths_and_pdu2_power_factor_unsigned(
    snmpsim: Running,
) -> None:
    _, pdu3 = await poll(snmpsim, "hpe-mapdu_pdu3")
    outlet = points(pdu3, "pdu_outlet", "outlet")[("21",)]
    assert (outlet["current_a"], outlet["load_pct"], outlet["power_w"]) == (0.26, 1.7, 65.0)
    assert outlet["state"] == "on"
    assert points(pdu3, "pdu", "unit")[("1",)]["power_factor"] == 0.98
    _, pdu2 = await poll(snmpsim, "hpe-mapdu_pdu2")
    assert points(pdu2, "pdu_outlet", "outlet")[("6",)]["power_factor"] == 0.707  # raw -707


async def test_chatsworth_chained_pdus_are_units_by_mac(snmpsim: Running) -> None:
    _, samples = await poll(snmpsim, "chatsworth-pdu")
    outlets = points(samples, "pdu_outlet", "unit", "outlet")
    units = {unit for unit, _ in outlets}
    assert len(units) == 2
    assert len(outlets) == 24 + 36
    banks = points(samples, "pdu_bank", "bank")
    assert banks[("1",)]["state"] == "warning"
    assert banks[("1",)]["energy_kwh"] == pytest.approx(44750279 / 360000)


async def test_conteg_has_lifetime_and_resettable_energy_and_no_zero_probe(
    snmpsim: Running,
) -> None:
    _, samples = await poll(snmpsim, "conteg-pdu")
    phase = points(samples, "pdu_phase", "unit")[("2",)]
    assert (phase["energy_kwh"], phase["energy_since_reset_kwh"]) == (965.0, 3.0)
    assert phase["power_factor"] == 0.8751
    assert phase["current_critical_a"] == 28.0
    assert not [s for s in samples if s.measurement == "env_sensor"]  # all read 0: no probes


# ---------------------------------------------------------------- copies with rows changed

E3DC_METER = "1.3.6.1.4.1.21695.1.10.4.1"  # e3IpsMeterEntry, index serial.meter
RNX_METER = "1.3.6.1.4.1.55108.1.3.1.1"  # upduMeterEntry, index module.meter
RNX_SENSOR = "1.3.6.1.4.1.55108.1.3.2.1"  # upduSensorEntry, index port


def _recording(name: str) -> dict[str, str]:
    text = (RECORDINGS / f"{name}.snmprec").read_text(encoding="utf-8")
    return dict(line.split("|", 1) for line in text.splitlines() if line)


def _write(path: Path, lines: dict[str, str]) -> None:
    ordered = sorted(lines.items(), key=lambda item: tuple(int(p) for p in item[0].split(".")))
    path.write_text("".join(f"{oid}|{value}\n" for oid, value in ordered), encoding="utf-8")


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("changed")
    e3dc = _recording("e3meterdc")
    e3dc[f"{E3DC_METER}.15.17404.1"] = "2|0"  # unknown(0): never received
    _write(data / "e3meterdc_unknown.snmprec", e3dc)
    rnx = _recording("rnx-updu_rn3214")
    rnx[f"{RNX_METER}.15.3.4"] = "2|2"  # noData(2): the meter reads 0 for everything
    rnx |= {
        f"{RNX_SENSOR}.2.1": "4|T1",
        f"{RNX_SENSOR}.3.1": "2|2",  # tempHumidity
        f"{RNX_SENSOR}.4.1": "2|235",
        f"{RNX_SENSOR}.5.1": "2|412",
        f"{RNX_SENSOR}.2.2": "4|T2",
        f"{RNX_SENSOR}.3.2": "2|1",  # temperature only: its humidity column reads 0
        f"{RNX_SENSOR}.4.2": "2|-15",
        f"{RNX_SENSOR}.5.2": "2|0",
        f"{RNX_SENSOR}.2.3": "4|T3",
        f"{RNX_SENSOR}.3.3": "2|0",  # none
        f"{RNX_SENSOR}.4.3": "2|0",
        f"{RNX_SENSOR}.5.3": "2|0",
    }
    _write(data / "rnx_changed.snmprec", rnx)
    service = localservices.start_snmpsim(data, tmp_path_factory.mktemp("changed-snmpsim"))
    yield service
    localservices.stop(service)


async def test_e3meter_concentrator_leaves_out_meters_never_received(changed: Running) -> None:
    _, samples = await poll(changed, "e3meterdc_unknown")
    phases = points(samples, "pdu_phase", "unit", "phase")
    assert ("17404", "0") in phases
    assert ("17404", "1") not in phases
    assert phases[("17404", "0")]["power_w"] == 330.0  # e3IpsPAvg, not the deprecated PowerP


async def test_rnx_leaves_out_meters_without_data_and_reads_its_probes(changed: Running) -> None:
    _, samples = await poll(changed, "rnx_changed")
    assert ("3.4",) not in points(samples, "pdu_outlet", "outlet")
    assert ("3.5",) in points(samples, "pdu_outlet", "outlet")
    assert points(samples, "env_sensor", "sensor", "sensor_name") == {
        ("1", "T1"): {"temperature_c": 23.5, "humidity_pct": 41.2},
        ("2", "T2"): {"temperature_c": -1.5},
    }
