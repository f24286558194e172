"""UPS vendor profiles on firmware the shared recordings do not have: which of two MIBs a
card answers decides what is read, and a reading is never taken twice into one field.

Derived recordings (a shared recording with objects added or taken away) served by snmpsim.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rackwatch import localservices
from rackwatch.localservices import Running
from tests.test_profiles_ups_env import _recording, _write_recording, elements, point, poll

pytestmark = pytest.mark.integration

NETAGENT_3PHASE = "1.3.6.1.4.1.935.1.1.1.8."  # XPPC-MIB upsThreePhase
UPS_MIB_BATTERY = "1.3.6.1.2.1.33.1.2"


@pytest.fixture(scope="module")
def derived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """`netagent_single_phase`: netagent2 without its upsThreePhase groups;
    `eaton_connectups_ups_mib`: eatonups (XUPS-MIB only) with UPS-MIB's battery group added."""
    data = tmp_path_factory.mktemp("ups-vendors")
    single = {k: v for k, v in _recording("netagent2").items() if not k.startswith(NETAGENT_3PHASE)}
    _write_recording(data / "netagent_single_phase.snmprec", single)
    both = _recording("eatonups") | {
        f"{UPS_MIB_BATTERY}.1.0": "2|2",  # upsBatteryStatus normal
        f"{UPS_MIB_BATTERY}.3.0": "2|50",  # upsEstimatedMinutesRemaining
        f"{UPS_MIB_BATTERY}.4.0": "2|90",  # upsEstimatedChargeRemaining
    }
    _write_recording(data / "eaton_connectups_ups_mib.snmprec", both)
    service = localservices.start_snmpsim(data, tmp_path_factory.mktemp("ups-vendors-snmpsim"))
    yield service
    localservices.stop(service)


async def test_netagent_three_phase_lines_come_from_the_three_phase_groups(
    snmpsim: Running,
) -> None:
    """An INVT 3-phase UPS fills both upsSmart* (one line) and upsThreePhase: the phases are the
    three-phase group's, and the single-line objects (254.5 V in) are not read beside them."""
    profile, _, samples = await poll(snmpsim, "netagent2")
    assert profile == "megatec_netagent"
    inputs = elements(samples, "ups_input", "phase")
    assert inputs == {
        "1": {"voltage_v": 236.0},
        "2": {"voltage_v": 236.7},
        "3": {"voltage_v": 237.9},
    }
    outputs = elements(samples, "ups_output", "phase")
    assert outputs["2"] == {"voltage_v": 231.3, "load_pct": 32.7}
    ups = point(samples, "ups")
    assert "runtime_s" not in ups  # upsSmartBatteryRunTimeRemaining 9999: not reported
    assert (ups["battery_temperature_c"], ups["battery_voltage_v"]) == (
        25.0,
        269.0,
    )  # UPS-MIB volts
    assert ups["load_pct"] == 44.0


async def test_netagent_single_phase_ups_reads_the_smart_groups(derived: Running) -> None:
    """Without upsThreePhase, line 1 and the frequencies come from upsSmartInput/-Output."""
    profile, _, samples = await poll(derived, "netagent_single_phase")
    assert profile == "megatec_netagent"
    assert elements(samples, "ups_input", "phase") == {"1": {"voltage_v": 254.5}}
    assert elements(samples, "ups_output", "phase") == {"1": {"voltage_v": 228.5}}
    ups = point(samples, "ups")
    assert (ups["input_frequency_hz"], ups["output_frequency_hz"]) == (50.0, 50.0)


async def test_eaton_card_without_ups_mib_is_read_through_xups(snmpsim: Running) -> None:
    """ConnectUPS V4.38 answers XUPS-MIB only: battery seconds, phases in whole volts."""
    profile, _, samples = await poll(snmpsim, "eatonups")
    assert profile == "eaton_ups"
    ups = point(samples, "ups")
    assert (ups["runtime_s"], ups["battery_voltage_v"], ups["load_pct"]) == (8620.0, 78.0, 25.0)
    assert elements(samples, "ups_output", "phase")["2"] == {
        "voltage_v": 231.0,
        "current_a": 5.0,
        "power_w": 944.0,
    }
    assert point(samples, "env_sensor", sensor="emp") == {
        "temperature_c": 21.0,
        "humidity_pct": 26.0,
    }


async def test_eaton_card_with_ups_mib_leaves_xups_unread(derived: Running) -> None:
    """Where UPS-MIB's battery group answers, ups_mib is the reading and XUPS stands aside:
    one run time (50 min, not XUPS's 8620 s), no XUPS phases."""
    profile, _, samples = await poll(derived, "eaton_connectups_ups_mib")
    assert profile == "eaton_ups"
    ups = point(samples, "ups")
    assert (ups["runtime_s"], ups["battery_charge_pct"]) == (3000.0, 90.0)
    assert "battery_voltage_v" not in ups
    assert elements(samples, "ups_input", "phase") == {}
