"""Runs the agent or the collector as a service: signals, systemd notification, reload, metrics.

- READY=1 once the service has started (its tasks run, its ports are bound); the broker or
  InfluxDB may still be away, which the service rides out on its own.
- WATCHDOG=1 from a task on the event loop, at half of `WatchdogSec=`: a stalled loop is
  restarted by systemd.
- SIGHUP: RELOADING=1, then the config file is read again, with every file it names. One that
  does not load is refused with its errors logged, and the running config stays; STATUS= says
  so and gives the first problem. A good one is applied by the service as far as it can be
  without a restart (it names the keys that need one). Then READY=1.
- SIGTERM/SIGINT: STOPPING=1, the metrics port is released at once (within the serving
  thread's 0.5 s poll; a restarted process waits up to METRICS_BIND_WAIT_S for it, so it binds
  while this one still drains), then the service flushes and stops. A SIGTERM
  that comes while the process still starts (reading its config and profiles) is held until
  the service runs, which then stops at once the same way (`hold_sigterm`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from telemetry.config import ConfigError
from telemetry.metrics import MetricsServer, MetricsSettings
from telemetry.sample import Sample
from telemetry.sdnotify import Notifier

log = logging.getLogger("rackwatch")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
METRICS_BIND_WAIT_S = 3.0  # how long a starting process waits for its metrics port to be free
_held_sigterm: list[int] = []  # SIGTERMs received before Daemon.run took over


def hold_sigterm() -> None:
    """Call first thing: a SIGTERM during start-up then stops the service once it runs rather
    than killing the process half-started."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: _held_sigterm.append(signum))


class ServiceConfig(Protocol):
    @property
    def metrics(self) -> MetricsSettings | None: ...


C = TypeVar("C", bound=ServiceConfig)


class Service(Protocol[C]):
    """What `Agent` and `Collector` offer to be run here."""

    ready: asyncio.Event  # set by run() once started

    @property
    def config(self) -> C: ...

    async def run(self, stop: asyncio.Event) -> None: ...

    async def reload(self, config: C) -> list[str]:
        """Apply `config` where it can be applied live; return the keys that need a restart."""
        ...

    def health_samples(self) -> list[Sample]: ...


class Daemon(Generic[C]):
    def __init__(self, service: Service[C], load: Callable[[], C], notifier: Notifier) -> None:
        self.service = service
        self.load = load
        self.notifier = notifier
        self.metrics: MetricsServer | None = None
        self.stop = asyncio.Event()
        self.reload_wanted = asyncio.Event()

    def _on_stop_signal(self) -> None:
        if not self.stop.is_set():
            self.notifier.stopping()
            self.stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self.reload_wanted.set)
        if _held_sigterm:
            _held_sigterm.clear()
            self._on_stop_signal()
        watchdog = asyncio.create_task(self.notifier.keep_alive(), name="watchdog")
        try:
            settings = self.service.config.metrics
            if settings is not None:
                try:
                    self.metrics = await _listen(settings, self.service.health_samples)
                except OSError as exc:
                    log.error("metrics.listen %s: cannot listen: %s", settings.listen, exc)
                    return 1
            running = asyncio.create_task(self.service.run(self.stop), name="service")
            await _until(running, self.service.ready)
            if not running.done():
                self.notifier.ready("running")
            while not running.done() and not self.stop.is_set():
                await _until(running, self.reload_wanted, self.stop)
                if self.reload_wanted.is_set() and not self.stop.is_set():
                    self.reload_wanted.clear()
                    await self.reload()
            # Stopping may take a while (final flush, notifications): the port goes first.
            await self._close_metrics()
            await running  # a service that failed fails the process
            return 0
        finally:
            for signum in (*STOP_SIGNALS, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            watchdog.cancel()
            await self._close_metrics()
            self.notifier.close()

    async def _close_metrics(self) -> None:
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            await metrics.close()

    async def reload(self) -> None:
        self.notifier.reloading()
        at = time.strftime("%H:%M:%S")
        try:
            config = self.load()
        except ConfigError as exc:
            problems = str(exc).splitlines() or ["(no detail)"]
            log.error("reload refused, the running config stays: %s", "; ".join(problems))
            more = f" (and {len(problems) - 1} more, see log)" if len(problems) > 1 else ""
            self.notifier.ready(f"running; reload at {at} refused: {problems[0]}{more}")
            return
        try:
            held = await self.service.reload(config)
        except Exception:  # a service bug must not take down a running service
            log.exception("reload failed part-way; some changes may not be applied")
            self.notifier.ready(f"running; reload at {at} failed (see log)")
            return
        status = f"running; reloaded at {at}"
        if held:
            log.warning(
                "reloaded the config; changes to %s take effect at the next restart",
                ", ".join(held),
            )
            status += f"; restart pending for {', '.join(held)}"
        else:
            log.info("reloaded the config")
        refused = await self._replace_metrics(self.service.config.metrics)
        self.notifier.ready(status + (f"; {refused}" if refused else ""))

    async def _replace_metrics(self, settings: MetricsSettings | None) -> str:
        """Move the metrics endpoint to `settings`; what was refused (for STATUS=), or ""."""
        old = self.metrics
        if (old.settings if old else None) == settings:
            return ""
        if settings is not None:
            try:
                self.metrics = MetricsServer(settings, self.service.health_samples)
            except OSError as exc:
                kept = f"still on {old.settings.listen}" if old else "still off"
                log.error(
                    "metrics.listen %s: cannot listen: %s; the endpoint stays as it was (%s)",
                    settings.listen,
                    exc,
                    kept,
                )
                return f"metrics.listen {settings.listen} refused: {exc.strerror}, {kept}"
        else:
            self.metrics = None
        if old is not None:
            await old.close()
        return ""


async def _until(task: asyncio.Task[None], *events: asyncio.Event) -> None:
    """Wait until `task` ends or one of `events` is set."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait([task, *waiters], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _listen(settings: MetricsSettings, snapshot: Callable[[], list[Sample]]) -> MetricsServer:
    """Bind the metrics port at start. A process being restarted releases it first thing on
    SIGTERM, but only once its serving thread's poll (0.5 s) has ended: a new process that
    starts faster than that waits for the port a moment instead of failing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + METRICS_BIND_WAIT_S
    while True:
        try:
            return MetricsServer(settings, snapshot)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or loop.time() >= deadline:
                raise
            await asyncio.sleep(0.1)


async def serve(service: Service[C], load: Callable[[], C]) -> int:
    """Run `service` until SIGTERM/SIGINT, reloading `load()` on SIGHUP; the exit status."""
    return await Daemon(service, load, Notifier()).run()
