"""InfluxDB disk per stored value and per device poll, for each kind of device, after compaction.

    .venv/bin/python bench/bench_disk.py [--pdus 10] [--others 5] [--cards 20] [--points 1440]

What one poll of each device kind writes is taken from real sources: an AP8959EU3 rack PDU, an
SMT750 UPS, an InRow cooling unit and an eNexus DC plant polled by the agent's SnmpDevice through
bench/snmp_responder.py (real recordings), and an H100's NVML probe (tests/data/nvml, captured on
real hardware). Each device's poll is repeated --points times at its interval (PDUs 15 s, the
others 30 s, cards 10 s), its values moving as real ones do, by the field's kind in
telemetry/schema.yaml: gauges a small random walk kept at the recording's resolution (decimals
of the value read), counters growing, states, enums, text and flags unchanged. Storage depends on
that: constant values compress to almost nothing, random ones hardly at all.

Each kind goes to its own database (its own shard) of one private InfluxDB 1.x whose cache is
written out and fully compacted a few seconds after writes stop (cache-snapshot- and
compact-full-write-cold-duration: 5 s, instead of 10 min and 4 h). The shard's directory is
measured once the WAL is empty and the TSM files have not changed for --quiet seconds.
Reported per kind: bytes per field value, per line and per device poll (values per poll from
the real poll); the sizing (docs/sizing.md) multiplies these.

--aggregate-points adds, per kind, a database of 5-minute points (a week by default: a long
policy's shard holds 7 days) with the same fields, gauges at full float precision as the
collector's continuous queries' means are (counters, states and text keep their last value, as
there). Not the continuous queries themselves: running them over a week of raw data would take
longer than this machine has.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx

from agent.snmp import SnmpDevice, SnmpTarget

try:
    from bench import snmp_responder
except ModuleNotFoundError:  # run as bench/bench_disk.py: the repo root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import snmp_responder
from rackwatch import localservices
from rackwatch.demo import find_shared
from rackwatch.localservices import Running
from telemetry.lineproto import encode_many, parse_lines
from telemetry.sample import Sample
from telemetry.schema import schema

RECORDINGS = find_shared(None) / "devices" / "snmprec"  # RACKWATCH_SHARED or ../shared
PROBE = Path(__file__).resolve().parent.parent / "tests/data/nvml/h100-single-probe.lp"
BASE_NS = 1_790_000_000_000_000_000
COLD = '  cache-snapshot-write-cold-duration = "5s"\n  compact-full-write-cold-duration = "5s"\n'


@dataclass
class Kind:
    name: str
    source: str  # a recording name, or "nvml"
    interval_s: float


KINDS = [
    Kind("pdu", "apc_ap8959eu3", 15),
    Kind("ups", "apc_smt750x-nmc2", 30),
    Kind("cooling", "apc-inrow", 30),
    Kind("dc", "enexus", 30),
    Kind("card", "nvml", 10),
]


async def one_poll(recording: str) -> list[Sample]:
    responder = snmp_responder.start(RECORDINGS / f"{recording}.snmprec")
    try:
        device = SnmpDevice(recording, SnmpTarget(responder.host, responder.port, "public"), {})
        await device.collect()  # identification and the walks
        return await device.collect()
    finally:
        responder.stop()


def decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def series_of(
    template: list[Sample], device: str, points: int, interval_s: float, averaged: bool = False
) -> list[str]:
    """`points` polls of one device: each template sample's values moved by their kind.
    `averaged`: gauges at full float precision, as the 5-minute aggregates' means are."""
    rng = random.Random(device)
    lines = []
    for sample in template:
        values = dict(sample.fields)
        # The place tags an agent adds (docs/schema.md), as long as real ones.
        place = {"site": "qiyang-a1", "room": "hall-3", "row": "R07", "rack": "R07-A12"}
        tags = {**sample.tags, **place, "device": device}
        for p in range(points):
            for name, value in values.items():
                definition = schema().field(sample.measurement, name)
                kind = definition.kind if definition else "gauge"
                if isinstance(value, (bool, str)):
                    continue
                if kind == "counter":
                    values[name] = value + type(value)(rng.randint(0, 50))
                elif kind == "gauge" and isinstance(value, float):
                    step = max(abs(value) * 0.005, 10.0 ** -decimals(value))
                    moved = value + rng.gauss(0, step)
                    values[name] = moved if averaged else round(moved, decimals(value))
                elif kind == "gauge":  # an integer reading moves by a unit now and then
                    values[name] = value + rng.choice((-1, 0, 0, 0, 0, 0, 1))
            time_ns = BASE_NS + int(p * interval_s * 1e9)
            lines.append(encode_many([Sample(sample.measurement, tags, dict(values), time_ns)]))
    return lines


def write(influx: Running, database: str, lines: list[str]) -> None:
    localservices.influx_create_database(influx, database)
    with httpx.Client(timeout=300) as client:
        for i in range(0, len(lines), 5000):
            body = "\n".join(line.rstrip("\n") for line in lines[i : i + 5000]).encode()
            reply = client.post(
                f"{influx.url()}/write",
                params={"db": database, "precision": "ns"},
                content=zlib.compress(body, 1, wbits=31),
                headers={"Content-Encoding": "gzip"},
            )
            reply.raise_for_status()


def compacted_bytes(
    influx: Running, database: str, quiet_s: float, limit_s: float
) -> tuple[int, int]:
    """(TSM bytes of the database's shards, disk blocks of its series file and indexes), once
    its WAL is empty and its files are unchanged for `quiet_s` (a full compaction has run).
    The series file is preallocated: its size on disk per series, not per point."""
    data = influx.workdir / "influxdb" / "data" / database
    wal = influx.workdir / "influxdb" / "wal" / database
    deadline = time.monotonic() + limit_s
    last: list[tuple[str, int]] = []
    since = time.monotonic()
    while time.monotonic() < deadline:
        files = sorted((str(p), p.stat().st_size) for p in data.rglob("*") if p.is_file())
        wal_bytes = sum(p.stat().st_size for p in wal.rglob("*.wal") if p.is_file())
        if files != last or wal_bytes:
            last, since = files, time.monotonic()
        elif time.monotonic() - since > quiet_s and any(f.endswith(".tsm") for f, _ in files):
            tsm = sum(size for f, size in files if f.endswith(".tsm"))
            other = sum(
                p.stat().st_blocks * 512
                for p in data.rglob("*")
                if p.is_file() and p.suffix != ".tsm"
            )
            return tsm, other
        time.sleep(1)
    raise SystemExit(f"{database}: not compacted within {limit_s} s ({last})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdus", type=int, default=10, help="PDUs (each ~27 series)")
    parser.add_argument("--others", type=int, default=5, help="UPSes, cooling units, DC plants")
    parser.add_argument("--cards", type=int, default=20, help="accelerator cards")
    parser.add_argument("--points", type=int, default=1440, help="polls per device")
    parser.add_argument(
        "--aggregate-points",
        type=int,
        default=2016,
        help="5-minute aggregates per device (2016: a week, one shard of a long policy); 0: none",
    )
    parser.add_argument("--quiet", type=float, default=15, help="s without change = compacted")
    args = parser.parse_args()
    devices = {"pdu": args.pdus, "ups": args.others, "cooling": args.others, "dc": args.others}
    devices["card"] = args.cards
    print(
        "| database (source) | devices | polls each | lines per poll | values per poll | lines "
        "| values | TSM bytes "
        "| **TSM bytes/value** | TSM bytes/line | TSM bytes per device poll "
        "| series file + index on disk / series |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-disk-") as tmp:
        influx = localservices.start_influxdb(Path(tmp) / "influxdb")
        try:
            config = influx.workdir / "influxdb.conf"
            config.write_text(config.read_text().replace("[data]\n", "[data]\n" + COLD, 1))
            influx = localservices.restart(influx)
            for kind in KINDS:
                if kind.source == "nvml":  # the probe's first poll (its second is the same card)
                    probe = parse_lines(PROBE.read_bytes())
                    template = [s for s in probe if s.time_ns == probe[0].time_ns]
                else:
                    template = asyncio.run(one_poll(kind.source))
                legs = [(kind.name, args.points, kind.interval_s, False)]
                if args.aggregate_points:
                    legs.append((f"{kind.name}_5m", args.aggregate_points, 300.0, True))
                for database, points, interval_s, averaged in legs:
                    lines: list[str] = []
                    for d in range(devices[kind.name]):
                        device = f"{kind.name}-{d:04d}"
                        lines += series_of(template, device, points, interval_s, averaged)
                    per_poll = sum(len(s.fields) for s in template)
                    values = per_poll * devices[kind.name] * points
                    write(influx, database, lines)
                    size, index = compacted_bytes(influx, database, args.quiet, 600)
                    per_value = size / values
                    print(
                        f"| {database} ({kind.source}) | {devices[kind.name]} | {points:,} "
                        f"| {len(template)} | {per_poll} | {len(lines):,} | {values:,} "
                        f"| {size:,} | **{per_value:.2f}** | {size / len(lines):.1f} "
                        f"| {per_value * per_poll:.0f} "
                        f"| {index / (len(template) * devices[kind.name]):,.0f} |",
                        flush=True,
                    )
        finally:
            localservices.stop(influx)


if __name__ == "__main__":
    main()
