"""Profiling counters of NVIDIA GPUs without DCGM: what NVML's GPM API (GPU Performance
Monitoring, Hopper and later, driver 520+) and a few plain NVML calls give, read by NvmlSource on
their own interval (`profiling_interval_s`).

GPM compares two samples of the GPU's performance counters: each reading takes a new sample and
asks NVML for the metrics between it and the one before, so the first reading of a GPU gives
none and each later one the averages over the interval between them. The two sample buffers of
a GPU are allocated once and swapped. A GPU (or driver) without GPM answers NOT_SUPPORTED to
nvmlGpmQueryDeviceSupport, or says isSupportedDevice 0: it is noted once and not asked again.

UNVERIFIED: these readings have not yet run on a GPU that supports GPM; the metric ids and units
are NVIDIA's (nvml.h, nvidia-ml-py), and bench/gpu_check.sh captures real answers and their cost
on the next GPU machine (docs/accelerators-nvidia.md).
"""

from __future__ import annotations

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
# Encoder / decoder use: nvmlDeviceGet{Encoder,Decoder}Utilization -> [percent, sampling us].
CODEC_CALLS = (
    ("enc_util_pct", "nvmlDeviceGetEncoderUtilization"),
    ("dec_util_pct", "nvmlDeviceGetDecoderUtilization"),
)
# NVLink payload counters (KiB since the driver loaded), summed over all links by NVML when the
# scope is UINT_MAX: (field id, scope) as nvmlDeviceGetFieldValues takes them -> field.
ALL_LINKS = 0xFFFFFFFF
NVLINK_THROUGHPUT: dict[int, str] = {
    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: "nvlink_tx_bytes_total",
    pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: "nvlink_rx_bytes_total",
}


class GpmSamples:
    """One GPU's two GPM sample buffers: the last reading's, and the one being taken."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._samples = [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()]
        self._have_previous = False

    def read(self, handle: Any) -> dict[str, FieldValue]:
        """A new sample, and the metrics since the one before (none the first time)."""
        previous, current = self._samples
        self._nvml.nvmlGpmSampleGet(handle, current)
        self._samples.reverse()  # this sample is the next reading's previous one
        if not self._have_previous:
            self._have_previous = True
            return {}
        request = metrics_request(previous, current)
        self._nvml.nvmlGpmMetricsGet(request)
        return metric_fields(request)

    def free(self) -> None:
        for sample in self._samples:
            self._nvml.nvmlGpmSampleFree(sample)
        self._samples = []


def metrics_request(previous: Any, current: Any) -> Any:
    """The nvmlGpmMetricsGet_t that asks for GPM_METRICS between two samples."""
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(GPM_METRICS)
    request.sample1 = previous
    request.sample2 = current
    for slot, metric in enumerate(GPM_METRICS):
        request.metrics[slot].metricId = metric
    return request


def metric_fields(request: Any) -> dict[str, FieldValue]:
    """The fields of an answered request; a metric NVML did not answer is left out."""
    fields: dict[str, FieldValue] = {}
    for slot in range(request.numMetrics):
        metric = request.metrics[slot]
        known = GPM_METRICS.get(metric.metricId)
        if known is not None and metric.nvmlReturn == pynvml.NVML_SUCCESS:
            name, factor = known
            fields[name] = float(metric.value) * factor
    return fields
