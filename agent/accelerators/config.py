"""The agent config's `accelerators:` section: which vendors' cards this host has, and where
the host stands (its samples carry the same location tags as the rack's PDUs)."""

from __future__ import annotations

import socket

from pydantic import Field

from telemetry.config import StrictModel


class NvidiaSettings(StrictModel):
    """NVIDIA GPUs through NVML (nvidia-ml-py; libnvidia-ml from the driver)."""

    # PCIe throughput (about 21 ms per direction per GPU) and process counts: this often, or
    # never when null. The fast calls run every `interval_s`.
    slow_interval_s: float | None = Field(default=None, gt=0)
    # The energy counter (a running total in joules; 3 ms per GPU on an H100, more than the rest
    # of a poll together): this often, or every poll when 0 or below `interval_s`.
    energy_interval_s: float = Field(default=60.0, ge=0)
    # Profiling counters (GPM on Hopper and later, encoder/decoder use, NVLink bytes;
    # agent/accelerators/nvml_profiling.py): this often, or never when null (the default until
    # their cost is measured on a GPU that has GPM).
    profiling_interval_s: float | None = Field(default=None, gt=0)
    events: bool = True  # XID and other critical errors through NVML's event API


class AscendSettings(StrictModel):
    """Huawei Ascend NPUs through `npu-smi` (docs/accelerators-ascend.md)."""

    command: str = "npu-smi"
    timeout_s: float = Field(default=10.0, gt=0)
    usages: bool = False  # `npu-smi info -t usages` per NPU per poll (memory bandwidth, AI CPU)
    # Once per details_interval_s, per NPU: `npu-smi info -t ecc` (HBM ECC counters) and
    # `npu-smi info -t common` and `-t memory` (the AI Core and memory clocks, HBM temperature).
    ecc: bool = False
    clocks: bool = False
    # Each poll, each chip whose health is not OK: `npu-smi info -t health -i N -c C` for its
    # fault codes and what they mean (agent/accelerators/ascend_faults.yaml).
    faults: bool = True
    # hccn_tool's path (e.g. /usr/local/Ascend/driver/tools/hccn_tool): each chip's RoCE port
    # (link, speed, counters, optical power), four runs per chip, once per details_interval_s.
    hccn_tool: str | None = None
    details_interval_s: float = Field(default=60.0, ge=0)


class JobSettings(StrictModel):
    """Which job runs on each card (agent/accelerators/jobs.py)."""

    # The kubelet's pod-resources socket (usually /var/lib/kubelet/pod-resources/kubelet.sock);
    # unset on hosts outside Kubernetes. Needs grpcio.
    kubelet_socket: str | None = None
    resources: list[str] = ["nvidia.com/gpu", "huawei.com/Ascend910", "huawei.com/Ascend310P"]
    timeout_s: float = Field(default=2.0, gt=0)
    # Slurm jobs from /proc/<pid>/cgroup of the processes on each card (NVIDIA: the process
    # list is then read every poll; Ascend: the process table of `npu-smi info`).
    slurm: bool = False
    proc_root: str = "/proc"


class VendorToolSettings(StrictModel):
    """Cards read through a vendor tool described in YAML (agent/accelerators/vendor_tools.py)."""

    # A built-in definition (agent/accelerators/tools/<name>.yaml: hygon_hy_smi, metax_mx_smi,
    # cambricon_cnmon, ...) or the path of a site's own YAML.
    definition: str = Field(min_length=1)
    program: str | None = None  # the tool's path, where it is not on PATH under its name
    timeout_s: float = Field(default=10.0, gt=0)


class AcceleratorSettings(StrictModel):
    host: str = Field(default_factory=socket.gethostname, min_length=1)
    room: str = ""
    row: str = ""
    rack: str = ""
    interval_s: float = Field(default=10.0, gt=0)
    tags: dict[str, str] = {}  # e.g. cluster: ascend-10k
    nvidia: NvidiaSettings | None = None
    ascend: AscendSettings | None = None
    tools: list[VendorToolSettings] = []
    jobs: JobSettings | None = None
