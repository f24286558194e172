"""Builds the accelerator sources a host's config names, each wrapped with per-host totals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from agent.accelerators.config import AcceleratorSettings
from agent.accelerators.job_energy import JobEnergy
from agent.accelerators.jobs import FAILURE_KINDS, JobFinder
from agent.accelerators.vendor_tools import CARD_FAILURES
from telemetry.sample import FieldValue, Sample

if TYPE_CHECKING:
    from agent.accelerators.nvml_events import NvmlEvents

Collect = Callable[[], Awaitable[list[Sample]]]


def host_totals(samples: list[Sample], tags: Mapping[str, str]) -> Sample | None:
    """`accelerator_host`: what the rack roll-ups and the host view need from one poll."""
    cards = [s for s in samples if s.measurement == "accelerator"]
    if not cards:
        return None
    power = [float(s.fields["power_w"]) for s in cards if "power_w" in s.fields]
    fields: dict[str, float | int] = {"count": len(cards)}
    if power:
        fields["power_w"] = sum(power)
    healthy = [s.fields["healthy"] for s in cards if "healthy" in s.fields]
    if healthy:
        fields["healthy_count"] = sum(1 for h in healthy if h is True)
    return Sample("accelerator_host", tags, fields, cards[0].time_ns)


def with_host_totals(collect: Collect, tags: Mapping[str, str]) -> Collect:
    async def collect_with_totals() -> list[Sample]:
        samples = await collect()
        if any(s.measurement == "accelerator_host" for s in samples):
            return samples  # the source totals itself
        total = host_totals(samples, tags)
        return samples if total is None else [*samples, total]

    return collect_with_totals


def job_totals(
    samples: list[Sample],
    tags: Mapping[str, str],
    energy: Mapping[tuple[str, str], float] | None = None,
) -> list[Sample]:
    """`accelerator_job`: one per job on this host per poll: its cards, their power and mean
    use, and (from `energy`, by vendor and job) the energy it has used here."""
    by_job: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        job = sample.fields.get("job")
        if sample.measurement == "accelerator" and isinstance(job, str) and job:
            by_job.setdefault((sample.tags.get("vendor", ""), job), []).append(sample)
    totals = []
    for (vendor, job), cards in by_job.items():
        fields: dict[str, FieldValue] = {"cards": len(cards)}
        power = [float(s.fields["power_w"]) for s in cards if "power_w" in s.fields]
        if power:
            fields["power_w"] = sum(power)
        util = [float(s.fields["util_pct"]) for s in cards if "util_pct" in s.fields]
        if util:
            fields["util_pct"] = sum(util) / len(util)
        if energy is not None and (vendor, job) in energy:
            fields["energy_j"] = energy[(vendor, job)]
        job_tags = {**tags, "vendor": vendor, "job": job}
        totals.append(Sample("accelerator_job", job_tags, fields, cards[0].time_ns))
    return totals


def with_jobs(collect: Collect, jobs: JobFinder, tags: Mapping[str, str]) -> Collect:
    """Adds the poll's `accelerator_job` samples, and the job lookups' failure counters to the
    host's `accelerator_host` sample."""
    energy = JobEnergy()

    async def collect_with_jobs() -> list[Sample]:
        samples = await collect()
        failures = {f"job_{kind}_failures_total": jobs.failures[kind] for kind in FAILURE_KINDS}
        samples = [
            Sample(s.measurement, s.tags, {**s.fields, **failures}, s.time_ns)
            if s.measurement == "accelerator_host"
            else s
            for s in samples
        ]
        energy.add(samples)
        return samples + job_totals(samples, tags, energy.joules)

    return collect_with_jobs


def with_card_failures(collect: Collect, failures: Counter[str]) -> Collect:
    """Adds a vendor tool's card-level failure counters to the host's `accelerator_host`."""

    async def collect_with_failures() -> list[Sample]:
        samples = await collect()
        counts = {f"tool_failures_{kind}_total": failures[kind] for kind in CARD_FAILURES}
        return [
            Sample(s.measurement, s.tags, {**s.fields, **counts}, s.time_ns)
            if s.measurement == "accelerator_host"
            else s
            for s in samples
        ]

    return collect_with_failures


class Accelerators:
    """The sources a host's `accelerators:` config names: one poll per vendor (with per-host
    totals), plus NVIDIA's event listener, which runs beside the polls."""

    def __init__(
        self, settings: AcceleratorSettings, site: str, emit: Callable[[list[Sample]], None]
    ) -> None:
        tags = {
            **settings.tags,
            "site": site,
            "room": settings.room,
            "row": settings.row,
            "rack": settings.rack,
            "host": settings.host,
        }
        tags = {key: value for key, value in tags.items() if value}
        self.polls: dict[str, Collect] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._events: NvmlEvents | None = None
        self.jobs = JobFinder(settings.jobs) if settings.jobs is not None else None
        if settings.nvidia is not None:
            from agent.accelerators.nvml import NvmlSource
            from agent.accelerators.nvml_events import NvmlEvents

            nvml = NvmlSource(
                tags,
                slow_interval_s=settings.nvidia.slow_interval_s,
                energy_interval_s=settings.nvidia.energy_interval_s,
                profiling_interval_s=settings.nvidia.profiling_interval_s,
                jobs=self.jobs,
            )
            self.polls["nvidia"] = self._wrap(nvml.collect, tags | {"vendor": "nvidia"})
            self._closers.append(nvml.close)
            if settings.nvidia.events:
                self._events = NvmlEvents(tags, emit)
        if settings.ascend is not None:
            from agent.accelerators.npu_smi import NpuSmiSource

            ascend = NpuSmiSource(
                tags,
                settings.ascend.command,
                settings.ascend.timeout_s,
                usages=settings.ascend.usages,
                ecc=settings.ascend.ecc,
                clocks=settings.ascend.clocks,
                faults=settings.ascend.faults,
                hccn_tool=settings.ascend.hccn_tool,
                details_interval_s=settings.ascend.details_interval_s,
                jobs=self.jobs,
            )
            self.polls["ascend"] = self._wrap(ascend.collect, tags | {"vendor": "huawei"})
        for tool_settings in settings.tools:
            from agent.accelerators.vendor_tools import (
                VendorToolSource,
                find_definition,
                load_definition,
            )

            definition = load_definition(find_definition(tool_settings.definition))
            source = VendorToolSource(
                tags, definition, tool_settings.program, tool_settings.timeout_s, jobs=self.jobs
            )
            name = definition.vendor if definition.vendor not in self.polls else None
            collect = self._wrap(source.collect, tags | {"vendor": definition.vendor})
            self.polls[name or Path(tool_settings.definition).stem] = with_card_failures(
                collect, source.failures
            )

    def _wrap(self, collect: Collect, tags: Mapping[str, str]) -> Collect:
        collect = with_host_totals(collect, tags)
        if self.jobs is None:
            return collect
        return with_jobs(collect, self.jobs, {k: v for k, v in tags.items() if k != "vendor"})

    def start(self) -> None:
        """Start the event listeners; call from the running event loop."""
        if self._events is not None:
            self._events.start()

    async def stop(self) -> None:
        if self._events is not None:
            await self._events.stop()
        for close in self._closers:
            await close()
        if self.jobs is not None:
            self.jobs.close()
