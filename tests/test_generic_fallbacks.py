"""Generic fallbacks: a device no vendor profile knows by sysObjectID is read through the
standard MIBs it answers (UPS-MIB by its tables, ENTITY-SENSOR-MIB) or its vendor family's
tables (a known enterprise subtree); one understood by nothing is UnsupportedDevice.

Real recordings from the shared set served by snmpsim; expected values are LibreNMS's
(ground-truth.csv) in our schema's units. The shared set has no ENTITY-SENSOR-MIB device, so
that fallback is tried on a small recording in the RFC 3433 layout written here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.registry import load_registry
from agent.snmp import SnmpDevice, SnmpTarget, UnsupportedDevice
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.sample import Sample

pytestmark = pytest.mark.integration


def device(snmpsim: Running, community: str) -> SnmpDevice:
    return SnmpDevice(community, SnmpTarget(snmpsim.host, snmpsim.port, community), {})


def merged(samples: list[Sample], measurement: str) -> dict[str, object]:
    fields: dict[str, object] = {}
    for sample in samples:
        if sample.measurement == measurement:
            fields.update(sample.fields)
    return fields


async def test_delta_ups_read_through_ups_mib_tables(snmpsim: Running) -> None:
    # sysObjectID 1.3.6.1.4.1.2254.2.4 (Delta) is no profile's; it has 17 UPS-MIB objects.
    delta = device(snmpsim, "deltaups")
    samples = await delta.collect()
    assert delta.identity is not None
    assert delta.identity.profile.name == "ups_rfc1628"
    assert delta.identity.matched_by.startswith("fallback")
    assert delta.kind == "ups"
    ups = merged(samples, "ups")
    assert ups["battery_status"] == "normal"
    assert ups["battery_charge_pct"] == 100
    assert ups["runtime_s"] == 22 * 60
    assert ups["battery_voltage_v"] == pytest.approx(41.2)
    assert ups["battery_temperature_c"] == 23
    assert ups["output_source"] == "normal"
    assert ups["output_frequency_hz"] == pytest.approx(60.0)
    assert merged(samples, "ups_input") == {"frequency_hz": pytest.approx(59.9), "voltage_v": 121}
    assert merged(samples, "ups_output") == {
        "voltage_v": 121,
        "current_a": pytest.approx(8.1),
        "power_w": 951,
        "load_pct": 79,
    }


async def test_unknown_apc_product_gets_the_family_profile_its_tables_answer(
    snmpsim: Running,
) -> None:
    # PowerChute reports 1.3.6.1.4.1.318.1.3.33.1, which no APC profile lists, but answers
    # the PowerNet UPS tables (upsBattery, upsOutput).
    chute = device(snmpsim, "apc_powerchute")
    samples = await chute.collect()
    assert chute.identity is not None
    assert chute.identity.profile.name == "apc_ups"
    ups = merged(samples, "ups")
    assert ups["battery_charge_pct"] == 100
    assert ups["runtime_s"] == 126 * 60
    assert ups["output_voltage_v"] == 244
    assert ups["load_pct"] == 31


# A device under an enterprise no profile knows, with objects of its own only. (Recordings of
# real devices no profile reads get profiles: the AVTech Room Alert 4E was this test's.)
UNKNOWN = """\
1.3.6.1.2.1.1.1.0|4|Acme Widget 7
1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.99997.7
1.3.6.1.2.1.1.3.0|67|123456
1.3.6.1.4.1.99997.7.1.1.0|2|215
1.3.6.1.4.1.99997.7.1.2.0|4|ok
"""


async def test_a_device_understood_by_nothing_is_unsupported(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "widget.snmprec").write_text(UNKNOWN)
    service = localservices.start_snmpsim(data, tmp_path / "cache")
    try:
        with pytest.raises(UnsupportedDevice) as raised:
            await device(service, "widget").collect()
    finally:
        localservices.stop(service)
    assert raised.value.sys_object_id == "1.3.6.1.4.1.99997.7"
    assert raised.value.sys_descr == "Acme Widget 7"
    assert "1.3.6.1.4.1.99997.7" in str(raised.value)


# A card under an enterprise no profile knows that answers upsIdentManufacturer only.
IDENT_ONLY = """\
1.3.6.1.2.1.1.1.0|4|UPS Agent
1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.99998.1
1.3.6.1.2.1.1.3.0|67|123456
1.3.6.1.2.1.33.1.1.1.0|4|Acme UPS Co.
"""


async def test_ups_mib_identity_alone_is_not_enough(tmp_path: Path) -> None:
    # Nothing to read, so unsupported rather than a UPS that reports nothing.
    data = tmp_path / "data"
    data.mkdir()
    (data / "ident_only.snmprec").write_text(IDENT_ONLY)
    service = localservices.start_snmpsim(data, tmp_path / "cache")
    try:
        with pytest.raises(UnsupportedDevice):
            await device(service, "ident_only").collect()
    finally:
        localservices.stop(service)


def test_fallback_order_families_then_vendor_subtrees_then_generic_mibs() -> None:
    registry = load_registry()
    # Delta's enterprise is no profile's family: what is tried for any device.
    anywhere = [p.name for p in registry.fallbacks("1.3.6.1.4.1.2254.2.4")]
    assert anywhere[-2:] == ["ups_rfc1628", "entity_sensor_rfc3433"]
    # Before the standard MIBs, profiles found by their vendor's own subtree whatever the
    # sysObjectID (the iBoot-PDU reports net-snmp's): more telling than UPS-MIB objects.
    assert "dataprobe_ibootpdu" in anywhere[:-2]
    vendor_answers = [a for n in anywhere[:-2] for a in registry.profiles[n].detect.answers]
    assert all(a.startswith("1.3.6.1.4.1.") for a in vendor_answers)
    apc = [p.name for p in registry.fallbacks("1.3.6.1.4.1.318.1.3.33.1")]
    family = apc[: len(apc) - len(anywhere)]
    assert {"apc_ups", "apc_rpdu2", "apc_inrow", "apc_emu"} <= set(family)
    assert {registry.profiles[n].vendor for n in family} == {"apc"}
    assert apc[len(family) :] == anywhere
    # Whole arcs: enterprise 3180 is not APC's 318.
    assert [p.name for p in registry.fallbacks("1.3.6.1.4.1.3180.1")] == anywhere


# A sensor hub under an enterprise no profile knows: entPhysicalName and entPhySensorTable
# (type, scale, precision, value, oper status) for five sensors.
SENSOR_HUB = """\
1.3.6.1.2.1.1.1.0|4|Acme SensorHub 4
1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.99999.4
1.3.6.1.2.1.1.3.0|67|123456
1.3.6.1.2.1.47.1.1.1.1.7.11|4|Inlet
1.3.6.1.2.1.47.1.1.1.1.7.12|4|Inlet RH
1.3.6.1.2.1.47.1.1.1.1.7.13|4|Spare probe
1.3.6.1.2.1.47.1.1.1.1.7.14|4|Fan 1
1.3.6.1.2.1.47.1.1.1.1.7.15|4|Exhaust
1.3.6.1.2.1.99.1.1.1.1.11|2|8
1.3.6.1.2.1.99.1.1.1.1.12|2|9
1.3.6.1.2.1.99.1.1.1.1.13|2|8
1.3.6.1.2.1.99.1.1.1.1.14|2|10
1.3.6.1.2.1.99.1.1.1.1.15|2|8
1.3.6.1.2.1.99.1.1.1.2.11|2|9
1.3.6.1.2.1.99.1.1.1.2.12|2|9
1.3.6.1.2.1.99.1.1.1.2.13|2|9
1.3.6.1.2.1.99.1.1.1.2.14|2|9
1.3.6.1.2.1.99.1.1.1.2.15|2|8
1.3.6.1.2.1.99.1.1.1.3.11|2|1
1.3.6.1.2.1.99.1.1.1.3.12|2|0
1.3.6.1.2.1.99.1.1.1.3.13|2|0
1.3.6.1.2.1.99.1.1.1.3.14|2|0
1.3.6.1.2.1.99.1.1.1.3.15|2|0
1.3.6.1.2.1.99.1.1.1.4.11|2|235
1.3.6.1.2.1.99.1.1.1.4.12|2|41
1.3.6.1.2.1.99.1.1.1.4.13|2|30
1.3.6.1.2.1.99.1.1.1.4.14|2|4200
1.3.6.1.2.1.99.1.1.1.4.15|2|24500
1.3.6.1.2.1.99.1.1.1.5.11|2|1
1.3.6.1.2.1.99.1.1.1.5.12|2|1
1.3.6.1.2.1.99.1.1.1.5.13|2|2
1.3.6.1.2.1.99.1.1.1.5.14|2|1
1.3.6.1.2.1.99.1.1.1.5.15|2|1
"""


@pytest.fixture(scope="module")
def sensor_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data = tmp_path_factory.mktemp("entity-sensor")
    (data / "sensor_hub.snmprec").write_text(SENSOR_HUB)
    service = localservices.start_snmpsim(data, tmp_path_factory.mktemp("entity-snmpsim"))
    yield service
    localservices.stop(service)


async def test_entity_sensor_mib_gives_temperatures_and_humidity(sensor_hub: Running) -> None:
    hub = device(sensor_hub, "sensor_hub")
    samples = await hub.collect()
    assert hub.identity is not None
    assert hub.identity.profile.name == "entity_sensor_rfc3433"
    assert hub.identity.model == "Acme SensorHub 4"
    assert hub.kind == "env_sensor"
    sensors = {
        (s.tags["sensor"], s.tags["sensor_name"]): dict(s.fields)
        for s in samples
        if s.measurement == "env_sensor"
    }
    # Precision 1 divides by 10, milli scale by 1000; the unavailable probe (13) and the fan
    # (rpm, no env_sensor field) give nothing.
    assert sensors == {
        ("11", "Inlet"): {"temperature_c": pytest.approx(23.5)},
        ("12", "Inlet RH"): {"humidity_pct": 41},
        ("15", "Exhaust"): {"temperature_c": pytest.approx(24.5)},
    }


def test_ups_mib_is_tried_before_sensor_mibs() -> None:
    names = [p.name for p in load_registry().fallbacks("1.3.6.1.4.1.99999.4")]
    assert names[-2:] == ["ups_rfc1628", "entity_sensor_rfc3433"]
