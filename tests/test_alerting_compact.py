"""The evaluator's per-series state is compact and loses nothing: a series no rule reads holds
no state of its own, a judged series only a few hundred bytes beyond its head, the tags an alert
is labelled with are read back from the head exactly, and a head with escaped spaces (every
NVIDIA card's model tag) is one cached series like any other."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.alerting.evaluator import Evaluator
from collector.alerting.points import head_end, read_any_head
from collector.alerting.rules import RuleFile
from telemetry import config
from telemetry.lineproto import encode, parse_line
from telemetry.sample import FieldValue, Sample
from tests.test_alerting_evaluator import DEFAULT_RULES, T0, Harness, line, names, values

# What `rackwatch probe --nvml` wrote on a real H100 (tests/data/nvml/h100-single.source).
PROBE = Path(__file__).parent / "data" / "nvml" / "h100-single-probe.lp"
GPU_LINE = next(x for x in PROBE.read_bytes().splitlines() if x.startswith(b"accelerator,"))

SENSORS = """
rules:
  - alert: RackInletHot
    measurement: cooling_sensor
    matchers: ['sensor=~"rack_inlet.*"']
    field: temperature_c
    above: 27
    for: 60s
  - alert: PhaseHigh
    measurement: pdu_phase
    field: current_a
    relative_to_tag: rated_a
    above: 0.8
    for: 60s
"""


def traced_growth(evaluator: Evaluator, lines: list[bytes]) -> int:
    """Bytes the evaluator still holds after seeing `lines` (twice, 30 s apart)."""
    gc.collect()
    tracemalloc.start()
    try:
        evaluator.observe(lines)
        evaluator.observe(
            [x.replace(b"%d" % int(T0 * 1e9), b"%d" % int((T0 + 30) * 1e9)) for x in lines]
        )
        gc.collect()
        return tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def phase_lines(n: int, measurement: str = "pdu_phase") -> list[bytes]:
    return [
        line(
            measurement,
            {
                "site": "qiyang-a1",
                "room": "hall-1",
                "row": "R03",
                "rack": f"K{i // 20:05d}",
                "device": f"pdu-{i:06d}",
                "vendor": "servertech",
                "model": "C2S42CE-YCMFAM00",
                "phase": "1",
                "rated_a": "32",
                "sensor": "rack_inlet_top" if measurement == "cooling_sensor" else "exhaust",
            },
            {"current_a": 2.09, "voltage_v": 207.9, "power_w": 415.0, "temperature_c": 22.0},
            T0,
        )
        for i in range(n)
    ]


def test_a_series_no_rule_selects_holds_nothing_beyond_its_head() -> None:
    """cooling_sensor series whose sensor the matcher does not select: each costs its cached
    head (so it is not read again) and nothing more; a judged series a few hundred bytes."""
    h = Harness(SENSORS)
    n = 1000
    exhaust = [x.replace(b"rack_inlet_top", b"exhaust") for x in phase_lines(n, "cooling_sensor")]
    head = len(exhaust[0].partition(b" ")[0])
    ignored = traced_growth(h.evaluator, exhaust) / n
    assert ignored < head + 33 + 80, f"{ignored:.0f} B per ignored series (head {head} B)"
    judged = traced_growth(h.evaluator, phase_lines(n)) / n
    assert judged < head + 33 + 450, f"{judged:.0f} B per judged series (head {head} B)"
    assert h.evaluator.stats.lines_parsed == 4 * n
    assert not h.seen


def test_an_alert_on_a_compact_series_carries_every_tag_as_written() -> None:
    """The tags are not kept per series: the alert's labels are read back from the head, and
    must be exactly the tags the line carried, escaped characters included."""
    h = Harness(SENSORS)
    tags = {
        "site": "s1",
        "device": "pdu a,1",  # escaped space and comma
        "phase": "L1=L2",  # escaped equals sign
        "phase_name": "AA:L1-L2",
        "rated_a": "16",
    }
    sample = line("pdu_phase", tags, {"current_a": 15.0}, T0)
    assert b"\\" in sample
    h.feed(sample)
    h.at(30)
    h.feed(line("pdu_phase", tags, {"current_a": 15.5}, T0 + 30))
    h.tick(61)
    assert h.states() == [("PhaseHigh", "pending"), ("PhaseHigh", "firing")]
    labels = h.seen[-1].alert.labels
    assert labels == {**tags, "alertname": "PhaseHigh", "severity": "warning"}
    assert len(h.evaluator._series) == 1  # both samples found the one series by its head


def test_a_real_nvidia_line_is_one_series_judged_by_the_default_rules() -> None:
    """The H100's own probe line (model=NVIDIA\\ H100\\ 80GB\\ HBM3): its series is found by
    the whole head, escaped spaces and all; the ECC increase rule sees the counter move and the
    alert's labels name the model as the card does."""
    h = Harness(DEFAULT_RULES.read_text())
    stamp = GPU_LINE.rpartition(b" ")[2]

    def at(seconds: int, ecc: int) -> bytes:
        h.at(seconds)
        moved = GPU_LINE.replace(b"ecc_uncorrected_total=0i", b"ecc_uncorrected_total=%di" % ecc)
        return moved.replace(stamp, b"%d" % int((T0 + seconds) * 1e9))

    h.feed(at(0, 0))
    h.feed(at(30, 0))
    h.feed(at(60, 2))
    assert h.states() == [("GpuUncorrectedEcc", "firing")]
    alert = h.seen[0].alert
    assert alert.value == 2
    expected = parse_line(GPU_LINE).tags
    assert alert.labels == {**expected, "alertname": "GpuUncorrectedEcc", "severity": "critical"}
    assert alert.labels["model"] == "NVIDIA H100 80GB HBM3"
    assert len(h.evaluator._series) == 1
    assert h.evaluator.stats.errors == 0


def test_default_rules_hold_a_hall_in_a_few_hundred_bytes_a_series() -> None:
    """The real H100 line replicated over 1,000 cards under the default rules: its head aside,
    each card's state (fingerprints of two rules, the ECC counter's previous sample, its
    timing) stays a few hundred bytes."""
    evaluator = Evaluator(config.load(DEFAULT_RULES, RuleFile), lambda t: None, clock=lambda: T0)
    stamp = GPU_LINE.rpartition(b" ")[2]
    cards = [
        GPU_LINE.replace(b"host=vm", b"host=gpu-%05d" % (i // 8))
        .replace(b"index=0", b"index=%d" % (i % 8))
        .replace(stamp, b"%d" % int(T0 * 1e9))
        for i in range(1000)
    ]
    head = head_end(cards[0])
    per_card = traced_growth(evaluator, cards) / len(cards)
    assert per_card < head + 33 + 500, f"{per_card:.0f} B per card (head {head} B)"
    assert len(evaluator._series) == len(cards)


@settings(max_examples=500)
@given(
    measurement=names,
    tags=st.dictionaries(names, names, max_size=4),
    fields=st.dictionaries(names, values, min_size=1, max_size=4),
)
def test_the_head_and_its_tags_are_read_as_the_full_parser_reads_them(
    measurement: str, tags: dict[str, str], fields: dict[str, FieldValue]
) -> None:
    encoded = encode(Sample(measurement, tags, fields, 1)).encode()  # escapes and all
    expected = parse_line(encoded)
    end = head_end(encoded)
    assert end > 0
    assert read_any_head(encoded[:end]) == (expected.measurement, dict(expected.tags))
    assert parse_line(b"m,x=1 " + encoded[end + 1 :]).fields == expected.fields
