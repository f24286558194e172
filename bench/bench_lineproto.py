"""Line-protocol codec throughput on realistic PDU outlet lines, in lines per second.

    .venv/bin/python bench/bench_lineproto.py [--lines 100000] [--repeat 5]

check_lines is also given as a ratio to a bare payload.split(b"\\n") of the same payload, which
is the least any line splitter does, so the number means something on any machine. Each figure
is the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from telemetry.lineproto import check_lines, encode_many, parse_lines
from telemetry.sample import Sample

BASE_NS = 1_732_600_000_000_000_000


def make_samples(n: int, seed: int) -> list[Sample]:
    """Outlets of 2 PDUs per rack, 24 outlets each, as one collection round after another."""
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        rack = i // 48 % 400
        row = "ABCDEFGHIJ"[rack // 40]
        samples.append(
            Sample(
                "pdu_outlet",
                {
                    "site": "qiyang-a1",
                    "row": row,
                    "rack": f"{row}{rack % 40 + 1:02d}",
                    "device": f"pdu-{row.lower()}{rack % 40 + 1:02d}-{'ab'[i // 24 % 2]}",
                    "outlet": str(i % 24 + 1),
                },
                {
                    "current_a": round(rng.uniform(0, 16), 2),
                    "power_w": rng.randrange(0, 3700),
                    "state": "on" if rng.random() < 0.97 else "off",
                },
                BASE_NS + i // 19200 * 10_000_000_000,
            )
        )
    return samples


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description="Line-protocol codec throughput.")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    samples = make_samples(args.lines, args.seed)
    payload = encode_many(samples).encode()
    good, bad = check_lines(payload)
    if len(good) != args.lines or bad:  # otherwise we would be timing something else
        raise SystemExit(f"expected {args.lines} valid lines, got {len(good)} and {len(bad)} bad")

    split_s = best_of(args.repeat, lambda: payload.split(b"\n"))
    check_s = best_of(args.repeat, lambda: check_lines(payload))
    encode_s = best_of(args.repeat, lambda: encode_many(samples))
    parse_s = best_of(args.repeat, lambda: parse_lines(payload))

    n = args.lines
    print(f"{n} lines, {len(payload) / n:.0f} bytes each, best of {args.repeat}")
    print(f"  payload.split(b'\\n')  {n / split_s:>12,.0f} lines/s")
    print(f"  check_lines           {n / check_s:>12,.0f} lines/s")
    print(f"  encode_many           {n / encode_s:>12,.0f} lines/s")
    print(f"  parse_lines           {n / parse_s:>12,.0f} lines/s  (check_lines' fallback)")
    print(f"check_lines / split time ratio: {check_s / split_s:.1f}x")


if __name__ == "__main__":
    main()
