"""The APC rPDU2 profile against the real recordings, served by snmpsim.

Expected values are what LibreNMS reads from the same recordings (shared/devices/README.md and
ground-truth.csv), so a scaling mistake here is a disagreement with an independent reader.
"""

from __future__ import annotations

import csv
import time

import pytest

from agent.mapping import convert
from agent.profile import FieldSpec
from agent.registry import builtin_profiles
from agent.snmp import DeviceError, SnmpDevice, SnmpTarget
from rackwatch.localservices import Running, free_port
from telemetry.sample import Sample
from tests.conftest import SHARED

pytestmark = pytest.mark.integration


def device(
    snmpsim: Running, community: str, timeout_s: float = 2.0, retries: int = 1
) -> SnmpDevice:
    return SnmpDevice(
        community,
        SnmpTarget(snmpsim.host, snmpsim.port, community, timeout_s=timeout_s, retries=retries),
        {"site": "test", "device": community},
    )


def by_element(samples: list[Sample], measurement: str, tag: str = "") -> dict[str, Sample]:
    return {s.tags.get(tag, ""): s for s in samples if s.measurement == measurement}


async def test_ap8853_metered_pdu(snmpsim: Running) -> None:
    pdu = device(snmpsim, "apc_ap8853")
    samples = await pdu.collect()
    assert pdu.identity is not None
    assert pdu.identity.profile.name == "apc_rpdu2"
    whole = by_element(samples, "pdu")[""]
    assert dict(whole.tags) == {
        "site": "test",
        "device": "apc_ap8853",
        "vendor": "apc",
        "model": "AP8853",
    }
    assert whole.fields == {
        "power_w": 1140.0,
        "apparent_power_va": 1190.0,
        "power_factor": 0.96,
        "energy_kwh": 3512.8,
        "load_state": "normal",
    }
    phase = by_element(samples, "pdu_phase", "phase")["1"]
    assert phase.fields["current_a"] == 4.9
    assert phase.fields["voltage_v"] == 242.0
    banks = by_element(samples, "pdu_bank", "bank")
    assert {b: s.fields["current_a"] for b, s in banks.items()} == {"1": 0.0, "2": 4.7}
    assert not by_element(samples, "pdu_outlet")  # a metered PDU without outlet tables
    assert len({s.time_ns for s in samples}) == 1  # one timestamp per poll


async def test_ap8959eu3_switched_pdu_outlets_from_legacy_table(snmpsim: Running) -> None:
    samples = await device(snmpsim, "apc_ap8959eu3").collect()
    whole = by_element(samples, "pdu")[""]
    assert whole.tags["model"] == "AP8959EU3"
    assert (whole.fields["power_w"], whole.fields["energy_kwh"]) == (270.0, 1967.7)
    assert whole.fields["power_factor"] == 0.82
    assert by_element(samples, "pdu_phase", "phase")["1"].fields["current_a"] == 1.3
    outlets = by_element(samples, "pdu_outlet", "outlet")
    assert len(outlets) == 24
    assert [o for o, s in outlets.items() if s.fields["state"] == "off"] == ["23"]
    assert outlets["1"].tags["outlet_name"] == "Outlet 1"
    # The legacy load row has no bank number in this recording: it is not guessed at.
    assert not by_element(samples, "pdu_bank")


RPDU2_POWER = "1.3.6.1.4.1.318.1.1.26.4.3.1.5.1"  # rPDU2DeviceStatusPower.1, 0.01 kW
IDENT_POWER = "1.3.6.1.4.1.318.1.1.12.1.16.0"  # rPDUIdentDevicePowerWatts.0, W


async def test_ap7900b_reports_its_set_line_voltage_not_a_measured_one(snmpsim: Running) -> None:
    """AP7xxx: rPDU2 says power and voltage are unsupported (-1); the line voltage the user
    set (rPDUIdentDeviceLinetoLineVoltage, 120 V) is rated_voltage_v, never voltage_v. Power
    falls back to the unit's own rPDUIdentDevicePowerWatts (312 W, what LibreNMS reads)."""
    unit = device(snmpsim, "apc_ap7900b")
    unit.trace = {}
    samples = await unit.collect()
    whole = by_element(samples, "pdu")[""]
    assert whole.fields == {
        "rated_voltage_v": 120.0,
        "load_state": "not_supported",
        "power_w": 312.0,
    }
    assert unit.trace[IDENT_POWER][1] == "power_w"
    assert RPDU2_POWER not in unit.trace  # read, but -1: no value
    assert not [s for s in samples if "voltage_v" in s.fields]
    assert by_element(samples, "pdu_phase", "phase")["1"].fields["current_a"] == 2.7


async def test_rpdu2_power_wins_over_the_fallback_where_the_pdu_has_it(snmpsim: Running) -> None:
    """The AP8959EU3 has both (27 = 270 W, and 270): power_w is rPDU2's, the fallback unused."""
    unit = device(snmpsim, "apc_ap8959eu3")
    unit.trace = {}
    samples = await unit.collect()
    assert by_element(samples, "pdu")[""].fields["power_w"] == 270.0
    assert unit.trace[RPDU2_POWER][1] == "power_w"
    assert IDENT_POWER not in unit.trace


@pytest.mark.parametrize("recording", ["apc_ap8853", "apc_ap8959eu3"])
async def test_agrees_with_librenms_ground_truth(snmpsim: Running, recording: str) -> None:
    samples = await device(snmpsim, recording).collect()
    ours = {
        ("power", "rPDU2DeviceStatusPower.1"): by_element(samples, "pdu")[""].fields["power_w"],
        ("power_consumed", "rPDU2DeviceStatusEnergy.1"): by_element(samples, "pdu")[""].fields[
            "energy_kwh"
        ],
    }
    phase = by_element(samples, "pdu_phase", "phase")["1"]
    ours[("voltage", "1")] = phase.fields["voltage_v"]
    for bank, sample in by_element(samples, "pdu_bank", "bank").items():
        ours[("current", str(int(bank) + 1))] = sample.fields["current_a"]
    ours[("current", "1")] = phase.fields["current_a"]
    checked = 0
    with (SHARED / "devices" / "ground-truth.csv").open(encoding="utf-8") as rows:
        for row in csv.DictReader(rows):
            key = (row["sensor_class"], row["sensor_index"])
            if row["device"] == recording and key in ours:
                assert ours[key] == pytest.approx(float(row["expected_value"])), key
                checked += 1
    assert checked >= 3


async def test_dead_device_fails_fast_with_its_name() -> None:
    dead = SnmpDevice(
        "pdu-dead",
        SnmpTarget("127.0.0.1", free_port("udp"), "public", timeout_s=0.2, retries=1),
        {},
    )
    started = time.monotonic()
    with pytest.raises(
        DeviceError,
        match=r"pdu-dead \(127\.0\.0\.1:\d+\): no answer to "
        r"system group GET after 2 tries of 0\.2 s",
    ):
        await dead.collect()
    assert time.monotonic() - started < 5  # bounded by timeout x tries, not hung


async def test_wrong_community_is_an_unanswered_device(snmpsim: Running) -> None:
    with pytest.raises(DeviceError, match="no answer"):
        await device(snmpsim, "no-such-community", timeout_s=0.2, retries=0).collect()


def test_sentinels_enums_and_scaling() -> None:
    power = FieldSpec(column=5, scale=10, absent=(-1,))
    assert convert(power, -1) is None
    assert convert(power, 114) == 1140.0
    assert convert(FieldSpec(column=1, scale=0.1), 49) == 4.9  # not 4.9000000000000004
    assert convert(FieldSpec(column=1, scale=0.01), 96) == 0.96
    state = FieldSpec(column=4, type="enum", enum={1: "on", 2: "off"})
    assert convert(state, 2) == "off"
    assert convert(state, 9) == "unknown_9"
    assert convert(FieldSpec(column=1, type="counter", counter_bits=64), 2**64 - 1) == 2**64 - 1
    assert convert(FieldSpec(column=1), b" 12.5 ") == 12.5  # numbers sent as DisplayString
    assert convert(FieldSpec(column=1), b"n/a") is None
    assert convert(FieldSpec(column=1, type="string"), b"PDU A\x00") == "PDU A"


def test_profile_detection_by_sys_object_id() -> None:
    from agent.registry import detect

    assert detect("1.3.6.1.4.1.318.1.3.4.6", "") is builtin_profiles()["apc_rpdu2"]
    assert detect(".1.3.6.1.4.1.318.1.3.4.5", "") is builtin_profiles()["apc_rpdu2"]
    assert detect("1.3.6.1.4.1.13742.6", "PX2 030004") is builtin_profiles()["raritan_pdu2"]
    assert detect("1.3.6.1.4.1.99999.1", "some unknown box") is None


async def test_max_repetitions_one_reads_the_same_values(snmpsim: Running) -> None:
    """For agents whose GETBULK is broken: one varbind per request, same result."""
    bulk = await device(snmpsim, "apc_ap8959eu3").collect()
    one_by_one = SnmpDevice(
        "x",
        SnmpTarget(snmpsim.host, snmpsim.port, "apc_ap8959eu3", max_repetitions=1),
        {"site": "test", "device": "apc_ap8959eu3"},
    )
    single = await one_by_one.collect()
    assert [(s.measurement, dict(s.tags), dict(s.fields)) for s in single] == [
        (s.measurement, dict(s.tags), dict(s.fields)) for s in bulk
    ]
