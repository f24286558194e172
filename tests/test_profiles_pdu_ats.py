"""PDU and transfer-switch families of issue 16 (Sentry3, Panduit G5, WTI, iPoMan, ICT panels,
Socomec, Tripp Lite, iBoot-PDU, Gude 8031, ATS-MIB, Exeltech) against their real recordings.

tests/test_ground_truth.py compares the values LibreNMS reads; these check what it cannot:
which profile a recording gets (three of them have no vendor sysObjectID at all, and Tripp
Lite's PowerAlert agent shares one sysObjectID between UPSes, PDUs and ATSes), and the traps
the profiles' headers name: a probe in Fahrenheit, "no probe" rows and sentinels that must
give no field, placeholder rows, negative DC readings, and the Liebert and Rittal fragments
that liebert_gp and rittal_cmc3 can include.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.registry import load_registry
from agent.snmp import SnmpDevice, SnmpTarget
from rackwatch.localservices import Running
from tests.test_profiles_pdu_families import points

pytestmark = pytest.mark.integration


async def poll(snmpsim: Running, recording: str, profiles: Path | None = None) -> SnmpDevice:
    registry = load_registry(profiles) if profiles else None
    target = SnmpTarget(snmpsim.host, snmpsim.port, recording)
    return SnmpDevice(recording, target, {}, registry=registry)


PROFILES = {
    "sentry3": "servertech_sentry3",
    "sentry3_3phase": "servertech_sentry3",
    "sentry3_switched": "servertech_sentry3",
    "panduit": "panduit_g5",
    "panduit_2": "panduit_g5",
    "panduit_g5-p32g13m": "panduit_g5",
    "wti-power": "wti_power",
    "ipoman": "ingrasys_ipoman",
    "ict-pdu": "ict_distribution_panel",
    "ict-pdu_ict200db-12irc": "ict_distribution_panel",
    "socomec": "socomec_pdu",
    "poweralert_pdu": "tripplite_pdu",
    "poweralert_pdumh20atnet": "tripplite_pdu",
    "iboot_pdu8-2n15": "dataprobe_ibootpdu",
    "gude-epc_8031": "gude_epc8031",
    "ats": "ats_smart2",
    "exeltech-xfersw": "exeltech_xfersw",
}


@pytest.mark.parametrize("recording", sorted(PROFILES))
async def test_each_recording_gets_its_family_profile(snmpsim: Running, recording: str) -> None:
    device = await poll(snmpsim, recording)
    samples = await device.collect()
    assert device.identity is not None
    assert device.identity.profile.name == PROFILES[recording]
    assert any(s.measurement.startswith(("pdu", "ats")) for s in samples)


async def test_a_tripp_lite_ups_on_the_same_agent_is_not_taken_for_a_pdu(snmpsim: Running) -> None:
    device = await poll(snmpsim, "poweralert_2")
    await device.collect()
    assert device.identity is not None
    assert device.identity.profile.name != "tripplite_pdu"


async def test_sentry3_probes_in_fahrenheit_are_converted_and_absent_probes_give_nothing(
    snmpsim: Running,
) -> None:
    samples = await (await poll(snmpsim, "sentry3")).collect()
    probes = points(samples, "env_sensor", "unit", "sensor")
    # tempHumidSensorTempScale fahrenheit(1): 680 tenths of °F = 20 °C; tower B's probes are
    # notFound (-1 everywhere) and make no point at all
    assert probes[("1", "A1")]["temperature_c"] == pytest.approx(20.0)
    assert probes[("1", "A1")]["humidity_pct"] == 52
    assert sorted(probes) == [("1", "A1"), ("1", "A2")]


async def test_sentry3_power_factor_in_hundredths_and_a_neutral_with_current_only(
    snmpsim: Running,
) -> None:
    samples = await (await poll(snmpsim, "sentry3_3phase")).collect()
    assert points(samples, "pdu")[()]["power_factor"] == pytest.approx(1.0)  # 100 hundredths
    neutral = points(samples, "pdu_inlet", "inlet_name")[("TowerA_Neutral",)]
    assert neutral["current_a"] == pytest.approx(2.12)
    assert "voltage_v" not in neutral  # -1: not measured
    assert "power_w" not in neutral


async def test_panduit_placeholder_outlet_is_left_out(snmpsim: Running) -> None:
    samples = await (await poll(snmpsim, "panduit_g5-p32g13m")).collect()
    outlets = points(samples, "pdu_outlet", "outlet")
    assert list(outlets) == [("1",)]  # outlet 33: empty name, all zeros
    assert outlets[("1",)]["rated_current_a"] == pytest.approx(16.0)


async def test_wti_branches_c_and_d_of_a_two_branch_unit_are_left_out(snmpsim: Running) -> None:
    samples = await (await poll(snmpsim, "wti-power")).collect()
    banks = points(samples, "pdu_bank", "bank")
    assert sorted(banks) == [("A",), ("B",)]
    assert banks[("B",)] == {"current_a": pytest.approx(1.1), "voltage_v": 233, "power_w": 256}


async def test_ict_dc_readings_sent_as_strings_keep_their_sign(snmpsim: Running) -> None:
    samples = await (await poll(snmpsim, "ict-pdu_ict200db-12irc")).collect()
    system = points(samples, "pdu_inlet", "inlet")[("system",)]
    assert system == {"voltage_v": pytest.approx(-55.2), "current_a": pytest.approx(-3.1)}
    assert points(samples, "pdu_bank", "bank_name")[("1A: MX204 (A)",)] == {
        "current_a": pytest.approx(-1.9),
        "state": "on",
    }


async def test_ipoman_disabled_probe_gives_no_sensor(snmpsim: Running) -> None:
    samples = await (await poll(snmpsim, "ipoman")).collect()
    assert not points(samples, "env_sensor")  # ipmEnvEmdStatusEmdType disabled(2)
    assert points(samples, "pdu_inlet", "inlet")[("1",)]["current_warning_a"] == 16


async def test_tripp_lite_ats_sources_and_output(snmpsim: Running) -> None:
    samples = await (await poll(snmpsim, "poweralert_pdumh20atnet")).collect()
    sources = points(samples, "ats_source", "source")
    assert sources[("1",)]["voltage_v"] == pytest.approx(117.1)
    assert sources[("2",)]["voltage_v"] == pytest.approx(119.2)
    output = points(samples, "ats", "phase")[("1",)]
    assert output["output_current_a"] == pytest.approx(13.0)
    assert output["output_power_w"] == 1523


async def test_ats_smart2_sources_a_and_b(snmpsim: Running) -> None:
    samples = await (await poll(snmpsim, "ats")).collect()
    sources = points(samples, "ats_source", "source")
    assert sources[("a",)] == {"state": "ok", "voltage_v": 235, "frequency_hz": 50.0}
    assert sources[("b",)] == {"state": "ok", "voltage_v": 236, "frequency_hz": 50.0}
    assert points(samples, "ats")[()]["output_current_a"] == pytest.approx(0.3)


async def test_exeltech_without_sysobjectid_and_its_0xffff_current(snmpsim: Running) -> None:
    samples = await (await poll(snmpsim, "exeltech-xfersw")).collect()
    source_1a = points(samples, "ats_source", "source")[("1a",)]
    assert "current_a" not in source_1a  # 65535: not available
    assert source_1a["voltage_v"] == pytest.approx(11.7)
    assert points(samples, "ats")[()]["battery_voltage_v"] == pytest.approx(54.2)


async def test_liebert_fragment_reads_a_floor_power_centre(snmpsim: Running) -> None:
    device = await poll(snmpsim, "liebert_web485")  # liebert_gp includes liebert_pdu
    samples = await device.collect()
    whole = points(samples, "pdu")[()]
    # kVA/kW columns (139, 138) x1000, as 118 V x 1168 A on the three lines shows
    assert whole["apparent_power_va"] == 139000
    assert whole["power_w"] == 138000
    assert whole["energy_kwh"] == pytest.approx(12.768)
    phases = points(samples, "pdu_phase", "inlet", "phase")
    assert phases[("output", "1")]["current_a"] == 408
    assert phases[("output", "1")]["voltage_v"] == 118
    # THD in 0.1 %: 14 and 22 on line 1 of the output
    assert phases[("output", "1")]["voltage_thd_pct"] == pytest.approx(1.4)
    assert phases[("output", "1")]["current_thd_pct"] == pytest.approx(2.2)
    assert phases[("1", "1")] == {"voltage_ll_v": 479}  # the 480 V input: line-to-line only
    inputs = points(samples, "pdu_inlet", "inlet").values()
    assert all("power_w" not in fields for fields in inputs)  # inputs carry no power


async def test_rittal_fragment_reads_a_pdu_controller(snmpsim: Running) -> None:
    device = await poll(snmpsim, "rittal-cmc-iii-pu_pdu-controller")  # includes rittal_cmc3_pdu
    samples = await device.collect()
    phases = points(samples, "pdu_phase", "phase")
    assert phases[("L1",)]["current_a"] == pytest.approx(4.73)
    assert phases[("L1",)]["power_factor"] == pytest.approx(0.95)  # signed -95 hundredths
    assert phases[("L1",)]["current_warning_a"] == pytest.approx(20.0)
    assert points(samples, "pdu")[()]["neutral_current_a"] == pytest.approx(3.11)
