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
import time
from collections import deque
from typing import Protocol

from collector.config import BatchSettings, SpoolSettings
from collector.influx import InfluxWriter, WriteAbandoned
from collector.receipts import Receipt
from telemetry.spool import Spool

SPOOL_SYNC_S = 0.5

log = logging.getLogger(__name__)


class LineSink(Protocol):
    """Where validated lines go: one pipeline, or the shards' (collector/shards.py)."""

    def add(self, lines: list[bytes], receipt: Receipt | None = None) -> None: ...


class Pipeline:
    def __init__(
        self, settings: BatchSettings, writer: InfluxWriter, spool: SpoolSettings | None = None
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.spool_settings = spool
        self.spool = Spool(spool.directory, spool.max_bytes) if spool else None
        self.spooled_lines = 0
        self.replayed_lines = 0
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

    @property
    def idle(self) -> bool:
        """Nothing pending and no write in flight: every line taken is written or spooled."""
        return self._idle.is_set()

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
        spool_tasks = []
        if self.spool is not None:
            spool_tasks = [
                asyncio.create_task(self._replay_forever()),
                asyncio.create_task(self._sync_forever()),
            ]
        try:
            await self._batch_forever(loop, limit)
        finally:
            for task in [*self._writes, *spool_tasks]:
                task.cancel()
            if self.spool is not None:
                self.spool.close()

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
            spool_it = not await self._slot_or_spool()
            batch = [self._pending.popleft() for _ in range(min(limit, len(self._pending)))]
            owners = self._take_owners(len(batch))
            if self._pending:
                self._first_at = loop.time()
            else:
                self._nonempty.clear()
            if spool_it:
                self._to_spool(batch, owners)
                if not self._pending and not self._in_flight:
                    self._idle.set()
                continue
            self._in_flight += 1
            task = asyncio.create_task(self._write(batch, owners))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    def _spooling(self) -> bool:
        """InfluxDB has been failing long enough that new batches go to disk instead."""
        if self.spool is None or self.spool_settings is None or not self.writer.stats.failing:
            return False
        return time.monotonic() - self.writer.stats.failing_since >= self.spool_settings.after_s

    async def _slot_or_spool(self) -> bool:
        """Wait for a write slot; False when the batch should go to the spool instead."""
        while True:
            if self._spooling():
                return False
            try:
                await asyncio.wait_for(self._slots.acquire(), SPOOL_SYNC_S)
            except TimeoutError:
                continue
            return True

    def _to_spool(self, batch: list[bytes], owners: list[tuple[Receipt | None, int]]) -> None:
        assert self.spool is not None
        if self.spool.append(b"\n".join(batch)):
            self.spooled_lines += len(batch)
        else:
            self.dropped_lines += len(batch)  # the disk refused it: counted, as overflow is
        _done(owners)  # on disk (or counted lost): the broker may forget these messages

    async def _sync_forever(self) -> None:
        """fsync what was spooled at most SPOOL_SYNC_S ago (the most a power cut can lose)."""
        assert self.spool is not None
        while True:
            await asyncio.sleep(SPOOL_SYNC_S)
            self.spool.sync()

    async def _replay_forever(self) -> None:
        """Write spooled batches once InfluxDB takes writes again, sharing the write slots with
        live batches (so replay honours the same backoff and never starves live data)."""
        assert self.spool is not None
        while True:
            await asyncio.sleep(SPOOL_SYNC_S)
            # While InfluxDB fails, live batches go straight to the spool, so this write of the
            # oldest spooled batch is what finds out, with the writer's backoff, that it is back.
            while (record := self.spool.peek()) is not None:
                await self._slots.acquire()
                try:
                    lines = record.split(b"\n")
                    await self.writer.write(lines)
                finally:
                    self._slots.release()
                self.spool.ack()
                self.replayed_lines += len(lines)

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
            # Returns once every line is written or set aside. A batch still retrying when
            # spooling starts goes to the spool too: its messages are acknowledged in arrival
            # order (MQTT requires it), so it would hold back the acks of everything after it.
            await self.writer.write(batch, give_up=self._spooling)
        except WriteAbandoned:
            self._to_spool(batch, owners)
        else:
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
