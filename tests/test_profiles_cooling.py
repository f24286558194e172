"""The cooling profiles (apc_inrow, liebert_gp, rittal_cmc3) against the real recordings.

Expected values are the ones shared/devices/README.md names for each recording (what LibreNMS
reads from the same files), so a wrong row, scale or unit here disagrees with an independent
reader. Several table specs may feed one point (same measurement and tags); `point()` merges
their fields the way InfluxDB does.
"""

from __future__ import annotations

import pytest

from agent.registry import builtin_profiles
from agent.snmp import SnmpDevice, SnmpTarget
from rackwatch.localservices import Running
from telemetry.sample import FieldValue, Sample

pytestmark = pytest.mark.integration

INROW = "apc-inrow"
LIEBERT = "liebert_weblbds"
RITTAL = "rittal-lcp_cmciii-pu-lcp"


def device(snmpsim: Running, community: str) -> SnmpDevice:
    return SnmpDevice(community, SnmpTarget(snmpsim.host, snmpsim.port, community), {})


async def poll(snmpsim: Running, community: str) -> list[Sample]:
    return await device(snmpsim, community).collect()


def point(samples: list[Sample], measurement: str, **tags: str) -> dict[str, FieldValue]:
    """The fields of every sample of `measurement` whose tags include `tags`, merged."""
    fields: dict[str, FieldValue] = {}
    for sample in samples:
        if sample.measurement == measurement and tags.items() <= sample.tags.items():
            fields.update(sample.fields)
    return fields


def series(samples: list[Sample], measurement: str) -> set[tuple[tuple[str, str], ...]]:
    """The distinct tag sets (series) of `measurement`, without the device-wide tags."""
    return {
        tuple(sorted((k, v) for k, v in s.tags.items() if k not in ("vendor", "model")))
        for s in samples
        if s.measurement == measurement
    }


def test_cooling_profiles_are_shipped() -> None:
    """The three cooling profiles load and validate with the built-in set."""
    assert {"apc_inrow", "liebert_gp", "rittal_cmc3"} <= set(builtin_profiles())
    # the UPS-MIB fragment and the power-distribution points of LIEBERT-GP-POWER-MIB
    assert builtin_profiles()["liebert_gp"].include == ("ups_mib", "liebert_pdu")


# ---- APC InRow RC (ACRC103) ---------------------------------------------------------------


async def test_inrow_is_detected_with_its_model(snmpsim: Running) -> None:
    """sysObjectID airIRRC100Series picks apc_inrow; the model is the unit's own ident."""
    unit = device(snmpsim, INROW)
    samples = await unit.collect()
    assert unit.identity is not None
    assert unit.identity.profile.name == "apc_inrow"
    assert unit.identity.model == "ACRC103"
    assert {s.tags["vendor"] for s in samples} == {"apc"}


async def test_inrow_temperatures_come_from_metric_tenths(snmpsim: Running) -> None:
    """Rack inlet, supply, return and fluid temperatures are the *Metric values / 10."""
    cooling = point(await poll(snmpsim, INROW), "cooling")
    assert cooling["rack_inlet_c"] == 21.4
    assert cooling["supply_air_c"] == 21.9
    assert cooling["return_air_c"] == 23.8
    assert cooling["entering_water_c"] == 13.0
    assert cooling["leaving_water_c"] == 21.4
    assert cooling["rack_inlet_setpoint_c"] == 25.0
    assert cooling["supply_air_setpoint_c"] == 22.0


async def test_inrow_fan_airflow_valve_and_state(snmpsim: Running) -> None:
    """Fan speed in tenths of %, airflow in CFM, valve %, and named states."""
    cooling = point(await poll(snmpsim, INROW), "cooling")
    assert cooling["fan_speed_pct"] == 51.8
    assert cooling["airflow_cfm"] == 1717.0
    assert cooling["valve_pct"] == 30.0
    assert cooling["water_flow_lpm"] == 0.0
    assert cooling["cooling_output_w"] == 0.0
    assert cooling["operating_state"] == "on"
    assert cooling["leak_state"] == "no_leak"


async def test_inrow_run_hours_become_seconds(snmpsim: Running) -> None:
    """Air filter run hours (3150 h) are reported in seconds."""
    cooling = point(await poll(snmpsim, INROW), "cooling")
    assert cooling["filter_runtime_s"] == 3150 * 3600
    assert cooling["condensate_pump_runtime_s"] == 0.0


async def test_inrow_other_model_branches_give_nothing(snmpsim: Running) -> None:
    """An RC answers no RP/SC objects: one cooling point, no probes, no humidity field."""
    samples = await poll(snmpsim, INROW)
    assert [s.measurement for s in samples] == ["cooling"]
    assert "humidity_pct" not in samples[0].fields


# ---- Liebert HPM on a GP web card (plus a Liebert UPS's UPS-MIB and lgpPwr data) ----------


async def test_liebert_is_detected_and_polls_its_include(snmpsim: Running) -> None:
    """sysObjectID liebertGlobalProducts picks liebert_gp, which also polls ups_rfc1628."""
    unit = device(snmpsim, LIEBERT)
    samples = await unit.collect()
    assert unit.identity is not None
    assert unit.identity.profile.name == "liebert_gp"
    assert {s.tags["vendor"] for s in samples} == {"liebert"}
    assert point(samples, "ups")["runtime_s"] == 52 * 60  # UPS-MIB, from the include


async def test_liebert_temperatures_are_chosen_by_pointer_not_row(snmpsim: Running) -> None:
    """Row 2 points at supply air and row 3 at return air: the pointer decides the field."""
    cooling = point(await poll(snmpsim, LIEBERT), "cooling")
    assert cooling["supply_air_c"] == 25.0
    assert cooling["return_air_c"] == 24.0
    assert cooling["control_c"] == 24.0
    assert cooling["supply_air_setpoint_c"] == 18.0
    assert cooling["return_air_setpoint_c"] == 24.0
    assert "control_setpoint_c" not in cooling  # the control row has no set point


async def test_liebert_humidity_and_capacities(snmpsim: Running) -> None:
    """Return and control humidity, the humidity set point, capacity usage in %."""
    cooling = point(await poll(snmpsim, LIEBERT), "cooling")
    assert cooling["humidity_pct"] == 34.0
    assert cooling["control_humidity_pct"] == 34.0
    assert cooling["humidity_setpoint_pct"] == 35.0
    assert "supply_air_humidity_pct" not in cooling  # no supply-air humidity row
    assert cooling["cooling_capacity_pct"] == 13.0
    assert cooling["fan_capacity_pct"] == 50.0
    # idle subsystems read 0 %, a reading (the unit has them), not a missing field
    for subsystem in ("free_cooling", "dehumidifying", "humidifying"):
        assert cooling[f"{subsystem}_capacity_pct"] == 0.0


async def test_liebert_flexible_points_in_their_stated_units(snmpsim: Running) -> None:
    """liebert_apm's lgpFlexibleBasicTable: text values converted by their units column (kW,
    kVA, deg C); the imperial copy of each point ("72" "deg F") gives no second reading."""
    samples = await poll(snmpsim, "liebert_apm")
    ours = [s for s in samples if s.measurement == "ups" and s.tags.get("mib") == "liebert_gp"]
    assert len(ours) == 1
    assert ours[0].fields == {
        "output_power_w": 20000.0,  # 4208 System Output Power "20" kW
        "output_apparent_power_va": 23000.0,  # 4209 "23" kVA
        "battery_temperature_c": 22.0,  # 4156 "22" deg C, not set 2's "72" deg F
        "ambient_temperature_c": 25.0,  # 4291 Inlet Air Temperature
    }
    # UPS-MIB's ups point stays its own series, without these fields
    assert "output_power_w" not in point([s for s in samples if "mib" not in s.tags], "ups")


async def test_liebert_subsystem_states_are_named(snmpsim: Running) -> None:
    """lgpEnvState enums become lowercase names."""
    cooling = point(await poll(snmpsim, LIEBERT), "cooling")
    assert cooling["operating_state"] == "on"
    assert cooling["cooling_state"] == "on"
    assert cooling["humidifier_state"] == "off"
    assert cooling["dehumidifier_state"] == "off"
    assert cooling["fan_state"] == "on"
    assert cooling["alarm"] == "normal"


async def test_liebert_power_lines_are_their_own_series(snmpsim: Running) -> None:
    """lgpPwr lines are tagged mib=liebert_gp, apart from the UPS-MIB's readings of them."""
    samples = await poll(snmpsim, LIEBERT)
    output = point(samples, "ups_output", phase="1", mib="liebert_gp")
    assert output == {
        "voltage_v": 230.0,
        "voltage_ll_v": 399.0,
        "current_a": 43.0,
        "load_pct": 24.0,
        "power_factor": 0.95,
    }
    source = point(samples, "ups_input", phase="2", mib="liebert_gp")
    assert (source["voltage_v"], source["current_a"], source["power_factor"]) == (224.0, 52.0, 0.91)
    bypass = point(samples, "ups_bypass", phase="3", mib="liebert_gp")
    assert bypass == {"voltage_v": 228.0}  # no bypass current or LL voltage recorded
    lgp = [s for s in samples if s.tags.get("mib") == "liebert_gp"]
    assert all("voltage_ll_v" in s.fields for s in lgp if s.measurement != "ups_bypass")
    assert not [s for s in samples if "voltage_ll_v" in s.fields and s not in lgp]


# ---- Rittal LCP on a CMC III PU -------------------------------------------------------------


async def test_rittal_is_detected_with_its_model(snmpsim: Running) -> None:
    """sysObjectID cmcIII picks rittal_cmc3; the model is the PU's device name."""
    unit = device(snmpsim, RITTAL)
    samples = await unit.collect()
    assert unit.identity is not None
    assert unit.identity.profile.name == "rittal_cmc3"
    assert {s.tags["model"] for s in samples} == {"CMCIII-PU LCP"}


async def test_rittal_lcp_values_use_value_int_and_var_scale(snmpsim: Running) -> None:
    """LCP readings are ValueInt scaled by VarScale (1707 W, not ValueStr's 1705 W)."""
    samples = await poll(snmpsim, RITTAL)
    assert series(samples, "cooling") == {(("unit", "2"),)}
    cooling = point(samples, "cooling", unit="2")
    assert cooling == {
        "rack_inlet_c": 19.0,
        "rack_outlet_c": 24.4,
        "entering_water_c": 16.1,
        "leaving_water_c": 20.7,
        "water_flow_lpm": 5.3,
        "valve_pct": 38.0,
        "valve_demand_pct": 35.4,  # Control Valve.Internal Control.Valve1: 354, scale -10
        "cooling_output_w": 1707.0,
    }


async def test_rittal_server_in_and_out_probes(snmpsim: Running) -> None:
    """Top/centre/bottom probes are cooling_sensor points of the LCP."""
    samples = await poll(snmpsim, RITTAL)
    probes = {
        s.tags["sensor"]: s.fields["temperature_c"]
        for s in samples
        if s.measurement == "cooling_sensor" and s.tags["unit"] == "2"
    }
    assert probes == {
        "rack_inlet_top": 18.8,
        "rack_inlet_center": 19.0,
        "rack_inlet_bottom": 19.1,
        "rack_outlet_top": 25.0,
        "rack_outlet_center": 25.2,
        "rack_outlet_bottom": 23.0,
    }


async def test_rittal_six_fans(snmpsim: Running) -> None:
    """Each LCP fan is a cooling_fan point; all six run at 16 %, the control asks 14 % of
    fans 1-5 and 13 % of fan 6 (Fans.Internal Control.FanN, ValueInt)."""
    samples = await poll(snmpsim, RITTAL)
    fans = {s.tags["fan"]: s.fields for s in samples if s.measurement == "cooling_fan"}
    assert fans == {
        str(n): {"speed_pct": 16.0, "speed_demand_pct": 13.0 if n == 6 else 14.0}
        for n in range(1, 7)
    }


async def test_rittal_env_sensors_per_device(snmpsim: Running) -> None:
    """Each device's "Temperature.Value" is an env_sensor; no humidity sensor, no field."""
    samples = await poll(snmpsim, RITTAL)
    sensors = {s.tags["sensor"]: s.fields for s in samples if s.measurement == "env_sensor"}
    assert sensors == {
        "1": {"temperature_c": 23.6},
        "3": {"temperature_c": 21.4},
        "4": {"temperature_c": 34.3},
    }


async def test_rittal_controller_health(snmpsim: Running) -> None:
    """The PU's board temperature, supplies and CAN currents (mA to A), and its status."""
    controller = point(await poll(snmpsim, RITTAL), "controller")
    assert controller == {
        "state": "ok",
        "temperature_c": 27.7,
        "supply_24v_v": 23.15,
        "supply_5v_v": 5.04,
        "supply_3v3_v": 3.3,
        "can1_current_a": 0.0,
        "can2_current_a": 0.08,
    }


async def test_rittal_later_polls_read_the_same_rows(snmpsim: Running) -> None:
    """After the lookup poll, values read by GET give the same samples."""
    unit = device(snmpsim, RITTAL)
    first = await unit.collect()
    second = await unit.collect()
    assert [(s.measurement, s.tags, s.fields) for s in second] == [
        (s.measurement, s.tags, s.fields) for s in first
    ]
