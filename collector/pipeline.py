"""Batches validated lines and hands each batch to the writer.

A batch leaves when `max_lines` are pending or the oldest pending line has waited
`max_delay_s`; up to `max_concurrent_writes` batches are written at once. While writes are
retried, new lines keep arriving and wait here, up to `max_pending_lines`; past that the
oldest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from collector.config import BatchSettings
from collector.influx import InfluxWriter
from collector.receipts import Receipt

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, settings: BatchSettings, writer: InfluxWriter) -> None:
        self.settings = settings
        self.writer = writer
        self.dropped_lines = 0
        self._pending: deque[bytes] = deque()
        # Whose lines are pending, in order (None: the collector's own health lines).
        self._owners: deque[_Owner] = deque()
        self._first_at = 0.0
        self._nonempty = asyncio.Event()
        self._full = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # While InfluxDB works on one batch, the next is compressed and sent: two in flight
        # keep both ends busy without reordering much.
        self._slots = asyncio.Semaphore(settings.max_concurrent_writes)
        self._in_flight = 0
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def pending_lines(self) -> int:
        """Lines waiting for a write (not counting batches already being written)."""
        return len(self._pending)

    def add(self, lines: list[bytes], receipt: Receipt | None = None) -> None:
        """Queue lines for writing; `receipt` hears when they are safe."""
        if not lines:
            return
        if not self._pending:
            self._first_at = asyncio.get_running_loop().time()
        self._pending.extend(lines)
        self._owners.append(_Owner(receipt, len(lines)))
        self._idle.clear()
        overflow = len(self._pending) - self.settings.max_pending_lines
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            _done(self._take_owners(overflow))  # gone for good: nothing to wait for
            if self.dropped_lines == 0:
                log.error(
                    "%d lines pending for InfluxDB: dropping the oldest",
                    self.settings.max_pending_lines,
                )
            self.dropped_lines += overflow
        self._nonempty.set()
        if len(self._pending) >= self.settings.max_lines:
            self._full.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self.settings.max_lines
        try:
            await self._batch_forever(loop, limit)
        finally:
            for task in self._writes:
                task.cancel()

    async def _batch_forever(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        while True:
            await self._nonempty.wait()
            while (
                len(self._pending) < limit
                and (remaining := self._first_at + self.settings.max_delay_s - loop.time()) > 0
            ):
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), remaining)
            await self._slots.acquire()
            batch = [self._pending.popleft() for _ in range(min(limit, len(self._pending)))]
            owners = self._take_owners(len(batch))
            if self._pending:
                self._first_at = loop.time()
            else:
                self._nonempty.clear()
            self._in_flight += 1
            task = asyncio.create_task(self._write(batch, owners))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    def _take_owners(self, lines: int) -> list[tuple[Receipt | None, int]]:
        taken = []
        while lines > 0 and self._owners:
            owner = self._owners[0]
            count = min(lines, owner.lines)
            taken.append((owner.receipt, count))
            owner.lines -= count
            lines -= count
            if owner.lines == 0:
                self._owners.popleft()
        return taken

    async def _write(self, batch: list[bytes], owners: list[tuple[Receipt | None, int]]) -> None:
        try:
            await self.writer.write(batch)  # returns once every line is written or set aside
            _done(owners)
        finally:
            self._in_flight -= 1
            self._slots.release()
            if not self._pending and not self._in_flight:
                self._idle.set()

    async def flush(self, timeout_s: float) -> bool:
        """Write everything pending now; False if that took longer than `timeout_s`."""
        self._first_at = 0.0  # makes any partial batch due at once
        self._full.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class _Owner:
    __slots__ = ("lines", "receipt")

    def __init__(self, receipt: Receipt | None, lines: int) -> None:
        self.receipt = receipt
        self.lines = lines


def _done(owners: list[tuple[Receipt | None, int]]) -> None:
    for receipt, lines in owners:
        if receipt is not None:
            receipt.done(lines)
