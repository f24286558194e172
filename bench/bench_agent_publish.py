"""The agent's publisher alone: lines/s and CPU per line, new settings against the old, same run.

    .venv/bin/python bench/bench_agent_publish.py [--lines 200000] [--repeat 3] [--busy-tasks 2000]
        [--agent-cpu 0]

Real lines (one poll of the APC AP8959EU3 recording through bench/snmp_responder.py, encoded
as the agent does, repeated under 5,000 device names) go through agent.publisher.Publisher to a
private Mosquitto, and a subscriber in its own process counts what arrives. Each setting runs
on an idle event loop and on a busy one: --busy-tasks coroutines that each burn ~0.2 ms of CPU
and yield, over and over, as thousands of polls do in a loaded agent (the case of issue 21,
where a publisher that waits for one PUBACK at a time got a turn too seldom). The peer is the
publisher's old setting (1 publish in flight, 2,000 lines a message, plain) measured in the same
run; results are ratios against it, min/median/max of --repeat runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from bench import snmp_responder
except ModuleNotFoundError:  # run as bench/bench_agent_publish.py: the repo root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import snmp_responder
from agent.config import MqttSettings
from agent.publisher import Publisher
from agent.snmp import SnmpDevice, SnmpTarget
from bench.bench_agent_scale import RECORDINGS, start_subscriber
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.lineproto import encode
from telemetry.payload import encode_lines
from telemetry.sample import Sample

SETTINGS: dict[str, dict[str, Any]] = {
    "old: 1 in flight, 2,000 lines, plain": {"max_inflight": 1, "max_batch_lines": 2000},
    "8 in flight, 2,000 lines, plain": {"max_inflight": 8, "max_batch_lines": 2000},
    "8 in flight, 5,000 lines, plain": {"max_inflight": 8, "max_batch_lines": 5000},
    "8 in flight, 5,000 lines, gzip": {
        "max_inflight": 8,
        "max_batch_lines": 5000,
        "compression": "gzip",
    },
}


async def real_lines(count: int) -> list[str]:
    """`count` lines of real PDU polls: one poll's samples under many device names."""
    responder = snmp_responder.start(RECORDINGS / "apc_ap8959eu3.snmprec")
    try:
        device = SnmpDevice("pdu", SnmpTarget(responder.host, responder.port, "public"), {})
        samples = await device.collect()
    finally:
        responder.stop()
    lines: list[str] = []
    n = 0
    while len(lines) < count:
        n += 1
        i = n % 5000
        where = {  # as an agent tags a device (agent.service.location_tags)
            "site": "qiyang-a1",
            "room": "hall-1",
            "row": f"R{i // 400 + 1:02d}",
            "rack": f"A{i // 2 % 200 + 1:03d}",
            "device": f"pdu-{i:04d}",
        }
        lines += [
            encode(Sample(s.measurement, {**s.tags, **where}, s.fields, s.time_ns)) for s in samples
        ]
    return lines[:count]


async def busy(stop: asyncio.Event, spin_s: float = 0.0002) -> None:
    while not stop.is_set():
        until = time.perf_counter() + spin_s
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0)


async def one_run(
    mqtt: Running, received: Any, lines: list[str], extra: dict[str, Any], busy_tasks: int
) -> tuple[float, float]:
    """(lines/s from the first submit until the subscriber has them all, agent CPU µs/line)."""
    settings = MqttSettings(host=mqtt.host, port=mqtt.port, max_queue_lines=len(lines) * 2, **extra)
    publisher = Publisher(settings, "rackwatch/v1/bench/publish/metrics", "bench-publisher")
    task = asyncio.create_task(publisher.run())
    while not publisher.connected:  # noqa: ASYNC110 (a flag with no event to wait on)
        await asyncio.sleep(0.05)
    stop = asyncio.Event()
    burners = [asyncio.create_task(busy(stop)) for _ in range(busy_tasks)]
    before = received.value
    cpu0, wall0 = time.process_time(), time.perf_counter()
    publisher.submit(lines)
    while received.value - before < len(lines):  # noqa: ASYNC110 (a counter in another process)
        await asyncio.sleep(0.01)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    stop.set()
    await asyncio.gather(*burners)
    assert publisher.stats.dropped_lines == 0
    await publisher.close(task, timeout_s=5)
    # The burners' CPU is the same in every run of a scenario; per line it is their share.
    return len(lines) / wall, cpu / len(lines) * 1e6


def summary(values: list[float]) -> str:
    digits = ",.0f" if max(values) >= 100 else ",.3g"
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{low:{digits}} / {middle:{digits}} / {high:{digits}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--busy-tasks", type=int, default=2000)
    parser.add_argument("--agent-cpu", type=int, help="pin this process here, the rest off it")
    args = parser.parse_args()
    import uvloop

    lines = uvloop.run(real_lines(args.lines))
    plain = encode_lines(lines[:5000])
    packed = encode_lines(lines[:5000], "gzip")
    ratio = len(plain) / len(packed)
    print(
        f"{args.lines:,} lines, {sum(map(len, lines)) / len(lines):.0f} bytes each; a 5,000-line "
        f"message: {len(plain):,} bytes plain, {len(packed):,} gzip ({ratio:.1f}x)"
    )
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-publish-") as tmp:
        mqtt = localservices.start_mosquitto(Path(tmp) / "mosquitto")
        try:
            subscriber, received = start_subscriber(mqtt)
            if args.agent_cpu is not None:
                others = os.sched_getaffinity(0) - {args.agent_cpu}
                for pid in (mqtt.process.pid, subscriber.pid):
                    assert pid is not None
                    os.sched_setaffinity(pid, others)
                os.sched_setaffinity(0, {args.agent_cpu})
            results: dict[tuple[int, str], list[tuple[float, float]]] = {}
            for _ in range(args.repeat):  # interleaved, so that noise hits every setting alike
                for busy_tasks in (0, args.busy_tasks):
                    for name, extra in SETTINGS.items():
                        run = uvloop.run(one_run(mqtt, received, lines, extra, busy_tasks))
                        results.setdefault((busy_tasks, name), []).append(run)
            subscriber.terminate()
        finally:
            localservices.stop(mqtt)
    for busy_tasks in (0, args.busy_tasks):
        loop = "idle loop" if not busy_tasks else f"busy loop ({busy_tasks} spinning tasks)"
        print(f"\n{loop}; min / median / max of {args.repeat} runs")
        print("| setting | lines/s | vs old (median) | agent CPU µs/line | vs old (median) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        old = results[(busy_tasks, next(iter(SETTINGS)))]
        old_rate = statistics.median(r for r, _ in old)
        old_cpu = statistics.median(c for _, c in old)
        for name in SETTINGS:
            runs = results[(busy_tasks, name)]
            rates, cpus = [r for r, _ in runs], [c for _, c in runs]
            print(
                f"| {name} | {summary(rates)} | {statistics.median(rates) / old_rate:.2f}x | "
                f"{summary(cpus)} | {statistics.median(cpus) / old_cpu:.2f}x |"
            )


if __name__ == "__main__":
    main()
