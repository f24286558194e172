"""Ships line protocol to the collector over MQTT (aiomqtt 2.x), QoS 1, in batches.

Lines wait in a bounded in-memory queue; a batch leaves when `max_batch_lines` are waiting or
`flush_interval_s` has passed. Up to `max_inflight` batches await their PUBACK at once (one
round trip per batch would leave a busy agent's publisher idle most of the time); a batch is
removed only after its PUBACK. With `compression: gzip` each payload is gzip (telemetry/payload.py).

Back-pressure, not loss: while the broker is connected but the queue holds more than half of
`max_queue_lines`, polls wait before starting (`room()`: they stretch, counted as overruns);
should it still fill, the oldest lines go to the spool, and only without one are they dropped.
With a spool configured, batches that wait while the broker is unreachable go to the on-disk
spool (fsynced at most every SPOOL_SYNC_S), which survives an agent restart; once connected, the
spool is replayed one batch at a time beside the live batches, so neither starves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import aiomqtt

from agent.config import MqttSettings
from telemetry.mqtt import NO_MATCHING_SUBSCRIBERS, ConfirmingClient, Reconnecting
from telemetry.payload import count_lines, encode_lines
from telemetry.spool import Spool

log = logging.getLogger(__name__)

SPOOL_SYNC_S = 0.5  # the most a power cut can lose of what was spooled
UNROUTED_RETRY_S = 1.0  # while no collector is subscribed, one batch is offered this often


@dataclass(slots=True)
class PublishStats:
    published_lines: int = 0
    published_batches: int = 0
    dropped_lines: int = 0
    spooled_lines: int = 0
    replayed_lines: int = 0
    unrouted_publishes: int = 0  # PUBACK "no matching subscribers": held and sent again
    overflow_lines: int = 0  # of spooled_lines, spooled because the queue was full
    backpressure_waits: int = 0  # polls that waited for room in the queue


class Publisher:
    def __init__(self, settings: MqttSettings, topic: str, client_id: str) -> None:
        self.settings = settings
        self.topic = topic
        self.connection = Reconnecting(settings, client_id)
        self.stats = PublishStats()
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()  # a full batch is waiting (or drain/close asked)
        self._drained = asyncio.Event()
        self._drained.set()
        self._room = asyncio.Event()  # set when waiting polls should look again
        self._room.set()
        self._room_at = max(1, settings.max_queue_lines // 2)
        self._spooled = asyncio.Event()  # the spool has records to replay
        self._sending = 0  # live batches awaiting their PUBACK
        self._stopping = False
        # The broker answers "no matching subscribers": no collector is subscribed (after a
        # broker restart, until collectors subscribe again). Data waits, on disk if spooling.
        self.unrouted = False
        self.spool = (
            Spool(settings.spool_dir, settings.spool_max_bytes) if settings.spool_dir else None
        )

    @property
    def queued_lines(self) -> int:
        return len(self._queue)

    def submit(self, lines: Iterable[str]) -> None:
        """Queue lines for the next batch; never blocks. Past `max_queue_lines` the oldest
        lines go to the spool, or without one are dropped (counted)."""
        self._queue.extend(lines)
        overflow = len(self._queue) - self.settings.max_queue_lines
        if overflow > 0:
            self._overflow(overflow)
        if self._queue:
            self._drained.clear()
        if len(self._queue) >= self._room_at:
            self._room.clear()
        if len(self._queue) >= self.settings.max_batch_lines:
            self._ready.set()

    def _overflow(self, overflow: int) -> None:
        if self.spool is not None:
            spooled = self._spool_lines([self._queue.popleft() for _ in range(overflow)])
            self.stats.overflow_lines += spooled
            if spooled and self.stats.overflow_lines == spooled:
                log.warning(
                    "MQTT queue full (%d lines): the oldest lines go to the spool",
                    self.settings.max_queue_lines,
                )
            return
        for _ in range(overflow):
            self._queue.popleft()
        if self.stats.dropped_lines == 0:
            log.error(
                "MQTT queue full (%d lines): dropping the oldest lines",
                self.settings.max_queue_lines,
            )
        self.stats.dropped_lines += overflow

    def _has_room(self) -> bool:
        # Only a connected broker that takes our data slows polling: while it is away the
        # queue goes to the spool (or keeps the newest lines), and polling goes on.
        return (
            len(self._queue) < self._room_at
            or not self.connected
            or self.unrouted
            or self._stopping
        )

    async def room(self) -> None:
        """Return once another poll's lines are welcome: the queue is under half full (or the
        broker is away). Polls wait here before starting, so a publisher that cannot keep up
        stretches polling instead of losing lines."""
        if self._has_room():
            return
        self.stats.backpressure_waits += 1
        while not self._has_room():
            self._room.clear()
            await self._room.wait()

    def _taken(self) -> None:
        """Lines left the queue: wake waiting polls if there is room now."""
        if len(self._queue) < self._room_at:
            self._room.set()

    @property
    def connected(self) -> bool:
        return self.connection.connected

    async def run(self) -> None:
        """Publish until `close()`; reconnects with capped jittered backoff."""
        spooler = asyncio.create_task(self._spool_while_offline()) if self.spool else None
        try:
            await self.connection.run(self._publish_forever)
        finally:
            if spooler is not None:
                spooler.cancel()

    def _take_batch(self) -> list[str]:
        limit = self.settings.max_batch_lines
        batch = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
        if len(self._queue) < limit:
            self._ready.clear()
        self._taken()
        return batch

    def _spool_lines(self, lines: list[str]) -> int:
        """Append lines to the spool in batches; returns how many it took (the rest: dropped)."""
        assert self.spool is not None
        limit, taken = self.settings.max_batch_lines, 0
        for start in range(0, len(lines), limit):
            batch = lines[start : start + limit]
            if self.spool.append(encode_lines(batch, self.settings.compression)):
                taken += len(batch)
            else:
                self.stats.dropped_lines += len(batch)
        self.stats.spooled_lines += taken
        if taken:
            self._spooled.set()
        return taken

    def _spool_queue(self) -> None:
        """Move everything queued to the spool (the broker is away, or we are stopping)."""
        assert self.spool is not None
        lines = list(self._queue)
        self._queue.clear()
        self._ready.clear()
        self._spool_lines(lines)
        self._taken()
        self._check_drained()

    async def _spool_while_offline(self) -> None:
        assert self.spool is not None
        while True:
            await asyncio.sleep(SPOOL_SYNC_S)
            if (not self.connected or self.unrouted) and self._queue:
                self._spool_queue()
            self.spool.sync()

    async def _publish_forever(self, client: aiomqtt.Client) -> None:
        """`max_inflight` lanes publish live batches; one more replays the spool."""
        try:
            async with asyncio.TaskGroup() as lanes:
                for lane in range(self.settings.max_inflight):
                    lanes.create_task(self._live_lane(client, probe=lane == 0))
                if self.spool is not None:
                    lanes.create_task(self._replay_lane(client))
        except* aiomqtt.MqttError as lost:  # the connection: Reconnecting retries
            raise lost.exceptions[0] from None
        finally:
            self._room.set()  # no broker to wait for now: waiting polls go on

    async def _live_lane(self, client: aiomqtt.Client, probe: bool) -> None:
        limit = self.settings.max_batch_lines
        while not self._stopping:
            if len(self._queue) < limit:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), self.settings.flush_interval_s)
            if self._stopping:
                return
            if self.unrouted and not probe:  # one lane asks the broker again; the rest wait
                await asyncio.sleep(UNROUTED_RETRY_S)
                continue
            if not self._queue:
                self._ready.clear()
                self._check_drained()
                continue
            batch = self._take_batch()
            self._sending += 1
            try:
                taken = await self._publish(client, encode_lines(batch, self.settings.compression))
            except BaseException:
                self._queue.extendleft(reversed(batch))  # not acknowledged: keep it
                raise
            finally:
                self._sending -= 1
            if not taken:
                self._queue.extendleft(reversed(batch))
                await asyncio.sleep(UNROUTED_RETRY_S)
                continue
            self.stats.published_lines += len(batch)
            self.stats.published_batches += 1
            self._check_drained()

    async def _replay_lane(self, client: aiomqtt.Client) -> None:
        assert self.spool is not None
        while not self._stopping:
            if not self.spool.stats.records:
                self._spooled.clear()
                self._check_drained()
                await self._spooled.wait()
                continue
            if not await self._replay_one(client):
                await asyncio.sleep(UNROUTED_RETRY_S)

    def _check_drained(self) -> None:
        """Drained: nothing waits in memory, and while connected the spool is replayed too
        (with the broker away, what is spooled is as safe as it gets)."""
        spooled = self.spool.stats.records if self.spool is not None else 0
        if not self._queue and not self._sending and not (spooled and self.connected):
            self._drained.set()

    async def _publish(self, client: aiomqtt.Client, payload: bytes) -> bool:
        """Publish at QoS 1; False when the broker took it for no subscriber (thrown away)."""
        assert isinstance(client, ConfirmingClient)  # what Reconnecting makes for publishers
        code = await client.publish_confirmed(self.topic, payload, timeout_s=30)
        if code == NO_MATCHING_SUBSCRIBERS:
            self.stats.unrouted_publishes += 1
            if not self.unrouted:
                log.warning(
                    "%s: no subscriber for %s (no collector subscribed): holding the data "
                    "and trying again every %.0f s",
                    self.connection.describe(),
                    self.topic,
                    UNROUTED_RETRY_S,
                )
            self.unrouted = True
            self._room.set()  # waiting polls go on: their lines go to the spool meanwhile
            return False
        if self.unrouted:
            log.info("%s: a collector is subscribed again", self.connection.describe())
        self.unrouted = False
        return True

    async def _replay_one(self, client: aiomqtt.Client) -> bool:
        """Publish the oldest spooled batch; False when no subscriber took it."""
        if self.spool is None or (spooled := self.spool.peek()) is None:
            return True
        if not await self._publish(client, spooled):
            return False
        self.spool.ack()  # after PUBACK: a crash before this replays it again (at least once)
        lines = count_lines(spooled)
        self.stats.replayed_lines += lines
        self.stats.published_lines += lines
        self.stats.published_batches += 1
        self._check_drained()
        return True

    async def close(self, task: asyncio.Task[None], timeout_s: float) -> None:
        """Stop `task` (running `run()`) between batches, so the broker sees a clean DISCONNECT.

        aiomqtt 2.5 waits for the broker's answer to DISCONNECT without a time limit; a broker
        that never answers must not hold up shutdown, so the task is cancelled after `timeout_s`.
        """
        self._stopping = True
        self._ready.set()
        self._spooled.set()
        self._room.set()
        _, late = await asyncio.wait([task], timeout=timeout_s)
        for pending in late:
            pending.cancel()
            await asyncio.wait([pending], timeout=timeout_s)
        if self.spool is not None:  # what the broker did not take waits on disk for next time
            self._spool_queue()
            self.spool.close()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued has been acknowledged; False on timeout."""
        if self._queue:
            self._ready.set()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
