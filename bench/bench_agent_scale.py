"""One agent process polling many simulated PDUs: overruns, CPU per 1,000 polls, RSS, cores.

    .venv/bin/python bench/bench_agent_scale.py [--devices 200] [--interval 15] [--duration 60]
        [--snmpsim-processes 2] [--rss-devices 1000] [--rss-rounds 2]
    .venv/bin/python bench/bench_agent_scale.py --simulator responder --agent-cpu 0 \
        --devices 5000 --interval 10 --duration 60 --skip-rss [--compression gzip]

--simulator responder serves the recording from bench/snmp_responder.py (one process, every
community, answers cached: tens of thousands of requests/s) instead of snmpsim, for thousands
of devices. --agent-cpu pins the agent (this process) to that CPU and the responder, Mosquitto
and the subscriber to the others, so the agent has one core to itself and its CPU share is a
ratio against that limit measured in the same run.

The recording (--recording, default apc_ap8959eu3, switched 24-outlet APC) is copied to
pdu-0001.snmprec ... pdu-NNNN.snmprec, one community per simulated PDU. Copies, not symlinks:
snmpsim resolves a symlink and names the community after the target, so every link would be the
same (duplicate) community. The copies are spread over --snmpsim-processes private snmpsim
processes (each serves about 6,000 varbinds/s on one core here), and a private Mosquitto takes
what the agent publishes. A subscriber in its own process (plain aiomqtt, QoS 1) counts the lines
that reach it: without one, Mosquitto answers every publish "no matching subscribers" and the
agent holds its batches instead of publishing them.

The agent is the real one (agent.service.Agent, AgentConfig built in code, uvloop like
`rackwatch agent`), running in this process; snmpsim and Mosquitto are other processes, so
time.process_time() here is the agent's CPU (their CPU is shown for context only).

First a calibration: one PDU is polled a few times to learn the varbinds per poll (returned,
and on the wire: every GETBULK returns max-repetitions varbinds) and snmpsim's CPU per poll.
It warns when the wire varbinds per snmpsim process per second would exceed
--warn-sim-varbinds (4,000, about 2/3 of what one snmpsim serves) and refuses above
--max-sim-varbinds (5,000), so that what is measured is the agent, not an overloaded simulator.
At the defaults (200 PDUs of ~600 wire varbinds every 15 s over 2 simulators) it is ~4,000.

Phase 1, RSS: --rss-devices devices (most sharing the same communities) are configured; VmRSS
is read before and after the Agent object is built and after every device has completed
--rss-rounds polls (on an interval long enough for the simulators), then the agent stops.
Phase 2, scale: --devices devices on --interval with jitter; after one interval of warm-up
(every device's first, identifying poll), CPU and poll counters are read, and again after
--duration seconds. CPU per poll is the difference of process_time over the difference of
completed polls; cores per 10,000 PDUs at a 30 s interval = CPU s per poll * 10,000 / 30.
The warm-up waits (up to --warmup-limit s) until every device has finished a poll.

A figure is valid only from a healthy agent: the report gives failed polls (whole run and window)
and the lines the subscriber received, and ends with "INVALID" when any poll failed, any line was
dropped, or fewer lines reached the subscriber than the agent published.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

from agent.config import AgentConfig
from agent.mapping import Value
from agent.service import Agent
from agent.snmp import GET_BATCH, SnmpDevice, SnmpTarget

try:
    from bench import snmp_responder
except ModuleNotFoundError:  # run as bench/bench_agent_scale.py: the repo root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import snmp_responder
from rackwatch import localservices
from rackwatch.demo import find_shared
from rackwatch.localservices import Running as ServiceRunning
from telemetry.payload import decode

Running = ServiceRunning | snmp_responder.Running  # a simulator: host, port, process

RECORDINGS = find_shared(None) / "devices" / "snmprec"  # RACKWATCH_SHARED or ../shared
HOST = "127.0.0.1"
TOPIC = "rackwatch/v1/bench/#"  # what every agent here publishes under (site "bench")
T = TypeVar("T")


def stat_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait_s() -> float:
    """How long this process's main thread (the event loop) has waited, runnable, for a CPU:
    the time other processes on its core took from it (/proc/self/schedstat)."""
    return int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9


def status_mib(key: str) -> float:
    """VmRSS, VmHWM, ... of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def community(i: int) -> str:
    return f"pdu-{i + 1:04d}"


# --- calibration -------------------------------------------------------------------------------


class CountingDevice(SnmpDevice):
    """An SnmpDevice that counts what each walk and GET returns (calibration only)."""

    def __init__(self, name: str, target: SnmpTarget) -> None:
        super().__init__(name, target, {"device": name})
        self.walk_rows: list[int] = []
        self.get_oids = 0
        self.get_found = 0

    async def get(self, oids: Iterable[str], what: str = "") -> dict[str, Value]:
        wanted = list(oids)
        found = await super().get(wanted, what)
        self.get_oids += len(wanted)
        self.get_found += len(found)
        return found

    async def _walk_once(self, base: str) -> dict[str, Value]:
        found = await super()._walk_once(base)
        self.walk_rows.append(len(found))
        return found


@dataclass
class Calibration:
    profile: str
    varbinds: int  # returned per poll
    wire_varbinds: int  # in the responses, GETBULK overshoot included
    requests: int
    snmpsim_cpu_s: float  # per poll
    wall_s: float  # per poll, alone
    first_poll_wire_varbinds: int  # the first poll walks the tables; later ones GET their rows


async def calibrate(sim: Running, polls: int) -> Calibration:
    name = community(0)
    device = CountingDevice(name, SnmpTarget(HOST, sim.port, name))
    await device.collect()  # identification, and the walks that learn the tables' rows
    repetitions = device.target.max_repetitions
    first_wire = sum(rows // repetitions + 1 for rows in device.walk_rows) * repetitions
    device.walk_rows.clear()
    device.get_oids = device.get_found = 0
    await device.collect()
    bulk_requests = sum(rows // repetitions + 1 for rows in device.walk_rows)
    calibration = Calibration(
        profile=device.identity.profile.name if device.identity else "?",
        varbinds=sum(device.walk_rows) + device.get_found,
        wire_varbinds=bulk_requests * repetitions + device.get_oids,
        requests=bulk_requests + math.ceil(device.get_oids / GET_BATCH),
        snmpsim_cpu_s=0.0,
        wall_s=0.0,
        first_poll_wire_varbinds=first_wire + device.get_oids,
    )
    sim0, wall0 = stat_cpu_seconds(sim.process.pid), time.perf_counter()
    for _ in range(polls):
        await device.collect()
    calibration.snmpsim_cpu_s = (stat_cpu_seconds(sim.process.pid) - sim0) / polls
    calibration.wall_s = (time.perf_counter() - wall0) / polls
    return calibration


def sim_load(cal: Calibration, devices: int, interval_s: float, sims: int) -> tuple[float, float]:
    """(wire varbinds/s, CPU share) that one snmpsim process gets."""
    polls_per_s = devices / interval_s / sims
    return polls_per_s * cal.wire_varbinds, polls_per_s * cal.snmpsim_cpu_s


# --- the subscriber ------------------------------------------------------------------------------


def subscriber_main(host: str, port: int, lines: Any, ready: Any) -> None:
    """Count the lines published under TOPIC into `lines` (a shared counter); set `ready` once
    subscribed. Runs in its own process, so its CPU is not the agent's."""

    async def subscribe() -> None:
        async with aiomqtt.Client(host, port, identifier="bench-subscriber") as client:
            await client.subscribe(TOPIC, qos=1)
            ready.set()
            async for message in client.messages:
                payload = decode(bytes(message.payload), 1 << 30)  # plain or gzip
                count = payload.count(b"\n") + (not payload.endswith(b"\n"))
                with lines.get_lock():
                    lines.value += count

    asyncio.run(subscribe())


def start_subscriber(mqtt: Running) -> tuple[BaseProcess, Any]:
    context = multiprocessing.get_context("spawn")
    lines, ready = context.Value("q", 0), context.Event()
    process = context.Process(
        target=subscriber_main, args=(mqtt.host, mqtt.port, lines, ready), daemon=True
    )
    process.start()
    if not ready.wait(30):
        process.kill()
        raise SystemExit("the subscriber did not subscribe within 30 s")
    return process, lines


# --- the agent -----------------------------------------------------------------------------------


def agent_config(
    name: str,
    devices: int,
    communities: int,
    sims: list[Running],
    mqtt: Running,
    interval_s: float,
    jitter_s: float,
    mqtt_settings: dict[str, Any] | None = None,
) -> AgentConfig:
    """`devices` devices round-robin over `communities` communities; community c lives on
    simulator c % len(sims)."""
    device_list = []
    for i in range(devices):
        c = i % communities
        sim = sims[c % len(sims)]
        device_list.append(
            {
                "name": f"{name}-{i + 1:04d}",
                "address": f"{sim.host}:{sim.port}",
                "credentials": community(c),
                "room": "bench",
                "row": f"R{i // 400 + 1:02d}",
                "rack": f"A{i // 2 % 200 + 1:03d}",
            }
        )
    config = AgentConfig.model_validate(
        {
            "agent": {"name": name, "site": "bench"},
            "mqtt": {"host": mqtt.host, "port": mqtt.port, **(mqtt_settings or {})},
            "defaults": {"interval_s": interval_s, "jitter_s": jitter_s},
            "credentials": {
                community(c): {"community": community(c)} for c in range(min(devices, communities))
            },
            "devices": device_list,
        }
    )
    problems = config.problems()
    if problems:
        raise SystemExit(f"agent config: {problems}")
    return config


@dataclass
class Totals:
    ok: int
    failed: int
    overruns: int
    samples: int
    max_duration_s: float


def totals(agent: Agent) -> Totals:
    stats = [poller.stats for poller in agent.pollers.values()]
    return Totals(
        sum(s.polls_ok for s in stats),
        sum(s.polls_failed for s in stats),
        sum(s.overruns for s in stats),
        sum(s.samples_emitted for s in stats),
        max((s.last_duration_s for s in stats), default=0.0),
    )


async def run_agent(agent: Agent, body: Callable[[], Awaitable[None]]) -> None:
    """Run the agent while `body` runs, then stop it as SIGTERM would."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="agent")
    try:
        await body()
    finally:
        stop.set()
        await task


async def wait_for_rounds(agent: Agent, rounds: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while min(p.stats.polls_ok + p.stats.polls_failed for p in agent.pollers.values()) < rounds:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


async def rss_phase(
    args: argparse.Namespace, sims: list[Running], mqtt: Running, interval_s: float
) -> dict[str, Any]:
    found: dict[str, Any] = {"interval_s": interval_s, "rss_before_mib": status_mib("VmRSS")}
    config = agent_config(
        "rss", args.rss_devices, args.devices, sims, mqtt, interval_s, args.jitter, mqtt_args(args)
    )
    agent = Agent(config)
    found["rss_built_mib"] = status_mib("VmRSS")
    rounds: list[tuple[int, float, Totals]] = []

    async def body() -> None:
        for n in range(1, args.rss_rounds + 1):
            if not await wait_for_rounds(agent, n, n * interval_s + args.warmup_limit):
                rounds.append((n, status_mib("VmRSS"), totals(agent)))
                found["note"] = f"not every device finished poll {n} in time"
                return
            rounds.append((n, status_mib("VmRSS"), totals(agent)))

    await run_agent(agent, body)
    found["rounds"] = rounds
    found["rss_stopped_mib"] = status_mib("VmRSS")
    found["hwm_mib"] = status_mib("VmHWM")
    found["final"] = totals(agent)
    return found


async def scale_phase(
    args: argparse.Namespace, sims: list[Running], mqtt: Running
) -> dict[str, Any]:
    config = agent_config(
        "scale", args.devices, args.devices, sims, mqtt, args.interval, args.jitter, mqtt_args(args)
    )
    agent = Agent(config)
    found: dict[str, Any] = {}

    async def body() -> None:
        # Every device's first (walking) poll, and at least one interval.
        started = time.monotonic()
        found["warmed_up"] = await wait_for_rounds(agent, 1, args.warmup_limit)
        await asyncio.sleep(max(0.0, args.interval + args.jitter + 1 - time.monotonic() + started))
        found["warmup_s"] = time.monotonic() - started
        before, cpu0, waited0 = totals(agent), time.process_time(), runqueue_wait_s()
        sim0 = sum(stat_cpu_seconds(sim.process.pid) for sim in sims)
        mqtt0, wall0 = stat_cpu_seconds(mqtt.process.pid), time.perf_counter()
        await asyncio.sleep(args.duration)
        after, cpu1 = totals(agent), time.process_time()
        found["window_s"] = time.perf_counter() - wall0
        found["cpu_s"] = cpu1 - cpu0
        found["runqueue_wait_s"] = runqueue_wait_s() - waited0
        found["snmpsim_cpu_s"] = sum(stat_cpu_seconds(sim.process.pid) for sim in sims) - sim0
        found["mosquitto_cpu_s"] = stat_cpu_seconds(mqtt.process.pid) - mqtt0
        found["window"] = Totals(
            after.ok - before.ok,
            after.failed - before.failed,
            after.overruns - before.overruns,
            after.samples - before.samples,
            after.max_duration_s,
        )

    started = time.perf_counter()
    await run_agent(agent, body)
    found["run_s"] = time.perf_counter() - started
    found["final"] = totals(agent)
    found["published_lines"] = agent.publisher.stats.published_lines
    found["dropped_lines"] = agent.publisher.stats.dropped_lines
    found["queued_lines"] = agent.publisher.queued_lines
    found["encode_errors"] = agent.encode_errors
    found["unrouted_publishes"] = agent.publisher.stats.unrouted_publishes
    found["backpressure_waits"] = agent.publisher.stats.backpressure_waits
    found["failures"] = sum((p.stats.failures for p in agent.pollers.values()), Counter())
    found["overflow_lines"] = agent.publisher.stats.overflow_lines
    found["published_batches"] = agent.publisher.stats.published_batches
    found["rss_mib"] = status_mib("VmRSS")
    return found


def mqtt_args(args: argparse.Namespace) -> dict[str, Any]:
    """The agent's mqtt settings the command line names (the rest: the agent's defaults)."""
    names = ("max_batch_lines", "max_inflight", "max_queue_lines", "compression", "spool_dir")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def pin(args: argparse.Namespace, pids: list[int]) -> None:
    """The agent (this process) on --agent-cpu; `pids` (simulator, broker, subscriber) on the
    other CPUs, so that nothing else runs on the agent's core."""
    if args.agent_cpu is None:
        return
    others = os.sched_getaffinity(0) - {args.agent_cpu}
    for pid in pids:
        os.sched_setaffinity(pid, others)
    os.sched_setaffinity(0, {args.agent_cpu})
    print(f"agent pinned to CPU {args.agent_cpu}; simulator, Mosquitto, subscriber on {others}")


# --- main ----------------------------------------------------------------------------------------


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """On uvloop, as `rackwatch agent` runs."""
    import uvloop

    return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200, help="simulated PDUs polled")
    parser.add_argument("--interval", type=float, default=15.0, help="poll interval, s")
    parser.add_argument("--jitter", type=float, default=1.0, help="jitter per tick, s")
    parser.add_argument("--duration", type=float, default=60.0, help="measured window, s")
    parser.add_argument("--snmpsim-processes", type=int, default=2)
    parser.add_argument("--rss-devices", type=int, default=1000)
    parser.add_argument("--rss-rounds", type=int, default=2, help="polls per device before RSS")
    parser.add_argument("--recording", type=Path, default=RECORDINGS / "apc_ap8959eu3.snmprec")
    parser.add_argument(
        "--warn-sim-varbinds",
        type=float,
        default=4000,
        help="warn above this many wire varbinds/s per snmpsim process (it serves ~6,000)",
    )
    parser.add_argument(
        "--max-sim-varbinds",
        type=float,
        default=5000,
        help="refuse above this many wire varbinds/s per snmpsim process",
    )
    parser.add_argument("--force", action="store_true", help="run even if snmpsim is overloaded")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument(
        "--simulator",
        choices=("snmpsim", "responder"),
        default="snmpsim",
        help="responder: bench/snmp_responder.py, one cached process for any number of PDUs",
    )
    parser.add_argument("--agent-cpu", type=int, help="pin the agent to this CPU, the rest off it")
    parser.add_argument("--max-batch-lines", type=int, help="agent mqtt.max_batch_lines")
    parser.add_argument("--max-inflight", type=int, help="agent mqtt.max_inflight")
    parser.add_argument("--max-queue-lines", type=int, help="agent mqtt.max_queue_lines")
    parser.add_argument("--compression", choices=("none", "gzip"), help="agent mqtt.compression")
    parser.add_argument("--spool", action="store_true", help="give the agent an on-disk spool")
    parser.add_argument(
        "--warmup-limit", type=float, default=300, help="most s to wait for every first poll"
    )
    args = parser.parse_args()
    responder = args.simulator == "responder"
    sims_n = 1 if responder else args.snmpsim_processes

    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-scale-") as tmp:
        workdir = Path(tmp)
        args.spool_dir = str(workdir / "spool") if args.spool else None
        data_dirs = [] if responder else [workdir / f"data-{s}" for s in range(sims_n)]
        for directory in data_dirs:
            directory.mkdir()
            for c in range(args.devices):
                if data_dirs[c % sims_n] == directory:
                    shutil.copyfile(args.recording, directory / f"{community(c)}.snmprec")
        services: list[ServiceRunning] = []
        sims: list[Running] = []
        try:
            if responder:
                sims.append(snmp_responder.start(args.recording))
            for s, directory in enumerate(data_dirs):
                sims.append(localservices.start_snmpsim(directory, workdir / f"snmpsim-{s}"))
                services.append(sims[-1])  # type: ignore[arg-type]
            mqtt = localservices.start_mosquitto(workdir / "mosquitto")
            services.append(mqtt)
            subscriber, received = start_subscriber(mqtt)
            assert subscriber.pid is not None
            pin(args, [*(sim.process.pid for sim in sims), mqtt.process.pid, subscriber.pid])

            cal: Calibration = run_loop(calibrate(sims[0], 5))
            wire_s, share = sim_load(cal, args.devices, args.interval, sims_n)
            print(
                f"recording {args.recording.name} (profile {cal.profile}): {cal.varbinds} "
                f"varbinds returned, {cal.wire_varbinds} on the wire, {cal.requests} requests "
                f"per poll; snmpsim {cal.snmpsim_cpu_s * 1e3:.0f} ms CPU per poll, "
                f"{cal.wall_s * 1e3:.0f} ms wall per poll alone"
            )
            print(
                f"scale phase: {args.devices} PDUs every {args.interval:g} s over {sims_n} "
                f"snmpsim processes = {args.devices / args.interval:.1f} polls/s, "
                f"{args.devices * cal.varbinds / args.interval:,.0f} varbinds/s returned; per "
                f"snmpsim {wire_s:,.0f} wire varbinds/s, about {share:.0%} of its core"
            )
            need = math.ceil(args.devices * cal.wire_varbinds / args.warn_sim_varbinds / sims_n)
            advice = f"--interval >= {need} or more --snmpsim-processes"
            if wire_s > args.max_sim_varbinds and not args.force and not responder:
                raise SystemExit(
                    f"refused: {wire_s:,.0f} > {args.max_sim_varbinds:,.0f} wire varbinds/s per "
                    f"snmpsim; use {advice} (or --force)"
                )
            if round(wire_s, -2) > args.warn_sim_varbinds and not responder:
                print(
                    f"warning: {wire_s:,.0f} > {args.warn_sim_varbinds:,.0f} wire varbinds/s per "
                    f"snmpsim; polls may wait on the simulator ({advice} avoids that)"
                )
            total_share = share * sims_n
            if total_share + 0.2 > (os.cpu_count() or 1) and not responder:
                print(
                    f"warning: the simulators need about {total_share:.1f} of "
                    f"{os.cpu_count()} cores"
                )
            rss: dict[str, Any] | None = None
            if not args.skip_rss:
                # As long an interval as the simulators need for 1,000 devices' first polls,
                # which walk every table.
                first = max(cal.first_poll_wire_varbinds, cal.wire_varbinds)
                rss_interval = args.interval
                if not responder:
                    rss_interval = max(
                        args.interval,
                        math.ceil(args.rss_devices * first / args.warn_sim_varbinds / sims_n),
                    )
                rss = run_loop(rss_phase(args, sims, mqtt, rss_interval))
            scale: dict[str, Any] | None = None
            if not args.skip_scale:
                received_before = received.value
                scale = run_loop(scale_phase(args, sims, mqtt))
                # QoS 1: what the agent saw acknowledged has reached the subscriber or is on
                # its way.
                deadline = time.monotonic() + 30
                published = scale["published_lines"]
                while received.value - received_before < published and time.monotonic() < deadline:
                    time.sleep(0.2)
                scale["received_lines"] = received.value - received_before
            subscriber.terminate()
        finally:
            for service in reversed(services):
                localservices.stop(service)
            for sim in sims:
                if isinstance(sim, snmp_responder.Running):
                    sim.stop()
    report(args, cal, rss, scale)


def report(
    args: argparse.Namespace,
    cal: Calibration,
    rss: dict[str, Any] | None,
    scale: dict[str, Any] | None,
) -> None:
    if scale is not None:
        report_scale(args, cal, scale)
    if rss is not None:
        report_rss(args, rss)


def report_scale(args: argparse.Namespace, cal: Calibration, scale: dict[str, Any]) -> None:
    window: Totals = scale["window"]
    final: Totals = scale["final"]
    cpu_per_poll = scale["cpu_s"] / window.ok if window.ok else float("nan")
    due = args.devices * scale["window_s"] / args.interval
    per_message = scale["published_lines"] / max(1, scale["published_batches"])
    print(
        f"\nScale: one agent process, {args.devices} PDUs (distinct communities), "
        f"interval {args.interval:g} s, jitter {args.jitter:g} s"
    )
    print("| metric | value |")
    print("| --- | ---: |")
    rows = [
        (
            "polls ok / failed / overruns, whole run",
            f"{final.ok} / {final.failed} / {final.overruns}",
        ),
        (
            f"polls ok / failed / overruns, measured {scale['window_s']:.0f} s window",
            f"{window.ok} / {window.failed} / {window.overruns}",
        ),
        ("polls/s in the window", f"{window.ok / scale['window_s']:.1f}"),
        (
            "agent runnable but waiting for its CPU (others' load), share of the window",
            f"{scale['runqueue_wait_s'] / scale['window_s']:.2f}",
        ),
        ("agent CPU in the window", f"{scale['cpu_s']:.2f} s"),
        ("**agent CPU per 1,000 polls**", f"**{cpu_per_poll * 1000:.2f} s**"),
        ("agent CPU per poll", f"{cpu_per_poll * 1e3:.2f} ms"),
        ("agent CPU per varbind returned", f"{cpu_per_poll / cal.varbinds * 1e6:.0f} µs"),
        (
            "**agent CPU / one core (the limit), in the window**",
            f"**{scale['cpu_s'] / scale['window_s']:.2f}**",
        ),
        ("**polls done / polls due, in the window**", f"**{window.ok / due:.3f}**"),
        ("**cores per 10,000 PDUs at 30 s**", f"**{cpu_per_poll * 10_000 / 30:.2f}**"),
        ("longest last poll (wall)", f"{final.max_duration_s * 1e3:.0f} ms"),
        ("samples emitted, whole run", f"{final.samples:,}"),
        (
            "lines published / dropped / left queued",
            f"{scale['published_lines']:,} / {scale['dropped_lines']} / {scale['queued_lines']}",
        ),
        ("lines the subscriber received", f"{scale['received_lines']:,}"),
        ("publishes answered 'no matching subscribers'", f"{scale['unrouted_publishes']}"),
        (
            "messages published (lines per message)",
            f"{scale['published_batches']:,} ({per_message:,.0f})",
        ),
        ("polls that waited for the publisher (back-pressure)", f"{scale['backpressure_waits']:,}"),
        ("lines spooled because the queue was full", f"{scale['overflow_lines']:,}"),
        ("warm-up (every device polled once)", f"{scale['warmup_s']:.0f} s"),
        ("encode errors", f"{scale['encode_errors']}"),
        (
            f"{args.simulator} CPU in the window (other processes)",
            f"{scale['snmpsim_cpu_s']:.1f} s ({scale['snmpsim_cpu_s'] / scale['window_s']:.0%})",
        ),
        ("Mosquitto CPU in the window", f"{scale['mosquitto_cpu_s']:.2f} s"),
        ("RSS after the scale run", f"{scale['rss_mib']:.0f} MiB"),
    ]
    for name, value in rows:
        print(f"| {name} | {value} |")
    problems = []
    if final.failed:
        reasons = ", ".join(f"{n} {reason}" for reason, n in scale["failures"].most_common())
        problems.append(f"{final.failed} failed polls ({window.failed} in the window; {reasons})")
    if not scale["warmed_up"]:
        problems.append("not every device finished its first poll")
    if scale["dropped_lines"]:
        problems.append(f"{scale['dropped_lines']} lines dropped")
    if scale["received_lines"] < scale["published_lines"]:
        problems.append("the subscriber received fewer lines than were published")
    print(f"INVALID: {'; '.join(problems)}" if problems else "valid: 0 failed polls, 0 dropped")


def report_rss(args: argparse.Namespace, rss: dict[str, Any]) -> None:
    print(
        f"\nRSS: {args.rss_devices} configured devices over {args.devices} communities, "
        f"interval {rss['interval_s']:g} s (sized for the simulators)"
    )
    print("| when | VmRSS |")
    print("| --- | ---: |")
    print(f"| before building the Agent | {rss['rss_before_mib']:.0f} MiB |")
    print(f"| Agent built ({args.rss_devices} devices) | {rss['rss_built_mib']:.0f} MiB |")
    for n, mib, t in rss["rounds"]:
        print(
            f"| every device polled {n}x ({t.ok} ok, **{t.failed} failed**, {t.overruns} overruns) "
            f"| **{mib:.0f} MiB** |"
        )
    print(f"| after stop | {rss['rss_stopped_mib']:.0f} MiB |")
    print(f"| peak (VmHWM) | {rss['hwm_mib']:.0f} MiB |")
    print("target: <= 150 MB with 1,000 devices")
    if "note" in rss:
        print(f"note: {rss['note']}")


if __name__ == "__main__":
    main()
