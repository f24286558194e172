"""Roll-ups on the stream: rack, row, room and site power against capacity, and PUE.

The collector hands every validated line to `Rollup.observe`; a prefix test on the raw bytes
keeps all but the few measurements a roll-up reads from being parsed. Every `interval_s` the
latest fresh readings become `rack_power`, `feed_power`, `row_power`, `room_power`,
`site_power` and `pue` points, which go into the pipeline like any other line. The fields and
formulas are in docs/schema.md, "Roll-ups".
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.config import RollupSettings
from collector.inventory import Feed, Inventory, Meter, Rack, RackKey
from telemetry.lineproto import LineProtocolError, encode, parse_line
from telemetry.sample import FieldValue, Sample
from telemetry.statefile import StateFile

log = logging.getLogger(__name__)

# Where a PDU's own total comes from: the first of these that the device reports (APC gives
# `pdu`, Raritan and ServerTech only inlets, Vertiv only phases). Each is summed over its rows.
POWER_SOURCES = ("pdu", "pdu_inlet", "pdu_phase")
# Where a PDU's supply voltage comes from: lines (delta, line to line), phases (line to neutral,
# or line to line on a delta cord), inlets (one phase). Compared with the feed's nominal voltage.
VOLTAGE_SOURCES = ("pdu_line", "pdu_phase", "pdu_inlet")
ACCELERATOR_HOSTS = "accelerator_host"  # per-host accelerator totals (issue 5), field power_w
PEAK_BUCKETS = 96
PEAKS_SAVE_S = 60.0  # at most this much of the peaks' history is lost to a crash

SeriesKey = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Reading:
    value: float
    time_ns: int


@dataclass(slots=True)
class RollupStats:
    samples: int = 0  # samples of the measurements roll-ups read
    unplaced: int = 0  # PDU or host samples whose rack (or feed) the inventory does not have
    points: int = 0  # roll-up points produced


class WindowPeak:
    """The largest value over a sliding window, in fixed memory: the window is cut into
    slices that each keep their maximum, so the peak is exact to one slice's width."""

    def __init__(self, window_s: float, buckets: int = PEAK_BUCKETS) -> None:
        self.bucket_ns = max(1, int(window_s * 1e9 / buckets))
        self.buckets = buckets
        self._maxima: deque[tuple[int, float]] = deque()

    def add(self, time_ns: int, value: float) -> None:
        bucket = time_ns // self.bucket_ns
        if self._maxima and self._maxima[-1][0] == bucket:
            if value > self._maxima[-1][1]:
                self._maxima[-1] = (bucket, value)
        elif not self._maxima or bucket > self._maxima[-1][0]:
            self._maxima.append((bucket, value))
        self._expire(bucket)

    def peak(self, now_ns: int) -> float | None:
        self._expire(now_ns // self.bucket_ns)
        return max((value for _, value in self._maxima), default=None)

    def _expire(self, bucket: int) -> None:
        while self._maxima and self._maxima[0][0] <= bucket - self.buckets:
            self._maxima.popleft()

    def snapshot(self) -> dict[str, Any]:
        return {"bucket_ns": self.bucket_ns, "maxima": [list(m) for m in self._maxima]}

    def restore(self, snapshot: Mapping[str, Any]) -> bool:
        """Take maxima saved by `snapshot`; False (nothing taken) if the slices differ."""
        if snapshot.get("bucket_ns") != self.bucket_ns:
            return False  # the window changed: old slices would be misread
        for bucket, value in snapshot.get("maxima", []):
            self.add(int(bucket) * self.bucket_ns, float(value))
        return True


@dataclass(slots=True)
class _Pdu:
    rack: RackKey
    feed: str
    # source measurement -> row (unit, inlet, phase tags) -> latest power_w
    readings: dict[str, dict[SeriesKey, Reading]] = field(default_factory=dict)
    # source measurement -> row -> latest voltage_v
    voltages: dict[str, dict[SeriesKey, Reading]] = field(default_factory=dict)

    def power(self, oldest_ns: int) -> float | None:
        for source in POWER_SOURCES:
            fresh = [
                r.value for r in self.readings.get(source, {}).values() if r.time_ns >= oldest_ns
            ]
            if fresh:
                return sum(fresh)
        return None

    def voltages_now(self, oldest_ns: int) -> list[float]:
        """Fresh voltages of the first source that has any (lines before phases before inlets)."""
        for source in VOLTAGE_SOURCES:
            fresh = [
                r.value
                for r in self.voltages.get(source, {}).values()
                if r.time_ns >= oldest_ns and r.value > 0
            ]
            if fresh:
                return fresh
        return []


@dataclass(slots=True)
class _RackNow:
    rack: Rack
    power_w: float | None
    capacity_w: float
    stranded_w: float | None
    nn_ok: bool | None
    accelerator_w: float | None


class Rollup:
    def __init__(self, inventory: Inventory, settings: RollupSettings) -> None:
        self.inventory = inventory
        self.settings = settings
        self.stats = RollupStats()
        self._racks = {rack.key: rack for rack in inventory.racks}
        self._pdus: dict[tuple[str, str], _Pdu] = {}
        self._hosts: dict[tuple[str, str, str], tuple[RackKey, Reading]] = {}
        self._peaks = {key: WindowPeak(settings.peak_window_s) for key in self._racks}
        # The peaks behind stranded capacity span days: kept on disk across restarts.
        self._state = (
            StateFile(settings.state_path, "roll-up peaks") if settings.state_path else None
        )
        self._restore_peaks()
        # measurement -> (site, "facility" | "it", index in that list, meter)
        self._meters: dict[str, list[tuple[str, str, int, Meter]]] = defaultdict(list)
        for site, meters in inventory.sites.items():
            for kind, listed in (("facility", meters.facility), ("it", meters.it)):
                for i, meter in enumerate(listed):
                    self._meters[meter.measurement].append((site, kind, i, meter))
        self._meter_readings: dict[tuple[str, str, int], dict[SeriesKey, Reading]] = defaultdict(
            dict
        )
        names = {*POWER_SOURCES, *VOLTAGE_SOURCES, ACCELERATOR_HOSTS, *self._meters}
        # A line starts with its measurement, then a comma (tags) or a space (fields).
        self._prefixes = tuple(f"{name}{end}".encode() for name in names for end in ", ")
        self._warned: set[tuple[str, str]] = set()
        self._feed_voltages: dict[tuple[RackKey, str], list[float]] = defaultdict(list)

    @property
    def prefixes(self) -> tuple[bytes, ...]:
        """How the lines roll-ups read begin (measurement, then a comma or a space)."""
        return self._prefixes

    # --- taking readings ------------------------------------------------------------------

    def observe(self, lines: Iterable[bytes]) -> None:
        """Take the readings roll-ups need from validated lines; never raises."""
        prefixes = self._prefixes
        for line in lines:
            if not line.startswith(prefixes):
                continue
            try:
                sample = parse_line(line, default_time_ns=time.time_ns())
            except LineProtocolError:
                continue  # validated upstream; an escaped name can still look like ours
            self.stats.samples += 1
            self._take(sample)

    def _take(self, sample: Sample) -> None:
        measurement, tags = sample.measurement, sample.tags
        if measurement in POWER_SOURCES or measurement in VOLTAGE_SOURCES:
            power = _number(sample.fields, "power_w") if measurement in POWER_SOURCES else None
            voltage = _number(sample.fields, "voltage_v")
            if power is not None or voltage is not None:
                self._take_pdu(sample, power, voltage)
        elif measurement == ACCELERATOR_HOSTS:
            power = _number(sample.fields, "power_w")
            if power is not None:
                rack = self._place(tags, "host", need_feed=False)
                if rack is not None:
                    # A host may hold cards of two vendors: one total each.
                    key = (tags.get("site", ""), tags.get("host", ""), tags.get("vendor", ""))
                    self._hosts[key] = (rack, Reading(power, sample.time_ns))
        for site, kind, i, meter in self._meters.get(measurement, ()):
            value = _number(sample.fields, meter.field)
            if value is not None and all(tags.get(k) == v for k, v in meter.tags.items()):
                _keep_latest(self._meter_readings[(site, kind, i)], _series(tags), value, sample)

    def _take_pdu(self, sample: Sample, power: float | None, voltage: float | None) -> None:
        tags = sample.tags
        rack = self._place(tags, "device", need_feed=True)
        if rack is None:
            return
        key = (tags.get("site", ""), tags.get("device", ""))
        pdu = self._pdus.get(key)
        if pdu is None or pdu.rack != rack or pdu.feed != tags["feed"]:
            pdu = self._pdus[key] = _Pdu(rack, tags["feed"])  # new, or moved in the config
        row = tuple((k, tags.get(k, "")) for k in ("unit", "inlet", "phase", "line"))
        if power is not None:
            _keep_latest(pdu.readings.setdefault(sample.measurement, {}), row, power, sample)
        if voltage is not None:
            _keep_latest(pdu.voltages.setdefault(sample.measurement, {}), row, voltage, sample)

    def _place(self, tags: Mapping[str, str], name_tag: str, *, need_feed: bool) -> RackKey | None:
        key = (tags.get("site", ""), tags.get("room", ""), tags.get("rack", ""))
        rack = self._racks.get(key)
        problem = None
        if rack is None:
            problem = f"its rack {key} is not in the inventory"
        elif need_feed and tags.get("feed") not in rack.feeds:
            feed = tags.get("feed")
            problem = (
                f"its feed tag {feed!r} is not" if feed else "it has no feed tag, which is not"
            ) + f" one of rack {rack.rack}'s feeds ({', '.join(sorted(rack.feeds))})"
        if problem is None:
            return key
        self.stats.unplaced += 1
        who = (name_tag, tags.get(name_tag, "?"))
        if who not in self._warned:  # once per device: the count keeps the rest
            self._warned.add(who)
            log.warning("roll-ups leave out %s %s: %s", name_tag, who[1], problem)
        return None

    # --- computing --------------------------------------------------------------------------

    def compute(self, now_ns: int) -> list[Sample]:
        """The roll-up points for `now_ns`, from the readings no older than stale_after_s."""
        oldest = now_ns - int(self.settings.stale_after_s * 1e9)
        feeds: dict[tuple[RackKey, str], float] = defaultdict(float)
        self._feed_voltages = defaultdict(list)
        for pdu in self._pdus.values():
            power = pdu.power(oldest)
            if power is not None:
                feeds[(pdu.rack, pdu.feed)] += power
            self._feed_voltages[(pdu.rack, pdu.feed)] += pdu.voltages_now(oldest)
        accelerators: dict[RackKey, list[float]] = defaultdict(list)
        for rack_key, reading in self._hosts.values():
            if reading.time_ns >= oldest:
                accelerators[rack_key].append(reading.value)

        samples: list[Sample] = []
        racks_now = []
        for key, rack in self._racks.items():
            now = self._rack(rack, feeds, accelerators.get(key), now_ns, samples)
            racks_now.append(now)
        site_power = self._groups(racks_now, now_ns, samples)
        samples += self._pue(site_power, oldest, now_ns)
        self.stats.points += len(samples)
        return samples

    def _rack(
        self,
        rack: Rack,
        feeds: Mapping[tuple[RackKey, str], float],
        accelerators: list[float] | None,
        now_ns: int,
        samples: list[Sample],
    ) -> _RackNow:
        tags = _tags(site=rack.site, room=rack.room, row=rack.row, rack=rack.rack)
        derated = {name: self.inventory.derated_w(feed) for name, feed in rack.feeds.items()}
        reporting = {
            name: feeds[(rack.key, name)] for name in rack.feeds if (rack.key, name) in feeds
        }
        for name, power in reporting.items():
            fields: dict[str, FieldValue] = {
                "power_w": power,
                "capacity_w": derated[name],
                "load_pct": 100.0 * power / derated[name],
            }
            fields |= self._voltage_fields(rack.feeds[name], self._feed_voltages[(rack.key, name)])
            samples.append(Sample("feed_power", {**tags, "feed": name}, fields, now_ns))
        capacity = self.inventory.capacity_w(rack)
        now = _RackNow(rack, None, capacity, None, None, None)
        fields = {}
        if reporting:
            now.power_w = power = sum(reporting.values())
            missing = len(rack.feeds) - len(reporting)
            fields |= {
                "power_w": power,
                "capacity_w": capacity,
                "capacity_pct": 100.0 * power / capacity,
                "feeds_reporting": len(reporting),
                "feeds_missing": missing,
            }
            if len(rack.feeds) > 1:
                one_feed = min(derated.values())
                now.nn_ok = power <= one_feed
                fields |= {"nn_ok": now.nn_ok, "nn_headroom_w": one_feed - power}
            peaks = self._peaks[rack.key]
            if missing == 0:  # a partial sum would understate the peak
                peaks.add(now_ns, power)
            peak = peaks.peak(now_ns)
            if peak is not None:
                now.stranded_w = capacity - peak
                fields |= {"peak_w": peak, "stranded_w": now.stranded_w}
        if accelerators:
            now.accelerator_w = sum(accelerators)
            fields |= {
                "accelerator_power_w": now.accelerator_w,
                "accelerator_hosts": len(accelerators),
            }
        if fields:
            samples.append(Sample("rack_power", tags, fields, now_ns))
        return now

    def _voltage_fields(self, feed: Feed, measured: list[float]) -> dict[str, FieldValue]:
        """The PDUs' median voltage against the feed's nominal one. A three-phase feed's
        nominal is line to line; a PDU may measure line to neutral (nominal / sqrt 3) or line
        to line, so the nearer of the two is the one compared."""
        if not measured:
            return {}
        voltage = statistics.median(measured)
        nominal = min(feed.nominal_voltages_v(), key=lambda v: abs(voltage - v))
        deviation = 100.0 * (voltage - nominal) / nominal
        return {  # to 0.1 V and 0.1 %: what a summary shows, and no meter reads finer
            "voltage_v": round(voltage, 1),
            "nominal_voltage_v": round(nominal, 1),
            "voltage_deviation_pct": round(deviation, 1),
            "voltage_mismatch": abs(deviation) > self.settings.voltage_tolerance_pct,
        }

    def _groups(
        self, racks: list[_RackNow], now_ns: int, samples: list[Sample]
    ) -> dict[str, float | None]:
        """Row, room and site sums; returns each site's IT power (None: no rack reported)."""
        levels = (
            ("row_power", ("site", "room", "row")),
            ("room_power", ("site", "room")),
            ("site_power", ("site",)),
        )
        site_power: dict[str, float | None] = {}
        for measurement, keys in levels:
            groups: dict[tuple[str, ...], list[_RackNow]] = defaultdict(list)
            for now in racks:
                groups[tuple(getattr(now.rack, k) for k in keys)].append(now)
            for values, members in groups.items():
                fields = _group_fields(members, self.settings.near_limit_pct)
                if measurement == "site_power":
                    site_power[values[0]] = _float(fields.get("power_w"))
                if "power_w" in fields or "accelerator_power_w" in fields:
                    tags = _tags(**dict(zip(keys, values, strict=True)))
                    samples.append(Sample(measurement, tags, fields, now_ns))
        return site_power

    def _pue(
        self, site_power: Mapping[str, float | None], oldest: int, now_ns: int
    ) -> list[Sample]:
        samples = []
        for site, meters in self.inventory.sites.items():
            facility = self._meter_sum(site, "facility", len(meters.facility), oldest)
            it = (
                self._meter_sum(site, "it", len(meters.it), oldest)
                if meters.it
                else site_power.get(site)
            )
            if facility is None or it is None or it <= 0:
                continue
            fields: dict[str, FieldValue] = {
                "pue": facility / it,
                "facility_power_w": facility,
                "it_power_w": it,
            }
            samples.append(Sample("pue", {"site": site}, fields, now_ns))
        return samples

    def _meter_sum(self, site: str, kind: str, count: int, oldest: int) -> float | None:
        """Sum of every meter in the list; None unless each has a fresh reading."""
        total = 0.0
        for i in range(count):
            fresh = [
                r.value
                for r in self._meter_readings[(site, kind, i)].values()
                if r.time_ns >= oldest
            ]
            if not fresh:
                return None
            total += sum(fresh)
        return total

    # --- running ----------------------------------------------------------------------------

    def lines(self, now_ns: int) -> list[bytes]:
        lines = []
        for sample in self.compute(now_ns):
            try:
                lines.append(encode(sample).encode())
            except LineProtocolError as exc:  # e.g. a control character in an inventory name
                log.error("roll-up point left out: %s", exc)
        return lines

    async def run(self, add: Callable[[list[bytes]], None]) -> None:
        """Every interval, hand the roll-up lines to `add` (the pipeline); until cancelled."""
        saved_at = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.interval_s)
            add(self.lines(time.time_ns()))
            if time.monotonic() - saved_at >= PEAKS_SAVE_S:
                self.save_peaks()
                saved_at = time.monotonic()

    def save_peaks(self) -> None:
        """Write the stranded-capacity peaks to `state_path` (if set); errors are logged."""
        if self._state is None:
            return
        snapshots = ((key, peak.snapshot()) for key, peak in self._peaks.items())
        self._state.save({"racks": [[*key, snap] for key, snap in snapshots if snap["maxima"]]})

    def _restore_peaks(self) -> None:
        if self._state is None:
            return
        restored = 0
        for entry in self._state.load().get("racks", []):
            try:
                site, room, rack, snapshot = entry
                peak = self._peaks.get((site, room, rack))
                if peak is not None and peak.restore(snapshot):
                    restored += 1
            except (TypeError, ValueError) as exc:
                log.warning("roll-up peaks %s: entry %r skipped: %s", self._state.path, entry, exc)
        if restored:
            log.info("roll-up peaks: %d racks restored from %s", restored, self._state.path)

    def health_fields(self) -> dict[str, FieldValue]:
        return {
            "rollup_samples_total": self.stats.samples,
            "rollup_unplaced_total": self.stats.unplaced,
            "rollup_points_total": self.stats.points,
        }


def _group_fields(members: list[_RackNow], near_limit_pct: float) -> dict[str, FieldValue]:
    reporting = [m for m in members if m.power_w is not None]
    capacity = sum(m.capacity_w for m in members)
    fields: dict[str, FieldValue] = {
        "racks": len(members),
        "racks_reporting": len(reporting),
        "capacity_w": capacity,
    }
    if reporting:
        power = sum(m.power_w for m in reporting if m.power_w is not None)
        fields |= {
            "power_w": power,
            "capacity_pct": 100.0 * power / capacity,
            "racks_nn_failing": sum(1 for m in reporting if m.nn_ok is False),
        }
        # The racks' spread, so a dashboard above the row shows the worst rack without
        # reading (or drawing) every rack's series.
        pcts = sorted(100.0 * m.power_w / m.capacity_w for m in reporting if m.power_w is not None)
        fields |= {
            "rack_pct_max": pcts[-1],
            "rack_pct_p95": pcts[math.ceil(0.95 * len(pcts)) - 1],  # nearest rank
            "racks_near_limit": sum(1 for pct in pcts if pct >= near_limit_pct),
        }
    stranded = [m.stranded_w for m in members if m.stranded_w is not None]
    if stranded:
        fields["stranded_w"] = sum(stranded)
    accelerators = [m.accelerator_w for m in members if m.accelerator_w is not None]
    if accelerators:
        fields["accelerator_power_w"] = sum(accelerators)
    return fields


def _keep_latest(
    readings: dict[SeriesKey, Reading], key: SeriesKey, value: float, sample: Sample
) -> None:
    # Spooled batches replay late: an older reading never replaces a newer one.
    known = readings.get(key)
    if known is None or sample.time_ns >= known.time_ns:
        readings[key] = Reading(value, sample.time_ns)


def _series(tags: Mapping[str, str]) -> SeriesKey:
    return tuple(sorted(tags.items()))


def _number(fields: Mapping[str, FieldValue], name: str) -> float | None:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _float(value: FieldValue | None) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _tags(**tags: str) -> dict[str, str]:
    return {k: v for k, v in tags.items() if v}
