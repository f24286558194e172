"""An optional Prometheus endpoint that serves the same counters as the health samples.

The service's `health_samples()` (what goes to InfluxDB as `rackwatch_agent` /
`rackwatch_collector`) is turned into metrics on each scrape, so both views always agree:
`<measurement>_<field>` with the sample's tags as labels; `*_total` fields are counters, other
numbers and booleans (0/1) gauges; text fields are left out. Process metrics (CPU, memory,
open files) come with them.

prometheus-client serves from its own thread; the samples are taken on the event loop that
owns the counters (never read half-updated from another thread), so a stalled loop shows as
failed scrapes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from pydantic import field_validator

from telemetry.config import StrictModel
from telemetry.sample import Sample

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 5.0


class MetricsSettings(StrictModel):
    """Where the Prometheus endpoint listens (`/metrics`); loopback unless you open it."""

    listen: str = "127.0.0.1:9464"

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port")
        return value


def to_metrics(samples: Iterable[Sample]) -> list[Metric]:
    """Health samples as Prometheus metric families, one per measurement and field."""
    families: dict[str, Metric] = {}
    for sample in samples:
        labels = {key: value for key, value in sample.tags.items() if value}
        for field, value in sample.fields.items():
            if isinstance(value, str):
                continue
            name = f"{sample.measurement}_{field}"
            counter = field.endswith("_total") and not isinstance(value, bool)
            family_name = name.removesuffix("_total") if counter else name
            family = families.get(family_name)
            if family is None:
                kind = "counter" if counter else "gauge"
                doc = f"{sample.measurement}.{field} (see docs/schema.md)"
                family = families[family_name] = Metric(family_name, doc, kind)
            family.add_sample(name, labels, float(value))
    return list(families.values())


class HealthCollector(Collector):
    """A prometheus-client collector that reads `snapshot()` on `loop` at each scrape."""

    def __init__(
        self, snapshot: Callable[[], list[Sample]], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._snapshot = snapshot
        self._loop = loop

    def collect(self) -> Iterable[Metric]:
        async def take() -> list[Sample]:
            return self._snapshot()

        future = asyncio.run_coroutine_threadsafe(take(), self._loop)
        return to_metrics(future.result(SCRAPE_TIMEOUT_S))


class MetricsServer:
    """`/metrics` over HTTP on its own thread, until `close()`."""

    def __init__(self, settings: MetricsSettings, snapshot: Callable[[], list[Sample]]) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(HealthCollector(snapshot, asyncio.get_running_loop()))
        host, port = settings.host_port()
        # OSError here (port taken, address not local) is the caller's to report.
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, host, self.registry)
        self.port = self._server.server_port
        log.info("Prometheus metrics on http://%s/metrics", settings.listen)

    async def close(self) -> None:
        # shutdown() waits for the serving thread's poll loop: off the event loop.
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
        await asyncio.to_thread(self._thread.join)
