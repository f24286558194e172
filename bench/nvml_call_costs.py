"""What single NVML calls cost on this machine's GPU 0, each timed alone (min, median, max over
`--runs`), with the value it answered: the measurements behind which readings the agent's fast
poll makes and which it leaves to a slower interval (docs/benchmarks.md, "NVML poll per GPU").

    python bench/nvml_call_costs.py [--runs 50]

Also times `nvidia-smi --query-gpu=uuid` (the tool's start-up alone) for comparison.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pynvml


def timed(call: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    try:
        answer = call()
    except pynvml.NVMLError as exc:
        return [], type(exc).__name__
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e6)
    return times, answer


def field(handle: Any, *ids: int) -> Callable[[], Any]:
    def read() -> Any:
        values = pynvml.nvmlDeviceGetFieldValues(handle, list(ids))
        return [(value.fieldId, value.nvmlReturn, value.value.ullVal) for value in values]

    return read


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    pynvml.nvmlInit()
    gpu = pynvml.nvmlDeviceGetHandleByIndex(0)
    calls: dict[str, Callable[[], Any]] = {
        "nvmlDeviceGetTotalEnergyConsumption": lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(
            gpu
        ),
        "FieldValues TOTAL_ENERGY_CONSUMPTION": field(
            gpu, pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION
        ),
        "FieldValues ENERGY": field(gpu, pynvml.NVML_FI_DEV_ENERGY),
        "FieldValues MEMORY_TEMP": field(gpu, pynvml.NVML_FI_DEV_MEMORY_TEMP),
        "FieldValues PCIE_REPLAY_COUNTER": field(gpu, pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER),
        "FieldValues MEMORY_TEMP+PCIE_REPLAY": field(
            gpu, pynvml.NVML_FI_DEV_MEMORY_TEMP, pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER
        ),
        "FieldValues MEMORY_TEMP+PCIE_REPLAY+TOTAL_ENERGY": field(
            gpu,
            pynvml.NVML_FI_DEV_MEMORY_TEMP,
            pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER,
            pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
        ),
        "nvmlDeviceGetPowerUsage": lambda: pynvml.nvmlDeviceGetPowerUsage(gpu),
        "nvmlDeviceGetMigMode": lambda: pynvml.nvmlDeviceGetMigMode(gpu),
        "nvmlDeviceGetCurrPcieLinkWidth": lambda: pynvml.nvmlDeviceGetCurrPcieLinkWidth(gpu),
        "nvmlDeviceGetUtilizationRates": lambda: pynvml.nvmlDeviceGetUtilizationRates(gpu),
    }
    print(f"{'call':52} {'min':>9} {'median':>9} {'max':>9}  answer (times in us)")
    for name, call in calls.items():
        times, answer = timed(call, args.runs)
        if times:
            low, mid, high = min(times), statistics.median(times), max(times)
            print(f"{name:52} {low:9.1f} {mid:9.1f} {high:9.1f}  {str(answer)[:60]}")
        else:
            print(f"{name:52} {'-':>9} {'-':>9} {'-':>9}  {answer}")
    pynvml.nvmlShutdown()
    smi = shutil.which("nvidia-smi")
    if smi:
        started = time.perf_counter()
        for _ in range(10):
            subprocess.run([smi, "--query-gpu=uuid", "--format=csv"], capture_output=True)
        print(f"nvidia-smi --query-gpu=uuid: {(time.perf_counter() - started) / 10 * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
