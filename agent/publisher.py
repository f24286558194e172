"""Ships line protocol to the collector over MQTT (aiomqtt 2.x), QoS 1, in batches.

Lines wait in a bounded in-memory queue; a batch leaves when `max_batch_lines` are waiting or
`flush_interval_s` has passed. A batch is removed from the queue only after the broker's PUBACK,
so a broker outage loses nothing until the queue is full; then the oldest lines are dropped and
counted (an on-disk spool is the job of a later change).
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
from telemetry.mqtt import Reconnecting

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PublishStats:
    published_lines: int = 0
    published_batches: int = 0
    dropped_lines: int = 0


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
        await self.connection.run(self._publish_forever)

    async def _publish_forever(self, client: aiomqtt.Client) -> None:
        limit = self.settings.max_batch_lines
        while not self._stopping:
            if len(self._queue) < limit:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), self.settings.flush_interval_s)
            self._ready.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
                payload = ("\n".join(batch) + "\n").encode()
                try:
                    await client.publish(self.topic, payload, qos=1, timeout=30)
                except BaseException:
                    self._queue.extendleft(reversed(batch))  # not acknowledged: keep it
                    raise
                self.stats.published_lines += len(batch)
                self.stats.published_batches += 1
            self._drained.set()

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

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued has been acknowledged; False on timeout."""
        self._ready.set()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
