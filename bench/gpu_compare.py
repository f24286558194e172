"""Compare what `rackwatch probe --nvml --output line-protocol` printed with what
`nvidia-smi --query-gpu=<QUERY> --format=csv` printed in the same run, GPU by GPU (matched on
uuid): identity equal, readings within tolerances. bench/gpu_check.sh runs both and then this.

    python -m bench.gpu_compare probe.lp nvidia-smi.csv

Prints one line per comparison and exits 1 if any differs beyond its tolerance.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from telemetry.lineproto import parse_lines
from telemetry.sample import Sample

MIB = 1 << 20

# nvidia-smi --query-gpu names, in the order the CSV columns come (its header may print other
# names for the same columns, e.g. clocks.current.sm, so columns are taken by position).
QUERY = (
    "uuid",
    "serial",
    "name",
    "pci.bus_id",
    "driver_version",
    "memory.total",
    "memory.used",
    "clocks.sm",
    "clocks.mem",
    "temperature.gpu",
    "power.draw",
)
# Identity: query column -> the probe's tag, equal as text.
IDENTITY = {
    "uuid": "uuid",
    "serial": "serial",
    "name": "model",
    "pci.bus_id": "pci_bus_id",
    "driver_version": "driver_version",
}


@dataclass(frozen=True)
class Reading:
    field: str
    scale: float  # probe field -> nvidia-smi's unit
    tolerance: Callable[[float], float]  # allowed difference, given nvidia-smi's value


# Readings: query column -> how to compare. The two tools read a moment apart; power is averaged
# over about a second on Ampere and newer, clocks and memory move with the load.
READINGS = {
    "memory.total": Reading("mem_total_bytes", 1 / MIB, lambda value: 0.0),
    "memory.used": Reading("mem_used_bytes", 1 / MIB, lambda value: max(64.0, 0.02 * value)),
    "clocks.sm": Reading("sm_clock_mhz", 1.0, lambda value: max(30.0, 0.10 * value)),
    "clocks.mem": Reading("mem_clock_mhz", 1.0, lambda value: 0.05 * value),
    "temperature.gpu": Reading("temp_c", 1.0, lambda value: 3.0),
    "power.draw": Reading("power_w", 1.0, lambda value: max(15.0, 0.10 * value)),
}


def smi_rows(text: str) -> list[dict[str, str]]:
    """The CSV of nvidia-smi --query-gpu=QUERY --format=csv (header line first), units dropped."""
    rows = list(csv.reader(io.StringIO(text), skipinitialspace=True))
    if not rows or len(rows[0]) != len(QUERY):
        raise ValueError(f"expected a header of {len(QUERY)} columns ({', '.join(QUERY)})")
    table = []
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(QUERY):
            raise ValueError(f"line {number}: {len(row)} columns, expected {len(QUERY)}")
        table.append(dict(zip(QUERY, (cell.strip() for cell in row), strict=True)))
    return table


def _number(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None  # "[N/A]", "[Not Supported]"


def compare(samples: Sequence[Sample], smi: Sequence[dict[str, str]]) -> tuple[list[str], int]:
    """(one line per comparison, how many are beyond tolerance)."""
    gpus = {s.tags.get("uuid"): s for s in samples if s.measurement == "accelerator"}
    lines: list[str] = []
    bad = 0
    if len(gpus) != len(smi):
        lines.append(f"DIFF  GPU count: probe {len(gpus)}, nvidia-smi {len(smi)}")
        bad += 1
    for row in smi:
        sample = gpus.get(row["uuid"])
        if sample is None:
            lines.append(f"DIFF  {row['uuid']}: nvidia-smi lists it, the probe does not")
            bad += 1
            continue
        label = f"GPU {sample.tags.get('index')} {row['uuid']}"
        for column, tag in IDENTITY.items():
            ours = sample.tags.get(tag, "(none)")
            same = ours == row[column]
            bad += not same
            lines.append(f"{'ok  ' if same else 'DIFF'}  {label} {column}: {ours} | {row[column]}")
        for column, reading in READINGS.items():
            theirs = _number(row[column])
            value = sample.fields.get(reading.field)
            if theirs is None or not isinstance(value, int | float):
                lines.append(f"skip  {label} {column}: probe {value}, nvidia-smi {row[column]}")
                continue
            ours_scaled = float(value) * reading.scale
            allowed = reading.tolerance(theirs)
            close = abs(ours_scaled - theirs) <= allowed
            bad += not close
            lines.append(
                f"{'ok  ' if close else 'DIFF'}  {label} {column}: {ours_scaled:g} | {theirs:g} "
                f"(within {allowed:g})"
            )
    return lines, bad


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.gpu_compare PROBE_LINE_PROTOCOL NVIDIA_SMI_CSV")
        return 2
    probe_text, smi_text = (Path(arg).read_text(encoding="utf-8") for arg in args)
    try:
        samples = parse_lines(probe_text)  # '#' comment lines are skipped
        rows = smi_rows(smi_text)
    except ValueError as exc:  # LineProtocolError is one
        print(f"gpu_compare: cannot read the outputs: {exc}")
        return 1
    lines, bad = compare(samples, rows)
    print("\n".join(lines))
    print(f"{len(lines) - bad} agree, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
