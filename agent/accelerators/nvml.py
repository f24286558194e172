"""NVIDIA GPUs through NVML (nvidia-ml-py): one `accelerator` sample per GPU per poll, one
`accelerator_host` total, `accelerator_mig` samples for MIG instances, and an `accelerator_event`
when a GPU stops answering.

NVML calls are blocking C calls, so a poll makes them all in one worker thread and the event loop
never waits on them. On an H100 (driver 580) most take 1-30 us, the PCIe replay counter and MIG
mode about 140 us, and the energy counter 3 ms however it is asked for: more than all the other
readings together. The energy counter is a running total, so reading it at most once per
`energy_interval_s` (60 s by default) loses nothing but resolution.

A call a GPU answers NOT_SUPPORTED, or that the installed driver lacks (FUNCTION_NOT_FOUND), is
remembered for that GPU and never made again: fan speed on an H100 SXM or NVLink on a lone PCIe card
costs one call, once. A GPU that answers GPU_IS_LOST (fallen off the bus) or UNKNOWN gives one
`accelerator_event` and is left out of later polls (asked again every `lost_retry_s`); the other
GPUs go on. When NVML itself cannot start (no driver, driver not loaded, version mismatch)
`collect()` raises `NvmlUnavailable` naming the problem; the poller counts the failed poll and the
next poll tries again.

Slow calls (PCIe throughput: about 21 ms per direction; the process list) run only when
`slow_interval_s` is set, at most once per that interval. Profiling counters (GPM: SM, tensor
and DRAM activity, NVLink and PCIe rates; encoder/decoder use; NVLink byte counters) run only when
`profiling_interval_s` is set (agent/accelerators/nvml_profiling.py). docs/accelerators-nvidia.md
maps every NVML call to its field.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pynvml

from agent.accelerators.jobs import JobFinder, JobLookup
from agent.accelerators.nvml_profiling import (
    ALL_LINKS,
    CODEC_CALLS,
    KIB,
    NVLINK_THROUGHPUT,
    GpmSamples,
)
from agent.accelerators.repeated_warnings import RepeatedWarnings
from agent.mapping import convert
from agent.profile import FieldSpec
from telemetry.sample import FieldValue, Sample

log = logging.getLogger(__name__)

MEASUREMENT = "accelerator"
HOST_MEASUREMENT = "accelerator_host"
EVENT_MEASUREMENT = "accelerator_event"
MIG_MEASUREMENT = "accelerator_mig"
VENDOR = "nvidia"

# Clock-event ("throttle") reason bits, nvmlClocksEventReason* in nvml.h -> the flag's name; each
# GPU reports a boolean `throttle_<name>` for every bit it says it supports.
THROTTLE_REASONS: dict[int, str] = {
    0x0000000000000001: "idle",
    0x0000000000000002: "applications_clocks",
    0x0000000000000004: "sw_power_cap",
    0x0000000000000008: "hw_slowdown",
    0x0000000000000010: "sync_boost",
    0x0000000000000020: "sw_thermal_slowdown",
    0x0000000000000040: "hw_thermal_slowdown",
    0x0000000000000080: "hw_power_brake",
    0x0000000000000100: "display_clocks",
}

# nvmlDeviceGetTotalEccErrors(error type, counter type) -> field. Volatile counts start at 0 when
# the driver loads and move at once (alerts watch them); aggregate ones last the card's life.
ECC_COUNTERS: dict[str, tuple[int, int]] = {
    "ecc_corrected_total": (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC),
    "ecc_uncorrected_total": (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC),
    "ecc_corrected_aggregate_total": (
        pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
        pynvml.NVML_AGGREGATE_ECC,
    ),
    "ecc_uncorrected_aggregate_total": (
        pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        pynvml.NVML_AGGREGATE_ECC,
    ),
}

# Read together in one nvmlDeviceGetFieldValues call per poll: field id -> field.
FIELD_VALUES: dict[int, str] = {
    pynvml.NVML_FI_DEV_MEMORY_TEMP: "mem_temp_c",
    pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: "pcie_replay_total",
    pynvml.NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL: "nvlink_crc_flit_errors_total",
    pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL: "nvlink_crc_data_errors_total",
    pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL: "nvlink_replay_errors_total",
    pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL: "nvlink_recovery_errors_total",
}
# nvmlValueType_t -> the member of the nvmlValue_t union that holds the value (by name, as older
# bindings lack the newer types).
VALUE_MEMBERS = {
    getattr(pynvml, f"NVML_VALUE_TYPE_{kind}"): member
    for kind, member in (
        ("DOUBLE", "dVal"),
        ("UNSIGNED_INT", "uiVal"),
        ("UNSIGNED_LONG", "ulVal"),
        ("UNSIGNED_LONG_LONG", "ullVal"),
        ("SIGNED_LONG_LONG", "sllVal"),
        ("SIGNED_INT", "siVal"),
        ("UNSIGNED_SHORT", "usVal"),
    )
    if hasattr(pynvml, f"NVML_VALUE_TYPE_{kind}")
}
# Answers that mean "this GPU or driver cannot do that": remembered, the call is not made again.
NOT_SUPPORTED = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
# Answers that mean the GPU itself is gone: what is reported in the event's `meaning`.
LOST = {
    pynvml.NVML_ERROR_GPU_IS_LOST: "GPU has fallen off the bus",
    pynvml.NVML_ERROR_UNKNOWN: "GPU stopped answering NVML",
}
# Why nvmlInit failed, in the words an operator needs.
INIT_PROBLEMS = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: "libnvidia-ml.so.1 not found (no NVIDIA driver here?)",
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
    pynvml.NVML_ERROR_NO_PERMISSION: "no permission to open the NVIDIA device files",
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "the NVML library and the loaded kernel driver are different versions "
        "(driver upgraded without a reboot?)"
    ),
}
# The NVML binding: the pynvml module, or anything with its functions (tests/nvml_fake.py).
Nvml: TypeAlias = Any
ERROR_NAMES: dict[int, str] = {
    value: name for name, value in vars(pynvml).items() if name.startswith("NVML_ERROR_")
}


def error_name(exc: pynvml.NVMLError) -> str:
    return ERROR_NAMES.get(exc.value, f"NVML error {exc.value}")


class NvmlUnavailable(Exception):
    """NVML could not be started or used at all; the message says why."""


class _GpuLost(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def handle_address(handle: Any) -> int | None:
    """An NVML device handle's address: the same device gives the same one in every call."""
    address: int | None = ctypes.cast(handle, ctypes.c_void_p).value
    return address


def identity_tags(nvml: Nvml, handle: Any, index: int, driver: str) -> dict[str, str]:
    """The tags that name one GPU: model, uuid, index, serial, PCI bus id, driver version. The
    serial is absent on cards that have none (NOT_SUPPORTED)."""
    tags = {"vendor": VENDOR, "model": nvml.nvmlDeviceGetName(handle)}
    tags["uuid"] = nvml.nvmlDeviceGetUUID(handle)
    tags["index"] = str(index)
    try:
        tags["serial"] = nvml.nvmlDeviceGetSerial(handle)
    except pynvml.NVMLError as exc:
        if exc.value not in NOT_SUPPORTED:
            raise
    tags["pci_bus_id"] = nvml.nvmlDeviceGetPciInfo(handle).busId
    tags["driver_version"] = driver
    return {key: value for key, value in tags.items() if value}


@dataclass
class _Gpu:
    index: int
    handle: Any
    tags: dict[str, str]
    throttle_mask: int = 0
    field_ids: list[int] = field(default_factory=lambda: list(FIELD_VALUES))
    nvlinks: list[int] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)  # calls not made again
    lost: int | None = None  # the NVML error it answered with when it stopped answering
    lost_at: float = 0.0
    announced: bool = False  # its accelerator_event is sent
    pids: list[int] = field(default_factory=list)  # compute processes, when last read
    gpm: GpmSamples | None = None  # its GPM sample buffers, once it says it has GPM
    announced_gpm: bool = False  # "no GPM" logged
    nvlink_bytes_ids: list[int] = field(default_factory=lambda: list(NVLINK_THROUGHPUT))
    gpm_mig_skipped: bool = False  # MIG is on: GPM is per GPU instance, the card's is skipped

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.tags.get('uuid', 'no uuid')})"


class NvmlSource:
    """Polls this host's NVIDIA GPUs through NVML. `collect()` is the whole poll.

    `tags` (host, site, room, row, rack, cluster...) go on every sample. `nvml` is the NVML
    binding: pynvml from nvidia-ml-py, or anything with the same functions and errors.
    `slow_interval_s`: how often the slow calls run (PCIe throughput, process count); None: never.
    `energy_interval_s`: how often the energy counter is read (0: every poll).
    `profiling_interval_s`: how often the profiling counters are read (nvml_profiling.py);
    None: never (the default until their cost is measured on a GPU with GPM).
    `jobs`: which job runs on each GPU (its pod by UUID; its Slurm job from the cgroups of
    the processes on it, which then reads the process list every poll).
    """

    vendor = VENDOR

    def __init__(
        self,
        tags: Mapping[str, str],
        *,
        nvml: Nvml = pynvml,
        slow_interval_s: float | None = None,
        energy_interval_s: float = 60.0,
        profiling_interval_s: float | None = None,
        lost_retry_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        jobs: JobFinder | None = None,
    ) -> None:
        self._tags = {key: value for key, value in tags.items() if value}
        self._nvml = nvml
        self.jobs = jobs
        self._slow = Every(slow_interval_s, clock)
        self._energy = Every(energy_interval_s, clock)
        self._profiling = Every(profiling_interval_s, clock)
        self.profiling = profiling_interval_s is not None
        self.gpm_failures = 0  # GPM samples and metrics that failed (not NOT_SUPPORTED)
        self.lost_retry_s = lost_retry_s
        self._clock = clock
        self._gpus: list[_Gpu] | None = None  # None until NVML has started
        self.driver_version = ""
        self._warnings = RepeatedWarnings()
        # A poll cancelled by its deadline leaves its thread running; the next must not overlap.
        self._busy = threading.Lock()

    @property
    def gpus(self) -> int:
        return len(self._gpus or ())

    async def collect(self) -> list[Sample]:
        started_ns = time.time_ns()  # one timestamp for the whole poll
        lookup = await self.jobs.lookup() if self.jobs is not None else None
        return await asyncio.to_thread(self._poll_alone, started_ns, lookup)

    async def close(self) -> None:
        """Shut NVML down (it is started again by the next collect())."""
        await asyncio.to_thread(self._close_alone)

    # --- in the worker thread ----------------------------------------------------------------

    def _poll_alone(self, time_ns: int, lookup: JobLookup | None) -> list[Sample]:
        if not self._busy.acquire(blocking=False):
            raise NvmlUnavailable("the previous NVML poll is still running (an NVML call hangs)")
        try:
            return self.poll(time_ns, lookup)
        finally:
            self._busy.release()

    def _close_alone(self) -> None:
        with self._busy:
            if self._gpus is not None:
                for gpu in self._gpus:
                    self._free_gpm(gpu)
                self._gpus = None
                try:
                    self._nvml.nvmlShutdown()
                except pynvml.NVMLError as exc:
                    log.debug("nvmlShutdown: %s", exc)

    def poll(self, time_ns: int, lookup: JobLookup | None = None) -> list[Sample]:
        """One poll, blocking: every GPU's sample, the host total, and events for lost GPUs;
        with `lookup`, each GPU's job fields."""
        gpus = self._gpus if self._gpus is not None else self._start()
        slow, energy, profiling = self._slow.due(), self._energy.due(), self._profiling.due()
        samples: list[Sample] = []
        power: list[float] = []
        for position, gpu in enumerate(gpus):
            if gpu.lost is not None:
                back = self._back(gpu)
                if back is None:
                    samples += self._announce(gpu, time_ns)
                    continue
                gpus[position] = gpu = back
            try:
                pids = lookup is not None and lookup.wants_pids
                fields = self._read(gpu, slow=slow, energy=energy, pids=pids)
                if profiling:
                    mig_enabled = fields.get("mig_enabled") is True
                    for name, value in self._profile(gpu, mig_enabled).items():
                        fields.setdefault(name, value)  # the slow PCIe reading where both ran
                if lookup is not None:
                    fields.update(lookup.fields((gpu.tags.get("uuid", ""),), gpu.pids))
                instances = self._mig(gpu, fields.get("mig_enabled") is True, time_ns)
            except _GpuLost as exc:
                self._mark_lost(gpu, exc.code)
                samples += self._announce(gpu, time_ns)
                continue
            samples.append(Sample(MEASUREMENT, {**self._tags, **gpu.tags}, fields, time_ns))
            samples += instances
            if "power_w" in fields:
                power.append(float(fields["power_w"]))
        lost = sum(1 for gpu in gpus if gpu.lost is not None)
        total: dict[str, FieldValue] = {
            "count": len(gpus),
            "healthy_count": len(gpus) - lost,  # answered this poll
            "lost": lost,
        }
        if power:
            total["power_w"] = sum(power)
        if self.profiling:
            total["gpm_unsupported"] = sum(1 for gpu in gpus if "gpm" in gpu.unsupported)
            total["gpm_mig_skipped"] = sum(1 for gpu in gpus if gpu.gpm_mig_skipped)
            total["gpm_failures_total"] = self.gpm_failures
        samples.append(Sample(HOST_MEASUREMENT, {**self._tags, "vendor": VENDOR}, total, time_ns))
        return samples

    def _start(self) -> list[_Gpu]:
        nvml = self._nvml
        start_nvml(nvml)
        try:
            self.driver_version = nvml.nvmlSystemGetDriverVersion()
            gpus = [self._setup(index) for index in range(nvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError as exc:
            nvml.nvmlShutdown()
            raise NvmlUnavailable(f"NVML started but cannot list GPUs: {_named(exc)}") from None
        log.info("NVML: driver %s, %d GPUs", self.driver_version, len(gpus))
        self._gpus = gpus
        return gpus

    def _setup(self, index: int) -> _Gpu:
        """What does not change while the driver runs: identity, supported throttle reasons,
        which NVLinks exist. A GPU that cannot be read is kept as lost: reported, asked again."""
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            gpu = _Gpu(index, handle, identity_tags(nvml, handle, index, self.driver_version))
        except pynvml.NVMLError as exc:
            gpu = _Gpu(index, None, {"vendor": VENDOR, "index": str(index)})
            self._mark_lost(gpu, exc.value)
            return gpu
        try:
            gpu.throttle_mask = self._supported_reasons(gpu)
            gpu.nvlinks = self._links(gpu)
        except _GpuLost as exc:
            self._mark_lost(gpu, exc.code)
        return gpu

    def _supported_reasons(self, gpu: _Gpu) -> int:
        return int(self._first(gpu, "throttle_supported", SUPPORTED_CLOCK_EVENT_CALLS) or 0)

    def _links(self, gpu: _Gpu) -> list[int]:
        links = []
        for link in range(pynvml.NVML_NVLINK_MAX_LINKS):
            try:
                self._nvml.nvmlDeviceGetNvLinkState(gpu.handle, link)
            except pynvml.NVMLError as exc:
                if exc.value in LOST:
                    raise _GpuLost(exc.value) from None
                if exc.value in NOT_SUPPORTED:
                    break  # no NVLink on this GPU
                continue  # INVALID_ARGUMENT: no such link
            links.append(link)
        return links

    def _back(self, gpu: _Gpu) -> _Gpu | None:
        """A lost GPU set up anew if it answers again (asked every lost_retry_s), else None."""
        now = self._clock()
        if now - gpu.lost_at < self.lost_retry_s:
            return None
        fresh = self._setup(gpu.index)
        if fresh.lost is not None:
            fresh.announced = True  # still the same loss
            gpu.lost_at = now
            return None
        log.warning("%s answers NVML again", fresh.label)
        return fresh

    def _mark_lost(self, gpu: _Gpu, code: int) -> None:
        gpu.lost, gpu.lost_at, gpu.announced = code, self._clock(), False
        self._free_gpm(gpu)  # host memory; a GPU that answers again gets new buffers
        log.error(
            "%s: %s (%s); the other GPUs are still polled",
            gpu.label,
            _meaning(code),
            ERROR_NAMES.get(code, code),
        )

    def _announce(self, gpu: _Gpu, time_ns: int) -> list[Sample]:
        """The lost GPU's accelerator_event, once per loss."""
        if gpu.announced or gpu.lost is None:
            return []
        gpu.announced = True
        fields: dict[str, FieldValue] = {
            "event": "gpu_lost",
            "meaning": _meaning(gpu.lost),
            "error": ERROR_NAMES.get(gpu.lost, str(gpu.lost)),
        }
        return [Sample(EVENT_MEASUREMENT, {**self._tags, **gpu.tags}, fields, time_ns)]

    def _call(self, gpu: _Gpu, name: str, function: str, *args: Any) -> Any:
        """One NVML call about `gpu`; None where it gave no answer. NOT_SUPPORTED is remembered
        under `name`; a lost GPU raises _GpuLost; anything else is logged once and retried."""
        if name in gpu.unsupported:
            return None
        try:
            return getattr(self._nvml, function)(gpu.handle, *args)
        except pynvml.NVMLError as exc:
            if exc.value in NOT_SUPPORTED:
                gpu.unsupported.add(name)
                log.debug("%s: %s: %s; not asked again", gpu.label, function, error_name(exc))
            elif exc.value in LOST:
                raise _GpuLost(exc.value) from None
            else:
                self._warn(f"{gpu.label} {function}", f"{gpu.label}: {function}: {_named(exc)}")
            return None

    def _first(self, gpu: _Gpu, name: str, functions: tuple[str, ...], *args: Any) -> Any:
        """The answer of the first of `functions` this GPU and driver support: newer calls
        first, the ones NVIDIA deprecated after them for older drivers."""
        for function in functions:
            key = f"{name} {function}"
            value = self._call(gpu, key, function, *args)
            if value is not None or key not in gpu.unsupported:
                return value
        return None

    def _read(
        self, gpu: _Gpu, *, slow: bool, energy: bool, pids: bool = False
    ) -> dict[str, FieldValue]:
        call = self._call
        fields: dict[str, FieldValue] = {}
        utilization = call(gpu, "utilization", "nvmlDeviceGetUtilizationRates")
        if utilization is not None:
            fields["util_pct"] = float(utilization.gpu)
            fields["mem_util_pct"] = float(utilization.memory)
        memory = call(gpu, "memory_v2", "nvmlDeviceGetMemoryInfo", pynvml.nvmlMemory_v2)
        if memory is None and "memory_v2" in gpu.unsupported:  # v1 has no `reserved`
            memory = call(gpu, "memory", "nvmlDeviceGetMemoryInfo")
        if memory is not None:
            fields["mem_used_bytes"] = int(memory.used)
            fields["mem_total_bytes"] = int(memory.total)
            if hasattr(memory, "reserved"):
                fields["mem_reserved_bytes"] = int(memory.reserved)
        for name, functions, spec, *args in READINGS:
            value = convert(spec, self._first(gpu, name, functions, *args))
            if value is not None:
                fields[name] = value
        if energy:
            millijoules = call(gpu, "energy_j", "nvmlDeviceGetTotalEnergyConsumption")
            if millijoules is not None:
                fields["energy_j"] = millijoules / 1000.0  # since the driver loaded
        pstate = call(gpu, "pstate", "nvmlDeviceGetPerformanceState")
        if pstate is not None and pstate != pynvml.NVML_PSTATE_UNKNOWN:
            fields["pstate"] = int(pstate)
        fields.update(self._throttle(gpu))
        for name, (error_type, counter) in ECC_COUNTERS.items():
            count = call(gpu, name, "nvmlDeviceGetTotalEccErrors", error_type, counter)
            if count is not None:
                fields[name] = int(count)
        rows = call(gpu, "remapped_rows", "nvmlDeviceGetRemappedRows")
        if rows is not None:
            fields["row_remap_correctable_total"] = int(rows[0])
            fields["row_remap_uncorrectable_total"] = int(rows[1])
            fields["row_remap_pending"] = bool(rows[2])
            fields["row_remap_failure"] = bool(rows[3])
        fields.update(self._field_values(gpu))
        if gpu.nvlinks:
            fields.update(self._nvlinks(gpu))
        mig = call(gpu, "mig_mode", "nvmlDeviceGetMigMode")
        if mig is not None:
            fields["mig_enabled"] = mig[0] == pynvml.NVML_DEVICE_MIG_ENABLE
        if slow:
            fields.update(self._slow_readings(gpu))
        if slow or pids:
            processes = self._call(gpu, "processes", "nvmlDeviceGetComputeRunningProcesses")
            if processes is not None:
                fields["processes"] = len(processes)
                gpu.pids = [int(process.pid) for process in processes]
        return fields

    def _throttle(self, gpu: _Gpu) -> dict[str, FieldValue]:
        if not gpu.throttle_mask:
            return {}
        active = self._first(gpu, "throttle", CLOCK_EVENT_CALLS)
        if active is None:
            return {}
        return {
            f"throttle_{name}": bool(active & bit)
            for bit, name in THROTTLE_REASONS.items()
            if gpu.throttle_mask & bit
        }

    def _field_values(self, gpu: _Gpu) -> dict[str, FieldValue]:
        if not gpu.field_ids:
            return {}
        answers = self._call(gpu, "field_values", "nvmlDeviceGetFieldValues", gpu.field_ids)
        given = self._given(gpu, answers, FIELD_VALUES, gpu.field_ids)
        return {name: float(v) if name.endswith("_c") else int(v) for name, v in given.items()}

    def _given(
        self, gpu: _Gpu, answers: Any, names: Mapping[int, str], asked: list[int]
    ) -> dict[str, int | float]:
        """The values of nvmlDeviceGetFieldValues' answers, each judged on its own return code:
        a field NOT_SUPPORTED is taken off `asked` (not asked again), a lost GPU raises _GpuLost,
        any other error is warned and gives no value."""
        given: dict[str, int | float] = {}
        for answer in answers or ():
            name = names.get(answer.fieldId)
            if name is None:
                continue
            if answer.nvmlReturn == pynvml.NVML_SUCCESS:
                given[name] = getattr(answer.value, VALUE_MEMBERS.get(answer.valueType, "ullVal"))
            elif answer.nvmlReturn in NOT_SUPPORTED:
                asked.remove(answer.fieldId)
                log.debug("%s: field %s not supported; not asked again", gpu.label, name)
            elif answer.nvmlReturn in LOST:
                raise _GpuLost(answer.nvmlReturn)
            else:
                problem = ERROR_NAMES.get(answer.nvmlReturn, str(answer.nvmlReturn))
                self._warn(f"{gpu.label} {name}", f"{gpu.label}: field {name}: {problem}")
        return given

    def _nvlinks(self, gpu: _Gpu) -> dict[str, FieldValue]:
        active = 0
        for link in gpu.nvlinks:
            state = self._call(gpu, f"nvlink_{link}", "nvmlDeviceGetNvLinkState", link)
            active += state == pynvml.NVML_FEATURE_ENABLED
        return {"nvlink_links": len(gpu.nvlinks), "nvlink_links_active": active}

    def _slow_readings(self, gpu: _Gpu) -> dict[str, FieldValue]:
        fields: dict[str, FieldValue] = {}
        for name, counter in (
            ("pcie_tx_bytes_per_s", pynvml.NVML_PCIE_UTIL_TX_BYTES),
            ("pcie_rx_bytes_per_s", pynvml.NVML_PCIE_UTIL_RX_BYTES),
        ):
            kb_per_s = self._call(gpu, name, "nvmlDeviceGetPcieThroughput", counter)
            if kb_per_s is not None:
                fields[name] = float(kb_per_s) * 1000.0  # NVML counts KB/s
        return fields

    def _profile(self, gpu: _Gpu, mig_enabled: bool) -> dict[str, FieldValue]:
        fields: dict[str, FieldValue] = {}
        for name, function in CODEC_CALLS:
            answer = self._call(gpu, name, function)
            if answer is not None:
                fields[name] = float(answer[0])  # [percent, sampling period in us]
        if gpu.nvlinks and gpu.nvlink_bytes_ids:
            fields.update(self._nvlink_bytes(gpu))
        fields.update(self._gpm_or_skip(gpu, mig_enabled))
        return fields

    def _nvlink_bytes(self, gpu: _Gpu) -> dict[str, FieldValue]:
        """The NVLink payload counters (KiB) of all links together (scope UINT_MAX), each field
        value judged on its own return code, as _field_values' are."""
        scoped = [(field_id, ALL_LINKS) for field_id in gpu.nvlink_bytes_ids]
        answers = self._call(gpu, "nvlink_bytes", "nvmlDeviceGetFieldValues", scoped)
        given = self._given(gpu, answers, NVLINK_THROUGHPUT, gpu.nvlink_bytes_ids)
        return {name: int(kib) * KIB for name, kib in given.items()}

    def _gpm_or_skip(self, gpu: _Gpu, mig_enabled: bool) -> dict[str, FieldValue]:
        """GPM of the whole card, except on a MIG-enabled GPU: there GPM is per GPU instance
        (nvmlGpmMigSampleGet), which is not read, so the card's is skipped, said once and
        counted (`gpm_mig_skipped`); a window that spans a MIG mode change is not reported."""
        if mig_enabled != gpu.gpm_mig_skipped:
            gpu.gpm_mig_skipped = mig_enabled
            if gpu.gpm is not None:
                gpu.gpm.restart()
            if mig_enabled:
                log.warning(
                    "%s: MIG is enabled: GPM is per GPU instance (not read), so no SM, tensor "
                    "or DRAM activity for this GPU while MIG is on",
                    gpu.label,
                )
        return {} if mig_enabled else self._gpm(gpu)

    def _gpm(self, gpu: _Gpu) -> dict[str, FieldValue]:
        """GPM metrics since the last reading; a GPU without GPM is noted once, then skipped."""
        if gpu.gpm is None:
            support = self._call(gpu, "gpm", "nvmlGpmQueryDeviceSupport")
            if support is not None and not support.isSupportedDevice:
                gpu.unsupported.add("gpm")
            if "gpm" in gpu.unsupported:
                if not gpu.announced_gpm:
                    gpu.announced_gpm = True
                    log.info(
                        "%s: no GPM (Hopper or later, driver 520+): no SM, tensor or DRAM activity",
                        gpu.label,
                    )
                return {}
            if support is None:
                return {}  # another error: logged by _call, asked again next time
            try:
                gpu.gpm = GpmSamples(self._nvml, self._clock)
            except pynvml.NVMLError as exc:
                self.gpm_failures += 1
                self._warn(f"{gpu.label} gpm", f"{gpu.label}: nvmlGpmSampleAlloc: {_named(exc)}")
                return {}
        try:
            reading = gpu.gpm.read(gpu.handle)
        except pynvml.NVMLError as exc:
            if exc.value in LOST:
                raise _GpuLost(exc.value) from None
            if exc.value in NOT_SUPPORTED:
                gpu.unsupported.add("gpm")
                self._free_gpm(gpu)
            else:
                self.gpm_failures += 1
            self._warn(f"{gpu.label} gpm", f"{gpu.label}: GPM: {_named(exc)}")
            return {}
        for name in reading.unsupported:
            log.info("%s: GPM metric for %s not supported; not asked again", gpu.label, name)
        if not gpu.gpm.metrics:  # every metric unsupported: as good as no GPM
            gpu.unsupported.add("gpm")
            self._free_gpm(gpu)
        for name, code in reading.failed.items():
            self.gpm_failures += 1
            problem = ERROR_NAMES.get(code, f"NVML error {code}")
            self._warn(f"{gpu.label} gpm {name}", f"{gpu.label}: GPM metric for {name}: {problem}")
        return reading.fields

    def _free_gpm(self, gpu: _Gpu) -> None:
        if gpu.gpm is not None:
            try:
                gpu.gpm.free()
            except pynvml.NVMLError as exc:
                log.debug("%s: nvmlGpmSampleFree: %s", gpu.label, exc)
            gpu.gpm = None

    def _mig(self, gpu: _Gpu, enabled: bool, time_ns: int) -> list[Sample]:
        """One `accelerator_mig` sample per MIG instance: its memory (the GPU's own sample
        counts the whole card)."""
        if not enabled:
            return []
        count = self._call(gpu, "mig_count", "nvmlDeviceGetMaxMigDeviceCount") or 0
        samples = []
        nvml = self._nvml
        for slot in range(count):
            try:
                instance = nvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, slot)
            except pynvml.NVMLError as exc:
                if exc.value in LOST:
                    raise _GpuLost(exc.value) from None
                continue  # NOT_FOUND: an empty slot
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(instance)
                tags = {**self._tags, **gpu.tags, "mig_uuid": nvml.nvmlDeviceGetUUID(instance)}
                tags["gpu_instance"] = str(nvml.nvmlDeviceGetGpuInstanceId(instance))
            except pynvml.NVMLError as exc:
                self._warn(f"{gpu.label} mig", f"{gpu.label}: MIG instance {slot}: {_named(exc)}")
                continue
            fields: dict[str, FieldValue] = {
                "mem_used_bytes": int(memory.used),
                "mem_total_bytes": int(memory.total),
            }
            samples.append(Sample(MIG_MEASUREMENT, tags, fields, time_ns))
        return samples

    def _warn(self, key: str, message: str) -> None:
        self._warnings.note(key, message)


class Every:
    """Says a reading is due at most once per `interval_s` (None: never; 0: always); the first
    time it is asked, it is due."""

    def __init__(self, interval_s: float | None, clock: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def due(self) -> bool:
        if self.interval_s is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        return True


_GAUGE = FieldSpec()
_INTEGER = FieldSpec(type="integer")
_MILLI = FieldSpec(scale=0.001)

# Calls that give one number each: (field, functions (the first one supported is used), the
# field spec that converts it, as a profile's does (agent/mapping.py), arguments...).
READINGS: tuple[tuple[Any, ...], ...] = (
    ("power_w", ("nvmlDeviceGetPowerUsage",), _MILLI),  # mW
    ("power_limit_w", ("nvmlDeviceGetEnforcedPowerLimit",), _MILLI),  # mW
    (
        "temp_c",
        ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"),  # the latter deprecated
        _GAUGE,
        pynvml.NVML_TEMPERATURE_GPU,
    ),
    ("sm_clock_mhz", ("nvmlDeviceGetClockInfo",), _GAUGE, pynvml.NVML_CLOCK_SM),
    ("mem_clock_mhz", ("nvmlDeviceGetClockInfo",), _GAUGE, pynvml.NVML_CLOCK_MEM),
    ("pcie_link_gen", ("nvmlDeviceGetCurrPcieLinkGeneration",), _INTEGER),
    ("pcie_link_width", ("nvmlDeviceGetCurrPcieLinkWidth",), _INTEGER),
)
# Clock-event reasons were "throttle reasons" before driver 535.
CLOCK_EVENT_CALLS = (
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
)
SUPPORTED_CLOCK_EVENT_CALLS = (
    "nvmlDeviceGetSupportedClocksEventReasons",
    "nvmlDeviceGetSupportedClocksThrottleReasons",
)


def _meaning(code: int) -> str:
    return LOST.get(code, f"GPU cannot be read: {ERROR_NAMES.get(code, code)}")


def _named(exc: pynvml.NVMLError) -> str:
    return f"{exc} ({error_name(exc)})"


def start_nvml(nvml: Nvml) -> None:
    """nvmlInit, or NvmlUnavailable saying why it failed, for an operator."""
    try:
        nvml.nvmlInit()
    except pynvml.NVMLError as exc:
        problem = INIT_PROBLEMS.get(exc.value, str(exc))
        raise NvmlUnavailable(f"NVML unavailable: {problem} ({error_name(exc)})") from None
