"""Ships line protocol to the collector over MQTT (aiomqtt 2.x), QoS 1, in batches.

Lines wait in a bounded in-memory queue; a batch leaves when `max_batch_lines` are waiting or
`flush_interval_s` has passed. A batch is removed from the queue only after the broker's PUBACK.
With a spool configured, batches that wait while the broker is unreachable go to the on-disk
spool (fsynced at most every SPOOL_SYNC_S), which survives an agent restart; once connected,
live batches and spooled ones are published alternately, so neither starves. Without one, or
when the queue overflows, the oldest lines are dropped and counted.
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


class Publisher:
    def __init__(self, settings: MqttSettings, topic: str, client_id: str) -> None:
        self.settings = settings
        self.topic = topic
        self.connection = Reconnecting(settings, client_id)
        self.stats = PublishStats()
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
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
        """Queue lines for the next batch; never blocks, drops the oldest when full."""
        self._queue.extend(lines)
        overflow = len(self._queue) - self.settings.max_queue_lines
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            if self.stats.dropped_lines == 0:
                log.error(
                    "MQTT queue full (%d lines): dropping the oldest lines",
                    self.settings.max_queue_lines,
                )
            self.stats.dropped_lines += overflow
        if self._queue:
            self._drained.clear()
        if len(self._queue) >= self.settings.max_batch_lines:
            self._ready.set()

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
        return [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]

    def _spool_queue(self) -> None:
        """Move everything queued to the spool (the broker is away, or we are stopping)."""
        assert self.spool is not None
        while self._queue:
            batch = self._take_batch()
            if self.spool.append(_payload(batch)):
                self.stats.spooled_lines += len(batch)
            else:
                self.stats.dropped_lines += len(batch)
        self._drained.set()

    async def _spool_while_offline(self) -> None:
        assert self.spool is not None
        while True:
            await asyncio.sleep(SPOOL_SYNC_S)
            if (not self.connected or self.unrouted) and self._queue:
                self._spool_queue()
            self.spool.sync()

    async def _publish_forever(self, client: aiomqtt.Client) -> None:
        limit = self.settings.max_batch_lines
        while not self._stopping:
            if len(self._queue) < limit:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), self.settings.flush_interval_s)
            self._ready.clear()
            while not self._stopping and (self._queue or (self.spool and self.spool.stats.records)):
                if self._queue:
                    batch = self._take_batch()
                    try:
                        taken = await self._publish(client, _payload(batch))
                    except BaseException:
                        self._queue.extendleft(reversed(batch))  # not acknowledged: keep it
                        raise
                    if not taken:
                        self._queue.extendleft(reversed(batch))
                        await asyncio.sleep(UNROUTED_RETRY_S)
                        continue
                    self.stats.published_lines += len(batch)
                    self.stats.published_batches += 1
                if not await self._replay_one(client):  # one old batch per live one
                    await asyncio.sleep(UNROUTED_RETRY_S)
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
        lines = spooled.count(b"\n")
        self.stats.replayed_lines += lines
        self.stats.published_lines += lines
        self.stats.published_batches += 1
        return True

    async def close(self, task: asyncio.Task[None], timeout_s: float) -> None:
        """Stop `task` (running `run()`) between batches, so the broker sees a clean DISCONNECT.

        aiomqtt 2.5 waits for the broker's answer to DISCONNECT without a time limit; a broker
        that never answers must not hold up shutdown, so the task is cancelled after `timeout_s`.
        """
        self._stopping = True
        self._ready.set()
        _, late = await asyncio.wait([task], timeout=timeout_s)
        for pending in late:
            pending.cancel()
            await asyncio.wait([pending], timeout=timeout_s)
        if self.spool is not None:  # what the broker did not take waits on disk for next time
            self._spool_queue()
            self.spool.close()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued has been acknowledged; False on timeout."""
        self._ready.set()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def _payload(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()
