"""What one NVML poll costs per GPU, as ratios to two peers measured in the same run:

1. raw: the very NVML calls the agent's poll made (recorded from one poll), made again directly in
   a loop, each one once; target: the agent's poll <= 1.1x of that;
2. nvidia-smi: `nvidia-smi --query-gpu=<the same readings> --format=csv,noheader,nounits` run as a
   subprocess, which is what the usual exporters shell out to; target <= 0.1x.

    python bench/bench_nvml.py [--polls 200] [--smi-runs 20] [--json results.json]

The agent's poll is measured as the agent runs it: `await NvmlSource.collect()` on an event loop,
the NVML calls in a worker thread. Slow calls (PCIe throughput, process list) are off, as by
default. Needs an NVIDIA GPU and its driver: without them it says why and exits 2. `--fake` runs
the same steps against tests/nvml_fake.py (no GPU, no nvidia-smi; numbers meaningless), to check
the bench itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


class Recorder:
    """Passes every NVML call through and writes down the function and its arguments."""

    def __init__(self, nvml: Nvml) -> None:
        self._nvml = nvml
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.recording = False

    def __getattr__(self, name: str) -> Any:
        function = getattr(self._nvml, name)
        if not callable(function) or not name.startswith("nvml"):
            return function

        def recorded(*args: Any) -> Any:
            if self.recording:
                self.calls.append((function, args))
            return function(*args)

        return recorded


def raw_once(calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    for function, args in calls:
        with contextlib.suppress(pynvml.NVMLError):  # an error costs the agent no more
            function(*args)


async def agent_polls(source: NvmlSource, polls: int) -> float:
    started = time.perf_counter()
    for _ in range(polls):
        await source.collect()
    return (time.perf_counter() - started) / polls


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--smi-runs", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--fake", action="store_true", help="use the test fake (no GPU)")
    args = parser.parse_args()

    nvml: Nvml = pynvml
    if args.fake:
        root = Path(__file__).resolve().parent.parent
        sys.path.insert(0, str(root))  # tests/ is not installed
        from tests.nvml_fake import FakeNvml

        capture = root / "tests/data/nvml/h100-nvidia-smi-q.txt"
        nvml = FakeNvml(capture.read_text(encoding="utf-8"))
    recorder = Recorder(nvml)
    source = NvmlSource({"host": "bench"}, nvml=recorder)
    try:
        asyncio.run(source.collect())  # starts NVML, learns what each GPU supports
    except NvmlUnavailable as exc:
        print(f"bench_nvml: no NVIDIA GPU to measure: {exc}", file=sys.stderr)
        return 2
    gpus = source.gpus
    recorder.recording = True
    asyncio.run(source.collect())
    recorder.recording = False
    calls = recorder.calls

    raw_once(calls)
    started = time.perf_counter()
    for _ in range(args.polls):
        raw_once(calls)
    raw_s = (time.perf_counter() - started) / args.polls
    agent_s = asyncio.run(agent_polls(source, args.polls))

    results: dict[str, Any] = {
        "gpus": gpus,
        "model": nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(0)) if gpus else "",
        "driver": source.driver_version,
        "nvml_calls_per_poll": len(calls),
        "agent_poll_per_gpu_ms": agent_s / gpus * 1e3,
        "raw_calls_per_gpu_ms": raw_s / gpus * 1e3,
        "agent_vs_raw": agent_s / raw_s,
    }
    smi = shutil.which("nvidia-smi")
    if smi is not None and not args.fake:
        fields, unknown = smi_fields(smi)
        smi_s = smi_runs(smi, fields, args.smi_runs)
        results |= {
            "nvidia_smi_per_gpu_ms": smi_s / gpus * 1e3,
            "agent_vs_nvidia_smi": agent_s / smi_s,
            "nvidia_smi_fields": fields,
            "nvidia_smi_unknown_fields": unknown,
        }
    asyncio.run(source.close())

    print(f"{gpus} x {results['model']}, driver {results['driver']}, {len(calls)} NVML calls")
    print(f"agent poll      {results['agent_poll_per_gpu_ms']:8.3f} ms per GPU")
    print(f"raw NVML calls  {results['raw_calls_per_gpu_ms']:8.3f} ms per GPU")
    print(f"  agent / raw        = {results['agent_vs_raw']:.3f}x (target <= 1.1x)")
    if "nvidia_smi_per_gpu_ms" in results:
        print(f"nvidia-smi      {results['nvidia_smi_per_gpu_ms']:8.3f} ms per GPU")
        print(f"  agent / nvidia-smi = {results['agent_vs_nvidia_smi']:.4f}x (target <= 0.1x)")
        if results["nvidia_smi_unknown_fields"]:
            print(f"  (fields this nvidia-smi lacks: {', '.join(unknown)})")
    else:
        print("nvidia-smi      not measured (not found, or --fake)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
