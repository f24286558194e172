"""Agent CPU per device poll against Prometheus snmp_exporter's CPU per scrape of the same walks.

    .venv/bin/python bench/bench_snmp.py [--devices apc_ap8959eu3,eatonpdu_2,sentry4]
        [--polls 200] [--blocks 10] [--runs 3] [--raw-polls 100] [--show-config] [--profile]

Needs Debian's prometheus-snmp-exporter (0.21) and snmpsim (the demo extra). One private
snmpsim serves the shared recordings (/work/shared/devices/snmprec, read-only). For each
recording whose profile detects, the agent's first poll is recorded: exactly the columns it
walks and the OIDs it GETs (identification aside). snmp_exporter is then given a module that
walks and GETs exactly those on every scrape (numeric OIDs, v2c, the agent's max-repetitions,
timeout and retries; one metric per walked column with its index as labels, one per GET OID;
see bench/snmp_exporter_config.py), as it would be configured for the device. The agent walks
only on its first poll (and every 15 minutes) and GETs the rows it found after that.

Side by side, in --blocks alternating blocks so that drift on the machine hits both alike:
snmp_exporter is scraped --polls times one after another, its CPU being the utime+stime of its
process from /proc/<pid>/stat before and after each block (10 ms ticks; the sum of its threads'
/proc/<pid>/task/*/schedstat run time is shown as a cross-check); and the same device is polled
--polls times in this process with SnmpDevice.collect(), every sample encoded to line protocol
as the agent does, its CPU being time.process_time() over the poll blocks only (setup, the
first, identifying poll and the scrapes excluded). The agent runs on uvloop like `rackwatch
agent`. The target is agent / exporter <= 0.8x.

Two agent ratios, both against the exporter's walk-every-scrape: the agent's steady poll (GETs
of the rows it knows, what it does between plan refreshes), and the agent's plan poll (walks
and GETs exactly the SNMP work the exporter does: what the agent's first poll, and one poll
every 15 minutes, costs), as a third member of each block: walk against walk. --runs repeats
the whole side-by-side and reports each ratio's min/median/max over the runs.

Where the agent's time goes: the same walks and GETs with a bare gufo-snmp asyncio session
(values only counted; a third member of each block, --polls in all) and a sync session
(--raw-polls, before any uvloop runs), and encode() alone on one poll's samples. --profile adds
a cProfile of --raw-polls agent polls (top functions by own time).

Varbinds are values returned (walked rows plus GET OIDs answered), as snmp_exporter's
snmp_scrape_pdus_returned counts them; "wire" varbinds add what each GETBULK returns past the
end of its column (max-repetitions per request), which is what snmpsim has to produce.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import errno
import io
import math
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from gufo.snmp import SnmpVersion
from gufo.snmp.aio import SnmpSession as AsyncSession
from gufo.snmp.sync import SnmpSession as SyncSession

from agent.mapping import Value
from agent.snmp import GET_BATCH, SYS_DESCR, SYS_OBJECT_ID, DeviceError, SnmpDevice, SnmpTarget
from rackwatch import localservices
from rackwatch.demo import find_shared
from rackwatch.localservices import Running
from telemetry.lineproto import encode
from telemetry.sample import Sample

try:
    from bench import snmp_exporter_config
except ModuleNotFoundError:  # run as bench/bench_snmp.py: the repo root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import snmp_exporter_config

RECORDINGS = find_shared(None) / "devices" / "snmprec"  # RACKWATCH_SHARED or ../shared
DEFAULT_DEVICES = "apc_ap8959eu3,eatonpdu_2,sentry4"
EXPORTER = "prometheus-snmp-exporter"
HOST = "127.0.0.1"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], loop: str) -> T:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def stat_cpu_seconds(pid: int) -> float:
    """utime+stime of a whole process (all threads), in 1/SC_CLK_TCK ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sched_cpu_seconds(pid: int) -> float:
    """Run time of the process's live threads in ns resolution (exited threads are lost)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


class RecordingDevice(SnmpDevice):
    """An SnmpDevice that notes what it walks and GETs (used once, never timed)."""

    def __init__(self, name: str, target: SnmpTarget) -> None:
        super().__init__(name, target, {"device": name})
        self.walks: dict[str, dict[str, Value]] = {}
        self.gets: dict[str, Value | None] = {}

    async def get(self, oids: Iterable[str], what: str = "") -> dict[str, Value]:
        wanted = list(oids)
        found = await super().get(wanted, what)
        for oid in wanted:
            self.gets[oid] = found.get(oid)
        return found

    async def _walk_once(self, base: str) -> dict[str, Value]:
        found = await super()._walk_once(base)
        self.walks[base] = found
        return found


@dataclass
class Plan:
    """What one steady-state agent poll of a recording reads."""

    name: str
    profiles: list[str]
    walks: dict[str, dict[str, Value]]
    gets: dict[str, Value | None]
    samples: int
    max_repetitions: int
    timeout_s: float
    retries: int

    @property
    def varbinds(self) -> int:
        walked = sum(len(rows) for rows in self.walks.values())
        return walked + sum(value is not None for value in self.gets.values())

    @property
    def bulk_requests(self) -> int:
        return sum(len(rows) // self.max_repetitions + 1 for rows in self.walks.values())

    @property
    def get_requests(self) -> int:
        return math.ceil(len(self.gets) / GET_BATCH)

    @property
    def wire_varbinds(self) -> int:
        """Varbinds in the responses: each GETBULK returns max-repetitions of them."""
        return self.bulk_requests * self.max_repetitions + len(self.gets)


@dataclass
class Result:
    plan: Plan
    exporter_cpu_s: float = 0.0  # utime+stime over all scrapes
    exporter_sched_s: float = 0.0
    exporter_wall_s: float = 0.0
    exporter_pdus: int = 0
    exporter_series: int = 0
    agent_cpu_s: float = 0.0
    agent_wall_s: float = 0.0
    agent_samples: int = 0
    snmpsim_cpu_s: float = 0.0  # during the agent polls
    raw_async_cpu_s: float = 0.0  # over all polls, like agent_cpu_s
    raw_async_varbinds: int = 0
    raw_sync_cpu_s: float = 0.0  # per poll
    encode_cpu_s: float = 0.0  # per poll
    profile_text: str = ""
    block_ratios: list[float] = field(default_factory=list)  # agent / exporter per block
    walk_cpu_s: float = 0.0  # agent plan polls: every one walks, as the exporter does
    walk_wall_s: float = 0.0
    walk_block_ratios: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def target(port: int, community: str) -> SnmpTarget:
    return SnmpTarget(HOST, port, community)


class WalkingDevice(SnmpDevice):
    """The agent as on its first poll: every poll makes the plan again (walks the tables)."""

    @property
    def needs_plan(self) -> bool:
        return True


async def discover(port: int, name: str) -> Plan:
    """The first poll's walks and scalar GETs are the plan: what the profile reads.

    snmp_exporter walks these on every scrape. The agent walks them on its first poll only
    (and every 15 minutes); later polls GET the rows it found, so the timed agent polls read
    the same values with fewer requests. That is the design being measured.
    """
    device = RecordingDevice(name, target(port, name))
    samples = await device.collect()
    identity = device.identity
    assert identity is not None
    identifying = {SYS_OBJECT_ID, SYS_DESCR} | {
        source.oid for source in identity.profile.identity.get("model", [])
    }
    for oid in identifying:  # identification happens once, not per poll or scrape
        device.gets.pop(oid, None)
    return Plan(
        name,
        [identity.profile.name, *identity.profile.include],
        dict(device.walks),
        dict(device.gets),
        len(samples),
        device.target.max_repetitions,
        device.target.timeout_s,
        device.target.retries,
    )


# --- snmp_exporter ---------------------------------------------------------------------------


def start_exporter(config: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which(EXPORTER) or f"/usr/bin/{EXPORTER}"
    if not Path(binary).exists():
        raise SystemExit(f"{EXPORTER} not found: apt-get install -y prometheus-snmp-exporter")
    check = subprocess.run(
        [binary, f"--config.file={config}", "--dry-run"], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise SystemExit(f"{EXPORTER} refuses {config}:\n{check.stderr}")
    port = localservices.free_port()
    log = (workdir / "snmp_exporter.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address={HOST}:{port}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 30
    with httpx.Client(trust_env=False, timeout=1) as client:
        while True:
            try:
                if client.get(f"http://{HOST}:{port}/").status_code == 200:
                    return process, port
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                raise SystemExit(
                    f"{EXPORTER} did not serve on {HOST}:{port}:\n"
                    + (workdir / "snmp_exporter.log").read_text()
                )
            time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def check_scrape(result: Result, text: str) -> None:
    """Note what one scrape returned: PDUs (varbinds) and our metrics' series."""
    result.exporter_pdus = int(_metric(text, "snmp_scrape_pdus_returned"))
    result.exporter_series = sum(line.startswith("rw_") for line in text.splitlines())
    if result.exporter_pdus != result.plan.varbinds:
        result.notes.append(
            f"snmp_exporter returned {result.exporter_pdus} PDUs, the agent read "
            f"{result.plan.varbinds} varbinds"
        )


def scrape(client: httpx.Client, url: str, params: dict[str, str], n: int) -> str:
    """Scrape n times, one after another (blocking on purpose); the last reply's text."""
    text = ""
    for _ in range(n):
        reply = client.get(url, params=params)
        reply.raise_for_status()
        text = reply.text
    return text


async def side_by_side(
    result: Result,
    exporter: tuple[int, int],
    snmpsim: Running,
    polls: int,
    blocks: int,
) -> None:
    """Exporter scrapes and agent polls in alternating blocks, so drift hits both alike.

    Scrapes block this loop (nothing else runs on it); only the agent blocks are counted in
    this process's CPU, only the scrape blocks in the exporter's.
    """
    exporter_pid, exporter_port = exporter
    name = result.plan.name
    url = f"http://{HOST}:{exporter_port}/snmp"
    params = {"target": f"{HOST}:{snmpsim.port}", "module": name}
    device = SnmpDevice(name, target(snmpsim.port, name), {"device": name})
    await device.collect()  # identifies the device: not timed
    walking = WalkingDevice(name, target(snmpsim.port, name), {"device": name})
    await walking.collect()
    raw_poll = raw_async_poller(result.plan, snmpsim.port)
    result.raw_async_varbinds = await raw_poll()
    sizes = [polls // blocks + (i < polls % blocks) for i in range(blocks)]
    with httpx.Client(trust_env=False, timeout=120) as client:
        check_scrape(result, scrape(client, url, params, 1))  # warm-up, and a check
        for size in sizes:
            stat0, sched0 = stat_cpu_seconds(exporter_pid), sched_cpu_seconds(exporter_pid)
            wall0 = time.perf_counter()
            scrape(client, url, params, size)
            result.exporter_wall_s += time.perf_counter() - wall0
            result.exporter_cpu_s += stat_cpu_seconds(exporter_pid) - stat0
            exporter_cpu = sched_cpu_seconds(exporter_pid) - sched0  # ns: fine for small blocks
            result.exporter_sched_s += exporter_cpu

            sim0 = stat_cpu_seconds(snmpsim.process.pid)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(size):
                lines = [encode(sample) for sample in await device.collect()]
                result.agent_samples += len(lines)
            agent_cpu = time.process_time() - cpu0
            result.agent_cpu_s += agent_cpu
            result.agent_wall_s += time.perf_counter() - wall0
            result.snmpsim_cpu_s += stat_cpu_seconds(snmpsim.process.pid) - sim0
            result.block_ratios.append(agent_cpu / exporter_cpu if exporter_cpu else math.nan)

            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(size):
                [encode(sample) for sample in await walking.collect()]
            walk_cpu = time.process_time() - cpu0
            result.walk_cpu_s += walk_cpu
            result.walk_wall_s += time.perf_counter() - wall0
            result.walk_block_ratios.append(walk_cpu / exporter_cpu if exporter_cpu else math.nan)

            cpu0 = time.process_time()
            for _ in range(size):
                await raw_poll()
            result.raw_async_cpu_s += time.process_time() - cpu0


async def agent_breakdown(result: Result, snmp_port: int, profile_polls: int) -> None:
    """encode() alone on one poll's samples; optionally a cProfile of agent polls."""
    name = result.plan.name
    device = SnmpDevice(name, target(snmp_port, name), {"device": name})
    one_poll: list[Sample] = await device.collect()
    repeat = 200
    cpu0 = time.process_time()
    for _ in range(repeat):
        [encode(sample) for sample in one_poll]
    result.encode_cpu_s = (time.process_time() - cpu0) / repeat
    if profile_polls:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(profile_polls):
            [encode(sample) for sample in await device.collect()]
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(20)
        result.profile_text = out.getvalue()


def _batches(oids: list[str]) -> list[list[str]]:
    return [oids[i : i + GET_BATCH] for i in range(0, len(oids), GET_BATCH)]


def raw_async_poller(plan: Plan, snmp_port: int) -> Callable[[], Awaitable[int]]:
    """One poll's walks and GETs with a bare gufo-snmp asyncio session; returns the varbinds."""
    session = AsyncSession(
        addr=HOST,
        port=snmp_port,
        community=plan.name,
        version=SnmpVersion.v2c,
        timeout=plan.timeout_s,
        max_repetitions=plan.max_repetitions,
    )
    batches = _batches(list(plan.gets))

    async def once() -> int:
        n = 0
        for base in plan.walks:
            async for _ in session.fetch(base):
                n += 1
        for batch in batches:
            n += len(await session.get_many(batch))
        return n

    return once


def raw_sync_polls(result: Result, snmp_port: int, polls: int) -> None:
    plan = result.plan
    session = SyncSession(
        addr=HOST,
        port=snmp_port,
        community=plan.name,
        version=SnmpVersion.v2c,
        timeout=plan.timeout_s,
        max_repetitions=plan.max_repetitions,
    )
    batches = _batches(list(plan.gets))

    def once() -> int:
        n = 0
        for base in plan.walks:
            for _ in session.fetch(base):
                n += 1
        for batch in batches:
            n += len(session.get_many(batch))
        return n

    for attempt in range(5):
        try:
            once()
            break
        except OSError as exc:
            # After each uvloop.run() the next blocking gufo-snmp call fails once with EINTR
            # though no signal arrives (uvloop 0.23); main() therefore runs this before uvloop.
            if exc.errno != errno.EINTR or attempt == 4:
                raise
    cpu0 = time.process_time()
    for _ in range(polls):
        once()
    result.raw_sync_cpu_s = (time.process_time() - cpu0) / polls


# --- report ----------------------------------------------------------------------------------


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


def spread(values: list[float]) -> str:
    """min / median / max, as the benchmarks page reports a ratio over runs."""
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}x"


def report_runs(runs: list[list[Result]], polls: int) -> None:
    """Each run's ratios, then their min/median/max per device over the runs."""
    print(
        f"\n{len(runs)} runs; per run and device {polls} sequential scrapes, {polls} steady agent "
        f"polls and {polls} agent plan polls, interleaved in blocks; CPU per poll (per scrape).\n"
    )
    print(
        "| run | device | profiles | varbinds/poll | samples/poll | exporter CPU/scrape "
        "| agent steady poll | agent plan poll | steady / exporter | plan poll / exporter "
        "| per block (steady) | per block (plan) |"
    )
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for number, results in enumerate(runs, 1):
        for r in results:
            p = r.plan
            exporter = r.exporter_cpu_s / polls
            agent = r.agent_cpu_s / polls
            walk = r.walk_cpu_s / polls
            print(
                f"| {number} | {p.name} | {', '.join(p.profiles)} | {p.varbinds} | {p.samples} "
                f"| {us(exporter)} | {us(agent)} | {us(walk)} | **{agent / exporter:.2f}x** "
                f"| **{walk / exporter:.2f}x** "
                f"| {min(r.block_ratios):.2f}..{max(r.block_ratios):.2f}x "
                f"| {min(r.walk_block_ratios):.2f}..{max(r.walk_block_ratios):.2f}x |"
            )
    print(f"\nAgent / exporter CPU, min / median / max over {len(runs)} runs:\n")
    print("| device | steady poll (GETs) / exporter walk | plan poll (walks) / exporter walk |")
    print("| --- | ---: | ---: |")
    for i, first in enumerate(runs[0]):
        steady = [run[i].agent_cpu_s / run[i].exporter_cpu_s for run in runs]
        walks = [run[i].walk_cpu_s / run[i].exporter_cpu_s for run in runs]
        print(f"| {first.plan.name} | {spread(steady)} | {spread(walks)} |")
    print(
        "\ntarget: agent / exporter <= 0.8x (exporter CPU = utime+stime from /proc/<pid>/stat; "
        "per block: the range of the blocks' ratios, exporter CPU from schedstat)"
    )


def report(results: list[Result], polls: int, raw_polls: int, skipped: list[str]) -> None:
    """Cross-checks and where the agent's time goes (one run)."""

    print(
        "\nCross-checks, and the exporter's walk plan run by bare gufo-snmp (what a walk-every-"
        "poll agent would cost before any mapping); CPU per poll:\n"
    )
    print(
        "| device | walks + GETs | requests/scrape | wire varbinds/scrape | exporter PDUs / series "
        f"| exporter CPU (schedstat) | walk plan, gufo sync ({raw_polls} polls) "
        "| walk plan, gufo asyncio | encode() | agent total | snmpsim CPU/agent poll |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        p = r.plan
        agent = r.agent_cpu_s / polls
        raw = r.raw_async_cpu_s / polls
        print(
            f"| {p.name} | {len(p.walks)} + {len(p.gets)} | {p.bulk_requests + p.get_requests} "
            f"| {p.wire_varbinds} | {r.exporter_pdus} / {r.exporter_series} "
            f"| {us(r.exporter_sched_s / polls)} | {us(r.raw_sync_cpu_s)} | {us(raw)} "
            f"| {us(r.encode_cpu_s)} | {us(agent)} | {us(r.snmpsim_cpu_s / polls)} |"
        )
    print("\nWall time per poll (snmpsim-bound):")
    for r in results:
        print(
            f"  {r.plan.name}: exporter {r.exporter_wall_s / polls * 1e3:.1f} ms, "
            f"agent {r.agent_wall_s / polls * 1e3:.1f} ms steady, "
            f"{r.walk_wall_s / polls * 1e3:.1f} ms plan poll; "
            f"{r.agent_samples / polls:.0f} lines/poll"
        )
        if r.raw_async_varbinds != r.plan.varbinds:
            r.notes.append(f"bare gufo-snmp poll read {r.raw_async_varbinds} varbinds")
        for note in r.notes:
            print(f"  note: {note}")
    for note in skipped:
        print(f"skipped: {note}")
    for r in results:
        if r.profile_text:
            print(f"\ncProfile of {raw_polls} agent polls of {r.plan.name} (top 20 by own time):")
            print(r.profile_text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--devices", default=DEFAULT_DEVICES, help="comma-separated recording names"
    )
    parser.add_argument("--polls", type=int, default=200, help="polls and scrapes per device")
    parser.add_argument(
        "--blocks", type=int, default=10, help="alternations of exporter and agent blocks"
    )
    parser.add_argument("--runs", type=int, default=3, help="side-by-side runs per device")
    parser.add_argument(
        "--raw-polls", type=int, default=100, help="polls per bare gufo-snmp loop and profile"
    )
    parser.add_argument("--recordings", type=Path, default=RECORDINGS)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--show-config", action="store_true", help="print the snmp.yml used")
    parser.add_argument("--profile", action="store_true", help="cProfile the agent polls")
    args = parser.parse_args()
    names = [name.strip() for name in args.devices.split(",") if name.strip()]

    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-snmp-") as tmp:
        workdir = Path(tmp)
        snmpsim = localservices.start_snmpsim(args.recordings, workdir / "snmpsim")
        exporter: subprocess.Popen[bytes] | None = None
        try:
            plans: list[Plan] = []
            skipped: list[str] = []
            for name in names:
                if not (args.recordings / f"{name}.snmprec").exists():
                    skipped.append(f"{name}: no {name}.snmprec in {args.recordings}")
                    continue
                try:  # not timed; asyncio's own loop, see raw_sync_polls
                    plans.append(asyncio.run(discover(snmpsim.port, name)))
                except DeviceError as exc:
                    skipped.append(f"{name}: {exc}")
            if not plans:
                raise SystemExit("no device to measure:\n" + "\n".join(skipped))
            runs = [[Result(plan) for plan in plans] for _ in range(args.runs)]
            results = runs[0]  # the cross-checks and the breakdown: first run only
            for result in results:
                raw_sync_polls(result, snmpsim.port, args.raw_polls)
            modules = {
                plan.name: snmp_exporter_config.module(
                    plan.name,
                    (
                        snmp_exporter_config.walked_column(base, rows)
                        for base, rows in plan.walks.items()
                    ),
                    plan.gets,
                    {
                        oid: snmp_exporter_config.metric_type([value])
                        for oid, value in plan.gets.items()
                        if value is not None
                    },
                    max_repetitions=plan.max_repetitions,
                    timeout_s=plan.timeout_s,
                    retries=plan.retries,
                )
                for plan in plans
            }
            config = workdir / "snmp.yml"
            config.write_text(snmp_exporter_config.render(modules))
            exporter, exporter_port = start_exporter(config, workdir)
            for number, one_run in enumerate(runs, 1):
                for result in one_run:
                    run(
                        side_by_side(
                            result, (exporter.pid, exporter_port), snmpsim, args.polls, args.blocks
                        ),
                        args.loop,
                    )
                    # as it goes: a long run cut short still says what it measured
                    print(
                        f"run {number} {result.plan.name}: steady / exporter "
                        f"{result.agent_cpu_s / result.exporter_cpu_s:.2f}x, plan poll / "
                        f"exporter {result.walk_cpu_s / result.exporter_cpu_s:.2f}x",
                        file=sys.stderr,
                        flush=True,
                    )
            for result in results:
                run(
                    agent_breakdown(result, snmpsim.port, args.raw_polls if args.profile else 0),
                    args.loop,
                )
            if args.show_config:
                print(f"# snmp.yml given to {EXPORTER} 0.21\n{config.read_text()}")
        finally:
            if exporter is not None:
                stop_process(exporter)
            localservices.stop(snmpsim)
    report_runs(runs, args.polls)
    report(results, args.polls, args.raw_polls, skipped)


if __name__ == "__main__":
    main()
