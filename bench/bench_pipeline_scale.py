"""The whole pipeline at scale: thousands of simulated devices -> agent -> Mosquitto -> collector
-> InfluxDB, every line accounted for by series, and the rate as a ratio to direct ingest.

    .venv/bin/python bench/bench_pipeline_scale.py [--pdus 4500] [--ups 200] [--cooling 200]
        [--dc 100] [--interval 30] [--duration 300] [--compression none|gzip]

Simulated devices: one bench/snmp_responder.py process per recording (AP8959EU3 rack PDUs, an
SMT750 UPS, an InRow cooling unit, an Eltek eNexus DC plant; real recordings from
/work/shared/devices), each device its own community and name, so its own series. The agent is
the real one (agent.service.Agent on uvloop, in this process, default mqtt settings unless
flagged), publishing to a private Mosquitto; a `rackwatch collector` process (defaults:
validation, batching, retention set-up) writes to a private InfluxDB 1.x. A recorder process
subscribes beside the collector (QoS 1) and writes every payload the agent published to disk.

The agent polls from a cold start for --duration seconds after every device finished its first
poll (the warm-up; the walks are spread over the interval) and then stops. Once the recorder
has every line the agent counted as published and InfluxDB stops growing, the recorded lines
are parsed and, per series (measurement + tags) and field, the number of distinct timestamps
published is compared with InfluxQL `count()` in InfluxDB: a line is lost when any of its
values is missing. Lines with the same series and time (which InfluxDB merges) are reported.

The limit: the same recorded lines POSTed straight to a fresh database of the same InfluxDB
(gzip, 5,000-line batches, one after another, as bench_pipeline.py's direct leg) right after.
Reported: the pipeline's rate in the window (lines/s) / the direct rate, i.e. the share of the
database's ingest limit this load uses; the collector's CPU per line and share of one core; the
agent's CPU share; how long after the agent stopped InfluxDB was found to hold every line (an
upper bound: the clock also runs while the recorded lines are parsed).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiomqtt
import httpx
import yaml

from agent.config import AgentConfig
from agent.service import Agent

try:
    from bench import snmp_responder
except ModuleNotFoundError:  # run as bench/bench_pipeline_scale.py: the repo root not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import snmp_responder
from bench.bench_pipeline import post_gzipped
from rackwatch import localservices
from rackwatch.demo import find_shared
from rackwatch.localservices import Running
from telemetry.lineproto import parse_line
from telemetry.payload import decode

RECORDINGS = find_shared(None) / "devices" / "snmprec"  # RACKWATCH_SHARED or ../shared
KINDS = {  # flag -> recording (real devices; see tests/test_snmp_responder.py)
    "pdus": "apc_ap8959eu3",
    "ups": "apc_smt750x-nmc2",
    "cooling": "apc-inrow",
    "dc": "enexus",
}
SITE = "bench"
DATABASE = "pipeline"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the recorder --------------------------------------------------------------------------------


def recorder_main(host: str, port: int, path: str, lines: Any, ready: Any) -> None:
    """Append every payload under the site's topic to `path` (4-byte length, payload as sent)
    and count its lines into `lines`. Its own process: its CPU is not the agent's."""

    async def record(out: BinaryIO) -> None:
        async with aiomqtt.Client(host, port, identifier="bench-recorder") as client:
            await client.subscribe(f"rackwatch/v1/{SITE}/#", qos=1)
            ready.set()
            async for message in client.messages:
                payload = bytes(message.payload)
                out.write(struct.pack(">I", len(payload)) + payload)
                out.flush()  # on disk before it is counted
                text = decode(payload, 1 << 30)
                with lines.get_lock():
                    lines.value += text.count(b"\n") + (not text.endswith(b"\n"))

    with open(path, "wb") as out:
        asyncio.run(record(out))


def start_recorder(mqtt: Running, path: Path) -> tuple[multiprocessing.Process, Any]:
    context = multiprocessing.get_context("spawn")
    lines, ready = context.Value("q", 0), context.Event()
    process = context.Process(
        target=recorder_main, args=(mqtt.host, mqtt.port, str(path), lines, ready), daemon=True
    )
    process.start()
    if not ready.wait(30):
        process.kill()
        raise SystemExit("the recorder did not subscribe within 30 s")
    return process, lines  # type: ignore[return-value]


def recorded_lines(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        payload = decode(data[pos + 4 : pos + 4 + size], 1 << 30)
        pos += 4 + size
        yield from (line for line in payload.split(b"\n") if line)


# --- what was published, what was stored --------------------------------------------------------

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class Published:
    lines: int = 0
    duplicates: int = 0  # lines whose series and time an earlier line had
    # (series, field) -> distinct timestamps carrying it
    counts: Counter[tuple[SeriesKey, str]] = field(default_factory=Counter)
    by_measurement: Counter[tuple[str, str]] = field(default_factory=Counter)
    series: set[SeriesKey] = field(default_factory=set)


def published(path: Path) -> Published:
    found = Published()
    seen: dict[SeriesKey, dict[int, set[str]]] = defaultdict(dict)
    for line in recorded_lines(path):
        sample = parse_line(line)
        key = (sample.measurement, tuple(sorted(sample.tags.items())))
        found.lines += 1
        times = seen[key]
        if sample.time_ns in times:
            found.duplicates += 1
            times[sample.time_ns] |= set(sample.fields)
        else:
            times[sample.time_ns] = set(sample.fields)
    for key, times in seen.items():
        found.series.add(key)
        for names in times.values():
            for name in names:
                found.counts[key, name] += 1
                found.by_measurement[key[0], name] += 1
    return found


def stored_totals(influx: Running, measurements: set[str]) -> Counter[tuple[str, str]]:
    """(measurement, field) -> values in InfluxDB: a cheap check that everything has arrived."""
    totals: Counter[tuple[str, str]] = Counter()
    for m in sorted(measurements):
        for series in localservices.influx_query(influx, DATABASE, f'SELECT count(*) FROM "{m}"'):
            columns: list[str] = series["columns"]  # type: ignore[assignment]
            for name, value in zip(columns[1:], series["values"][0][1:], strict=True):  # type: ignore[index]
                if value:
                    totals[m, name.removeprefix("count_")] += int(value)
    return totals


def stored_counts(
    influx: Running, measurements: set[str], prefixes: list[str]
) -> Counter[tuple[SeriesKey, str]]:
    # "" stands for the series without a device tag (the agent's own).
    """(series, field) -> values in InfluxDB, from `count(*) ... GROUP BY *`, asked for the
    devices of one name prefix at a time (one query over 100,000 series outlasts any timeout)."""
    counts: Counter[tuple[SeriesKey, str]] = Counter()
    with httpx.Client(timeout=600) as client:
        for m in sorted(measurements):
            for prefix in prefixes:
                where = f'"device" =~ /^{prefix}/' if prefix else "\"device\" = ''"
                query = f'SELECT count(*) FROM "{m}" WHERE {where} GROUP BY *'
                reply = client.get(f"{influx.url()}/query", params={"db": DATABASE, "q": query})
                reply.raise_for_status()
                for result in reply.json()["results"]:
                    if "error" in result:
                        raise SystemExit(f"{query}: {result['error']}")
                    for series in result.get("series", []):
                        tags = series.get("tags") or {}
                        key = (m, tuple(sorted((k, v) for k, v in tags.items() if v)))
                        columns = series["columns"]
                        for name, value in zip(columns[1:], series["values"][0][1:], strict=True):
                            if value:
                                counts[key, name.removeprefix("count_")] += int(value)
    return counts


def wait_until_stored(
    influx: Running, pub: Published, settle_s: float, stopped: float
) -> tuple[bool, float]:
    """Poll InfluxDB's totals until they equal what was published (True and the seconds since
    the agent stopped) or stop growing for `settle_s` (False)."""
    measurements = {m for m, _ in pub.by_measurement}
    last, changed = Counter[tuple[str, str]](), time.monotonic()
    while True:
        totals = stored_totals(influx, measurements)
        if all(totals[k] >= n for k, n in pub.by_measurement.items()):
            return True, time.monotonic() - stopped
        if totals != last:
            last, changed = totals, time.monotonic()
        elif time.monotonic() - changed > settle_s:
            return False, time.monotonic() - stopped
        time.sleep(1)


# --- the pieces ---------------------------------------------------------------------------------


def agent_config(
    args: argparse.Namespace, sims: dict[str, snmp_responder.Running], mqtt: Running
) -> AgentConfig:
    devices: list[dict[str, str]] = []
    for kind, sim in sims.items():
        for i in range(getattr(args, kind)):
            n = len(devices)
            devices.append(
                {
                    "name": f"{kind}-{i + 1:05d}",
                    "address": f"{sim.host}:{sim.port}",
                    "credentials": "bench",
                    "room": f"H{n // 4000 + 1}",
                    "row": f"R{n // 40 % 100 + 1:03d}",
                    "rack": f"A{n // 2 + 1:05d}",
                }
            )
    mqtt_settings: dict[str, Any] = {"host": mqtt.host, "port": mqtt.port}
    if args.compression:
        mqtt_settings["compression"] = args.compression
    config = AgentConfig.model_validate(
        {
            "agent": {"name": "scale", "site": SITE},
            "mqtt": mqtt_settings,
            "defaults": {"interval_s": args.interval, "jitter_s": args.jitter},
            # One community for every device; the responders answer any community.
            "credentials": {"bench": {"community": "bench"}},
            "devices": devices,
        }
    )
    problems = config.problems()
    if problems:
        raise SystemExit(f"agent config: {problems}")
    return config


def start_collector(influx: Running, mqtt: Running, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "bench",
                "mqtt": {"host": mqtt.host, "port": mqtt.port},
                "influxdb": {"url": influx.url(), "database": DATABASE},
                "dead_letter_path": str(workdir / "dead.jsonl"),
            }
        )
    )
    log_path = workdir / "collector.log"
    collector = subprocess.Popen(
        [sys.executable, "-m", "rackwatch", "collector", "-c", str(config)],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while b"subscribed to" not in log_path.read_bytes():
        if collector.poll() is not None or time.monotonic() > deadline:
            collector.kill()
            raise SystemExit(log_path.read_text())
        time.sleep(0.1)
    return collector


async def run_agent(args: argparse.Namespace, agent: Agent, pids: dict[str, int]) -> dict[str, Any]:
    """Cold start; the window opens once every device has polled once (at least one interval)
    and lasts --duration s; then the agent stops as SIGTERM would."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="agent")
    found: dict[str, Any] = {}
    started = time.monotonic()
    try:
        while min(p.stats.polls_ok + p.stats.polls_failed for p in agent.pollers.values()) < 1:
            if time.monotonic() - started > args.warmup_limit:
                raise SystemExit(f"not every device polled within {args.warmup_limit} s")
            await asyncio.sleep(0.5)
        await asyncio.sleep(max(0.0, args.interval - (time.monotonic() - started)))
        found["warmup_s"] = time.monotonic() - started
        lines0 = agent.publisher.stats.published_lines
        polls0 = sum(p.stats.polls_ok for p in agent.pollers.values())
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        agent_cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(args.duration)
        found["window_s"] = time.monotonic() - wall0
        found["agent_cpu_s"] = time.process_time() - agent_cpu0
        found["cpu_s"] = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
        found["window_lines"] = agent.publisher.stats.published_lines - lines0
        found["window_polls"] = sum(p.stats.polls_ok for p in agent.pollers.values()) - polls0
    finally:
        stop.set()
        await task
    stats = [p.stats for p in agent.pollers.values()]
    found["polls_ok"] = sum(s.polls_ok for s in stats)
    found["polls_failed"] = sum(s.polls_failed for s in stats)
    found["overruns"] = sum(s.overruns for s in stats)
    found["failures"] = sum((s.failures for s in stats), Counter())
    publisher = agent.publisher.stats
    found["published_lines"] = publisher.published_lines
    found["published_batches"] = publisher.published_batches
    found["dropped_lines"] = publisher.dropped_lines
    found["queued_lines"] = agent.publisher.queued_lines
    found["overflow_lines"] = publisher.overflow_lines
    found["backpressure_waits"] = publisher.backpressure_waits
    return found


def direct(influx: Running, path: Path, limit: int) -> tuple[int, float]:
    """POST up to `limit` recorded lines to a fresh database, gzip'd 5,000-line batches one
    after another; (lines, seconds until InfluxDB counted them)."""
    lines = []
    for line in recorded_lines(path):
        lines.append(line)
        if len(lines) >= limit:
            break
    localservices.influx_create_database(influx, "direct")
    measurements = sorted({line.split(b",", 1)[0].split(b" ", 1)[0].decode() for line in lines})
    with httpx.Client(timeout=120) as client:
        started = time.perf_counter()
        post_gzipped(client, influx, "direct", lines)
        elapsed = time.perf_counter() - started
    # The writes are acknowledged once durable (WAL); a count confirms they all arrived.
    stored = 0
    for m in measurements:
        for series in localservices.influx_query(influx, "direct", f'SELECT count(*) FROM "{m}"'):
            stored += max(int(v or 0) for v in series["values"][0][1:])  # type: ignore[index]
    if stored < len(lines) * 0.99:  # same series and time merge; a few are allowed for
        raise SystemExit(f"direct leg: only {stored} of {len(lines)} points counted")
    return len(lines), elapsed


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdus", type=int, default=4500, help="AP8959EU3 rack PDUs")
    parser.add_argument("--ups", type=int, default=200, help="SMT750 UPSes")
    parser.add_argument("--cooling", type=int, default=200, help="InRow cooling units")
    parser.add_argument("--dc", type=int, default=100, help="eNexus DC plants")
    parser.add_argument("--interval", type=float, default=30.0, help="poll interval, s")
    parser.add_argument("--jitter", type=float, default=1.0, help="jitter per tick, s")
    parser.add_argument("--duration", type=float, default=300.0, help="measured window, s")
    parser.add_argument("--compression", choices=("none", "gzip"), help="agent mqtt.compression")
    parser.add_argument("--warmup-limit", type=float, default=300.0)
    parser.add_argument("--settle", type=float, default=120.0, help="most s InfluxDB may stall")
    parser.add_argument("--direct-lines", type=int, default=1_000_000, help="lines, direct leg")
    args = parser.parse_args()
    import uvloop

    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-pipeline-scale-") as tmp:
        workdir = Path(tmp)
        services: list[Running] = []
        sims: dict[str, snmp_responder.Running] = {}
        children: list[multiprocessing.Process] = []
        collector: subprocess.Popen[bytes] | None = None
        try:
            for kind, recording in KINDS.items():
                if getattr(args, kind):
                    sims[kind] = snmp_responder.start(RECORDINGS / f"{recording}.snmprec")
            influx = localservices.start_influxdb(workdir / "influxdb")
            services.append(influx)
            mqtt = localservices.start_mosquitto(workdir / "mosquitto")
            services.append(mqtt)
            localservices.influx_create_database(influx, DATABASE)
            collector = start_collector(influx, mqtt, workdir)
            recording_path = workdir / "published.bin"
            recorder, received = start_recorder(mqtt, recording_path)
            children.append(recorder)
            pids = {
                "collector": collector.pid,
                "influxdb": influx.process.pid,
                "mosquitto": mqtt.process.pid,
            }
            for kind, sim in sims.items():
                pids[f"responder {kind}"] = sim.process.pid
            assert recorder.pid is not None
            pids["recorder"] = recorder.pid
            agent = Agent(agent_config(args, sims, mqtt))
            run = uvloop.run(run_agent(args, agent, pids))
            stopped = time.monotonic()
            deadline = stopped + 60
            while received.value < run["published_lines"] and time.monotonic() < deadline:
                time.sleep(0.2)
            run["received_lines"] = received.value
            recorder.terminate()
            recorder.join(10)
            pub = published(recording_path)
            run["complete"], run["drain_s"] = wait_until_stored(influx, pub, args.settle, stopped)
            measurements = {m for m, _ in pub.by_measurement}
            names = {dict(tags).get("device", "") for _, tags in pub.series}
            prefixes = sorted({name[:-2] for name in names})  # 100 devices a query
            stored = stored_counts(influx, measurements, prefixes)
            run["dead_letters"] = (
                len((workdir / "dead.jsonl").read_bytes().splitlines())
                if (workdir / "dead.jsonl").exists()
                else 0
            )
            run["direct_lines"], run["direct_s"] = direct(influx, recording_path, args.direct_lines)
        finally:
            if collector is not None:
                collector.terminate()
                collector.wait(30)
            for child in children:
                if child.is_alive():
                    child.kill()
            for service in reversed(services):
                localservices.stop(service)
            for sim in sims.values():
                sim.stop()
    report(args, run, pub, stored, load0)


def report(
    args: argparse.Namespace,
    run: dict[str, Any],
    pub: Published,
    stored: Counter[tuple[SeriesKey, str]],
    load0: float,
) -> None:
    # A line is lost when any of its values is missing: per series, the largest shortfall of
    # any field.
    shortfall: dict[SeriesKey, int] = defaultdict(int)
    for (key, name), n in pub.counts.items():
        shortfall[key] = max(shortfall[key], n - stored[key, name])
    lost = sum(max(0, n) for n in shortfall.values())
    series_short = sum(1 for n in shortfall.values() if n > 0)
    extra = sum(1 for (key, name), n in stored.items() if n > pub.counts[key, name])
    devices = args.pdus + args.ups + args.cooling + args.dc
    window = run["window_s"]
    rate = run["window_lines"] / window
    direct_rate = run["direct_lines"] / run["direct_s"]
    collector_cpu = run["cpu_s"]["collector"]
    print(
        f"\nWhole pipeline: {devices} devices ({args.pdus} PDUs, {args.ups} UPS, "
        f"{args.cooling} cooling, {args.dc} DC) every {args.interval:g} s, window {window:.0f} s, "
        f"load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at the end"
    )
    rows = [
        (
            "polls ok / failed / overruns, whole run",
            f"{run['polls_ok']:,} / {run['polls_failed']} / {run['overruns']}",
        ),
        (
            "polls done / polls due, window",
            f"{run['window_polls'] / (devices * window / args.interval):.3f}",
        ),
        ("warm-up (every device polled once, at least one interval)", f"{run['warmup_s']:.0f} s"),
        (
            "lines published / dropped / left queued, whole run",
            f"{run['published_lines']:,} / {run['dropped_lines']} / {run['queued_lines']}",
        ),
        ("lines the recorder received", f"{run['received_lines']:,}"),
        (
            "messages published (lines per message)",
            f"{run['published_batches']:,} "
            f"({run['published_lines'] / max(1, run['published_batches']):,.0f})",
        ),
        (
            "polls that waited for the publisher / lines spooled",
            f"{run['backpressure_waits']} / {run['overflow_lines']}",
        ),
        (
            "series published / lines with a repeated series+time",
            f"{len(pub.series):,} / {pub.duplicates}",
        ),
        (
            "**lines lost (by series and field)**",
            f"**{lost}** ({series_short} series short; {extra} series+field with more stored)",
        ),
        ("lines set aside by the collector (dead letters)", f"{run['dead_letters']}"),
        (
            "last line in InfluxDB, after the agent stopped",
            f"{run['drain_s']:.1f} s" + ("" if run["complete"] else " (INCOMPLETE)"),
        ),
        ("pipeline lines/s in the window", f"{rate:,.0f}"),
        (
            "direct gzip ingest lines/s (same InfluxDB, recorded lines)",
            f"{direct_rate:,.0f} ({run['direct_lines']:,} lines)",
        ),
        ("**pipeline / direct-ingest limit**", f"**{rate / direct_rate:.3f}**"),
        ("agent CPU / one core, window", f"{run['agent_cpu_s'] / window:.2f}"),
        ("agent CPU per 1,000 polls", f"{run['agent_cpu_s'] / run['window_polls'] * 1000:.2f} s"),
        ("collector CPU / one core, window", f"{collector_cpu / window:.2f}"),
        ("collector CPU per line", f"{collector_cpu / max(1, run['window_lines']) * 1e6:.1f} µs"),
    ]
    rows += [
        (f"{name} CPU / one core, window", f"{cpu / window:.2f}")
        for name, cpu in run["cpu_s"].items()
        if name != "collector"
    ]
    print("| metric | value |\n| --- | ---: |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    problems = []
    if run["polls_failed"]:
        reasons = ", ".join(f"{n} {r}" for r, n in run["failures"].most_common())
        problems.append(f"{run['polls_failed']} failed polls ({reasons})")
    if run["dropped_lines"] or lost or not run["complete"]:
        problems.append(f"{run['dropped_lines']} dropped, {lost} lost")
    if run["received_lines"] < run["published_lines"]:
        problems.append("the recorder received fewer lines than were published")
    print(f"INVALID: {'; '.join(problems)}" if problems else "valid: 0 failed polls, 0 lines lost")


if __name__ == "__main__":
    main()
