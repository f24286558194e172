"""Builds the accelerator sources a host's config names, each wrapped with per-host totals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from agent.accelerators.config import AcceleratorSettings
from telemetry.sample import Sample

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
        if settings.nvidia is not None:
            from agent.accelerators.nvml import NvmlSource
            from agent.accelerators.nvml_events import NvmlEvents

            nvml = NvmlSource(
                tags,
                slow_interval_s=settings.nvidia.slow_interval_s,
                energy_interval_s=settings.nvidia.energy_interval_s,
            )
            self.polls["nvidia"] = with_host_totals(nvml.collect, tags | {"vendor": "nvidia"})
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
            )
            self.polls["ascend"] = with_host_totals(ascend.collect, tags | {"vendor": "huawei"})

    def start(self) -> None:
        """Start the event listeners; call from the running event loop."""
        if self._events is not None:
            self._events.start()

    async def stop(self) -> None:
        if self._events is not None:
            await self._events.stop()
        for close in self._closers:
            await close()
