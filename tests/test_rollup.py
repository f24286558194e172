"""Roll-ups: the inventory, the formulas, and the collector writing them to a real InfluxDB."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import aiomqtt
import pytest
import yaml

from collector.alerting.evaluator import Evaluator, Transition
from collector.alerting.rules import RuleFile
from collector.config import CollectorConfig, RollupSettings
from collector.inventory import Inventory
from collector.rollup import Rollup, WindowPeak
from collector.service import Collector
from rackwatch.localservices import Running
from telemetry import config
from telemetry.config import ConfigError
from telemetry.lineproto import encode
from telemetry.sample import FieldValue, Sample
from tests.test_end_to_end import query, running

S = 1_000_000_000
NOW = 1_800_000_000 * S
SITE = {"site": "hub", "room": "hall-1", "row": "A"}

INVENTORY = {
    "derating": 0.8,
    "racks": [
        # 32 A x 230 V = 7360 W rated, 5888 W derated per feed; 2N: capacity 5888 W.
        {
            **SITE,
            "rack": "A01",
            "feeds": {
                "A": {"rated_a": 32, "voltage_v": 230},
                "B": {"rated_a": 32, "voltage_v": 230},
            },
        },
        # Three-phase 16 A at 400 V line to line, derated 0.9 here: sqrt(3) * 400 * 16 * 0.9.
        {
            **SITE,
            "rack": "A02",
            "feeds": {
                "A": {"rated_a": 16, "voltage_v": 400, "phases": 3, "derating": 0.9},
                "B": {"rated_a": 16, "voltage_v": 400, "phases": 3, "derating": 0.9},
            },
        },
        {**SITE, "row": "B", "rack": "B01", "feeds": {"A": {"rated_a": 16, "voltage_v": 230}}},
    ],
    "sites": {
        "hub": {"facility": [{"measurement": "meter", "field": "power_w", "tags": {"meter": "u"}}]}
    },
}
A02_FEED_W = math.sqrt(3) * 400 * 16 * 0.9
DEFAULT_RULES = Path(__file__).parents[1] / "configs" / "alert-rules.yaml"


def inventory(**changes: object) -> Inventory:
    return Inventory.model_validate({**INVENTORY, **changes})


def rollup(inv: Inventory | None = None, **settings: float | str) -> Rollup:
    config = RollupSettings.model_validate({"inventory": Path("unused.yaml"), **settings})
    return Rollup(inv or inventory(), config)


def line(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], time_ns: int = NOW
) -> bytes:
    return encode(Sample(measurement, tags, fields, time_ns)).encode()


def pdu(device: str, rack: str, feed: str, power: float, time_ns: int = NOW, **tags: str) -> bytes:
    all_tags = {**SITE, "rack": rack, "device": device, "feed": feed, **tags}
    return line("pdu", all_tags, {"power_w": power, "load_state": "normal"}, time_ns)


def points(samples: list[Sample], measurement: str) -> dict[str, dict[str, FieldValue]]:
    """measurement's points by their most specific tag (rack, feed, row, room or site)."""
    out = {}
    for sample in samples:
        if sample.measurement == measurement:
            tags = sample.tags
            key = next(tags[k] for k in ("feed", "rack", "row", "room", "site") if k in tags)
            if "feed" in tags:
                key = f"{tags['rack']}/{key}"
            out[key] = dict(sample.fields)
    return out


# --- the inventory ---------------------------------------------------------------------------


def test_feed_capacity_one_and_three_phase_with_derating() -> None:
    inv = inventory()
    a01, a02, b01 = inv.racks
    assert inv.derated_w(a01.feeds["A"]) == 32 * 230 * 0.8
    assert inv.derated_w(a02.feeds["A"]) == pytest.approx(A02_FEED_W)
    assert inv.capacity_w(a01) == 32 * 230 * 0.8  # 2N: one feed must carry the rack
    shared = a01.model_copy(update={"redundant": False})
    assert inv.capacity_w(shared) == 2 * 32 * 230 * 0.8
    assert inv.capacity_w(b01) == 16 * 230 * 0.8


def test_inventory_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = {
        **INVENTORY,
        "racks": [
            INVENTORY["racks"][0],  # type: ignore[index]
            INVENTORY["racks"][0],  # type: ignore[index]
            {**SITE, "rack": "A09", "feeds": {"A": {"rated_a": -1, "voltage_v": 230}}},
        ],
        "sites": {"elsewhere": {"facility": [{"measurement": "m", "field": "f"}]}},
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        config.load(path, Inventory)
    message = str(raised.value)
    assert f"{path}:" in message
    assert "racks[2].feeds.A.rated_a: Input should be greater than 0" in message
    text = path.read_text(encoding="utf-8").splitlines()
    line_of_a09 = next(i for i, t in enumerate(text, 1) if "rated_a: -1" in t)
    assert f"{path}:{line_of_a09}: racks[2].feeds.A.rated_a" in message


def test_inventory_cross_checks(tmp_path: Path) -> None:
    bad = {
        **INVENTORY,
        "racks": [INVENTORY["racks"][0], INVENTORY["racks"][0]],  # type: ignore[index]
        "sites": {"elsewhere": {"facility": [{"measurement": "m", "field": "f"}]}},
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        config.load(path, Inventory)
    message = str(raised.value)
    assert "racks[1].rack: rack 'A01' appears more than once in site 'hub'" in message
    assert "sites.elsewhere: no racks in this site and no `it` meters" in message


def test_example_inventory_loads() -> None:
    example = Path(__file__).parents[1] / "configs" / "inventory.example.yaml"
    inv = config.load(example, Inventory)
    assert inv.racks


# --- the formulas ----------------------------------------------------------------------------


def test_rack_power_is_the_sum_of_its_feeds_against_one_feeds_capacity() -> None:
    r = rollup()
    r.observe([pdu("pdu-a01-a", "A01", "A", 2000.0), pdu("pdu-a01-b", "A01", "B", 1500.0)])
    samples = r.compute(NOW)
    rack = points(samples, "rack_power")["A01"]
    capacity = 32 * 230 * 0.8
    assert rack["power_w"] == 3500.0
    assert rack["capacity_w"] == capacity
    assert rack["capacity_pct"] == pytest.approx(100 * 3500 / capacity)
    assert rack["nn_ok"] is True
    assert rack["nn_headroom_w"] == pytest.approx(capacity - 3500)
    assert rack["feeds_reporting"] == 2
    assert rack["feeds_missing"] == 0
    assert rack["peak_w"] == 3500.0
    assert rack["stranded_w"] == pytest.approx(capacity - 3500)
    feeds = points(samples, "feed_power")
    assert feeds["A01/A"] == {
        "power_w": 2000.0,
        "capacity_w": capacity,
        "load_pct": pytest.approx(100 * 2000 / capacity),
    }
    assert "A02" not in points(samples, "rack_power")  # no readings: no point


def test_nn_check_fails_when_one_feed_could_not_carry_the_rack() -> None:
    r = rollup()
    r.observe([pdu("a", "A01", "A", 3200.0), pdu("b", "A01", "B", 3100.0)])
    rack = points(r.compute(NOW), "rack_power")["A01"]
    assert rack["nn_ok"] is False
    assert rack["nn_headroom_w"] == pytest.approx(32 * 230 * 0.8 - 6300)
    row = points(r.compute(NOW), "row_power")["A"]
    assert row["racks_nn_failing"] == 1


def test_pdu_total_comes_from_pdu_then_inlets_then_phases() -> None:
    r = rollup()
    tags = {**SITE, "rack": "A02", "feed": "A"}
    r.observe(
        [
            # Raritan-like: power per inlet on two units; no `pdu` measurement.
            line(
                "pdu_inlet", {**tags, "device": "px", "unit": "1", "inlet": "1"}, {"power_w": 700.0}
            ),
            line(
                "pdu_inlet", {**tags, "device": "px", "unit": "2", "inlet": "1"}, {"power_w": 300.0}
            ),
            line("pdu_phase", {**tags, "device": "px", "phase": "1"}, {"power_w": 999.0}),
            # Vertiv-like: phases only.
            line(
                "pdu_phase",
                {**tags, "feed": "B", "device": "vt", "phase": "AB"},
                {"power_w": 400.0},
            ),
            line(
                "pdu_phase",
                {**tags, "feed": "B", "device": "vt", "phase": "BC"},
                {"power_w": 500.0},
            ),
        ]
    )
    feeds = points(r.compute(NOW), "feed_power")
    assert feeds["A02/A"]["power_w"] == 1000.0  # inlets, not the phase
    assert feeds["A02/B"]["power_w"] == 900.0
    assert feeds["A02/A"]["capacity_w"] == pytest.approx(A02_FEED_W)


def test_feed_voltage_is_compared_with_the_inventorys_nominal_voltage() -> None:
    """A02 is 400 V three-phase in the inventory: a wye PDU measuring 231 V line to neutral
    matches it; a Sentry4 on a 208 V delta cord (line to line on `pdu_line`) does not; B01's
    single-phase 230 V feed matches 228 V on its inlet."""
    r = rollup()
    tags = {**SITE, "rack": "A02"}
    r.observe(
        [
            *(
                line(
                    "pdu_phase",
                    {**tags, "feed": "A", "device": "wye", "phase": p},
                    {"power_w": 500.0, "voltage_v": v},
                )
                for p, v in (("1", 231.0), ("2", 229.5), ("3", 232.0))
            ),
            line("pdu", {**tags, "feed": "B", "device": "sentry"}, {"power_w": 900.0}),
            *(
                line(
                    "pdu_line",
                    {**tags, "feed": "B", "device": "sentry", "line": n},
                    {"voltage_v": v},
                )
                for n, v in (("L1", 208.1), ("L2", 207.9), ("L3", 208.4))
            ),
            line(
                "pdu_inlet",
                {**SITE, "row": "B", "rack": "B01", "feed": "A", "device": "b"},
                {"power_w": 800.0, "voltage_v": 228.0},
            ),
        ]
    )
    feeds = points(r.compute(NOW), "feed_power")
    wye = feeds["A02/A"]
    assert wye["voltage_v"] == 231.0
    assert wye["nominal_voltage_v"] == 230.9  # 400 / sqrt(3), to 0.1 V
    assert wye["voltage_mismatch"] is False
    delta = feeds["A02/B"]
    assert delta["voltage_v"] == 208.1
    assert delta["nominal_voltage_v"] == 230.9  # the nearer one
    assert delta["voltage_deviation_pct"] == -9.9
    assert delta["voltage_mismatch"] is True
    assert delta["power_w"] == 900.0  # voltage-only lines add no power
    single = feeds["B01/A"]
    assert (single["nominal_voltage_v"], single["voltage_mismatch"]) == (230.0, False)
    # A site whose supply swings more may widen the tolerance.
    loose = rollup(voltage_tolerance_pct=12)
    loose.observe(
        [
            line("pdu", {**tags, "feed": "B", "device": "sentry"}, {"power_w": 900.0}),
            line(
                "pdu_line",
                {**tags, "feed": "B", "device": "sentry", "line": "L1"},
                {"voltage_v": 208.0},
            ),
        ]
    )
    assert points(loose.compute(NOW), "feed_power")["A02/B"]["voltage_mismatch"] is False


def test_the_default_rules_flag_a_feed_whose_voltage_is_not_the_inventorys() -> None:
    """FeedVoltageMismatch (configs/alert-rules.yaml) fires on the roll-up's own lines after
    its `for`, naming both voltages."""
    r = rollup()
    tags = {**SITE, "rack": "A02", "feed": "B", "device": "sentry"}
    seen: list[Transition] = []
    clock = [NOW / S]
    evaluator = Evaluator(config.load(DEFAULT_RULES, RuleFile), seen.append, clock=lambda: clock[0])
    for minute in range(7):
        at = NOW + minute * 60 * S
        r.observe(
            [
                line("pdu", tags, {"power_w": 900.0}, at),
                line("pdu_line", {**tags, "line": "L1"}, {"voltage_v": 208.0}, at),
            ]
        )
        clock[0] = at / S
        evaluator.observe(r.lines(at))
        evaluator.tick(clock[0])
    (fired,) = [t for t in seen if t.state == "firing"]
    assert fired.alert.labels["alertname"] == "FeedVoltageMismatch"
    assert (fired.alert.labels["rack"], fired.alert.labels["feed"]) == ("A02", "B")
    assert fired.summary == ("rack A02 feed B: its PDUs measure 208 V, the inventory says 230.9 V")


def test_a_feed_without_voltage_readings_has_no_voltage_fields() -> None:
    r = rollup()
    r.observe([pdu("a", "A01", "A", 2000.0)])
    assert "voltage_mismatch" not in points(r.compute(NOW), "feed_power")["A01/A"]


def test_stale_readings_leave_the_sum_and_are_counted_missing() -> None:
    r = rollup(stale_after_s=60)
    r.observe([pdu("a", "A01", "A", 2000.0, NOW - 61 * S), pdu("b", "A01", "B", 1500.0)])
    rack = points(r.compute(NOW), "rack_power")["A01"]
    assert rack["power_w"] == 1500.0
    assert rack["feeds_missing"] == 1
    assert "peak_w" not in rack  # a partial sum is no peak


def test_a_late_replayed_reading_never_replaces_a_newer_one() -> None:
    r = rollup()
    r.observe([pdu("a", "A01", "A", 2000.0, NOW), pdu("a", "A01", "A", 100.0, NOW - 5 * S)])
    assert points(r.compute(NOW), "feed_power")["A01/A"]["power_w"] == 2000.0


def test_stranded_capacity_is_capacity_minus_the_peak_over_the_window() -> None:
    r = rollup(peak_window_s=3600)
    for minutes, power in ((0, 1000.0), (10, 4000.0), (20, 2000.0)):
        t = NOW + minutes * 60 * S
        r.observe([pdu("a", "B01", "A", power, t)])
        rack = points(r.compute(t), "rack_power")["B01"]
    capacity = 16 * 230 * 0.8
    assert rack["peak_w"] == 4000.0
    assert rack["stranded_w"] == pytest.approx(capacity - 4000)
    later = NOW + 85 * 60 * S  # the 4000 W and 2000 W readings have left the one-hour window
    r.observe([pdu("a", "B01", "A", 1500.0, later)])
    rack = points(r.compute(later), "rack_power")["B01"]
    assert rack["peak_w"] == 1500.0


def test_peaks_survive_a_restart_through_the_state_file(tmp_path: Path) -> None:
    state = str(tmp_path / "peaks.json")
    first = rollup(peak_window_s=3600, state_path=state)
    for minutes, power in ((0, 1000.0), (10, 4000.0)):
        t = NOW + minutes * 60 * S
        first.observe([pdu("a", "B01", "A", power, t)])
        first.compute(t)
    first.save_peaks()

    again = rollup(peak_window_s=3600, state_path=state)  # a new collector process
    t = NOW + 20 * 60 * S
    again.observe([pdu("a", "B01", "A", 2000.0, t)])
    assert points(again.compute(t), "rack_power")["B01"]["peak_w"] == 4000.0

    other_window = rollup(peak_window_s=7200, state_path=state)  # slices of another width
    other_window.observe([pdu("a", "B01", "A", 2000.0, t)])
    assert points(other_window.compute(t), "rack_power")["B01"]["peak_w"] == 2000.0


def test_an_unreadable_peaks_file_is_set_aside(tmp_path: Path) -> None:
    state = tmp_path / "peaks.json"
    state.write_text("{not json")
    r = rollup(peak_window_s=3600, state_path=str(state))
    r.observe([pdu("a", "B01", "A", 1000.0)])
    assert points(r.compute(NOW), "rack_power")["B01"]["peak_w"] == 1000.0
    assert [p.name.startswith("peaks.json.corrupt-") for p in tmp_path.iterdir()] == [True]


def test_window_peak_keeps_fixed_memory() -> None:
    peak = WindowPeak(window_s=96, buckets=96)
    for second in range(10_000):
        peak.add(second * S, float(second % 7))
    assert peak.peak(9_999 * S) == 6.0
    assert len(peak._maxima) <= 96


def test_row_room_and_site_sums() -> None:
    r = rollup()
    r.observe(
        [
            pdu("a", "A01", "A", 2000.0),
            pdu("b", "A01", "B", 1000.0),
            pdu("c", "A02", "A", 500.0),
            pdu("d", "B01", "A", 700.0),
        ]
    )
    samples = r.compute(NOW)
    capacity_a = 32 * 230 * 0.8 + A02_FEED_W
    row_a = points(samples, "row_power")["A"]
    assert row_a["power_w"] == 3500.0
    assert row_a["capacity_w"] == pytest.approx(capacity_a)
    assert row_a["capacity_pct"] == pytest.approx(100 * 3500 / capacity_a)
    assert row_a["racks"] == 2
    assert row_a["racks_reporting"] == 2
    assert points(samples, "row_power")["B"]["power_w"] == 700.0
    room = points(samples, "room_power")["hall-1"]
    site = points(samples, "site_power")["hub"]
    assert room["power_w"] == site["power_w"] == 4200.0
    assert site["racks"] == 3
    assert site["capacity_w"] == pytest.approx(capacity_a + 16 * 230 * 0.8)


def test_groups_carry_the_racks_spread_max_p95_and_count_near_the_limit() -> None:
    """What a room or site view shows of its racks without reading every rack's series."""
    r = rollup(near_limit_pct=50)
    rack_w = 32 * 230 * 0.8  # A01: 2N, one feed's derated capacity
    r.observe(
        [
            pdu("a", "A01", "A", 0.3 * rack_w),
            pdu("b", "A01", "B", 0.3 * rack_w),  # 60 %
            pdu("c", "A02", "A", 0.1 * A02_FEED_W),  # 10 %
            pdu("d", "B01", "A", 0.9 * 16 * 230 * 0.8),  # 90 %
        ]
    )
    samples = r.compute(NOW)
    row_a = points(samples, "row_power")["A"]
    assert row_a["rack_pct_max"] == pytest.approx(60.0)
    assert row_a["rack_pct_p95"] == pytest.approx(60.0)  # nearest rank of 2
    assert row_a["racks_near_limit"] == 1
    site = points(samples, "site_power")["hub"]
    assert site["rack_pct_max"] == pytest.approx(90.0)
    assert site["rack_pct_p95"] == pytest.approx(90.0)
    assert site["racks_near_limit"] == 2
    assert rollup().settings.near_limit_pct == 80.0


def test_accelerator_power_per_rack_from_host_totals() -> None:
    r = rollup()
    host = {**SITE, "rack": "A01"}
    r.observe(
        [
            line("accelerator_host", {**host, "host": "gpu-1"}, {"power_w": 5600.0, "count": 8}),
            line("accelerator_host", {**host, "host": "gpu-2"}, {"power_w": 4400.0, "count": 8}),
            pdu("a", "A01", "A", 6000.0),
            pdu("b", "A01", "B", 6000.0),
        ]
    )
    samples = r.compute(NOW)
    rack = points(samples, "rack_power")["A01"]
    assert rack["accelerator_power_w"] == 10_000.0
    assert rack["accelerator_hosts"] == 2
    assert points(samples, "site_power")["hub"]["accelerator_power_w"] == 10_000.0


def test_pue_is_facility_over_it_power() -> None:
    r = rollup()
    r.observe(
        [
            pdu("a", "A01", "A", 2000.0),
            pdu("b", "A01", "B", 2000.0),
            line("meter", {"site": "hub", "meter": "u"}, {"power_w": 5200.0}),
            line("meter", {"site": "hub", "meter": "other"}, {"power_w": 99_999.0}),
        ]
    )
    pue = r.compute(NOW)[-1]
    assert pue.measurement == "pue"
    assert pue.tags == {"site": "hub"}
    assert pue.fields == {"pue": 1.3, "facility_power_w": 5200.0, "it_power_w": 4000.0}


def test_pue_from_it_meters_and_none_without_a_fresh_facility_reading() -> None:
    it = [{"measurement": "ups", "field": "output_power_w", "tags": {"device": "ups-1"}}]
    facility = [{"measurement": "meter", "field": "power_w"}]
    r = rollup(inventory(sites={"hub": {"facility": facility, "it": it}}), stale_after_s=60)
    r.observe([line("ups", {"device": "ups-1"}, {"output_power_w": 1000})])
    assert not points(r.compute(NOW), "pue")
    r.observe([line("meter", {"site": "hub"}, {"power_w": 1500.0}, NOW - 61 * S)])
    assert not points(r.compute(NOW), "pue")  # stale
    r.observe([line("meter", {"site": "hub"}, {"power_w": 1450.0})])
    assert points(r.compute(NOW), "pue")["hub"]["pue"] == 1.45


def test_unplaced_samples_are_counted_not_summed(caplog: pytest.LogCaptureFixture) -> None:
    r = rollup()
    r.observe(
        [
            pdu("x", "Z99", "A", 1000.0),  # rack not in the inventory
            pdu("y", "A01", "C", 1000.0),  # no feed C in rack A01
            pdu("y", "A01", "C", 1000.0),
            line("pdu", {**SITE, "rack": "A01", "device": "z"}, {"power_w": 1.0}),  # no feed tag
            pdu("a", "A01", "A", 10.0),
        ]
    )
    assert r.stats.unplaced == 4
    assert points(r.compute(NOW), "rack_power")["A01"]["power_w"] == 10.0
    warnings = [m for m in caplog.messages if m.startswith("roll-ups leave out")]
    assert len(warnings) == 3  # once per device
    assert (
        "roll-ups leave out device y: its feed tag 'C' is not one of rack A01's feeds (A, B)"
        in warnings
    )
    assert "roll-ups leave out device z: it has no feed tag, which is not one of" in warnings[2]


def test_lines_it_does_not_read_or_cannot_use_are_ignored() -> None:
    r = rollup()
    r.observe(
        [
            line(
                "pdu_outlet", {**SITE, "rack": "A01", "feed": "A", "device": "a"}, {"power_w": 5.0}
            ),
            line("pdus", {**SITE, "rack": "A01", "feed": "A", "device": "a"}, {"power_w": 5.0}),
            pdu("a", "A01", "A", 10.0).replace(b"power_w=10.0", b'power_w="ten"'),
            b"pdu,site=hub broken",  # not valid: ignored, never raised
        ]
    )
    assert r.stats.samples == 1  # only the string one parsed
    assert not points(r.compute(NOW), "rack_power")


# --- in the collector, against real servers --------------------------------------------------


@pytest.mark.integration
async def test_collector_writes_rollups_to_influxdb(
    mosquitto: Running, influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    inventory_path = tmp_path / "inventory.yaml"
    inventory_path.write_text(yaml.safe_dump(INVENTORY), encoding="utf-8")
    prefix = f"rackwatch/v1-{unique}"
    collector = Collector(
        CollectorConfig.model_validate(
            {
                "name": "rollup",
                "mqtt": {
                    "host": mosquitto.host,
                    "port": mosquitto.port,
                    "topic": f"{prefix}/#",
                    "group": None,
                    "client_id": f"collector-{unique}",
                },
                "influxdb": {"url": influxdb.url(), "database": database},
                "batch": {"max_delay_s": 0.2},
                "dead_letter_path": str(tmp_path / "dead.jsonl"),
                "health_interval_s": 0.5,
                "rollup": {"inventory": str(inventory_path), "interval_s": 0.3},
            }
        )
    )

    def landed() -> bool:
        """rack_power of A01 and the collector's roll-up health are in InfluxDB"""
        return bool(
            query(influxdb, database, 'SELECT * FROM "rack_power" WHERE "rack" = \'A01\'')
            and query(
                influxdb,
                database,
                'SELECT * FROM "rackwatch_collector" WHERE "rollup_samples_total" >= 2',
            )
        )

    async with running(collector), aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        # Without timestamps: stamped on arrival, so these readings are fresh.
        payload = b"\n".join(
            [
                pdu("pdu-a01-a", "A01", "A", 2100.0).rsplit(b" ", 1)[0],
                pdu("pdu-a01-b", "A01", "B", 1900.0).rsplit(b" ", 1)[0],
            ]
        )
        # Again until it lands: the collector may not have subscribed yet.
        for _ in range(60):
            await client.publish(f"{prefix}/hub/agent/metrics", payload, qos=1)
            if landed():
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"not in InfluxDB within 30 s: {landed.__doc__}")

    rack = query(
        influxdb,
        database,
        'SELECT last("power_w"), last("capacity_pct"), last("nn_ok") FROM "rack_power" '
        'GROUP BY "site", "room", "row", "rack"',
    )
    assert rack[0]["tags"] == {"site": "hub", "room": "hall-1", "row": "A", "rack": "A01"}
    _, power, pct, nn_ok = rack[0]["values"][0]  # type: ignore[index]
    assert (power, nn_ok) == (4000.0, True)
    assert pct == pytest.approx(100 * 4000 / (32 * 230 * 0.8))
    site = query(influxdb, database, 'SELECT last("power_w") FROM "site_power"')
    assert site[0]["values"][0][1] == 4000.0  # type: ignore[index]


@pytest.mark.integration
async def test_rollups_see_the_whole_stream_through_their_own_subscription(
    mosquitto: Running, influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    """Two collectors split the stream; the one with `own_subscription` still sums both feeds
    of the rack, though its group share holds only some of the PDUs' messages."""
    inventory_path = tmp_path / "inventory.yaml"
    inventory_path.write_text(yaml.safe_dump(INVENTORY), encoding="utf-8")
    prefix = f"rackwatch/v1-{unique}"

    def collector(name: str, rollup: dict[str, object] | None) -> Collector:
        return Collector(
            CollectorConfig.model_validate(
                {
                    "name": name,
                    "mqtt": {
                        "host": mosquitto.host,
                        "port": mosquitto.port,
                        "topic": f"{prefix}/#",
                        "group": unique,
                        "client_id": f"{name}-{unique}",
                    },
                    "influxdb": {"url": influxdb.url(), "database": database},
                    "batch": {"max_delay_s": 0.2},
                    "dead_letter_path": str(tmp_path / f"{name}-dead.jsonl"),
                    "health_interval_s": 3600,
                    **({"rollup": rollup} if rollup else {}),
                }
            )
        )

    with_rollups = collector(
        "one", {"inventory": str(inventory_path), "interval_s": 0.3, "own_subscription": True}
    )
    plain = collector("two", None)

    def rack_power() -> float:
        rows = query(influxdb, database, 'SELECT last("power_w") FROM "rack_power"')
        return float(rows[0]["values"][0][1]) if rows else 0.0  # type: ignore[index]

    async with (
        running(with_rollups),
        running(plain),
        aiomqtt.Client(mosquitto.host, mosquitto.port) as client,
    ):
        for _ in range(60):  # one PDU per message: the group splits them between collectors
            for device, feed, watts in (("pdu-a01-a", "A", 2100.0), ("pdu-a01-b", "B", 1900.0)):
                reading = pdu(device, "A01", feed, watts).rsplit(b" ", 1)[0]
                await client.publish(f"{prefix}/hub/{device}/metrics", reading, qos=1)
            if rack_power() == 4000.0:
                break
            await asyncio.sleep(0.5)
    assert rack_power() == 4000.0
    assert plain.ingest.stats.messages > 0  # the other collector did take a share
