"""`rackwatch probe --nvml`: read this host's NVIDIA GPUs once through NVML and print what the
agent would send (every call, the slow ones included).

With `--output line-protocol`, stdout carries only line-protocol lines and `#` comments; problems
go to stderr. Exit status 1 when NVML cannot start (the message says why).
"""

from __future__ import annotations

import argparse
import socket
import sys

import pynvml

from agent.accelerators.nvml import Nvml, NvmlSource, NvmlUnavailable
from rackwatch.probe_output import print_samples


async def probe_nvml(args: argparse.Namespace, nvml: Nvml = pynvml) -> int:
    source = NvmlSource({"host": socket.gethostname()}, nvml=nvml, slow_interval_s=0.0)
    try:
        samples = await source.collect()
        gpus = source.gpus
    except NvmlUnavailable as exc:
        print(f"rackwatch probe: {exc}", file=sys.stderr)
        return 1
    finally:
        await source.close()
    print(f"# nvml: driver {source.driver_version}, {gpus} GPUs, {len(samples)} samples")
    print_samples(samples, args.output)
    return 0
