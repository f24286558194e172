"""The NVML source and the GPU event listener, against a fake at the NVML function boundary whose
values come from a real H100 capture (tests/data/nvml/h100-nvidia-smi-q.txt, see its .source).

The capture is `nvidia-smi -q`, which prints what NVML answers. It shows no total-energy counter,
no NVLink and no supported event types, so the fake answers those NOT_SUPPORTED and the tests
below check that such fields are absent rather than check values nobody captured. The last tests
use our own capture of one H100 (tests/data/nvml/h100-single.source), which adds the real NVML
answers for those, and the agent's real probe output from the same run to hold the fake against.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pynvml
import pytest

import agent.accelerators.nvml as nvml_module
from agent.accelerators.config import AcceleratorSettings
from agent.accelerators.nvml import (
    EVENT_MEASUREMENT,
    HOST_MEASUREMENT,
    MEASUREMENT,
    NvmlSource,
    NvmlUnavailable,
)
from agent.accelerators.nvml_events import NvmlEvents, XidFileError, load_xids
from agent.accelerators.nvml_profiling import GPM_METRICS, metric_answers, metrics_request
from agent.accelerators.sources import Accelerators
from agent.scheduler import PeriodicPoller
from bench.gpu_compare import QUERY, compare, smi_rows
from rackwatch.probe_nvml import probe_nvml
from telemetry.lineproto import parse_lines
from telemetry.sample import Sample
from tests.nvml_fake import MIB, FakeNvml

CAPTURE = Path(__file__).parent / "data" / "nvml" / "h100-nvidia-smi-q.txt"
HOST = {"host": "gpu-node-7", "rack": "B12"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeNvml:
    return FakeNvml(CAPTURE.read_text(encoding="utf-8"))


def gpu_samples(samples: list[Sample]) -> dict[str, Sample]:
    return {s.tags["index"]: s for s in samples if s.measurement == MEASUREMENT}


def one(samples: list[Sample], measurement: str) -> Sample:
    [sample] = [s for s in samples if s.measurement == measurement]
    return sample


def number(text: str) -> float:
    return float(text.split()[0].rstrip("x"))


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
async def test_each_gpu_reads_as_the_capture_shows_it(fake: FakeNvml, index: int) -> None:
    samples = await NvmlSource(HOST, nvml=fake).collect()
    sample = gpu_samples(samples)[str(index)]

    def shown(*path: str) -> str:
        return fake.value(index, *path)

    assert sample.tags == {
        **HOST,
        "vendor": "nvidia",
        "model": shown("Product Name"),
        "uuid": shown("GPU UUID"),
        "index": str(index),
        "serial": shown("Serial Number"),
        "pci_bus_id": shown("PCI", "Bus Id"),
        "driver_version": fake.header[("Driver Version",)],
    }
    fields = sample.fields
    assert fields["util_pct"] == number(shown("Utilization", "Gpu"))
    assert fields["mem_util_pct"] == number(shown("Utilization", "Memory"))
    assert fields["mem_total_bytes"] == number(shown("FB Memory Usage", "Total")) * MIB
    assert fields["mem_used_bytes"] == number(shown("FB Memory Usage", "Used")) * MIB
    assert fields["mem_reserved_bytes"] == number(shown("FB Memory Usage", "Reserved")) * MIB
    assert fields["power_w"] == number(shown("GPU Power Readings", "Power Draw"))
    assert fields["power_limit_w"] == number(shown("GPU Power Readings", "Current Power Limit"))
    assert fields["temp_c"] == number(shown("Temperature", "GPU Current Temp"))
    assert fields["mem_temp_c"] == number(shown("Temperature", "Memory Current Temp"))
    assert fields["sm_clock_mhz"] == number(shown("Clocks", "SM"))
    assert fields["mem_clock_mhz"] == number(shown("Clocks", "Memory"))
    assert f"P{fields['pstate']}" == shown("Performance State")
    assert fields["pcie_link_gen"] == number(
        shown("PCI", "GPU Link Info", "PCIe Generation", "Current")
    )
    assert fields["pcie_link_width"] == number(
        shown("PCI", "GPU Link Info", "Link Width", "Current")
    )
    assert fields["pcie_replay_total"] == number(shown("PCI", "Replays Since Reset"))
    assert fields["row_remap_correctable_total"] == number(
        shown("Remapped Rows", "Correctable Error")
    )
    assert fields["row_remap_pending"] is (shown("Remapped Rows", "Pending") == "Yes")
    assert fields["mig_enabled"] is (shown("MIG Mode", "Current") == "Enabled")
    # nvidia-smi splits the ECC totals by where the error was; NVML's total is their sum.
    volatile = [
        ("ECC Errors", "Volatile", line) for line in ("SRAM Correctable", "DRAM Correctable")
    ]
    assert fields["ecc_corrected_total"] == sum(number(shown(*path)) for path in volatile)
    assert fields["ecc_uncorrected_aggregate_total"] == sum(
        number(shown("ECC Errors", "Aggregate", line))
        for line in (
            "SRAM Uncorrectable Parity",
            "SRAM Uncorrectable SEC-DED",
            "DRAM Uncorrectable",
        )
    )


async def test_throttle_reasons_are_named_flags_of_the_supported_bits(fake: FakeNvml) -> None:
    fields = gpu_samples(await NvmlSource(HOST, nvml=fake).collect())["0"].fields
    flags = {name: value for name, value in fields.items() if name.startswith("throttle_")}
    # The capture shows nine reasons, the GPU idle and nothing else holding the clocks back.
    assert len(flags) == 9
    assert [name for name, on in flags.items() if on] == ["throttle_idle"]
    assert fake.value(0, "Clocks Event Reasons", "Idle") == "Active"
    assert {
        "throttle_sw_power_cap",
        "throttle_hw_slowdown",
        "throttle_hw_thermal_slowdown",
        "throttle_sw_thermal_slowdown",
        "throttle_hw_power_brake",
    } <= set(flags)


async def test_fields_keep_the_schema_types(fake: FakeNvml) -> None:
    samples = await NvmlSource(HOST, nvml=fake, slow_interval_s=0).collect()
    for sample in gpu_samples(samples).values():
        for name, value in sample.fields.items():
            if name.endswith(("_bytes", "_total")) or name.startswith(("pcie_link", "nvlink_")):
                assert type(value) is int, name
            elif name.endswith(("_pct", "_w", "_c", "_mhz", "_j", "_per_s")):
                assert type(value) is float, name
            elif (
                name.startswith(("throttle_", "row_remap_p", "row_remap_f"))
                or name == "mig_enabled"
            ):
                assert type(value) is bool, name


async def test_what_the_capture_lacks_is_absent_not_invented(fake: FakeNvml) -> None:
    fields = gpu_samples(await NvmlSource(HOST, nvml=fake).collect())["0"].fields
    # nvidia-smi -q prints no energy counter and no NVLink: the fake says NOT_SUPPORTED.
    assert "energy_j" not in fields
    assert not [name for name in fields if name.startswith("nvlink_")]


async def test_host_total_sums_the_gpus(fake: FakeNvml) -> None:
    samples = await NvmlSource(HOST, nvml=fake).collect()
    total = one(samples, HOST_MEASUREMENT)
    assert total.tags == {**HOST, "vendor": "nvidia"}
    assert total.fields["count"] == 2
    assert total.fields["lost"] == 0
    draws = [number(fake.value(i, "GPU Power Readings", "Power Draw")) for i in (0, 1)]
    assert total.fields["power_w"] == pytest.approx(sum(draws))
    assert len({s.time_ns for s in samples}) == 1  # one timestamp per poll


# --- cost: what is not supported is not asked again; slow calls wait ----------------------


async def test_a_call_the_gpu_does_not_support_is_made_once(fake: FakeNvml) -> None:
    source = NvmlSource(HOST, nvml=fake)
    for _ in range(3):
        await source.collect()
    for index in (0, 1):
        assert fake.calls[("nvmlDeviceGetTotalEnergyConsumption", index)] == 1
        assert fake.calls[("nvmlDeviceGetNvLinkState", index)] == 1  # link 0 says: no NVLink
        assert fake.calls[("nvmlDeviceGetUtilizationRates", index)] == 3
        assert fake.calls[("nvmlDeviceGetFieldValues", index)] == 3
    assert source._gpus is not None
    # Of the field values, only those the capture shows are still asked for.
    assert sorted(source._gpus[0].field_ids) == sorted(
        [pynvml.NVML_FI_DEV_MEMORY_TEMP, pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER]
    )


async def test_slow_calls_run_only_on_their_interval(fake: FakeNvml) -> None:
    clock = Clock()
    source = NvmlSource(HOST, nvml=fake, slow_interval_s=60.0, clock=clock)
    seen = []
    for step in (0, 10, 50, 10):
        clock.now += step
        fields = gpu_samples(await source.collect())["0"].fields
        seen.append("pcie_tx_bytes_per_s" in fields and "processes" in fields)
    assert seen == [True, False, True, False]
    tx = number(fake.value(0, "PCI", "Tx Throughput"))  # KB/s
    assert (
        fields_of(await NvmlSource(HOST, nvml=fake, slow_interval_s=0).collect())[
            "pcie_tx_bytes_per_s"
        ]
        == tx * 1000
    )


def fields_of(samples: list[Sample]) -> Any:
    return gpu_samples(samples)["0"].fields


async def test_slow_calls_are_off_by_default(fake: FakeNvml) -> None:
    await NvmlSource(HOST, nvml=fake).collect()
    assert fake.calls[("nvmlDeviceGetPcieThroughput", 0)] == 0
    assert fake.calls[("nvmlDeviceGetComputeRunningProcesses", 0)] == 0


class OlderDriver(FakeNvml):
    """A driver before nvmlDeviceGetTemperatureV (pynvml raises FUNCTION_NOT_FOUND)."""

    def nvmlDeviceGetTemperatureV(self, handle: Any, sensor: int) -> int:
        self._card(handle, "nvmlDeviceGetTemperatureV")
        raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)


async def test_a_call_the_driver_lacks_falls_back_to_the_older_one_for_good() -> None:
    fake = OlderDriver(CAPTURE.read_text(encoding="utf-8"))
    source = NvmlSource(HOST, nvml=fake)
    for _ in range(2):
        fields = gpu_samples(await source.collect())["0"].fields
        assert fields["temp_c"] == number(fake.value(0, "Temperature", "GPU Current Temp"))
    assert fake.calls[("nvmlDeviceGetTemperatureV", 0)] == 1
    assert fake.calls[("nvmlDeviceGetTemperature", 0)] == 2


# --- never on the event loop ---------------------------------------------------------------


class RecordingThread(FakeNvml):
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        self.thread = threading.current_thread()
        return super().nvmlDeviceGetUtilizationRates(handle)


async def test_nvml_calls_run_in_a_worker_thread() -> None:
    fake = RecordingThread(CAPTURE.read_text(encoding="utf-8"))
    await NvmlSource(HOST, nvml=fake).collect()
    assert fake.thread is not threading.main_thread()


class Hanging(FakeNvml):
    """Utilization blocks until released: an NVML call that hangs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        self.entered.set()
        self.release.wait()
        return super().nvmlDeviceGetUtilizationRates(handle)


async def test_a_poll_never_overlaps_one_still_running_in_its_thread() -> None:
    fake = Hanging(CAPTURE.read_text(encoding="utf-8"))
    source = NvmlSource(HOST, nvml=fake)
    first = asyncio.create_task(source.collect())
    await asyncio.to_thread(fake.entered.wait)
    with pytest.raises(NvmlUnavailable, match="previous NVML poll is still running"):
        await source.collect()
    fake.release.set()
    assert len(gpu_samples(await first)) == 2


# --- a GPU that falls off the bus ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "meaning", "error"),
    [
        (pynvml.NVML_ERROR_GPU_IS_LOST, "GPU has fallen off the bus", "NVML_ERROR_GPU_IS_LOST"),
        (pynvml.NVML_ERROR_UNKNOWN, "GPU stopped answering NVML", "NVML_ERROR_UNKNOWN"),
    ],
)
async def test_a_lost_gpu_is_reported_once_and_the_other_is_still_polled(
    fake: FakeNvml, code: int, meaning: str, error: str
) -> None:
    clock = Clock()
    source = NvmlSource(HOST, nvml=fake, clock=clock, lost_retry_s=60.0)
    assert set(gpu_samples(await source.collect())) == {"0", "1"}

    fake.lose(1, code)
    samples = await source.collect()
    assert set(gpu_samples(samples)) == {"0"}
    event = one(samples, EVENT_MEASUREMENT)
    assert event.fields == {"event": "gpu_lost", "meaning": meaning, "error": error}
    assert event.tags["uuid"] == fake.value(1, "GPU UUID")
    assert event.tags["host"] == HOST["host"]
    total = one(samples, HOST_MEASUREMENT)
    assert (total.fields["count"], total.fields["healthy_count"], total.fields["lost"]) == (2, 1, 1)
    assert total.fields["power_w"] == number(fake.value(0, "GPU Power Readings", "Power Draw"))

    clock.now += 10
    calls_before = sum(n for (_, index), n in fake.calls.items() if index == 1)
    samples = await source.collect()
    assert set(gpu_samples(samples)) == {"0"}
    assert not [s for s in samples if s.measurement == EVENT_MEASUREMENT]  # once per loss
    assert sum(n for (_, index), n in fake.calls.items() if index == 1) == calls_before

    clock.now += 60  # asked again; it answers again (after a reset)
    fake._cards[1].lost = None
    samples = await source.collect()
    assert set(gpu_samples(samples)) == {"0", "1"}
    assert one(samples, HOST_MEASUREMENT).fields["lost"] == 0


async def test_a_gpu_lost_before_the_first_poll_is_reported(fake: FakeNvml) -> None:
    fake.lose(0)
    samples = await NvmlSource(HOST, nvml=fake).collect()
    assert set(gpu_samples(samples)) == {"1"}
    event = one(samples, EVENT_MEASUREMENT)
    assert event.tags["index"] == "0"
    assert event.fields["meaning"] == "GPU has fallen off the bus"


# --- NVML that cannot start ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "the NVIDIA kernel driver is not loaded"),
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 not found"),
    ],
)
async def test_nvml_that_cannot_start_fails_the_poll_clearly_and_is_tried_again(
    fake: FakeNvml, code: int, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake.init_error = code
    emitted: list[list[Sample]] = []
    source = NvmlSource(HOST, nvml=fake)
    poller = PeriodicPoller("nvml", source.collect, lambda _, s: emitted.append(s), interval_s=30)
    with caplog.at_level(logging.WARNING):
        await poller._poll_once()
    assert poller.stats.polls_failed == 1
    assert problem in poller.stats.last_error
    assert pynvml.NVMLError(code).__class__.__name__ != "NVMLError"  # pynvml's own error class
    assert any(problem in record.getMessage() for record in caplog.records)
    assert emitted == []

    fake.init_error = None  # the driver is loaded now
    await poller._poll_once()
    assert poller.stats.polls_ok == 1
    assert len(gpu_samples(emitted[0])) == 2


async def test_close_shuts_nvml_down(fake: FakeNvml) -> None:
    source = NvmlSource(HOST, nvml=fake)
    await source.collect()
    assert fake.initialized == 1
    await source.close()
    assert fake.initialized == 0


# --- XID events ----------------------------------------------------------------------------


async def test_an_xid_arrives_as_an_event_sample(fake: FakeNvml) -> None:
    received: asyncio.Queue[Sample] = asyncio.Queue()

    def emit(samples: list[Sample]) -> None:
        for sample in samples:
            received.put_nowait(sample)

    events = NvmlEvents(HOST, emit, nvml=fake, wait_ms=50)
    events.start()
    try:
        assert await asyncio.to_thread(fake.all_registered.wait, 10)
        fake.xid(1, 79)
        fake.xid(0, 999)  # a code the table does not know
        async with asyncio.timeout(10):
            first, second = await received.get(), await received.get()
    finally:
        await events.stop()
    assert first.measurement == EVENT_MEASUREMENT
    assert first.tags["uuid"] == fake.value(1, "GPU UUID")
    assert first.tags["index"] == "1"
    assert first.tags["host"] == HOST["host"]
    assert first.fields == {
        "event": "xid",
        "xid": 79,
        "meaning": "GPU has fallen off the bus",
        "mnemonic": "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS",
    }
    assert second.tags["uuid"] == fake.value(0, "GPU UUID")
    assert second.fields == {"event": "xid", "xid": 999, "meaning": "see NVIDIA's Xid catalog"}
    assert fake.initialized == 0  # NVML shut down when the thread ended


async def test_the_event_thread_waits_for_nvml_and_stops_promptly(
    fake: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    fake.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    events = NvmlEvents(HOST, lambda s: None, nvml=fake, retry_s=3600)
    with caplog.at_level(logging.WARNING):
        events.start()
        assert await asyncio.to_thread(fake.init_tried.wait, 10)
        thread = events._thread
        await events.stop()  # does not sit out the hour before the next try
    assert thread is not None
    assert not thread.is_alive()
    assert any("driver is not loaded" in record.getMessage() for record in caplog.records)


def test_every_xid_entry_has_a_mnemonic_and_a_meaning() -> None:
    xids = load_xids()
    assert {13, 31, 48, 79, 94, 95} <= set(xids)
    assert xids[48].mnemonic == "ROBUST_CHANNEL_GPU_ECC_DBE"


def test_a_bad_xid_file_is_named_with_the_entry(tmp_path: Path) -> None:
    bad = tmp_path / "xid.yaml"
    bad.write_text("79:\n  meaning: GPU has fallen off the bus\n", encoding="utf-8")
    with pytest.raises(XidFileError, match=r"xid\.yaml: XID 79: needs exactly"):
        load_xids(bad)


# --- rackwatch probe --nvml and the GPU check's comparison ---------------------------------


async def test_probe_prints_line_protocol(
    fake: FakeNvml, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(output="line-protocol")
    assert await probe_nvml(args, nvml=fake) == 0
    out = capsys.readouterr().out
    assert out.startswith("# nvml: driver 565.57.01, 2 GPUs")
    samples = parse_lines(out)
    assert len(gpu_samples(samples)) == 2
    assert "pcie_tx_bytes_per_s" in gpu_samples(samples)["0"].fields  # slow calls too


async def test_probe_without_a_driver_says_why(
    fake: FakeNvml, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    assert await probe_nvml(argparse.Namespace(output="line-protocol"), nvml=fake) == 1
    assert "libnvidia-ml.so.1 not found" in capsys.readouterr().err


def smi_csv(fake: FakeNvml, **changed: str) -> str:
    """What `nvidia-smi --query-gpu=QUERY --format=csv` prints for the captured GPUs."""
    where = {
        "uuid": ("GPU UUID",),
        "serial": ("Serial Number",),
        "name": ("Product Name",),
        "pci.bus_id": ("PCI", "Bus Id"),
        "memory.total": ("FB Memory Usage", "Total"),
        "memory.used": ("FB Memory Usage", "Used"),
        "clocks.sm": ("Clocks", "SM"),
        "clocks.mem": ("Clocks", "Memory"),
        "temperature.gpu": ("Temperature", "GPU Current Temp"),
        "power.draw": ("GPU Power Readings", "Power Draw"),
    }
    lines = [", ".join(QUERY)]
    for index in (0, 1):
        row = [
            fake.header[("Driver Version",)]
            if column == "driver_version"
            else fake.value(index, *where[column])
            for column in QUERY
        ]
        lines.append(
            ", ".join(changed.get(column, cell) for column, cell in zip(QUERY, row, strict=True))
        )
    return "\n".join(lines) + "\n"


async def test_gpu_check_comparison_agrees_with_the_same_values(fake: FakeNvml) -> None:
    samples = await NvmlSource(HOST, nvml=fake).collect()
    lines, bad = compare(samples, smi_rows(smi_csv(fake)))
    assert bad == 0
    assert len(lines) == 2 * (5 + 6)


async def test_gpu_check_comparison_flags_a_difference(fake: FakeNvml) -> None:
    samples = await NvmlSource(HOST, nvml=fake).collect()
    lines, bad = compare(samples, smi_rows(smi_csv(fake, **{"temperature.gpu": "45"})))
    assert bad == 2
    assert all("temperature.gpu: 30 | 45" in line for line in lines if line.startswith("DIFF"))


# --- our own capture: the fake against what the real NVML answered in the same run ----------

SINGLE = Path(__file__).parent / "data" / "nvml"


@pytest.fixture
def single() -> FakeNvml:
    """The H100 (driver 580) of the GPU machine: nvidia-smi -q plus its real NVML answers."""
    calls = json.loads((SINGLE / "h100-single-nvml-calls.json").read_text(encoding="utf-8"))
    return FakeNvml((SINGLE / "h100-single-nvidia-smi-q.txt").read_text(), nvml_calls=calls)


async def test_the_fake_reads_what_the_real_nvml_read_on_the_same_card(single: FakeNvml) -> None:
    real = parse_lines((SINGLE / "h100-single-probe.lp").read_text(encoding="utf-8"))
    faked = await NvmlSource({"host": "vm"}, nvml=single, slow_interval_s=0).collect()
    assert [s.measurement for s in faked] == [s.measurement for s in real]
    for fake_sample, real_sample in zip(faked, real, strict=True):
        assert fake_sample.tags == real_sample.tags
        assert fake_sample.fields.keys() == real_sample.fields.keys()  # what the card supports
    # Read seconds apart: what moves may differ, the rest may not.
    moving = {"power_w", "energy_j", "mem_temp_c", "temp_c", "pcie_tx_bytes_per_s"}
    moving |= {"pcie_rx_bytes_per_s", "util_pct", "mem_util_pct", "sm_clock_mhz"}
    fake_gpu, real_gpu = gpu_samples(faked)["0"].fields, gpu_samples(real)["0"].fields
    assert {k: v for k, v in fake_gpu.items() if k not in moving} == {
        k: v for k, v in real_gpu.items() if k not in moving
    }
    assert fake_gpu["power_w"] == pytest.approx(real_gpu["power_w"], abs=1.0)


async def test_the_energy_counter_is_read_on_its_own_interval(single: FakeNvml) -> None:
    clock = Clock()
    source = NvmlSource(HOST, nvml=single, energy_interval_s=60.0, clock=clock)
    seen = []
    for step in (0, 10, 50, 10):
        clock.now += step
        seen.append(fields_of(await source.collect()).get("energy_j"))
    # The driver's answer, 2907236 mJ, when due; nothing in between (a running total: no loss).
    assert seen == [2907.236, None, 2907.236, None]
    assert single.calls[("nvmlDeviceGetTotalEnergyConsumption", 0)] == 2
    every_poll = NvmlSource(HOST, nvml=single, energy_interval_s=0)
    for _ in range(2):
        assert fields_of(await every_poll.collect())["energy_j"] == 2907.236
    assert single.calls[("nvmlDeviceGetTotalEnergyConsumption", 0)] == 4


@pytest.mark.parametrize(("configured", "energy_reads"), [({}, 1), ({"energy_interval_s": 0}, 3)])
async def test_the_configured_energy_interval_reaches_the_source(
    single: FakeNvml,
    monkeypatch: pytest.MonkeyPatch,
    configured: dict[str, float],
    energy_reads: int,
) -> None:
    monkeypatch.setattr(nvml_module, "NvmlSource", functools.partial(NvmlSource, nvml=single))
    nvidia = {"events": False, **configured}
    settings = AcceleratorSettings.model_validate({"host": "n1", "nvidia": nvidia})
    accelerators = Accelerators(settings, "qiyang", lambda samples: None)
    for _ in range(3):
        await accelerators.polls["nvidia"]()
    assert single.calls[("nvmlDeviceGetTotalEnergyConsumption", 0)] == energy_reads


def test_a_negative_energy_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="energy_interval_s"):
        AcceleratorSettings.model_validate({"nvidia": {"energy_interval_s": -1}})


# --- profiling counters (GPM, encoder/decoder, NVLink bytes): issue 18 item 2 ---------------


async def test_profiling_is_off_by_default(fake: FakeNvml) -> None:
    samples = await NvmlSource(HOST, nvml=fake).collect()
    assert "enc_util_pct" not in gpu_samples(samples)["0"].fields
    assert "gpm_unsupported" not in one(samples, HOST_MEASUREMENT).fields
    assert fake.calls[("nvmlGpmQueryDeviceSupport", 0)] == 0
    assert fake.calls[("nvmlDeviceGetEncoderUtilization", 0)] == 0


async def test_a_gpu_without_gpm_is_noted_once_and_the_rest_is_read(
    fake: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    # The capture has no GPM answer: the fake says NOT_SUPPORTED, as a GPU before Hopper does.
    clock = Clock()
    source = NvmlSource(HOST, nvml=fake, profiling_interval_s=30.0, clock=clock)
    caplog.set_level(logging.INFO, logger="agent.accelerators.nvml")
    seen = []
    for step in (0, 10, 20, 30):
        clock.now += step
        samples = await source.collect()
        fields = gpu_samples(samples)["0"].fields
        seen.append(fields.get("enc_util_pct"))
        assert one(samples, HOST_MEASUREMENT).fields["gpm_unsupported"] == 2
        assert not {"sm_active_pct", "tensor_active_pct", "dram_active_pct"} & fields.keys()
    # Encoder : 0 % (nvidia-smi -q) on its interval, none between
    assert seen == [0.0, None, 0.0, 0.0]
    assert gpu_samples(samples)["1"].fields["dec_util_pct"] == 0.0
    for index in (0, 1):
        assert fake.calls[("nvmlGpmQueryDeviceSupport", index)] == 1  # asked once, ever
        assert fake.calls[("nvmlDeviceGetEncoderUtilization", index)] == 3
    no_gpm = [r for r in caplog.records if "no GPM" in r.getMessage()]
    assert len(no_gpm) == 2  # once per GPU, not per poll


def test_the_gpm_request_asks_for_each_metric_between_two_samples() -> None:
    previous, current = pynvml.c_nvmlGpmSample_t(), pynvml.c_nvmlGpmSample_t()
    request = metrics_request(previous, current)
    assert request.version == pynvml.NVML_GPM_METRICS_GET_VERSION == 1  # nvml.h
    assert [request.metrics[i].metricId for i in range(request.numMetrics)] == list(GPM_METRICS)
    # The struct is nvml.h's: metrics[NVML_GPM_METRIC_MAX] of {metricId, nvmlReturn, value,
    # metricInfo}, whatever the binding's MAX; NVML reads only numMetrics of them.
    assert request.numMetrics <= len(request.metrics)
    # Unanswered (nvmlReturn is not SUCCESS until NVML fills it in): no field, nothing invented.
    for i in range(request.numMetrics):
        request.metrics[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
    reading = metric_answers(request)
    assert reading.fields == {}
    assert reading.failed == {}
    assert reading.unsupported == [name for name, _ in GPM_METRICS.values()]


def test_each_gpm_metric_is_judged_by_its_own_return_code() -> None:
    # NVML answers each metric with its own nvmlReturn (nvml.h: the value is valid only when it
    # is SUCCESS). One unsupported metric and one failing one cost only themselves, by name.
    request = metrics_request(pynvml.c_nvmlGpmSample_t(), pynvml.c_nvmlGpmSample_t())
    for i in range(request.numMetrics):
        request.metrics[i].nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
    tensor = list(GPM_METRICS).index(pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL)
    request.metrics[tensor].nvmlReturn = pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
    reading = metric_answers(request)
    assert reading.failed == {"tensor_active_pct": pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES}
    assert "tensor_active_pct" not in reading.unsupported
    assert len(reading.unsupported) == len(GPM_METRICS) - 1


def test_gpm_units_are_nvml_h_units_converted_to_the_schema() -> None:
    # nvml.h: the *_PER_SEC metrics are MiB/s; the others are percentages 0.0-100.0.
    for _metric, (name, factor) in GPM_METRICS.items():
        if name.endswith("_bytes_per_s"):
            assert factor == 1 << 20, name
        else:
            assert name.endswith("_pct"), name
            assert factor == 1.0, name


async def test_on_a_mig_enabled_gpu_gpm_is_skipped_said_once_and_counted(
    fake: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    # The captures have MIG disabled, and none enabled, so MIG's state is handed to the GPM
    # step directly (what nvmlDeviceGetMigMode would answer): no NVML answer is made up.
    clock = Clock()
    source = NvmlSource(HOST, nvml=fake, profiling_interval_s=30.0, clock=clock)
    samples = await source.collect()
    assert one(samples, HOST_MEASUREMENT).fields["gpm_mig_skipped"] == 0
    [gpu, _] = source._gpus or []
    asked = fake.calls[("nvmlGpmQueryDeviceSupport", 0)]
    caplog.set_level(logging.WARNING, logger="agent.accelerators.nvml")
    for _ in range(3):
        assert source._gpm_or_skip(gpu, mig_enabled=True) == {}
    assert fake.calls[("nvmlGpmQueryDeviceSupport", 0)] == asked  # GPM not asked while MIG is on
    assert len([r for r in caplog.records if "MIG is enabled" in r.getMessage()]) == 1
    assert gpu.gpm_mig_skipped
    clock.now += 30.0  # the next profiling reading sees the capture's MIG mode: disabled
    host = one(source.poll(0), HOST_MEASUREMENT).fields
    assert host["gpm_mig_skipped"] == 0
    assert not gpu.gpm_mig_skipped
    assert host["gpm_failures_total"] == 0


async def test_nvlink_byte_counters_are_not_asked_of_a_gpu_without_nvlink(single: FakeNvml) -> None:
    # The lone H100 answers nvmlDeviceGetNvLinkState NOT_SUPPORTED (h100-single-nvml-calls.json):
    # no links, so no NVLink throughput field values are asked for, and none are written.
    source = NvmlSource(HOST, nvml=single, profiling_interval_s=30.0)
    samples = await source.collect()
    fields = gpu_samples(samples)["0"].fields
    assert not {"nvlink_tx_bytes_total", "nvlink_rx_bytes_total"} & fields.keys()
    assert single.calls[("nvmlDeviceGetFieldValues", 0)] == 1  # the usual poll's call only
    assert fields["enc_util_pct"] == 0.0
    assert fields["dec_util_pct"] == 0.0


async def test_the_configured_profiling_interval_reaches_the_source(
    single: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nvml_module, "NvmlSource", functools.partial(NvmlSource, nvml=single))
    nvidia = {"events": False, "profiling_interval_s": 1}
    settings = AcceleratorSettings.model_validate({"host": "n1", "nvidia": nvidia})
    accelerators = Accelerators(settings, "qiyang", lambda samples: None)
    samples = await accelerators.polls["nvidia"]()
    assert one(samples, HOST_MEASUREMENT).fields["gpm_unsupported"] == 1
    assert single.calls[("nvmlDeviceGetEncoderUtilization", 0)] == 1
    with pytest.raises(ValueError, match="profiling_interval_s"):
        AcceleratorSettings.model_validate({"nvidia": {"profiling_interval_s": 0}})


def test_the_profiling_capture_of_gpu_check_runs_against_the_fake(single: FakeNvml) -> None:
    # bench/gpu_check.sh's capture step (bench_nvml.profiling_answers), run on the fake: every
    # answer is the capture's own (MIG Mode: Disabled; no GPM answer captured: NOT_SUPPORTED).
    from bench.bench_nvml import profiling_answers

    single.nvmlInit()
    answers = {entry["call"]: entry for entry in profiling_answers(single, 1)}
    assert answers["nvmlDeviceGetMigMode"]["answer"] == [0, 0]
    assert answers["nvmlGpmQueryDeviceSupport"]["error"] == "NVMLError_NotSupported"
    assert answers["nvmlDeviceGetEncoderUtilization"]["answer"] == [0, None]
    assert "nvmlGpmSampleGet" not in answers  # not asked of a GPU that says it has no GPM
