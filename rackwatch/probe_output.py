"""What `rackwatch probe` prints, for the SNMP and the NVML probe alike: a table, or pure line
protocol. Kept apart from probe.py so the NVML probe imports nothing of SNMP."""

from __future__ import annotations

from telemetry.lineproto import encode
from telemetry.sample import Sample

# Tags every sample of one device shares: the table leaves them out of each row.
LOCATION_TAGS = {"site", "room", "row", "rack", "device", "vendor", "model"}


def print_samples(samples: list[Sample], output: str) -> None:
    """As a table, or as pure line protocol (one line per sample)."""
    if output == "table":
        print(format_table(samples))
    else:
        for sample in samples:
            print(encode(sample))


def format_table(samples: list[Sample]) -> str:
    rows = [("MEASUREMENT", "ELEMENT", "FIELDS")]
    for sample in samples:
        element = " ".join(
            f"{k}={v}" for k, v in sorted(sample.tags.items()) if k not in LOCATION_TAGS and v
        )
        fields = " ".join(f"{k}={v}" for k, v in sample.fields.items())
        rows.append((sample.measurement, element, fields))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{m:<{widths[0]}}  {e:<{widths[1]}}  {f}" for m, e, f in rows)
