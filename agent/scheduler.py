"""Runs each source on its own interval: one task per device, never two polls at once.

Each device starts at a random phase within its interval, so a thousand PDUs on a 30 s interval
do not all fire in the same second, and each tick gets up to `jitter_s` more. When a tick comes
while the previous poll still runs, the tick is skipped and counted as an overrun: polls never
stack up behind a slow device, and a slow or dead device delays nobody else. A poll that runs
past its deadline (by default its interval) is cancelled and counted as failed.

A poll may first wait for room (`ready`: the publisher's back-pressure, awaited before anything
else), then pass a gate (`gate`: an async context manager, say a semaphore shared by
every device, taken only by polls that walk tables): the wait comes before the deadline's clock
starts, so a device waiting its turn at start-up is late, never failed. Ticks skipped while it
waits are overruns too (the device was not polled on them), logged only at debug level, since a
cold start of thousands of devices would otherwise log one warning each.

A runner's state says what its last finished poll found: `starting` until one has finished
(neither up nor down: nothing is known yet), then `ok`, `failed` (counted under the reason's
name) or `unsupported` (the source answers, but nothing can read it: up, and not a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import re
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from telemetry.sample import Sample

log = logging.getLogger(__name__)

STARTING, OK, FAILED, UNSUPPORTED = "starting", "ok", "failed", "unsupported"
# Why polls fail, each counted under its name: a source's exception names its reason in a
# `reason` attribute (agent.snmp.DeviceError); the process out of file descriptors (a socket
# per SNMP device) is "open_files"; anything else is an "error".
FAILURE_REASONS = (
    "no_answer",
    "resolve",
    "malformed",
    "snmp_error",
    "deadline",
    "open_files",
    "error",
)
# gufo-snmp's Rust core raises EMFILE as an OSError without errno: "... (os error 24)".
_OUT_OF_FILES = re.compile(rf"\(os error ({errno.EMFILE}|{errno.ENFILE})\)")


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
        gate: Callable[[], AbstractAsyncContextManager[object]] | None = None,
        ready: Callable[[], Awaitable[None]] | None = None,
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
        self._gate = gate  # entered before each poll, outside its deadline
        self._ready = ready  # awaited before the gate, outside the deadline too
        self._waiting = False  # the in-flight poll has not passed its gate yet

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
                    if self._waiting:
                        log.debug("device %s: waiting for its turn; tick skipped", self.name)
                    elif self.stats.overruns == 1 or self.stats.overruns % 100 == 0:
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
        gate = self._gate() if self._gate is not None else contextlib.nullcontext()
        self._waiting = True
        try:
            if self._ready is not None:
                await self._ready()
            async with gate:
                self._waiting = False
                await self._timed_poll()
        finally:
            self._waiting = False

    async def _timed_poll(self) -> None:
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
        elif isinstance(exc, OSError) and (
            exc.errno in (errno.EMFILE, errno.ENFILE) or _OUT_OF_FILES.search(message)
        ):
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            message = (
                f"{message}: the agent's open-files limit (RLIMIT_NOFILE) is {soft}, "
                "one per SNMP device; raise LimitNOFILE (docs/operations.md)"
            )
            reason = "open_files"
        stats.polls_failed += 1
        stats.failures[reason if reason in FAILURE_REASONS else "error"] += 1
        if stats.state != FAILED or message != stats.last_error:
            log.warning("device %s: poll failed: %s", self.name, message)
        stats.state, stats.unsupported, stats.last_error = FAILED, None, message
