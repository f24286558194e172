"""What one NVML poll costs per GPU, as ratios to two peers measured in the same run:

1. raw: the very NVML calls the agent's poll made (recorded from one poll), made again directly in
   a loop, each one once; target: the agent's poll <= 1.1x of that;
2. nvidia-smi: `nvidia-smi --query-gpu=<the same readings> --format=csv,noheader,nounits` run as a
   subprocess, which is what the usual exporters shell out to; target <= 0.1x.

    python bench/bench_nvml.py [--polls 200] [--smi-runs 20] [--json results.json]
                               [--calls calls.json]

Two polls are measured: the usual one, and the one that also reads the energy counter (a 3 ms
call on an H100, made once per `energy_interval_s`, 60 s by default: one poll in six at the
default 10 s). nvidia-smi's query has no energy counter, so the usual poll reads the same things
it does; the mean poll at the default intervals is reported beside it.

`--calls` also writes each NVML call of a first poll with what it answered (value or NVML error
name) and its mean time in microseconds: a capture from real hardware, and the cost of each call.

A third poll reads the profiling counters every poll (`profiling_interval_s` 0: GPM, encoder and
decoder use, NVLink bytes; agent/accelerators/nvml_profiling.py), reported as a ratio to the
usual poll. The agent takes a GPM sample at most every 0.1 s (NVML's GPM refresh), so in these
back-to-back polls most take none: the GPM calls' own cost is what `--profiling` reports.
`--profiling FILE` writes those calls' real answers (MIG mode, GPM support, nvmlGpmSampleGet,
the GPM metrics between two samples 1 s apart with each metric's own return code,
encoder/decoder use, NVLink byte counters) and each one's mean cost, in the `--calls` format,
for tests/data/nvml/.

The agent's poll is measured as the agent runs it: `await NvmlSource.collect()` on the agent's
event loop (uvloop where installed), the NVML calls in a worker thread; wall-clock time and the
process's CPU time (all threads) both. Slow calls (PCIe throughput, process list) are off, as by
default. Needs an NVIDIA GPU and its driver: without them it says why and exits 2. `--fake` runs
the same steps against tests/nvml_fake.py and its one-H100 capture (no GPU, no nvidia-smi;
numbers meaningless), to check the bench itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pynvml

from agent.accelerators.nvml import Nvml, NvmlSource, NvmlUnavailable
from agent.accelerators.nvml_profiling import (
    ALL_LINKS,
    CODEC_CALLS,
    GPM_METRICS,
    NVLINK_THROUGHPUT,
    metrics_request,
)
from rackwatch.cli import run_async

# nvidia-smi's names for the readings the agent's fast poll takes (identity included, as the
# agent also has it on every sample). Names this nvidia-smi does not know are left out and listed.
SMI_FIELDS = (
    "uuid",
    "serial",
    "name",
    "pci.bus_id",
    "driver_version",
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.total",
    "memory.reserved",
    "power.draw",
    "enforced.power.limit",
    "temperature.gpu",
    "temperature.memory",
    "clocks.sm",
    "clocks.mem",
    "pstate",
    "clocks_event_reasons.active",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.corrected.aggregate.total",
    "ecc.errors.uncorrected.aggregate.total",
    "remapped_rows.correctable",
    "remapped_rows.uncorrectable",
    "remapped_rows.pending",
    "remapped_rows.failure",
    "pcie.link.gen.gpucurrent",
    "pcie.link.width.current",
    "mig.mode.current",
)


Calls = list[tuple[Callable[..., Any], tuple[Any, ...]]]  # NVML functions and their arguments


class Recorder:
    """Passes every NVML call through and writes down the function and its arguments."""

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml
        self.calls: Calls = []
        self.recording = True

    def __getattr__(self, name: str) -> Any:
        function = getattr(self._nvml, name)
        if not callable(function) or not name.startswith("nvml"):
            return function

        def recorded(*args: Any) -> Any:
            if self.recording:
                self.calls.append((function, args))
            return function(*args)

        return recorded


def call_name(function: Callable[..., Any]) -> str:
    return getattr(function, "__name__", repr(function))


def plain(value: Any, handles: dict[int, str]) -> Any:
    """An NVML answer as JSON: structures as dicts, handles as "gpu<index>", bytes as text."""
    if isinstance(value, ctypes.Structure | ctypes.Union):
        return {name: plain(getattr(value, name), handles) for name, *_ in value._fields_}
    if isinstance(value, ctypes.Array | list | tuple):
        return [plain(item, handles) for item in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, ctypes._Pointer):  # a device handle
        return handles.get(ctypes.addressof(value.contents), "handle")
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return repr(value)


def answers(calls: Calls, nvml: Nvml, gpus: int, loops: int) -> list[dict[str, Any]]:
    """Each call once more with its answer, then timed alone over `loops` runs."""
    handles = {
        ctypes.addressof(nvml.nvmlDeviceGetHandleByIndex(index).contents): f"gpu{index}"
        for index in range(gpus)
    }
    captured = []
    for function, args in calls:
        name = call_name(function)
        if name.startswith(("nvmlInit", "nvmlShutdown")):
            continue
        entry: dict[str, Any] = {"call": name, "args": plain(args, handles)}
        try:
            entry["answer"] = plain(function(*args), handles)
        except pynvml.NVMLError as exc:
            entry["error"] = type(exc).__name__
        started = time.perf_counter()
        for _ in range(loops):
            with contextlib.suppress(pynvml.NVMLError):
                function(*args)
        entry["mean_us"] = round((time.perf_counter() - started) / loops * 1e6, 2)
        captured.append(entry)
    return captured


def raw_once(calls: Calls) -> None:
    for function, args in calls:
        with contextlib.suppress(pynvml.NVMLError):  # an error costs the agent no more
            function(*args)


async def agent_polls(source: NvmlSource, polls: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads) per poll, as the agent awaits it."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(polls):
        await source.collect()
    return (time.perf_counter() - started) / polls, (time.process_time() - cpu) / polls


def smi_fields(smi: str) -> tuple[list[str], list[str]]:
    """The SMI_FIELDS this nvidia-smi accepts, and those it does not."""
    if _smi(smi, SMI_FIELDS).returncode == 0:
        return list(SMI_FIELDS), []
    known = [name for name in SMI_FIELDS if _smi(smi, (name,)).returncode == 0]
    return known, [name for name in SMI_FIELDS if name not in known]


def _smi(smi: str, fields: tuple[str, ...] | list[str]) -> subprocess.CompletedProcess[bytes]:
    query = f"--query-gpu={','.join(fields)}"
    return subprocess.run(
        [smi, query, "--format=csv,noheader,nounits"], capture_output=True, check=False
    )


def smi_runs(smi: str, fields: list[str], runs: int) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        _smi(smi, fields).check_returncode()
    return (time.perf_counter() - started) / runs


POLL_S, ENERGY_S = 10.0, 60.0  # the agent's default intervals (agent/accelerators/config.py)


def measure(
    nvml: Nvml, energy_interval_s: float, polls: int, profiling_interval_s: float | None = None
) -> tuple[Calls, dict[str, Any]]:
    """A source that reads the energy counter every `energy_interval_s`: the calls of its first
    poll and of a steady one (through a Recorder), then, with a second source on the bare NVML,
    that steady poll made `polls` times three ways: the raw calls alone, the agent's poll in this
    thread (its own code's cost), and the agent's poll as it runs (the worker-thread hop too)."""
    recorder = Recorder(nvml)
    recorded = NvmlSource(
        {"host": "bench"},
        nvml=recorder,
        energy_interval_s=energy_interval_s,
        profiling_interval_s=profiling_interval_s,
    )
    asyncio.run(recorded.collect())  # starts NVML, learns what each GPU supports
    first_calls, recorder.calls = recorder.calls, []
    asyncio.run(recorded.collect())
    recorder.recording = False
    calls = recorder.calls
    gpus = recorded.gpus
    source = NvmlSource(
        {"host": "bench"},
        nvml=nvml,
        energy_interval_s=energy_interval_s,
        profiling_interval_s=profiling_interval_s,
    )
    asyncio.run(source.collect())
    raw_once(calls)
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(polls):
        raw_once(calls)
    raw_s = (time.perf_counter() - started) / polls
    raw_cpu_s = (time.process_time() - cpu) / polls
    started = time.perf_counter()
    for _ in range(polls):
        source.poll(0)
    in_thread_s = (time.perf_counter() - started) / polls
    agent_s, agent_cpu_s = run_async(agent_polls(source, polls))  # on the agent's event loop
    asyncio.run(source.close())
    asyncio.run(recorded.close())
    return (
        first_calls,
        {
            "gpus": gpus,
            "driver": recorded.driver_version,
            "nvml_calls_per_poll": len(calls),
            "agent_poll_per_gpu_ms": agent_s / gpus * 1e3,
            "agent_poll_in_thread_per_gpu_ms": in_thread_s / gpus * 1e3,
            "raw_calls_per_gpu_ms": raw_s / gpus * 1e3,
            "agent_vs_raw": agent_s / raw_s,
            "agent_in_thread_vs_raw": in_thread_s / raw_s,
            "thread_hop_ms": (agent_s - in_thread_s) * 1e3,
            "agent_cpu_per_gpu_ms": agent_cpu_s / gpus * 1e3,
            "raw_cpu_per_gpu_ms": raw_cpu_s / gpus * 1e3,
            "agent_cpu_vs_raw_cpu": agent_cpu_s / raw_cpu_s,
        },
    )


def timed_us(function: Callable[..., Any], *args: Any, loops: int = 20) -> float:
    started = time.perf_counter()
    for _ in range(loops):
        with contextlib.suppress(pynvml.NVMLError):
            function(*args)
    return round((time.perf_counter() - started) / loops * 1e6, 2)


def sample_answer(nvml: Nvml, handle: Any, sample: Any) -> dict[str, Any]:
    """nvmlGpmSampleGet's answer as `--calls` writes one (the sample itself is opaque)."""
    try:
        nvml.nvmlGpmSampleGet(handle, sample)
    except pynvml.NVMLError as exc:
        return {"error": type(exc).__name__}
    return {"answer": "sample"}


def profiling_answers(nvml: Nvml, gpus: int) -> list[dict[str, Any]]:
    """The profiling calls' real answers and mean cost per GPU, as `--calls` writes calls."""
    captured: list[dict[str, Any]] = []

    def entry(call: str, args: list[Any], answer: Any, cost_us: float) -> None:
        captured.append({"call": call, "args": args, **answer, "mean_us": cost_us})

    def answered(function: Callable[..., Any], *args: Any) -> dict[str, Any]:
        try:
            return {"answer": plain(function(*args), {})}
        except pynvml.NVMLError as exc:
            return {"error": type(exc).__name__}

    for index in range(gpus):
        gpu = f"gpu{index}"
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        for _, call in CODEC_CALLS:
            function = getattr(nvml, call)
            entry(call, [gpu], answered(function, handle), timed_us(function, handle))
        scoped = [(field_id, ALL_LINKS) for field_id in NVLINK_THROUGHPUT]
        values = answered(nvml.nvmlDeviceGetFieldValues, handle, scoped)
        cost = timed_us(nvml.nvmlDeviceGetFieldValues, handle, scoped)
        entry("nvmlDeviceGetFieldValues", [gpu, scoped], values, cost)
        mig = answered(nvml.nvmlDeviceGetMigMode, handle)  # GPM is per GPU instance under MIG
        entry("nvmlDeviceGetMigMode", [gpu], mig, timed_us(nvml.nvmlDeviceGetMigMode, handle))
        support = answered(nvml.nvmlGpmQueryDeviceSupport, handle)
        cost = timed_us(nvml.nvmlGpmQueryDeviceSupport, handle)
        entry("nvmlGpmQueryDeviceSupport", [gpu], support, cost)
        if not support.get("answer", {}).get("isSupportedDevice"):
            continue
        first, second = nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()
        try:
            # A GPU that gives no sample says why (MIG on, ...): that answer is the capture.
            sampled = sample_answer(nvml, handle, first)
            if "error" not in sampled:
                time.sleep(1.0)
                started = time.perf_counter()
                sampled = sample_answer(nvml, handle, second)
                sampled["mean_us"] = round((time.perf_counter() - started) * 1e6, 2)
            entry("nvmlGpmSampleGet", [gpu], sampled, sampled.pop("mean_us", 0.0))
            if "error" in sampled:
                continue
            request = metrics_request(first, second)
            started = time.perf_counter()
            metrics = answered(nvml.nvmlGpmMetricsGet, request)
            cost = round((time.perf_counter() - started) * 1e6, 2)
            if "answer" in metrics:
                metrics["answer"] = [
                    {
                        "metricId": request.metrics[slot].metricId,
                        "nvmlReturn": request.metrics[slot].nvmlReturn,
                        "value": request.metrics[slot].value,
                    }
                    for slot in range(len(GPM_METRICS))
                ]
            entry("nvmlGpmMetricsGet", [gpu, "1 s apart"], metrics, cost)
        finally:
            nvml.nvmlGpmSampleFree(first)
            nvml.nvmlGpmSampleFree(second)
    return captured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--smi-runs", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--calls", type=Path, help="write each call, its answer and its cost here")
    parser.add_argument("--fake", action="store_true", help="use the test fake (no GPU)")
    parser.add_argument(
        "--profiling", type=Path, help="write the profiling calls' answers and cost here"
    )
    args = parser.parse_args()

    nvml: Nvml = pynvml
    if args.fake:
        root = Path(__file__).resolve().parent.parent
        sys.path.insert(0, str(root))  # tests/ is not installed
        from tests.nvml_fake import FakeNvml

        data = root / "tests/data/nvml"
        calls_json = json.loads((data / "h100-single-nvml-calls.json").read_text())
        nvml = FakeNvml((data / "h100-single-nvidia-smi-q.txt").read_text(), nvml_calls=calls_json)
    try:
        first_calls, usual = measure(nvml, ENERGY_S, args.polls)
    except NvmlUnavailable as exc:
        print(f"bench_nvml: no NVIDIA GPU to measure: {exc}", file=sys.stderr)
        return 2
    _, with_energy = measure(nvml, 0.0, args.polls)
    _, with_profiling = measure(nvml, ENERGY_S, args.polls, profiling_interval_s=0.0)
    gpus = usual["gpus"]
    share = POLL_S / ENERGY_S  # of polls that read the energy counter
    mean_ms = (1 - share) * usual["agent_poll_per_gpu_ms"] + share * with_energy[
        "agent_poll_per_gpu_ms"
    ]
    nvml.nvmlInit()
    model = nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(0)) if gpus else ""
    results: dict[str, Any] = {
        "gpus": gpus,
        "model": model,
        "driver": usual["driver"],
        "usual_poll": usual,
        "poll_with_energy": with_energy,
        "poll_with_profiling": with_profiling,
        "profiling_poll_vs_usual": with_profiling["agent_poll_per_gpu_ms"]
        / usual["agent_poll_per_gpu_ms"],
        "mean_poll_per_gpu_ms_at_defaults": mean_ms,
    }
    if args.calls:
        captured = answers(first_calls, nvml, gpus, loops=20)
        args.calls.write_text(json.dumps(captured, indent=1) + "\n", encoding="utf-8")
        slowest = sorted(captured, key=lambda entry: -entry["mean_us"])[:6]
        results["slowest_calls_us"] = {entry["call"]: entry["mean_us"] for entry in slowest}
    if args.profiling:
        profiled = profiling_answers(nvml, gpus)
        args.profiling.write_text(json.dumps(profiled, indent=1) + "\n", encoding="utf-8")
        results["profiling_calls_us"] = {
            f"{entry['call']} {entry['args'][0]}": entry["mean_us"] for entry in profiled
        }
    nvml.nvmlShutdown()
    smi = shutil.which("nvidia-smi")
    if smi is not None and not args.fake:
        fields, unknown = smi_fields(smi)
        smi_ms = smi_runs(smi, fields, args.smi_runs) / gpus * 1e3
        results |= {
            "nvidia_smi_per_gpu_ms": smi_ms,
            "usual_poll_vs_nvidia_smi": usual["agent_poll_per_gpu_ms"] / smi_ms,
            "mean_poll_vs_nvidia_smi": mean_ms / smi_ms,
            "poll_with_energy_vs_nvidia_smi": with_energy["agent_poll_per_gpu_ms"] / smi_ms,
            "nvidia_smi_fields": fields,
            "nvidia_smi_unknown_fields": unknown,
        }

    print(f"{gpus} x {model}, driver {results['driver']}")
    polls = (
        ("usual poll", usual),
        ("poll with energy", with_energy),
        ("poll w/ profiling", with_profiling),
    )
    for label, poll in polls:
        calls = poll["nvml_calls_per_poll"]
        print(
            f"{label:17} {poll['agent_poll_per_gpu_ms']:8.3f} ms per GPU ({calls} calls);"
            f" raw calls {poll['raw_calls_per_gpu_ms']:8.3f} ms:"
            f" agent / raw = {poll['agent_vs_raw']:.3f}x (target <= 1.1x)"
        )
        print(
            f"  the same poll in the calling thread {poll['agent_poll_in_thread_per_gpu_ms']:.3f}"
            f" ms per GPU: {poll['agent_in_thread_vs_raw']:.3f}x raw; the hop to the worker"
            f" thread and back {poll['thread_hop_ms']:.3f} ms per poll (per host, not per GPU)"
        )
        print(
            f"  CPU time: agent {poll['agent_cpu_per_gpu_ms']:.3f} ms, raw calls"
            f" {poll['raw_cpu_per_gpu_ms']:.3f} ms per GPU: {poll['agent_cpu_vs_raw_cpu']:.3f}x"
        )
    print(f"mean poll at the default intervals (energy 1 poll in {1 / share:.0f}) {mean_ms:.3f} ms")
    print(
        f"profiling every poll / usual poll = {results['profiling_poll_vs_usual']:.3f}x"
        " (encoder/decoder, NVLink bytes, and GPM where the GPU has it, at most every 0.1 s)"
    )
    if "profiling_calls_us" in results:
        calls = ", ".join(f"{k} {v:.0f} us" for k, v in results["profiling_calls_us"].items())
        print(f"profiling calls: {calls}")
    if "nvidia_smi_per_gpu_ms" in results:
        print(f"nvidia-smi        {results['nvidia_smi_per_gpu_ms']:8.3f} ms per GPU")
        for key in ("usual_poll", "mean_poll", "poll_with_energy"):
            ratio = results[f"{key}_vs_nvidia_smi"]
            print(f"  {key.replace('_', ' ')} / nvidia-smi = {ratio:.4f}x (target <= 0.1x)")
        if unknown:
            print(f"  (fields this nvidia-smi lacks: {', '.join(unknown)})")
    else:
        print("nvidia-smi        not measured (not found, or --fake)")
    if "slowest_calls_us" in results:
        slow = ", ".join(f"{name} {us:.0f} us" for name, us in results["slowest_calls_us"].items())
        print(f"slowest calls: {slow}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
