"""Runs each source on its own interval: one task per device, never two polls at once.

Each device starts at a random phase within its interval, so a thousand PDUs on a 30 s interval
do not all fire in the same second, and each tick gets up to `jitter_s` more. When a tick comes
while the previous poll still runs, the tick is skipped and counted as an overrun: polls never
stack up behind a slow device, and a slow or dead device delays nobody else. A poll that runs
past its deadline (by default its interval) is cancelled and counted as failed.

A runner's state says what its last finished poll found: `starting` until one has finished
(neither up nor down: nothing is known yet), then `ok`, `failed` (counted under the reason's
name) or `unsupported` (the source answers, but nothing can read it: up, and not a failure).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from telemetry.sample import Sample

log = logging.getLogger(__name__)

STARTING, OK, FAILED, UNSUPPORTED = "starting", "ok", "failed", "unsupported"
# Why polls fail, each counted under its name: a source's exception names its reason in a
# `reason` attribute (agent.snmp.DeviceError); anything else is an "error".
FAILURE_REASONS = ("no_answer", "resolve", "malformed", "snmp_error", "deadline", "error")


@dataclass(slots=True)
class PollStats:
    """Counters one device's runner keeps; the health reporter turns them into samples."""

    polls_ok: int = 0
    polls_failed: int = 0
    polls_unsupported: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # by FAILURE_REASONS
    overruns: int = 0
    samples_emitted: int = 0
    last_duration_s: float = 0.0
    last_error: str = ""
    state: str = STARTING
    unsupported: BaseException | None = None  # why, while the state is unsupported

    @property
    def up(self) -> bool:
        """The source answered its last poll (read, or unsupported)."""
        return self.state in (OK, UNSUPPORTED)

    @property
    def stale(self) -> bool:
        """No poll has finished yet."""
        return self.state == STARTING


class PeriodicPoller:
    """Calls `poll` every `interval_s` and hands what it returns to `emit`."""

    def __init__(
        self,
        name: str,
        poll: Callable[[], Awaitable[list[Sample]]],
        emit: Callable[[str, list[Sample]], None],
        *,
        interval_s: float,
        jitter_s: float = 0.0,
        deadline_s: float | None = None,
        unsupported: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.name = name
        self.unsupported = unsupported  # what `poll` raises for "answers, but unreadable"
        self.interval_s = interval_s
        self.deadline_s = deadline_s
        self.jitter_s = min(jitter_s, interval_s / 2)
        self.stats = PollStats()
        self._poll = poll
        self._emit = emit
        self._inflight: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + random.uniform(0, self.interval_s)
        try:
            while True:
                await asyncio.sleep(
                    max(0.0, next_tick - loop.time() + random.uniform(0, self.jitter_s))
                )
                if self._inflight is not None and not self._inflight.done():
                    self.stats.overruns += 1
                    if self.stats.overruns == 1 or self.stats.overruns % 100 == 0:
                        log.warning(
                            "device %s: poll still running after %.3g s; tick skipped "
                            "(%d overruns so far)",
                            self.name,
                            self.interval_s,
                            self.stats.overruns,
                        )
                else:
                    self._inflight = asyncio.create_task(
                        self._poll_once(), name=f"poll {self.name}"
                    )
                next_tick += self.interval_s
                if next_tick < loop.time():  # the host slept or stalled: start afresh
                    next_tick = loop.time() + self.interval_s
        finally:
            if self._inflight is not None:
                self._inflight.cancel()

    def poll_now(self) -> bool:
        """Poll at once (a trap said something changed), unless a poll is already running."""
        if self._inflight is not None and not self._inflight.done():
            return False
        self._inflight = asyncio.create_task(self._poll_once(), name=f"poll {self.name}")
        return True

    async def _poll_once(self) -> None:
        stats = self.stats
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.deadline_s):
                samples = await self._poll()
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except self.unsupported as exc:
            stats.polls_unsupported += 1
            if stats.state != UNSUPPORTED:
                log.warning("device %s: answers, but is not supported: %s", self.name, exc)
            stats.state, stats.unsupported, stats.last_error = UNSUPPORTED, exc, ""
        except BaseException as exc:  # any failure of one device is that device's alone
            # BaseException: a library's panic (pyo3's PanicException) is a failure like any
            # other, never an exception left in a task nobody awaits.
            self._failed(exc)
        else:
            stats.polls_ok += 1
            if stats.state == FAILED:
                log.info("device %s: polling again after: %s", self.name, stats.last_error)
            stats.state, stats.unsupported, stats.last_error = OK, None, ""
            stats.samples_emitted += len(samples)
            self._emit(self.name, samples)
        finally:
            stats.last_duration_s = time.perf_counter() - started

    def _failed(self, exc: BaseException) -> None:
        stats = self.stats
        message = str(exc) or type(exc).__name__
        reason = getattr(exc, "reason", None)
        if isinstance(exc, TimeoutError) and not str(exc):
            message = f"poll exceeded its deadline of {self.deadline_s:g} s"
            reason = "deadline"
        stats.polls_failed += 1
        stats.failures[reason if reason in FAILURE_REASONS else "error"] += 1
        if stats.state != FAILED or message != stats.last_error:
            log.warning("device %s: poll failed: %s", self.name, message)
        stats.state, stats.unsupported, stats.last_error = FAILED, None, message
