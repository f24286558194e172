"""Profiling counters of NVIDIA GPUs without DCGM: what NVML's GPM API (GPU Performance
Monitoring, Hopper and later, driver 520+) and a few plain NVML calls give, read by NvmlSource on
their own interval (`profiling_interval_s`).

GPM compares two samples of the GPU's performance counters: each reading takes a new sample and
asks NVML for the metrics between it and the one before, so the first reading of a GPU gives
none and each later one the averages over the interval between them. The two sample buffers of
a GPU are allocated once and swapped. A GPU (or driver) without GPM answers NOT_SUPPORTED to
nvmlGpmQueryDeviceSupport, or says isSupportedDevice 0: it is noted once and not asked again.

NVML refreshes GPM samples about every 100 ms, so a reading less than MIN_WINDOW_S after the
last sample takes none (the window would be empty or wrong) and the next one measures from the
older sample. Each metric carries its own return code: one the GPU answers NOT_SUPPORTED is
dropped from later requests (a GPU left with none counts as one without GPM), any other failure
is reported by name and the other metrics are kept. On a MIG-enabled GPU the whole-GPU sample
is not read (NvmlSource skips it: GPM there is per GPU instance, nvmlGpmMigSampleGet).

NOT YET RUN on a GPU that supports GPM: the metric ids and units are NVIDIA's (nvml.h,
nvidia-ml-py); the path from an answer to a field is tested on real SM-occupancy values 8 GPUs
gave to another tool (tests/data/nvml/gpm-gpud-pr40.yaml); all metrics together, the rate
metrics' units, the cost and MIG wait for bench/gpu_check.sh on the next GPU machine
(docs/accelerators-nvidia.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pynvml

from telemetry.sample import FieldValue

MIB = 1 << 20
# GPM metric id -> (field, factor to the field's unit). Percentages are 0-100 as NVML gives
# them; NVLink and PCIe rates are MiB/s in nvml.h ("... in MiB/sec").
GPM_METRICS: dict[int, tuple[str, float]] = {
    pynvml.NVML_GPM_METRIC_SM_UTIL: ("sm_active_pct", 1.0),
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: ("sm_occupancy_pct", 1.0),
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: ("tensor_active_pct", 1.0),
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: ("dram_active_pct", 1.0),
    pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC: ("nvlink_tx_bytes_per_s", MIB),
    pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC: ("nvlink_rx_bytes_per_s", MIB),
    pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC: ("pcie_tx_bytes_per_s", MIB),
    pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC: ("pcie_rx_bytes_per_s", MIB),
}
# Shortest window between two GPM samples: NVML's GPM sample refresh is about 100 ms.
MIN_WINDOW_S = 0.1
# Encoder / decoder use: nvmlDeviceGet{Encoder,Decoder}Utilization -> [percent, sampling us].
CODEC_CALLS = (
    ("enc_util_pct", "nvmlDeviceGetEncoderUtilization"),
    ("dec_util_pct", "nvmlDeviceGetDecoderUtilization"),
)
# NVLink payload counters (KiB since the driver loaded), summed over all links by NVML when the
# scope is UINT_MAX (nvml.h): (field id, scope) as nvmlDeviceGetFieldValues takes them -> field.
ALL_LINKS = 0xFFFFFFFF
KIB = 1024
NVLINK_THROUGHPUT: dict[int, str] = {
    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: "nvlink_tx_bytes_total",
    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: "nvlink_rx_bytes_total",
}


@dataclass
class GpmReading:
    """One GPM reading: the fields NVML answered, the metrics it answered with another error
    (field -> NVML return code), and those it said the GPU does not support."""

    fields: dict[str, FieldValue] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)


class GpmSamples:
    """One GPU's two GPM sample buffers (the last reading's, and the one being taken) and the
    metrics still asked of it."""

    def __init__(self, nvml: Any, clock: Callable[[], float]) -> None:
        self._nvml = nvml
        self._clock = clock
        self._samples = [nvml.nvmlGpmSampleAlloc()]
        try:
            self._samples.append(nvml.nvmlGpmSampleAlloc())
        except pynvml.NVMLError:
            self.free()
            raise
        self._taken_at: float | None = None  # when the previous sample was taken
        self.metrics: list[int] = list(GPM_METRICS)

    def read(self, handle: Any) -> GpmReading:
        """A new sample, and the metrics since the one before (none the first time, nor when
        the last sample is younger than MIN_WINDOW_S)."""
        now = self._clock()
        if self._taken_at is not None and now - self._taken_at < MIN_WINDOW_S:
            return GpmReading()
        previous, current = self._samples
        self._nvml.nvmlGpmSampleGet(handle, current)
        self._samples.reverse()  # this sample is the next reading's previous one
        first, self._taken_at = self._taken_at is None, now
        if first or not self.metrics:
            return GpmReading()
        request = metrics_request(previous, current, self.metrics)
        self._nvml.nvmlGpmMetricsGet(request)
        reading = metric_answers(request)
        for metric, (name, _) in GPM_METRICS.items():
            if name in reading.unsupported and metric in self.metrics:
                self.metrics.remove(metric)
        return reading

    def restart(self) -> None:
        """Start a new window: the next reading only takes a sample (MIG mode changed)."""
        self._taken_at = None

    def free(self) -> None:
        samples, self._samples = self._samples, []
        for sample in samples:
            self._nvml.nvmlGpmSampleFree(sample)


def metrics_request(
    previous: Any, current: Any, metrics: Sequence[int] = tuple(GPM_METRICS)
) -> Any:
    """The nvmlGpmMetricsGet_t that asks for `metrics` between two samples."""
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(metrics)
    request.sample1 = previous
    request.sample2 = current
    for slot, metric in enumerate(metrics):
        request.metrics[slot].metricId = metric
    return request


def metric_answers(request: Any) -> GpmReading:
    """What an answered request holds, metric by metric: a value only where that metric's own
    return code is SUCCESS (nvml.h: otherwise the value is not valid)."""
    reading = GpmReading()
    for slot in range(request.numMetrics):
        metric = request.metrics[slot]
        known = GPM_METRICS.get(metric.metricId)
        if known is None:
            continue
        name, factor = known
        if metric.nvmlReturn == pynvml.NVML_SUCCESS:
            reading.fields[name] = float(metric.value) * factor
        elif metric.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED:
            reading.unsupported.append(name)
        else:
            reading.failed[name] = int(metric.nvmlReturn)
    return reading
