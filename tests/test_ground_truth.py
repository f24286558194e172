"""Every shared recording, autodetected and polled as `rackwatch probe` does, against the values
LibreNMS reads from it (shared/devices/ground-truth.csv), in our schema's units.

A ground-truth row is matched by its OID when our profile reads the same OID; otherwise (our
profile reads the same quantity from another table, e.g. APC's rPDU2 phase table instead of the
legacy load table) by value among our fields of the same unit on that device.

A recording no profile understands (UnsupportedDevice) is skipped: covering it is profile work,
not a regression. Recordings a profile reads but not yet as LibreNMS does are KNOWN_GAPS
(expected to fail, not strictly); every other recording must match.
"""

from __future__ import annotations

import csv
from collections import defaultdict

import pytest

from agent.snmp import SnmpDevice, SnmpTarget, UnsupportedDevice
from rackwatch.localservices import Running
from telemetry.sample import Sample
from tests.conftest import RECORDINGS, SHARED

pytestmark = pytest.mark.integration

# LibreNMS sensor class -> (suffixes of our field names, factor from LibreNMS's unit to ours)
CLASSES: dict[str, tuple[tuple[str, ...], float]] = {
    "current": (("_a",), 1),
    "voltage": (("_v",), 1),
    "power": (("_w", "_va"), 1),
    "power_consumed": (("_kwh",), 1),
    "frequency": (("_hz",), 1),
    "temperature": (("_c",), 1),
    "humidity": (("humidity_pct", "humidity_setpoint_pct"), 1),
    "runtime": (("_s",), 60),  # LibreNMS: minutes; ours: seconds
    "charge": (("_pct",), 1),
    "load": (("_pct",), 1),
    "power_factor": (("power_factor",), 1),
    "airflow": (("_cfm",), 1),
    "fanspeed": (("_pct", "_rpm"), 1),
}


def ground_truth() -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    with (SHARED / "devices" / "ground-truth.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["sensor_class"] in CLASSES and row["expected_value"]:
                rows[row["device"]].append(row)
    return rows


# Raw readings that mean "no such sensor" (shared/devices/README.md): LibreNMS keeps them as
# values; we must give no field at all.
SENTINELS = {("humidity", "-1"), ("temperature", "-1"), ("temperature", "-410")}

GROUND_TRUTH = ground_truth()
# Read by a profile (vendor or generic fallback), but some of LibreNMS's sensors are read
# differently or not at all (2026-12-06).
KNOWN_GAPS = {
    # AP7900B: rPDU2's phase current (2.7 A) was sampled apart from the legacy
    # rPDULoadStatusLoad LibreNMS reads (2.8 A); its power (rPDU2 -1, so the fallback
    # rPDUIdentDevicePowerWatts, 312 W) and set line voltage match (apc_rpdu2.yaml)
    "apc_ap7900b",
    # dell-ups_tower1000w: two run times (UPS-MIB minutes, Dell seconds) for one field
    "dell-ups_tower1000w",
    # Sinetica output power: the MIB says watts, LibreNMS divides by 10 (sinetica_ups.yaml)
    "sinetica",
    # XPPC-MIB's battery current is "percent of maximum current"; LibreNMS reads tenths of A
    "netagent2",
    # ePDULoadStatusActivePower.0 (500 W) on a UPS card: the recording has no
    # upsAdvanceOutputPower, and the PDU table's row 0 is not known to be the UPS's output
    # (cyberpower_ups.yaml); envirTemperature (1/10 degF) matches since `unit: fahrenheit`
    "cyberpower",
    # LibreNMS counts reactive power (var) as power and apparent energy (kVAh) as energy; the
    # schema has no field for either (fragments/rittal_cmc3_pdu.yaml)
    "rittal-cmc-iii-pu_pdu-controller",
    # LibreNMS's "power" is the current OID times 230 V, not a reading (digipower_pdu.yaml)
    "digipower",
    # LibreNMS divides rectifiersCurrentValue by 10 here and not on `enexus` (same flags), where
    # the rectifiers' sum says amperes; and a Fahrenheit plant's disabled battery-temperature
    # group reads 0 (eltek_enexus.yaml)
    "enexus_smartpacks", "enexus_smartpacks2", "enexus_smartpacks-version-214",
    # HUAWEI-SITE-MONITOR-MIB states currents in tenths of A; LibreNMS reads them undivided
    "huawei-smu",
}  # fmt: skip
RECORDING_NAMES = sorted(p.stem for p in RECORDINGS.glob("*.snmprec"))
WITH_GAPS = [
    pytest.param(name, marks=pytest.mark.xfail(reason="known gap")) if name in KNOWN_GAPS else name
    for name in RECORDING_NAMES
]


async def collect(device: SnmpDevice) -> list[Sample]:
    try:
        return await device.collect()
    except UnsupportedDevice as exc:
        pytest.skip(f"no profile understands it: {exc}")


def close(a: float, b: float, note: str = "") -> bool:
    # ground-truth.csv rounds to 6 decimals (0.095414 for 34349 / 360000): half a unit of that;
    # LibreNMS's fahrenheit_to_celsius rounds to 2 (the note says so): half a unit of that
    if "fahrenheit_to_celsius" in note:
        return abs(a - b) <= 0.005 + 1e-9
    return abs(a - b) <= max(5e-7, 1e-6 * abs(b))


@pytest.mark.parametrize("recording", WITH_GAPS)
async def test_recording_matches_librenms(snmpsim: Running, recording: str) -> None:
    device = SnmpDevice(recording, SnmpTarget(snmpsim.host, snmpsim.port, recording), {})
    device.trace = {}
    samples = await collect(device)
    assert device.identity is not None, "autodetection picked a profile"
    trace = dict(device.trace)

    def field_value(sample: Sample, name: str) -> float | None:
        value = sample.fields[name]
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    problems = []
    for row in GROUND_TRUTH.get(recording, []):
        suffixes, factor = CLASSES[row["sensor_class"]]
        expected = float(row["expected_value"]) * factor
        what = f"{row['sensor_class']} {row['sensor_descr']!r} ({row['oid']} = {expected:g})"
        if (row["sensor_class"], row["raw_value"]) in SENTINELS:
            if row["oid"] in trace:
                problems.append(f"{what}: a sentinel, but we made a field of it")
            continue
        if row["oid"] in trace:
            position, name = trace[row["oid"]]
            ours = field_value(samples[position], name)
            if not name.endswith(suffixes):
                problems.append(f"{what}: read into {name}, which is not in {suffixes}")
            elif ours is None or not close(ours, expected, row["note"]):
                problems.append(f"{what}: we read {samples[position].measurement}.{name} = {ours}")
            continue
        candidates = [
            (s.measurement, n, v)
            for s in samples
            for n in s.fields
            if n.endswith(suffixes) and (v := field_value(s, n)) is not None
        ]
        if not any(close(v, expected) for _, _, v in candidates):
            problems.append(f"{what}: not read (no {suffixes} field has this value)")
    assert not problems, f"{recording}:\n" + "\n".join(problems)


@pytest.mark.parametrize("recording", RECORDING_NAMES)
async def test_later_polls_read_the_same_values_by_get(snmpsim: Running, recording: str) -> None:
    """After the first poll walks the tables, later polls GET the known rows: same samples."""
    device = SnmpDevice(recording, SnmpTarget(snmpsim.host, snmpsim.port, recording), {})

    def view(samples: list[Sample]) -> list[tuple[str, dict[str, str], dict[str, object]]]:
        return sorted(((s.measurement, dict(s.tags), dict(s.fields)) for s in samples), key=repr)

    first = view(await collect(device))
    second = view(await device.collect())
    third = view(await device.collect())
    assert second == first
    assert third == first
