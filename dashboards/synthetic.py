"""A synthetic hub in InfluxDB, to run the dashboards at scale (tests/test_dashboards_scale.py,
bench/bench_dashboards.py, `python -m dashboards.render --synthetic`).

20,000 racks by default: 2 sites, rooms of 40 rows, rows of 20 racks, each rack on two 3-phase
400 V / 63 A feeds (2N). Written the way rackwatch writes them:

- roll-ups (`feed_power`, `rack_power`, `row_power`, `room_power`, `site_power`, `pue`) every
  10 s (the collector's `rollup.interval_s`) into the raw policy, with every field
  collector/rollup.py gives them;
- the same into the 5-minute policy (`rackwatch_5m`), one point per 5 minutes, as the
  continuous queries of collector/retention.py would (the curve is smooth: its value at the
  bucket stands for the bucket's mean);
- two devices of each kind the device views read per site, every 30 s (the agent's default
  poll) into the raw policy and every 5 minutes into the 5-minute one. PDUs, UPSes, cooling
  units, DC plants and environment monitors are real recordings polled once by the agent's
  SnmpDevice through snmpsim, accelerator hosts an H100's NVML probe (`poll_real`, POLLED),
  moved over time by a small bounded walk (`wander`, `Polled.at`) that keeps what the
  recording sums summed. Each site's first device of a kind (the one the device views open
  at) is in trouble (FAULTS) and has the schema's fields its recording lacks made up, so
  every panel shows something; rackwatch's own health, alerts, jobs and accelerator events,
  which have no recording, are made up for both;
- retention policies and `rp_config` by collector.retention.ensure, as the collector sets
  them up.

Lines come from telemetry.lineproto.encode and go to InfluxDB's /write gzipped, in batches.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from collector.config import InfluxSettings, RetentionSettings, RollupSettings
from collector.inventory import Feed, Inventory, Rack
from collector.retention import EVENTS, ensure
from collector.rollup import Rollup, _RackNow
from dashboards.macros import interpolate, variables_used
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.lineproto import encode, parse_lines
from telemetry.sample import FieldValue, Sample
from telemetry.schema import schema

ROLLUP_INTERVAL_S = 10  # collector rollup.interval_s default
DEVICE_INTERVAL_S = 30  # agent defaults.interval_s
AGGREGATE_INTERVAL_S = 300  # retention.interval default
FEED_RATED_A, FEED_VOLTAGE_V, DERATING = 63.0, 400.0, 0.8
FEED_DERATED_W = FEED_RATED_A * FEED_VOLTAGE_V * math.sqrt(3) * DERATING  # 34.9 kW
NOMINAL_V = FEED_VOLTAGE_V / math.sqrt(3)  # what a PDU on a 3-phase feed measures
TOLERANCE_PCT = 5.0  # rollup.voltage_tolerance_pct default
HOSTS = 4  # accelerator hosts in a rack that has them
ROLLUPS = ("feed_power", "rack_power", "row_power", "room_power", "site_power", "pue")
Fields = dict[str, FieldValue]
BATCH_LINES = 5_000  # InfluxDB 1.x's advice; bigger ones hit its 10 s write timeout here


@dataclass(frozen=True)
class Layout:
    """Where the racks are: sites share the rooms round-robin; rows of `racks_per_row`."""

    racks: int = 20_000
    sites: int = 2
    rows_per_room: int = 40
    racks_per_row: int = 20

    def site_names(self) -> list[str]:
        return [f"hub-{chr(ord('a') + i)}" for i in range(self.sites)]

    def places(self) -> list[tuple[str, str, str, str]]:
        """(site, room, row, rack) of every rack; a rack's name is unique in its room."""
        per_room = self.rows_per_room * self.racks_per_row
        sites = self.site_names()
        out = []
        for i in range(self.racks):
            room_index, in_room = divmod(i, per_room)
            row_index, position = divmod(in_room, self.racks_per_row)
            site = sites[room_index % self.sites]
            room = f"hall-{room_index // self.sites + 1:02d}"
            row = f"{row_index + 1:02d}"
            out.append((site, room, row, f"R{row}-{position + 1:02d}"))
        return out


@dataclass(frozen=True)
class Windows:
    """How much history each kind of series gets, in seconds back from now."""

    raw_s: int = 3600  # row, room, site, PUE and devices, raw policy
    raw_racks_s: int = 3600  # racks and feeds, raw policy
    aggregated_s: int = 86400  # everything, 5-minute policy
    aggregated_racks_s: int = 86400  # racks and feeds, 5-minute policy
    # The racks of each site's first row get the whole raw window too (a row to draw).
    first_row_s: int = 0


@dataclass
class Written:
    points: dict[str, int] = field(default_factory=dict)  # "policy.measurement" -> points
    bytes_gzipped: int = 0
    seconds: float = 0.0

    def total(self) -> int:
        return sum(self.points.values())


# --- roll-ups -------------------------------------------------------------------------------


def _hash(*values: float) -> float:
    """A repeatable pseudo-random number in [0, 1) for these values."""
    x = math.sin(sum(v * k for v, k in zip(values, (12.9898, 78.233, 37.719), strict=False)))
    return (x * 43758.5453) % 1.0


def _base(rack: int) -> float:
    return 0.25 + 0.55 * math.pow(_hash(rack), 1.5)  # 25-80 %, most racks in the lower half


def _load(rack: int, t: int) -> float:
    """A rack's share of its capacity at t: its own level (a few racks near their limit), a
    daily swing, a slower job-driven swing and a little noise."""
    base = _base(rack)
    day = 0.08 * math.sin(2 * math.pi * (t / 86400 + _hash(rack, 1)))
    jobs = 0.05 * math.sin(2 * math.pi * (t / (1800 + 3600 * _hash(rack, 2)) + _hash(rack, 3)))
    noise = 0.015 * _hash(rack, t)
    return min(0.97, base + day + jobs + noise)


def _peak(rack: int) -> float:
    """Above any load of the rack (the swings add at most 0.145 to its base)."""
    return min(0.99, _base(rack) + 0.15) * FEED_DERATED_W


def _text(value: FieldValue) -> str:
    """A float field as the encoder spells it."""
    assert isinstance(value, float), value
    return float.__repr__(value)


def _power(rack: int, t: int) -> tuple[float, float, float, float | None]:
    """Feed A's and B's PDU power, their sum, and the accelerator hosts' sum (three racks in
    four hold hosts), added in the order collector/rollup.py adds them."""
    power = _load(rack, t) * FEED_DERATED_W
    feed_a, feed_b = power * 0.51, power * 0.49
    host = power * 0.7 / HOSTS
    return feed_a, feed_b, feed_a + feed_b, sum([host] * HOSTS) if has_accelerators(rack) else None


def has_accelerators(rack: int) -> bool:
    return rack % 4 != 3


class Rollups:
    """The roll-up points of every rack, row, room and site at a time. A series' measurement
    and tags are encoded once, by the real encoder; each point adds its fields and time."""

    def __init__(self, places: Sequence[tuple[str, str, str, str]]) -> None:
        self.places = places
        self._heads: list[tuple[str, str, str]] = []  # feed A, feed B, rack
        # The collector's own roll-up sums rows, rooms and sites (collector/rollup.py).
        feed = Feed(rated_a=FEED_RATED_A, voltage_v=FEED_VOLTAGE_V, phases=3)
        self.inventory = Inventory(
            derating=DERATING,
            racks=[
                Rack(site=site, room=room, row=row, rack=rack, feeds={"A": feed, "B": feed})
                for site, room, row, rack in places
            ],
        )
        self.rollup = Rollup(self.inventory, RollupSettings(inventory=Path("synthetic")))
        self._stranded = [FEED_DERATED_W - _peak(i) for i in range(len(places))]
        for site, room, row, rack in places:
            tags = {"site": site, "room": room, "row": row, "rack": rack}
            self._heads.append(
                (
                    _head("feed_power", {**tags, "feed": "A"}),
                    _head("feed_power", {**tags, "feed": "B"}),
                    _head("rack_power", tags),
                )
            )

    def rack_fields(self, i: int, t: int) -> tuple[Fields, Fields, Fields]:
        """Fields of feed A, feed B and the rack, as collector/rollup.py computes them from
        one PDU per feed and four accelerator hosts (tests/test_dashboards_scale.py)."""
        feed_a, feed_b, power, accelerators = _power(i, t)
        swing = 1.5 * math.sin(2 * math.pi * t / 5400 + i % 40) + 0.6 * _hash(i, t, 1)
        voltage = round(230.0 + swing, 1)  # line to neutral
        deviation = 100.0 * (voltage - NOMINAL_V) / NOMINAL_V
        feeds: list[Fields] = [
            {
                "power_w": feed_w,
                "capacity_w": FEED_DERATED_W,
                "load_pct": 100.0 * feed_w / FEED_DERATED_W,
                "voltage_v": voltage,
                "nominal_voltage_v": round(NOMINAL_V, 1),
                "voltage_deviation_pct": round(deviation, 1),
                "voltage_mismatch": abs(deviation) > TOLERANCE_PCT,
            }
            for feed_w in (feed_a, feed_b)
        ]
        peak = self.peak_w(i)
        fields: Fields = {
            "power_w": power,
            "capacity_w": FEED_DERATED_W,
            "capacity_pct": 100.0 * power / FEED_DERATED_W,
            "feeds_reporting": 2,
            "feeds_missing": 0,
            "nn_ok": power <= FEED_DERATED_W,
            "nn_headroom_w": FEED_DERATED_W - power,
            "peak_w": peak,
            "stranded_w": FEED_DERATED_W - peak,
        }
        if accelerators is not None:
            fields |= {"accelerator_power_w": accelerators, "accelerator_hosts": HOSTS}
        return feeds[0], feeds[1], fields

    def peak_w(self, i: int) -> float:
        """Rack i's peak over the roll-ups' window (a week): above any load of the day."""
        return FEED_DERATED_W - self._stranded[i]

    def samples(self, t: int) -> Iterator[Sample]:
        """Every roll-up point at t as Samples (the slow, plain form of `lines`)."""
        t_ns = t * 10**9
        for i, (site, room, row, rack) in enumerate(self.places):
            tags = {"site": site, "room": room, "row": row, "rack": rack}
            feed_a, feed_b, fields = self.rack_fields(i, t)
            yield Sample("feed_power", {**tags, "feed": "A"}, feed_a, t_ns)
            yield Sample("feed_power", {**tags, "feed": "B"}, feed_b, t_ns)
            yield Sample("rack_power", tags, fields, t_ns)
        yield from self.group_samples(t)

    def first_rows(self) -> list[int]:
        """The racks of the first row of each site (in its first room)."""
        first: dict[str, tuple[str, str]] = {}
        for site, room, row, _ in self.places:
            first.setdefault(site, (room, row))
        return [i for i, (s, room, row, _) in enumerate(self.places) if first[s] == (room, row)]

    def lines(self, t: int, *, racks: bool | Sequence[int] = True) -> Iterator[str]:
        """Every roll-up point at t as lines; `racks`: False for rows, rooms, sites and PUE
        only, or the indexes of the racks to write."""
        stamp = f" {t * 10**9}"
        chosen = range(len(self._heads)) if racks is True else racks or ()
        if chosen:  # the fields of rack_fields, spelled out: 4x faster than joining dicts
            cap = float.__repr__(FEED_DERATED_W)
            r = _text
            for i in chosen:
                head_a, head_b, head_rack = self._heads[i]
                feed_a, feed_b, rack = self.rack_fields(i, t)
                for head, feed in ((head_a, feed_a), (head_b, feed_b)):
                    yield (
                        f"{head} power_w={r(feed['power_w'])},capacity_w={cap},"
                        f"load_pct={r(feed['load_pct'])},voltage_v={r(feed['voltage_v'])},"
                        f"nominal_voltage_v={r(feed['nominal_voltage_v'])},"
                        f"voltage_deviation_pct={r(feed['voltage_deviation_pct'])},"
                        f"voltage_mismatch={'true' if feed['voltage_mismatch'] else 'false'}{stamp}"
                    )
                line = (
                    f"{head_rack} power_w={r(rack['power_w'])},capacity_w={cap},"
                    f"capacity_pct={r(rack['capacity_pct'])},feeds_reporting=2i,feeds_missing=0i,"
                    f"nn_ok={'true' if rack['nn_ok'] else 'false'},"
                    f"nn_headroom_w={r(rack['nn_headroom_w'])},peak_w={r(rack['peak_w'])},"
                    f"stranded_w={r(rack['stranded_w'])}"
                )
                if "accelerator_power_w" in rack:
                    accelerators = r(rack["accelerator_power_w"])
                    line += f",accelerator_power_w={accelerators},accelerator_hosts={HOSTS}i"
                yield line + stamp
        for sample in self.group_samples(t):
            yield encode(sample)

    def group_samples(self, t: int) -> Iterator[Sample]:
        """Row, room and site points (collector/rollup.py's own sums), and each site's PUE."""
        now = []
        for i, rack in enumerate(self.inventory.racks):
            _, _, power, accelerators = _power(i, t)
            stranded = self._stranded[i]
            now.append(_RackNow(rack, power, FEED_DERATED_W, stranded, True, accelerators))
        samples: list[Sample] = []
        t_ns = t * 10**9
        site_power = self.rollup._groups(now, t_ns, samples)
        yield from samples
        for site, it_w in site_power.items():  # the facility meter: IT plus cooling, losses
            if it_w:
                facility = it_w * (1.25 + 0.05 * math.sin(2 * math.pi * t / 86400))
                pue = {"pue": facility / it_w, "facility_power_w": facility, "it_power_w": it_w}
                yield Sample("pue", {"site": site}, pue, t_ns)


def _head(measurement: str, tags: dict[str, str]) -> str:
    """A series' measurement and tags as the encoder writes them."""
    return encode(Sample(measurement, tags, {"x": 0.0}, 0)).rsplit(" ", 2)[0]


# --- devices --------------------------------------------------------------------------------

# How many rows a device has of each of these tags (3 phases, 4 outlets, ...); other tags 1.
ROWS = {"phase": 3, "outlet": 4, "bank": 2, "rectifier": 3, "line": 3, "index": 2}
# A state an operator's panel shows in colour; other enum fields read "normal".
STATES = {
    "operating_state": "on",
    "state": "on",
    "output_source": "normal",
    "battery_status": "normal",
    "mains_state": "normal",
    "charge_mode": "float",
    "pstate": "P0",
}
# Tags a site adds to its devices (schema.yaml site_tags) that roll-ups and views read.
SITE_TAGS = {"gpu": ("cluster",), "pdu": ("feed",)}
# The first device of each kind in each site is in trouble, so the panels that list only
# what is wrong (not running, on battery, not answering, throttling) have something to show.
FAULTS: dict[str, FieldValue] = {
    "operating_state": "off",
    "output_source": "battery",
    "up": False,
    "throttle_hw_slowdown": True,
    "throttle_sw_thermal_slowdown": True,
    "load_state": "near_overload",
    "rack_inlet_c": 28.5,  # above ASHRAE's recommended 27 °C
}
TRUE = {"up", "mqtt_connected", "healthy", "online", "mig_enabled", "roce_link_up"}
UNIT_LEVELS = {"°C": 24.0, "%": 55.0, "W": 2400.0, "A": 12.0, "V": 230.0, "s": 1800.0}


def device_family(measurement: str) -> str:
    """The device kind a measurement belongs to: pdu_phase -> pdu, accelerator_job -> gpu."""
    if measurement.startswith("accelerator"):
        return "gpu"
    if measurement.startswith("rackwatch_"):
        return "agent"
    return measurement.split("_")[0]


def _tag_value(tag: str, n: int) -> str:
    if tag == "line":
        return f"L{n + 1}"
    if tag == "index":
        return str(n)
    if tag.endswith("_name"):
        return f"{tag.removesuffix('_name')} {n + 1}"
    return str(n + 1)


def _value(measurement: str, name: str, t: int, row: int, faulty: bool) -> FieldValue:
    definition = schema().fields[name]
    wobble = math.sin(2 * math.pi * t / 3600 + row)
    if faulty and name in FAULTS:
        return FAULTS[name]
    if definition.type == "bool":
        return name in TRUE
    if definition.type == "string":
        if measurement == "alert_active" and name == "state":
            return "firing"
        if name == "job":
            return f"job-{row % 3 + 1}"
        return STATES.get(name, "normal") if definition.kind == "enum" else f"synthetic {name}"
    if definition.kind == "counter":
        count = t // DEVICE_INTERVAL_S  # grows by one a poll
        return count if definition.type == "int" else float(count) / 10
    if definition.type == "int":
        return int(4 + 2 * wobble) if definition.unit != "B" else int(40e9 * (1.5 + wobble))
    level = UNIT_LEVELS.get(definition.unit, 10.0)
    return round(level * (1 + 0.05 * wobble + 0.01 * row), 3)


# --- real devices ---------------------------------------------------------------------------

# The recordings (/work/shared/devices) each site's two devices of a kind are polled from, by
# the agent's own SnmpDevice; a poll's measurements of another kind (a UPS's temperature
# probe) are left out. Accelerator hosts: an H100's NVML probe captured on real hardware.
POLLED: dict[str, tuple[str, str]] = {
    "pdu": ("hpe-mapdu_pdu3", "sentry4"),  # 3 phases, 48 metered outlets; 3-phase 208 V delta
    "ups": ("eatonups", "apc_smt750x-nmc2"),  # 3-phase in and out; single phase
    "cooling": ("apc-inrow", "apc-inrow"),
    "dc": ("enexus", "enexus_smartpacks2"),
    "env": ("avtech_roomalert12e", "apc_emu"),
}
ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "data" / "nvml" / "h100-single-probe.lp"
# RACKWATCH_SHARED may name the shared folder (or its devices/), as for the tests.
SHARED = localservices.shared_folder(
    Path(os.environ.get("RACKWATCH_SHARED", ROOT.parent / "shared"))
)
RECORDINGS = SHARED / "devices" / "snmprec"
EPOCH = 1_780_000_000  # counters count from here (s)
# Fields that follow a device's load: scaled together, so what the recording sums (a PDU's
# outlets into its phase and total, a host's cards into its power) stays summed.
LOAD_UNITS = {"W", "VA", "A", "B/s"}
LOAD_FIELDS = re.compile(r".*(load_pct|util_pct)$")


def wander(key: str, t: int) -> float:
    """A device's small walk around its recording, in [-1, 1]: an hour-long and a
    ten-minute swing (phases from the device's name) and a little noise. Bounded and a
    function of t alone, so any time can be written in any order and every time agrees."""
    phase = _hash(len(key), sum(map(ord, key)))
    slow = math.sin(2 * math.pi * (t / 3600 + phase))
    fast = math.sin(2 * math.pi * (t / 600 + 2 * phase))
    return 0.6 * slow + 0.3 * fast + 0.1 * (2 * _hash(t, phase) - 1)


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


@dataclass
class Polled:
    """One real poll of a device: its samples, moved to any time by `wander`."""

    source: str
    samples: list[Sample]
    interval_s: int = DEVICE_INTERVAL_S

    @property
    def measurements(self) -> set[str]:
        return {sample.measurement for sample in self.samples}

    def at(
        self, measurement: str, place: Mapping[str, str], t: int, first: bool = False
    ) -> Iterator[Sample]:
        """The poll's rows of `measurement` at t, with the place and name in `place`: load
        fields ±4 % together, other gauges ±0.5 % (temperatures ±0.4 °C), counters growing
        (energy, by the row's power; error counts stay), states and text as recorded.
        `first`: the site's first device of its kind, the one the device views open at: in
        trouble (FAULTS), and the schema's fields its recording lacks made up (`_value`), so
        every panel shows something."""
        family = device_family(measurement)
        swing = wander(place["device"], t)
        load = 1 + 0.04 * swing
        for sample in self.samples:
            if sample.measurement != measurement:
                continue
            tags = {**sample.tags, **{k: place[k] for k in ("site", "room", "row", "rack")}}
            if family == "gpu":  # a host of cards: named by its host
                tags |= {"host": place["host"], "cluster": place["cluster"]}
            else:
                tags["device"] = place["device"]
            if family == "pdu":
                tags["feed"] = place["feed"]
            power = sample.fields.get("power_w")
            fields: Fields = {}
            for name, value in sample.fields.items():
                fields[name] = self._moved(name, value, load, swing, t, power)
            if first:
                for name in schema().measurements[measurement].fields:
                    if name not in fields or name in FAULTS:
                        fields[name] = _value(measurement, name, t, 0, True)
            yield Sample(measurement, tags, fields, t * 10**9)

    def _moved(
        self, name: str, value: FieldValue, load: float, swing: float, t: int, power: object
    ) -> FieldValue:
        definition = schema().fields.get(name)
        if isinstance(value, bool | str) or definition is None:
            return value
        if definition.kind == "counter":
            if definition.unit in ("kWh", "J") and isinstance(power, float):
                per_s = power if definition.unit == "J" else power / 3.6e6
                return round(float(value) + per_s * (t - EPOCH), max(_decimals(float(value)), 1))
            return value  # errors, replays, remaps: a healthy device's stay as recorded
        if isinstance(value, int) or definition.kind != "gauge":
            return value  # a count, a width, a clock step: as recorded
        places = _decimals(value)
        if definition.unit in LOAD_UNITS or LOAD_FIELDS.fullmatch(name):
            return round(value * load, places)
        if definition.unit == "°C":
            return round(value + 0.4 * swing, max(places, 1))
        return round(value * (1 + 0.005 * swing), places)


Real = dict[tuple[str, int], Polled]  # (device kind, 0 or 1) -> its poll


def polled_family(real: Real, family: str) -> list[Polled]:
    return [polled for (kind, _), polled in real.items() if kind == family]


def poll_real(snmpsim: Running) -> Real:
    """Each POLLED recording once through `snmpsim` (serving them, the community the
    recording's name), as the agent polls it; and the H100 probe for accelerator hosts."""
    from agent.snmp import SnmpDevice, SnmpTarget  # the agent, only where real polls are asked

    async def poll(recording: str) -> list[Sample]:
        device = SnmpDevice(recording, SnmpTarget(snmpsim.host, snmpsim.port, recording), {})
        await device.collect()  # identification and the walks
        return await device.collect()

    async def poll_all() -> Real:
        real: Real = {}
        for family, recordings in POLLED.items():
            for n, recording in enumerate(recordings):
                samples = [
                    s for s in await poll(recording) if device_family(s.measurement) == family
                ]
                if not samples:
                    raise RuntimeError(f"{recording}: the poll gave no {family} measurement")
                real[(family, n)] = Polled(recording, samples)
        return real

    real = asyncio.run(poll_all())
    probe = parse_lines(PROBE.read_bytes())
    last = max(sample.time_ns for sample in probe)  # the probe's last round
    cards = [sample for sample in probe if sample.time_ns == last]
    for n in range(2):
        real[("gpu", n)] = Polled(PROBE.name, cards, interval_s=10)
    return real


def device_samples(
    measurements: Iterable[str],
    places: Sequence[tuple[str, str, str, str]],
    t: int,
    real: Real | None = None,
) -> Iterator[Sample]:
    """Two devices of each kind per site (in each site's first row): the polls in `real`
    (poll_real) moved to t by `wander`, and every field of the measurements no real source
    gives made up by `_value`."""
    definitions = schema().measurements
    real = real or {}
    first_racks: dict[str, list[tuple[str, str, str, str]]] = {}
    for place in places:
        first_racks.setdefault(place[0], []).append(place)
    for measurement in sorted(measurements):
        definition = definitions[measurement]
        family = device_family(measurement)
        names = [
            *schema().tag_sets.get(definition.tag_set or "", []),
            *definition.tags,
            *SITE_TAGS.get(family, ()),
        ]
        for site, racks in first_racks.items():
            for n, (_, room, row, rack) in enumerate(racks[:2]):
                device = f"{family}-{site}-{n + 1}"
                base = {"site": site, "room": room, "row": row, "rack": rack}
                base |= {
                    "device": device,
                    "host": f"gpu-host-{site}-{n + 1}",
                    "agent": f"agent-{site}",
                    "collector": f"collector-{site}",
                    "cluster": f"cluster-{site}",
                    "vendor": "nvidia" if family == "gpu" else "synthetic",
                    "model": "H100" if family == "gpu" else f"{family} model",
                    "feed": "A" if n == 0 else "B",
                    "job": f"job-{n + 1}",
                    "kind": family,
                    "alertname": f"Synthetic{family.capitalize()}",
                    "severity": "warning",
                }
                polled = real.get((family, n))
                if polled is not None and measurement in polled.measurements:
                    yield from polled.at(measurement, base, t, first=n == 0)
                elif polled is None or n == 0:  # no real source, or a gap of the first
                    yield from _rows(measurement, names, definition.fields, base, t, n == 0)


def _rows(
    measurement: str,
    names: Sequence[str],
    fields: Sequence[str],
    base: dict[str, str],
    t: int,
    faulty: bool,
) -> Iterator[Sample]:
    expanding = [tag for tag in names if tag in ROWS]
    count = max((ROWS[tag] for tag in expanding), default=1)
    for row in range(count):
        tags = {tag: base[tag] for tag in names if tag in base}
        for tag in names:
            if tag not in base and not re.fullmatch(
                r"uuid|serial|pci_bus_id|chip|mib|driver_version", tag
            ):
                base_tag = tag.removesuffix("_name")
                tags[tag] = _tag_value(tag, row if base_tag in ROWS else 0)
        if measurement.startswith("alert"):
            tags |= {k: base[k] for k in ("site", "room", "row", "rack", "device")}
        values = {name: _value(measurement, name, t, row, faulty) for name in fields}
        yield Sample(measurement, tags, values, t * 10**9)


def write_latest(
    influx: InfluxSettings,
    device_measurements: Iterable[str],
    layout: Layout = Layout(),
    real: Real | None = None,
) -> Written:
    """The devices' points of this moment into the raw policy, alerts firing included: what a
    live site keeps adding, for panels that show only the last few minutes."""
    now = int(time.time())
    places = layout.places()
    writer = Writer(influx)
    try:
        shown = sorted(set(device_measurements) - set(ROLLUPS))
        samples = device_samples(shown, places, now, real)
        writer.add("autogen", (encode(sample) for sample in samples))
    finally:
        written = writer.close()
    return written


# --- reading ------------------------------------------------------------------------------


def opening_values(
    ask: Callable[[str], list[dict[str, object]]],
    dashboard: Mapping[str, Any],
    chosen: Mapping[str, str] | None = None,
) -> dict[str, list[str] | None]:
    """A dashboard's variables as Grafana sets them on opening it: All (None) where a variable
    offers it, else the first value its query lists given the ones before it; `chosen`
    (name: value) overrides either. `ask` runs a query and returns its series."""
    picked: dict[str, list[str] | None] = {}
    for variable in dashboard["templating"]["list"]:
        name = variable["name"]
        if chosen and name in chosen:
            picked[name] = [chosen[name]]
        elif variable["type"] != "query" or name == "rp" or variable.get("includeAll"):
            picked[name] = None  # rp: macros.DEFAULTS, the raw policy
        else:
            query = variable["query"]
            values = [
                str(row[-1])
                for one in ask(
                    interpolate(query, {k: picked.get(k) for k in variables_used(query)})
                )
                for row in one.get("values") or []  # type: ignore[attr-defined]
            ]
            picked[name] = values[:1] or None
    return picked


# --- writing --------------------------------------------------------------------------------


class Writer:
    """Gzipped /write batches on two threads (InfluxDB takes them in parallel)."""

    def __init__(self, influx: InfluxSettings) -> None:
        self.influx = influx
        self.client = httpx.Client(timeout=300, trust_env=False)
        self.pool = ThreadPoolExecutor(2)
        self.pending: list[Future[int]] = []
        self.written = Written()

    def add(self, policy: str, lines: Iterable[str]) -> None:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= BATCH_LINES:
                self._send(policy, batch)
                batch = []
        if batch:
            self._send(policy, batch)

    def _send(self, policy: str, lines: list[str]) -> None:
        counts = self.written.points
        for line in lines:  # points per measurement, for the report
            key = f"{policy}.{line[: line.index(',')]}"
            counts[key] = counts.get(key, 0) + 1
        while len(self.pending) >= 4:  # bounded memory: wait for the oldest batch
            self.written.bytes_gzipped += self.pending.pop(0).result()
        body = ("\n".join(lines) + "\n").encode()
        self.pending.append(self.pool.submit(self._post, policy, body))

    def _post(self, policy: str, body: bytes) -> int:
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        gzipped = compressor.compress(body) + compressor.flush()
        for attempt in range(5):
            response = self.client.post(
                self.influx.url.rstrip("/") + "/write",
                params={"db": self.influx.database, "rp": policy, "precision": "ns"},
                content=gzipped,
                headers={"Content-Encoding": "gzip"},
            )
            # A busy InfluxDB answers "timeout" past its write-timeout (10 s) and may have
            # stored part of the batch: sent again, each point lands once (same series, time).
            if response.status_code != 500 or "timeout" not in response.text:
                break
            time.sleep(1 + attempt)
        if response.status_code != 204:
            raise RuntimeError(f"InfluxDB refused a {policy} batch: {response.text[:300]}")
        return len(gzipped)

    def close(self) -> Written:
        for future in self.pending:
            self.written.bytes_gzipped += future.result()
        self.pending = []
        self.pool.shutdown()
        self.client.close()
        return self.written


def generate(
    influx: InfluxSettings,
    device_measurements: Iterable[str],
    layout: Layout = Layout(),
    windows: Windows = Windows(),
    now: int | None = None,
    real: Real | None = None,
) -> Written:
    """Fill `influx.database` (which must exist) with the synthetic site up to `now` (s)."""
    started = time.monotonic()
    now = int(now if now is not None else time.time())
    retention = RetentionSettings()

    async def set_up() -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            await ensure(client, influx, retention)

    asyncio.run(set_up())
    raw, aggregated = "autogen", retention.policy
    rollups = Rollups(layout.places())
    devices = sorted(set(device_measurements) - set(ROLLUPS))
    first_rows = rollups.first_rows()
    writer = Writer(influx)
    try:
        for policy, window, racks_window, rollup_step, device_step in (
            (raw, windows.raw_s, windows.raw_racks_s, ROLLUP_INTERVAL_S, DEVICE_INTERVAL_S),
            (
                aggregated,
                windows.aggregated_s,
                windows.aggregated_racks_s,
                AGGREGATE_INTERVAL_S,
                AGGREGATE_INTERVAL_S,
            ),
        ):
            first = now - now % rollup_step - window
            for t in range(first, now + 1, rollup_step):
                racks: bool | list[int] = t > now - racks_window
                if not racks and policy == raw and t > now - windows.first_row_s:
                    racks = first_rows
                writer.add(policy, rollups.lines(t, racks=racks))
                if t % device_step:
                    continue
                shown = [m for m in devices if policy == raw or m not in EVENTS]
                if policy != raw or t < now - 120:  # firing now: the last minutes, raw only
                    shown = [m for m in shown if m != "alert_active"]
                samples = device_samples(shown, rollups.places, t, real)
                writer.add(policy, (encode(sample) for sample in samples))
    finally:
        written = writer.close()
    written.seconds = time.monotonic() - started
    return written
