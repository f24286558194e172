"""XIDs and other critical GPU errors through NVML's event API, as `accelerator_event` samples.

Polling cannot see an XID: the driver reports it once, when it happens. A dedicated thread
registers every GPU for the critical event types it supports (nvmlDeviceRegisterEvents) and
waits on the event set (nvmlEventSetWait_v2) with a short timeout, so `stop()` ends it within
`wait_ms`. Each event becomes one sample, handed to the event loop with call_soon_threadsafe.
What an XID code means is data (agent/accelerators/xid.yaml, from NVIDIA's Xid catalog). When
NVML cannot start, the thread says why once and tries again every `retry_s`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml
import yaml

from agent.accelerators.nvml import (
    EVENT_MEASUREMENT,
    LOST,
    NOT_SUPPORTED,
    Nvml,
    NvmlUnavailable,
    error_name,
    handle_address,
    identity_tags,
    start_nvml,
)
from agent.accelerators.repeated_warnings import RepeatedWarnings
from telemetry.sample import FieldValue, Sample

log = logging.getLogger(__name__)

XID_FILE = Path(__file__).with_name("xid.yaml")
UNKNOWN_XID = "see NVIDIA's Xid catalog"
NO_INSTANCE = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of an event outside MIG

# NVML event types asked for (by the binding's name, as older bindings lack newer types) ->
# the event's `event` field and, for those that are not XIDs, its `meaning`.
EVENT_TYPES: dict[str, tuple[str, str]] = {
    "nvmlEventTypeXidCriticalError": ("xid", ""),
    "nvmlEventTypeDoubleBitEccError": ("double_bit_ecc", "Double bit ECC error"),
    "nvmlEventTypeDramRetirementFailure": ("row_remap_failure", "Row remapping failed"),
    "nvmlEventTypeFatalPoisonError": ("fatal_poison", "Fatal poison error"),
    "nvmlEventTypeGpuUnavailableError": ("gpu_unavailable", "GPU unavailable"),
    "nvmlEventTypeGpuRecoveryAction": ("recovery_action", "GPU recovery action required"),
}
WANTED: dict[int, tuple[str, str]] = {
    getattr(pynvml, name): kind for name, kind in EVENT_TYPES.items() if hasattr(pynvml, name)
}


@dataclass(frozen=True, slots=True)
class Xid:
    mnemonic: str
    meaning: str


class XidFileError(ValueError):
    """xid.yaml is not what it should be; the message names the file and the entry."""


def load_xids(path: Path = XID_FILE) -> dict[int, Xid]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise XidFileError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise XidFileError(f"{path}: not a mapping of XID codes")
    xids = {}
    for code, entry in data.items():
        if not isinstance(code, int) or isinstance(code, bool):
            raise XidFileError(f"{path}: key {code!r}: not an XID number")
        if not isinstance(entry, dict) or set(entry) != {"mnemonic", "meaning"}:
            raise XidFileError(f"{path}: XID {code}: needs exactly 'mnemonic' and 'meaning'")
        if not all(isinstance(value, str) and value for value in entry.values()):
            raise XidFileError(f"{path}: XID {code}: 'mnemonic' and 'meaning' must be text")
        xids[code] = Xid(entry["mnemonic"], entry["meaning"])
    return xids


class NvmlEvents:
    """Listens for this host's GPU events in a thread; `emit` gets each one's sample on the loop
    that called `start()`. `tags` (host, site, ...) go on every sample."""

    def __init__(
        self,
        tags: Mapping[str, str],
        emit: Callable[[list[Sample]], None],
        *,
        nvml: Nvml = pynvml,
        wait_ms: int = 500,
        retry_s: float = 60.0,
        xids: Mapping[int, Xid] | None = None,
    ) -> None:
        self._tags = {key: value for key, value in tags.items() if value}
        self._emit = emit
        self._nvml = nvml
        self.wait_ms = wait_ms
        self.retry_s = retry_s
        self.xids = dict(xids) if xids is not None else load_xids()
        self.events = 0  # delivered so far
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._set: Any = None
        self._gpus: dict[int | None, dict[str, str]] = {}  # handle address -> identity tags
        self._warnings = RepeatedWarnings()

    def start(self) -> None:
        """Start listening; call from the event loop that should receive the samples."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="nvml-events", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop listening; returns within about `wait_ms`."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        await asyncio.to_thread(thread.join)

    # --- in the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._open()
            except NvmlUnavailable as exc:
                self._warnings.note("open", f"GPU events: {exc}")
                self._stopping.wait(self.retry_s)
                continue
            self._warnings.clear("open")
            try:
                self._listen()
            finally:
                self._close()
            self._stopping.wait(self.retry_s)  # the set broke: start afresh, not in a tight loop

    def _open(self) -> None:
        nvml = self._nvml
        start_nvml(nvml)
        try:
            self._set = nvml.nvmlEventSetCreate()
            driver = nvml.nvmlSystemGetDriverVersion()
            for index in range(nvml.nvmlDeviceGetCount()):
                self._register(index, driver)
        except pynvml.NVMLError as exc:
            self._close()
            raise NvmlUnavailable(f"cannot set up GPU events: {exc} ({error_name(exc)})") from None
        log.info("GPU events: listening on %d GPUs", len(self._gpus))

    def _register(self, index: int, driver: str) -> None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            tags = identity_tags(nvml, handle, index, driver)
        except pynvml.NVMLError as exc:
            if exc.value not in LOST:
                raise
            log.warning("GPU events: GPU %d not registered: %s", index, error_name(exc))
            return
        try:
            supported = nvml.nvmlDeviceGetSupportedEventTypes(handle)
        except pynvml.NVMLError as exc:
            if exc.value not in NOT_SUPPORTED:
                raise
            supported = pynvml.nvmlEventTypeXidCriticalError  # the one every datacenter GPU has
        mask = sum(bit for bit in WANTED if supported & bit)
        if not mask:
            log.info("GPU events: GPU %d (%s) has none to report", index, tags.get("uuid"))
            return
        try:
            nvml.nvmlDeviceRegisterEvents(handle, mask, self._set)
        except pynvml.NVMLError as exc:
            if exc.value not in NOT_SUPPORTED:
                raise
            log.info("GPU events: GPU %d (%s) has none to report", index, tags.get("uuid"))
            return
        self._gpus[handle_address(handle)] = tags

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self._nvml.nvmlEventSetWait_v2(self._set, self.wait_ms)
            except pynvml.NVMLError as exc:
                if exc.value == pynvml.NVML_ERROR_TIMEOUT:
                    continue  # nothing happened; look at the stop flag
                # A GPU that fell off the bus is also reported by the poll; start afresh.
                log.warning("GPU events: waiting failed: %s (%s)", exc, error_name(exc))
                return
            self._deliver(self._sample(data))

    def _close(self) -> None:
        nvml = self._nvml
        if self._set is not None:
            try:
                nvml.nvmlEventSetFree(self._set)
            except pynvml.NVMLError as exc:
                log.debug("nvmlEventSetFree: %s", exc)
            self._set = None
        self._gpus.clear()
        try:
            nvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            log.debug("nvmlShutdown: %s", exc)

    def _sample(self, data: Any) -> Sample:
        event_type = int(data.eventType)
        kind, meaning = WANTED.get(event_type, (f"event_0x{event_type:x}", "NVML event"))
        fields: dict[str, FieldValue] = {"event": kind}
        if kind == "xid":
            code = int(data.eventData)
            xid = self.xids.get(code)
            fields["xid"] = code
            fields["meaning"] = xid.meaning if xid else UNKNOWN_XID
            if xid:
                fields["mnemonic"] = xid.mnemonic
        else:
            fields["meaning"] = meaning
        for name, value in (
            ("gpu_instance", data.gpuInstanceId),
            ("compute_instance", data.computeInstanceId),
        ):
            if value != NO_INSTANCE:
                fields[name] = int(value)
        tags = self._gpus.get(handle_address(data.device), {"vendor": "nvidia"})
        return Sample(EVENT_MEASUREMENT, {**self._tags, **tags}, fields, time.time_ns())

    def _deliver(self, sample: Sample) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self.events += 1
        try:
            loop.call_soon_threadsafe(self._emit, [sample])
        except RuntimeError:  # the loop closed between the check and the call
            self._stopping.set()
