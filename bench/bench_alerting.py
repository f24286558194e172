"""What alert evaluation adds to the collector's hot path, as a ratio to `check_lines`.

    .venv/bin/python bench/bench_alerting.py [--racks 400] [--repeat 5]

The collector validates every line with `check_lines` and hands the valid ones to the alert
evaluator (the default rule set, configs/alert-rules.yaml). Both run on the same payload of
collection rounds from a hall of racks; the figure is the evaluator's time per line over
check_lines' time per line, best of --repeat, after a first round has filled the evaluator's
series cache (as it is in a running collector). Two halls: PDUs, cooling and UPSes only, and
the same with 32 accelerators per rack; and a third run of the second with one series in ten
over its threshold (alerts firing and re-evaluated on every sample).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

from collector.alerting.evaluator import Evaluator, Transition
from collector.alerting.rules import RuleFile
from telemetry import config
from telemetry.lineproto import check_lines, encode
from telemetry.sample import FieldValue, Sample

RULES = Path(__file__).parents[1] / "configs" / "alert-rules.yaml"
BASE_NS = 1_732_600_000_000_000_000


AGENT_HEALTH: dict[str, FieldValue] = {
    "up": True,
    "polls_ok_total": 2880,
    "polls_failed_total": 0,
    "overruns_total": 0,
    "samples_emitted_total": 103680,
    "poll_duration_s": 0.045,
}


def rack_samples(rack: int, rng: random.Random, gpus: bool, hot: float) -> list[Sample]:
    """One collection round of one rack: two PDUs (phases, banks, 24 outlets each), the
    agent's health per device, a cooling unit every fourth rack, optionally 4 hosts x 8 GPUs."""
    row = "ABCDEFGHIJ"[rack // 40 % 10]
    where = {"site": "qiyang-a1", "room": "hall-1", "row": row, "rack": f"{row}{rack % 40 + 1:02d}"}
    out = []

    def add(measurement: str, tags: dict[str, str], fields: dict[str, FieldValue]) -> None:
        out.append(Sample(measurement, {**where, **tags}, fields, BASE_NS))

    def over(normal: float, high: float) -> float:
        return high if rng.random() < hot else normal

    for feed in "ab":
        pdu = {"device": f"pdu-{where['rack'].lower()}-{feed}", "vendor": "apc", "model": "AP8853"}
        rated = {**pdu, "rated_a": "32", "breaker_rated_a": "16"}
        add("pdu", pdu, {"power_w": 4200.0, "power_factor": 0.97, "load_state": "normal"})
        add("pdu_inlet", {**pdu, "inlet": "1"}, {"current_a": 18.2, "voltage_v": 230.0})
        for phase in "123":
            add(
                "pdu_phase",
                {**rated, "phase": phase},
                {
                    "current_a": over(6.1, 30.0),
                    "voltage_v": 229.0,
                    "power_w": 1370.0,
                    "power_factor": 0.97,
                    "load_state": "normal",
                },
            )
        for bank in "123456":
            add(
                "pdu_bank",
                {**rated, "bank": bank},
                {"current_a": over(3.0, 15.0), "load_state": "normal"},
            )
        for outlet in range(1, 25):
            add(
                "pdu_outlet",
                {**pdu, "outlet": str(outlet), "outlet_name": f"srv-{outlet:02d}"},
                {"current_a": 0.8, "power_w": 180.0, "energy_kwh": 1234.5, "state": "on"},
            )
        add("rackwatch_agent", {"agent": "agent-1", **pdu}, AGENT_HEALTH)
    if rack % 4 == 0:
        inrow = {"device": f"inrow-{where['rack'].lower()}"}
        add(
            "cooling",
            inrow,
            {
                "supply_air_c": 18.5,
                "return_air_c": 31.0,
                "rack_inlet_c": over(23.5, 29.0),
                "fan_speed_pct": 55.0,
                "operating_state": "on",
                "alarm": "normal",
            },
        )
        add("rackwatch_agent", {"agent": "agent-1", **inrow}, AGENT_HEALTH)
    if gpus:
        for host in range(4):
            for gpu in range(8):
                tags = {"host": f"gpu-{where['rack'].lower()}-{host}", "index": str(gpu)}
                fields: dict[str, FieldValue] = {
                    "temp_c": over(64.0, 90.0),
                    "power_w": 520.0,
                    "util_pct": 97.0,
                    "ecc_uncorrected_total": 0,
                }
                add("accelerator", tags, fields)
    return out


def payload(racks: int, gpus: bool, hot: float, seed: int) -> bytes:
    rng = random.Random(seed)
    samples = [s for rack in range(racks) for s in rack_samples(rack, rng, gpus, hot)]
    return "".join(f"{encode(s)}\n" for s in samples).encode()


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(name: str, data: bytes, rules: RuleFile, repeat: int) -> None:
    good, bad = check_lines(data)
    if bad:
        raise SystemExit(f"{len(bad)} invalid lines in the benchmark's own payload")
    transitions: list[Transition] = []
    evaluator = Evaluator(rules, transitions.append, clock=lambda: BASE_NS / 1e9)
    evaluator.observe(good)  # fill the series cache, open the alerts
    opened = len(transitions)
    check_s = best_of(repeat, lambda: check_lines(data))
    observe_s = best_of(repeat, lambda: evaluator.observe(good))
    n = len(good)
    parsed = evaluator.stats.lines_parsed / evaluator.stats.lines_seen
    print(
        f"{name:<34} {n:>8,} lines  parsed {parsed:5.1%}  alerts {opened:>5}  "
        f"check_lines {check_s / n * 1e6:5.2f} µs/line  evaluator {observe_s / n * 1e6:5.2f} "
        f"µs/line  ratio {observe_s / check_s:.3f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Alert evaluation cost per line.")
    parser.add_argument("--racks", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rules = config.load(RULES, RuleFile)
    print(f"{len(rules.rules)} default rules over {len(rules.measurements())} measurements")
    measure("PDUs, cooling, UPS", payload(args.racks, False, 0.0, args.seed), rules, args.repeat)
    measure(
        "+ 32 accelerators per rack", payload(args.racks, True, 0.0, args.seed), rules, args.repeat
    )
    measure(
        "+ accelerators, 1 series in 10 hot",
        payload(args.racks, True, 0.1, args.seed),
        rules,
        args.repeat,
    )


if __name__ == "__main__":
    main()
