"""A stand-in for pynvml at the NVML function boundary, answering from a real capture.

`FakeNvml(text)` takes the text of a real `nvidia-smi -q` (tests/data/nvml/) and implements only the
NVML functions the agent calls, with pynvml's names, pynvml's own return structures and pynvml's own
errors. nvidia-smi prints what NVML answers; where it prints "N/A", the fake raises
NVMLError(NOT_SUPPORTED). nvidia-smi prints nothing at all for the energy counter and NVLink state:
those come from `nvml_calls`, a capture of the same card's real NVML answers (`bench/bench_nvml.py
--calls`), and are NOT_SUPPORTED without one. Encoder and decoder use are the percents
nvidia-smi -q prints under Utilization (its sampling period, which it does not print, is None).
GPM is NOT_SUPPORTED unless a test hands the fake a GPM capture (`gpm`: `gpm_capture` of a real
`gpud scan --poll-gpm-events`, or `FakeNvml.from_gpm`). Then, for each captured GPU:
- real: its UUID, that it supports GPM (isSupportedDevice 1; NVML answered it GPM metrics), and
  each captured metric's value, answered NVML_SUCCESS to every nvmlGpmMetricsGet;
- the fake's own: every metric the capture did not ask answers UNCAPTURED (NVML_ERROR_NO_DATA)
  with a NaN value; the captured value is the same whatever the window between the samples;
  a GPU known only from the GPM capture answers NOT_CAPTURED as its model and PCI bus id (and
  as the driver version when there is no nvidia-smi -q text), and NOT_SUPPORTED to every other
  call. No value here is made up. Tests can make a GPU lost (`lose(index, code)`), make
nvmlInit fail (`init_error`), and deliver XID events (`xid(...)`).
"""

from __future__ import annotations

import ctypes
import math
import queue
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pynvml
import yaml

from agent.accelerators.nvml import handle_address

MIB = 1 << 20
NA = "N/A"
Path = tuple[str, ...]

# "Clocks Event Reasons" lines of nvidia-smi -q -> the NVML bit each one shows.
CLOCK_EVENT_LINES: dict[Path, int] = {
    ("Idle",): pynvml.nvmlClocksEventReasonGpuIdle,
    ("Applications Clocks Setting",): pynvml.nvmlClocksEventReasonApplicationsClocksSetting,
    ("SW Power Cap",): pynvml.nvmlClocksEventReasonSwPowerCap,
    ("HW Slowdown",): pynvml.nvmlClocksEventReasonHwSlowdown,
    ("HW Slowdown", "HW Thermal Slowdown"): pynvml.nvmlClocksEventReasonHwThermalSlowdown,
    ("HW Slowdown", "HW Power Brake Slowdown"): pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
    ("Sync Boost",): pynvml.nvmlClocksEventReasonSyncBoost,
    ("SW Thermal Slowdown",): pynvml.nvmlClocksEventReasonSwThermalSlowdown,
    ("Display Clock Setting",): pynvml.nvmlClocksEventReasonDisplayClockSetting,
}
# nvidia-smi splits NVML's ECC totals by location; the total is the sum of the lines.
ECC_LINES = {
    pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED: ("SRAM Correctable", "DRAM Correctable"),
    pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED: (
        "SRAM Uncorrectable Parity",
        "SRAM Uncorrectable SEC-DED",
        "DRAM Uncorrectable",
    ),
}
ECC_SECTIONS = {pynvml.NVML_VOLATILE_ECC: "Volatile", pynvml.NVML_AGGREGATE_ECC: "Aggregate"}
# Field values nvidia-smi -q shows: field id -> (where, value type).
FIELD_LINES: dict[int, tuple[Path, int]] = {
    pynvml.NVML_FI_DEV_MEMORY_TEMP: (
        ("Temperature", "Memory Current Temp"),
        pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
    ),
    pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: (
        ("PCI", "Replays Since Reset"),
        pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
    ),
}
_LINE = re.compile(r"(?P<key>[^:]*?)\s*(?::\s?(?P<value>.*))?")


def parse_smi_q(text: str) -> tuple[dict[Path, str], list[dict[Path, str]]]:
    """The header and each GPU section of `nvidia-smi -q`, as {path of keys: value}."""
    header: dict[Path, str] = {}
    gpus: list[dict[Path, str]] = []
    target = header
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        if line.startswith("GPU "):  # a GPU's section begins
            gpus.append({})
            target = gpus[-1]
            stack = []
            continue
        if not line.strip() or line.startswith("="):
            continue
        indent = len(line) - len(line.lstrip(" "))
        match = _LINE.fullmatch(line.strip())
        assert match is not None
        key, value = match["key"], match["value"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(name for _, name in stack), key)
        if value is not None:
            target[path] = value.strip()
        stack.append((indent, key))
    return header, gpus


# Labels of later nvidia-smi versions (driver 580) -> the labels this fake reads (driver 565).
# nvmlDeviceGetPowerUsage answers the one-second average on Ampere and newer: what 580 prints
# as "Average Power Draw" (and --query-gpu=power.draw).
NEWER_LABELS: dict[Path, Path] = {
    ("Utilization", "GPU"): ("Utilization", "Gpu"),
    ("GPU Power Readings", "Average Power Draw"): ("GPU Power Readings", "Power Draw"),
}

# A GPM capture: GPU UUID -> {NVML GPM metric id: the value NVML answered with NVML_SUCCESS}.
GpmCapture = dict[str, dict[int, float]]
# The fake's own answer where a GPU known only from a GPM capture must say something the capture
# does not hold and the agent cannot start without (driver version, model, PCI bus id): a label
# that says so, never a measurement.
NOT_CAPTURED = "not-captured"
# What such a GPU answers (from the capture, or NOT_CAPTURED); every other call: NOT_SUPPORTED.
GPM_ONLY_CALLS = frozenset(
    {
        "nvmlDeviceGetUUID",
        "nvmlDeviceGetName",
        "nvmlDeviceGetPciInfo",
        "nvmlGpmQueryDeviceSupport",
        "nvmlGpmSampleGet",
    }
)
# The fake's answer to a GPM metric the capture did not ask for: NO_DATA, with a NaN value. Not
# NOT_SUPPORTED, which would claim the GPU lacks the metric; nobody asked it.
UNCAPTURED = pynvml.NVML_ERROR_NO_DATA


def gpm_capture(text: str) -> GpmCapture:
    """The answers in the output of `gpud scan --poll-gpm-events` (tests/data/nvml/gpm-*.yaml):
    for each GPU (by UUID), GPM metric id -> value; gpud prints only answered metrics."""
    document = yaml.safe_load(text)
    if not isinstance(document, dict) or document.get("error") is not None:
        raise ValueError(f"not a successful gpud GPM poll: {str(document)[:80]!r}")
    return {
        str(entry["uuid"]): {int(key): float(value) for key, value in entry["metrics"].items()}
        for entry in document["metrics"]
    }


# pynvml's error class names (as bench_nvml.py --calls writes them) -> NVML return codes.
ERROR_CODES = {kind.__name__: code for code, kind in pynvml.NVMLError._valClassMapping.items()}


def not_supported() -> pynvml.NVMLError:
    return pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


@dataclass
class _Card:
    values: dict[Path, str]
    buffer: Any
    handle: Any
    lost: int | None = None
    registered: int = 0  # event mask
    gpm_only: bool = False  # known only from a GPM capture (GPM_ONLY_CALLS)


@dataclass
class FakeNvml:
    text: str
    nvml_calls: Sequence[dict[str, Any]] = ()  # bench_nvml.py --calls: {call, args, answer|error}
    init_error: int | None = None
    # Compute processes a test puts on a GPU (index -> pids): the captures ran none.
    processes: dict[int, list[int]] = field(default_factory=dict)
    # GPM answers by GPU UUID (gpm_capture). A UUID not in `text` adds a GPU known only by it.
    gpm: GpmCapture = field(default_factory=dict)
    calls: Counter[tuple[str, int]] = field(default_factory=Counter)  # (function, GPU index)
    initialized: int = 0
    gpm_samples_freed: int = 0
    _cards: list[_Card] = field(default_factory=list)
    _events: queue.Queue[Any] = field(default_factory=queue.Queue)
    # GPM sample buffers: address -> (buffer, index of the GPU whose sample it holds, or None)
    _gpm_samples: dict[int, tuple[Any, int | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.init_tried = threading.Event()  # nvmlInit was called, answered or not
        self.all_registered = threading.Event()  # every GPU registered for events
        self.header, gpus = parse_smi_q(self.text)
        for values in gpus:
            for newer, older in NEWER_LABELS.items():
                if newer in values:
                    values.setdefault(older, values[newer])
            buffer = ctypes.create_string_buffer(1)  # gives each handle its own address
            self._cards.append(_Card(values, buffer, ctypes.cast(buffer, pynvml.c_nvmlDevice_t)))
        known = {card.values.get(("GPU UUID",)) for card in self._cards}
        for uuid in self.gpm:
            if uuid not in known:  # in capture order: gpud's listing order, not NVML's index
                values = {
                    ("GPU UUID",): uuid,
                    ("Product Name",): NOT_CAPTURED,
                    ("PCI", "Bus Id"): NOT_CAPTURED,
                }
                buffer = ctypes.create_string_buffer(1)
                handle = ctypes.cast(buffer, pynvml.c_nvmlDevice_t)
                self._cards.append(_Card(values, buffer, handle, gpm_only=True))
        if not self.text.strip():
            self.header[("Driver Version",)] = NOT_CAPTURED
        self._set_buffer = ctypes.create_string_buffer(1)

    @classmethod
    def from_gpm(cls, text: str) -> FakeNvml:
        """A fake whose GPUs are those of a GPM capture (gpm_capture), known by nothing else."""
        return cls("", gpm=gpm_capture(text))

    # --- what tests change ---------------------------------------------------------------------

    def lose(self, index: int, code: int = pynvml.NVML_ERROR_GPU_IS_LOST) -> None:
        self._cards[index].lost = code

    def xid(self, index: int, code: int) -> None:
        """The driver reports XID `code` on GPU `index` (if it registered for XIDs)."""
        card = self._cards[index]
        if card.registered & pynvml.nvmlEventTypeXidCriticalError:
            data = pynvml.c_nvmlEventData_t()
            data.device = card.handle
            data.eventType = pynvml.nvmlEventTypeXidCriticalError
            data.eventData = code
            data.gpuInstanceId = data.computeInstanceId = 0xFFFFFFFF
            self._events.put(data)

    def value(self, index: int, *path: str) -> str:
        return self._cards[index].values[path]

    # --- system ------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self.init_tried.set()
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.header[("Driver Version",)]

    def nvmlDeviceGetCount(self) -> int:
        return len(self._cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        card = self._cards[index]
        if card.lost is not None:
            raise pynvml.NVMLError(card.lost)
        return card.handle

    # --- one GPU -----------------------------------------------------------------------------

    def _card(self, handle: Any, function: str) -> _Card:
        address = handle_address(handle)
        for index, card in enumerate(self._cards):
            if handle_address(card.handle) == address:
                self.calls[(function, index)] += 1
                if card.lost is not None:
                    raise pynvml.NVMLError(card.lost)
                if card.gpm_only and function not in GPM_ONLY_CALLS:
                    raise not_supported()
                return card
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def _captured(self, card: _Card, function: str, *args: Any) -> Any:
        """The answer the real NVML gave to this call, or the error it raised; NOT_SUPPORTED
        where the capture lacks the call (nvidia-smi -q does not print it either)."""
        asked = [f"gpu{self._cards.index(card)}", *args]
        for entry in self.nvml_calls:
            if entry["call"] == function and entry["args"] == asked:
                if "error" in entry:
                    raise pynvml.NVMLError(ERROR_CODES[entry["error"]])
                return entry["answer"]
        raise not_supported()

    @staticmethod
    def _text(card: _Card, *path: str) -> str:
        value = card.values.get(path, NA)
        if value == NA:
            raise not_supported()
        return value

    @classmethod
    def _number(cls, card: _Card, *path: str) -> float:
        return float(cls._text(card, *path).split()[0].rstrip("x"))

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._text(self._card(handle, "nvmlDeviceGetName"), "Product Name")

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self._text(self._card(handle, "nvmlDeviceGetUUID"), "GPU UUID")

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        return self._text(self._card(handle, "nvmlDeviceGetSerial"), "Serial Number")

    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any:
        card = self._card(handle, "nvmlDeviceGetPciInfo")
        info = pynvml.nvmlPciInfo_t()
        info.busId = self._text(card, "PCI", "Bus Id").encode()
        return info

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        card = self._card(handle, "nvmlDeviceGetUtilizationRates")
        gpu = self._number(card, "Utilization", "Gpu")
        memory = self._number(card, "Utilization", "Memory")
        return pynvml.c_nvmlUtilization_t(gpu=int(gpu), memory=int(memory))

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        card = self._card(handle, "nvmlDeviceGetMemoryInfo")

        def mib(line: str) -> int:
            return int(self._number(card, "FB Memory Usage", line)) * MIB

        if version:
            return pynvml.c_nvmlMemory_v2_t(
                version=version,
                total=mib("Total"),
                reserved=mib("Reserved"),
                free=mib("Free"),
                used=mib("Used"),
            )
        return pynvml.c_nvmlMemory_t(total=mib("Total"), free=mib("Free"), used=mib("Used"))

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        card = self._card(handle, "nvmlDeviceGetPowerUsage")
        return round(self._number(card, "GPU Power Readings", "Power Draw") * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        # nvidia-smi's "Current Power Limit" is the enforced limit (it was labelled "Enforced
        # Power Limit" before driver 535).
        card = self._card(handle, "nvmlDeviceGetEnforcedPowerLimit")
        return round(self._number(card, "GPU Power Readings", "Current Power Limit") * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        card = self._card(handle, "nvmlDeviceGetTotalEnergyConsumption")
        return int(self._captured(card, "nvmlDeviceGetTotalEnergyConsumption"))

    def nvmlDeviceGetTemperatureV(self, handle: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        card = self._card(handle, "nvmlDeviceGetTemperatureV")
        return int(self._number(card, "Temperature", "GPU Current Temp"))

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        card = self._card(handle, "nvmlDeviceGetTemperature")
        return int(self._number(card, "Temperature", "GPU Current Temp"))

    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int) -> int:
        line = {pynvml.NVML_CLOCK_SM: "SM", pynvml.NVML_CLOCK_MEM: "Memory"}[clock]
        return int(self._number(self._card(handle, "nvmlDeviceGetClockInfo"), "Clocks", line))

    def nvmlDeviceGetPerformanceState(self, handle: Any) -> int:
        card = self._card(handle, "nvmlDeviceGetPerformanceState")
        return int(self._text(card, "Performance State").removeprefix("P"))

    def _clock_events(self, handle: Any, function: str, *, active: bool) -> int:
        values = self._card(handle, function).values
        mask = 0
        for path, bit in CLOCK_EVENT_LINES.items():
            shown = values.get(("Clocks Event Reasons", *path), NA)
            if shown != NA and (not active or shown == "Active"):
                mask |= bit
        return mask

    def nvmlDeviceGetSupportedClocksEventReasons(self, handle: Any) -> int:
        return self._clock_events(handle, "nvmlDeviceGetSupportedClocksEventReasons", active=False)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return self._clock_events(handle, "nvmlDeviceGetCurrentClocksEventReasons", active=True)

    # The names before driver 535: the agent falls back to them only where the newer ones are
    # NOT_SUPPORTED, which only a GPU known from a GPM capture alone answers; so do these.
    def nvmlDeviceGetSupportedClocksThrottleReasons(self, handle: Any) -> int:
        self._card(handle, "nvmlDeviceGetSupportedClocksThrottleReasons")
        raise not_supported()

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int:
        self._card(handle, "nvmlDeviceGetCurrentClocksThrottleReasons")
        raise not_supported()

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int:
        card = self._card(handle, "nvmlDeviceGetTotalEccErrors")
        section = ("ECC Errors", ECC_SECTIONS[counter])
        return sum(int(self._number(card, *section, line)) for line in ECC_LINES[error_type])

    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        card = self._card(handle, "nvmlDeviceGetRemappedRows")

        def line(name: str) -> str:
            return self._text(card, "Remapped Rows", name)

        return (
            int(line("Correctable Error")),
            int(line("Uncorrectable Error")),
            int(line("Pending") == "Yes"),
            int(line("Remapping Failure Occurred") == "Yes"),
        )

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int:
        card = self._card(handle, "nvmlDeviceGetCurrPcieLinkGeneration")
        return int(self._number(card, "PCI", "GPU Link Info", "PCIe Generation", "Current"))

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int:
        card = self._card(handle, "nvmlDeviceGetCurrPcieLinkWidth")
        return int(self._number(card, "PCI", "GPU Link Info", "Link Width", "Current"))

    def nvmlDeviceGetPcieThroughput(self, handle: Any, counter: int) -> int:
        card = self._card(handle, "nvmlDeviceGetPcieThroughput")
        line = {pynvml.NVML_PCIE_UTIL_TX_BYTES: "Tx Throughput"}.get(counter, "Rx Throughput")
        return int(self._number(card, "PCI", line))  # KB/s, as NVML counts

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: Sequence[int]) -> Any:
        values = self._card(handle, "nvmlDeviceGetFieldValues").values
        answers = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        for answer, requested in zip(answers, field_ids, strict=True):
            # an id, or (id, scope) as pynvml also takes it (NVLink counters per link or all)
            field_id, answer.scopeId = requested if isinstance(requested, tuple) else (requested, 0)
            answer.fieldId = field_id
            path, value_type = FIELD_LINES.get(field_id, ((), 0))
            shown = values.get(path, NA)
            if shown == NA:
                answer.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            answer.nvmlReturn = pynvml.NVML_SUCCESS
            answer.valueType = value_type
            member = {pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal"}.get(value_type, "ullVal")
            setattr(answer.value, member, int(shown.split()[0]))
        return answers

    def nvmlDeviceGetEncoderUtilization(self, handle: Any) -> list[int | None]:
        return self._codec(handle, "nvmlDeviceGetEncoderUtilization", "Encoder")

    def nvmlDeviceGetDecoderUtilization(self, handle: Any) -> list[int | None]:
        return self._codec(handle, "nvmlDeviceGetDecoderUtilization", "Decoder")

    def _codec(self, handle: Any, function: str, line: str) -> list[int | None]:
        """[percent, sampling period in us], as pynvml answers: the real NVML answer where
        captured; else the percent nvidia-smi -q printed under Utilization (nvidia-smi shows
        nvmlDevice{En,De}coderUtilization's percent there; N/A: NOT_SUPPORTED) and None for the
        sampling period, which nvidia-smi does not print: nothing stands in for it, so code
        that read it would fail here instead of reading a made-up number."""
        card = self._card(handle, function)
        try:
            return list(self._captured(card, function))
        except pynvml.NVMLError:
            return [int(self._number(card, "Utilization", line)), None]

    # GPM: only what a capture holds. Without a GPM capture (`gpm`) a GPU answers as its NVML
    # call capture says, or NOT_SUPPORTED, as a pre-Hopper GPU does. A GPU in `gpm` answered
    # GPM metrics in the capture, so it answers isSupportedDevice 1 (real: NVML gave it values)
    # and, for each reading whatever its window, each captured metric's value with NVML_SUCCESS
    # (real), each other metric UNCAPTURED with a NaN value (the fake's own: not asked there).
    def _gpm_answers(self, card: _Card) -> dict[int, float] | None:
        return self.gpm.get(card.values.get(("GPU UUID",), ""))

    def nvmlGpmQueryDeviceSupport(self, handle: Any) -> Any:
        card = self._card(handle, "nvmlGpmQueryDeviceSupport")
        support = pynvml.c_nvmlGpmSupport_t()
        if self._gpm_answers(card) is not None:
            support.isSupportedDevice = 1
            return support
        answer = self._captured(card, "nvmlGpmQueryDeviceSupport")
        support.isSupportedDevice = int(answer["isSupportedDevice"])
        return support

    def nvmlGpmSampleAlloc(self) -> Any:
        if not self.gpm:
            raise not_supported()  # not reached without a capture saying a GPU has GPM
        buffer = ctypes.create_string_buffer(1)  # gives each sample its own address
        sample = ctypes.cast(buffer, pynvml.c_nvmlGpmSample_t)
        address = ctypes.cast(sample, ctypes.c_void_p).value
        assert address is not None
        self._gpm_samples[address] = (buffer, None)
        return sample

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self._gpm_samples.pop(self._sample_address(sample))
        self.gpm_samples_freed += 1

    @property
    def gpm_samples_held(self) -> int:
        return len(self._gpm_samples)

    def _sample_address(self, sample: Any) -> int:
        """A sample this fake allocated and has not freed, by address; else INVALID_ARGUMENT."""
        address = ctypes.cast(sample, ctypes.c_void_p).value
        if address is None or address not in self._gpm_samples:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return address

    def nvmlGpmSampleGet(self, handle: Any, sample: Any) -> Any:
        card = self._card(handle, "nvmlGpmSampleGet")
        if self._gpm_answers(card) is None:
            raise not_supported()
        address = self._sample_address(sample)
        self._gpm_samples[address] = (self._gpm_samples[address][0], self._cards.index(card))
        return sample

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        if request.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        taken = {
            self._gpm_samples[self._sample_address(sample)][1]
            for sample in (request.sample1, request.sample2)
        }
        if len(taken) != 1 or None in taken:  # two samples of one GPU, both taken
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        [index] = taken
        assert index is not None
        card = self._cards[index]
        self.calls[("nvmlGpmMetricsGet", index)] += 1
        if card.lost is not None:
            raise pynvml.NVMLError(card.lost)
        answers = self._gpm_answers(card) or {}
        for slot in range(request.numMetrics):
            metric = request.metrics[slot]
            if metric.metricId in answers:
                metric.nvmlReturn = pynvml.NVML_SUCCESS
                metric.value = answers[metric.metricId]
            else:
                metric.nvmlReturn = UNCAPTURED
                metric.value = math.nan
        return request

    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int:
        card = self._card(handle, "nvmlDeviceGetNvLinkState")
        return int(self._captured(card, "nvmlDeviceGetNvLinkState", link))

    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]:
        card = self._card(handle, "nvmlDeviceGetMigMode")
        modes = [self._text(card, "MIG Mode", when) for when in ("Current", "Pending")]
        return [int(mode == "Enabled") for mode in modes]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        card = self._card(handle, "nvmlDeviceGetComputeRunningProcesses")
        shown = self._text(card, "Processes")
        assert shown == "None", "only captures without processes are understood"
        pids = self.processes.get(self._cards.index(card), [])
        return [pynvml.c_nvmlProcessInfo_t(pid=pid, usedGpuMemory=0) for pid in pids]

    # --- events ------------------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> Any:
        return ctypes.cast(self._set_buffer, pynvml.c_nvmlEventSet_t)

    def nvmlEventSetFree(self, event_set: Any) -> None:
        pass

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        self._card(handle, "nvmlDeviceGetSupportedEventTypes")
        raise not_supported()  # not in the capture

    def nvmlDeviceRegisterEvents(self, handle: Any, mask: int, event_set: Any) -> None:
        self._card(handle, "nvmlDeviceRegisterEvents").registered |= mask
        if all(card.registered for card in self._cards):
            self.all_registered.set()

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        try:
            return self._events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT) from None
