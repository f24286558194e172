"""The GPM success path (issue 18 item 2): NVML's answer to nvmlGpmMetricsGet, as real GPUs gave
it, through NvmlSource to `accelerator` fields and line protocol.

No GPU is lent here; the fake answers GPM from a public capture of real GPUs: gpud's `gpud scan
--poll-gpm-events` on 8 GPUs, SM occupancy only (tests/data/nvml/gpm-gpud-pr40.yaml, see its
.source for what it does not tell). tests/nvml_fake.py says what is the capture's and what is
the fake's own answer (uncaptured metrics: NVML_ERROR_NO_DATA; model and bus id: NOT_CAPTURED).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pynvml
import pytest

from agent.accelerators.nvml import HOST_MEASUREMENT, MEASUREMENT, NvmlSource
from agent.accelerators.nvml_profiling import GPM_METRICS
from telemetry.lineproto import encode_many, parse_lines
from telemetry.sample import Sample
from telemetry.schema import schema
from tests.nvml_fake import NOT_CAPTURED, FakeNvml, gpm_capture

GPUD = Path(__file__).parent / "data" / "nvml" / "gpm-gpud-pr40.yaml"
HOST = {"host": "gpu-node-7", "rack": "B12"}
WINDOW_S = 5.0  # gpud's sample_duration in the capture
OCCUPANCY = pynvml.NVML_GPM_METRIC_SM_OCCUPANCY
UNCAPTURED = {name for metric, (name, _) in GPM_METRICS.items() if metric != OCCUPANCY}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def capture() -> dict[str, dict[int, float]]:
    return gpm_capture(GPUD.read_text(encoding="utf-8"))


@pytest.fixture
def fake() -> FakeNvml:
    return FakeNvml.from_gpm(GPUD.read_text(encoding="utf-8"))


def by_uuid(samples: list[Sample]) -> dict[str, Sample]:
    return {s.tags["uuid"]: s for s in samples if s.measurement == MEASUREMENT}


def host(samples: list[Sample]) -> dict[str, object]:
    [sample] = [s for s in samples if s.measurement == HOST_MEASUREMENT]
    return dict(sample.fields)


async def two_readings(fake: FakeNvml) -> tuple[NvmlSource, list[Sample], list[Sample]]:
    clock = Clock()
    source = NvmlSource(HOST, nvml=fake, profiling_interval_s=WINDOW_S, clock=clock)
    first = await source.collect()
    clock.now += WINDOW_S
    second = await source.collect()
    return source, first, second


def test_the_capture_reads_as_gpud_printed_it(capture: dict[str, dict[int, float]]) -> None:
    # gpud keyed its answers by NVML metric id: "3" is NVML_GPM_METRIC_SM_OCCUPANCY (nvml.h).
    assert OCCUPANCY == 3
    assert len(capture) == 8
    assert all(set(metrics) == {OCCUPANCY} for metrics in capture.values())
    assert capture["GPU-f2341dcb-3589-9caa-76a9-f73ed13ec565"][OCCUPANCY] == 7.739499086738595
    assert capture["GPU-0f7218e4-bc2a-1777-8b0c-06612b7f338e"][OCCUPANCY] == 12.030642535682517
    assert sorted(metrics[OCCUPANCY] for metrics in capture.values())[:6] == [0.0] * 6


async def test_the_first_reading_only_takes_a_sample(fake: FakeNvml) -> None:
    source = NvmlSource(HOST, nvml=fake, profiling_interval_s=WINDOW_S, clock=Clock())
    samples = await source.collect()
    gpus = by_uuid(samples)
    assert len(gpus) == 8
    for sample in gpus.values():
        assert not {name for name, _ in GPM_METRICS.values()} & sample.fields.keys()
    for index in range(8):
        assert fake.calls[("nvmlGpmQueryDeviceSupport", index)] == 1
        assert fake.calls[("nvmlGpmSampleGet", index)] == 1
        assert fake.calls[("nvmlGpmMetricsGet", index)] == 0
    fields = host(samples)
    assert (fields["gpm_unsupported"], fields["gpm_failures_total"]) == (0, 0)


async def test_the_captured_occupancy_arrives_on_its_own_gpu(
    fake: FakeNvml, capture: dict[str, dict[int, float]]
) -> None:
    _, _, second = await two_readings(fake)
    gpus = by_uuid(second)
    assert set(gpus) == set(capture)
    for position, (uuid, metrics) in enumerate(capture.items()):
        sample = gpus[uuid]
        assert sample.tags["index"] == str(position)  # the fake's order: gpud's listing
        assert sample.fields["sm_occupancy_pct"] == metrics[OCCUPANCY]
    busy = gpus["GPU-f2341dcb-3589-9caa-76a9-f73ed13ec565"].fields["sm_occupancy_pct"]
    assert busy == 7.739499086738595
    busier = gpus["GPU-0f7218e4-bc2a-1777-8b0c-06612b7f338e"].fields["sm_occupancy_pct"]
    assert busier == 12.030642535682517
    idle = [s for s in gpus.values() if s.fields["sm_occupancy_pct"] == 0.0]
    assert len(idle) == 6
    assert all(isinstance(s.fields["sm_occupancy_pct"], float) for s in idle)
    for index in range(8):
        assert fake.calls[("nvmlGpmMetricsGet", index)] == 1


async def test_uncaptured_metrics_give_no_field_and_are_counted_by_name(
    fake: FakeNvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.accelerators.nvml")
    source, _, second = await two_readings(fake)
    for sample in by_uuid(second).values():
        assert not UNCAPTURED & sample.fields.keys()
        assert sample.tags["model"] == NOT_CAPTURED  # nothing in the capture names the model
    fields = host(second)
    # NO_DATA is a failure, not NOT_SUPPORTED: each uncaptured metric of each GPU, counted
    assert fields["gpm_failures_total"] == len(UNCAPTURED) * 8
    assert fields["gpm_unsupported"] == 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in UNCAPTURED:
        assert f"GPM metric for {name}: NVML_ERROR_NO_DATA" in warned
    # still asked: a failure is not taken for the GPU lacking the metric
    for gpu in source._gpus or []:
        assert gpu.gpm is not None
        assert len(gpu.gpm.metrics) == len(GPM_METRICS)


async def test_line_protocol_carries_the_captured_values(
    fake: FakeNvml, capture: dict[str, dict[int, float]]
) -> None:
    _, _, second = await two_readings(fake)
    decoded = by_uuid(parse_lines(encode_many(second)))
    assert len(decoded) == 8
    for uuid, metrics in capture.items():
        assert decoded[uuid].fields["sm_occupancy_pct"] == metrics[OCCUPANCY]
        assert not UNCAPTURED & decoded[uuid].fields.keys()
    line = encode_many([by_uuid(second)["GPU-0f7218e4-bc2a-1777-8b0c-06612b7f338e"]])
    assert "sm_occupancy_pct=12.030642535682517" in line
    assert [p for s in decoded.values() for p in schema().sample_problems(s)] == []


async def test_each_later_reading_measures_from_the_one_before(fake: FakeNvml) -> None:
    source, _, _ = await two_readings(fake)
    clock = source._clock
    assert isinstance(clock, Clock)
    clock.now += WINDOW_S / 2  # not due: the profiling interval has not passed
    between = by_uuid(await source.collect())
    assert "sm_occupancy_pct" not in between["GPU-0f7218e4-bc2a-1777-8b0c-06612b7f338e"].fields
    clock.now += WINDOW_S / 2
    third = by_uuid(await source.collect())
    assert third["GPU-0f7218e4-bc2a-1777-8b0c-06612b7f338e"].fields["sm_occupancy_pct"] == (
        12.030642535682517
    )
    assert fake.calls[("nvmlGpmSampleGet", 5)] == 3
    assert fake.calls[("nvmlGpmMetricsGet", 5)] == 2


async def test_a_gpu_lost_during_gpm_costs_only_itself_and_frees_its_samples(
    fake: FakeNvml,
) -> None:
    source, _, _ = await two_readings(fake)
    assert fake.gpm_samples_held == 16  # two per GPU
    fake.lose(4)
    clock = source._clock
    assert isinstance(clock, Clock)
    clock.now += WINDOW_S
    samples = await source.collect()
    gpus = by_uuid(samples)
    assert "GPU-f2341dcb-3589-9caa-76a9-f73ed13ec565" not in gpus
    assert gpus["GPU-0f7218e4-bc2a-1777-8b0c-06612b7f338e"].fields["sm_occupancy_pct"] == (
        12.030642535682517
    )
    assert host(samples)["lost"] == 1
    assert fake.gpm_samples_held == 14
    await source.close()
    assert fake.gpm_samples_held == 0
    assert fake.gpm_samples_freed == 16


def test_a_gpud_poll_that_failed_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="not a successful gpud GPM poll"):
        gpm_capture('error: "gpm not supported"\nmetrics: []\n')
