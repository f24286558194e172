"""Takes line-protocol batches off MQTT through a shared subscription and validates each line.

A gzip-compressed payload (telemetry/payload.py: it starts with the gzip magic 1f 8b) is
inflated first, up to max_message_bytes; one that cannot be inflated is counted and set aside
whole in the dead-letter file (base64), so nothing in it is lost. Valid lines go to the pipeline
untouched (no re-encoding), but for a timestamp in s, ms or us, rewritten in ns; each invalid
line (a time far from the clock included) goes to the dead-letter file with its topic, line
number and reason, so one bad device never costs the good lines in the same message.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt

from collector.config import MqttSettings
from collector.deadletter import DeadLetters
from collector.pipeline import LineSink
from collector.receipts import Acknowledger, Receipt
from telemetry.lineproto import Timestamps, check_lines
from telemetry.mqtt import AckingClient, Reconnecting, Session, payload_bytes
from telemetry.payload import PayloadError, decode, is_compressed

log = logging.getLogger(__name__)

COLLECTOR_MAX_BACKOFF_S = 2.0


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    lines_received: int = 0
    lines_invalid: int = 0
    oversized_messages: int = 0
    malformed_compressed_messages: int = 0  # gzip that would not inflate: set aside whole


class SubscribeRefused(aiomqtt.MqttError):
    """The broker refused the subscription (ACL, or shared subscriptions unsupported)."""


class Ingest:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        pipeline: LineSink,
        dead_letters: DeadLetters,
        timestamps: Timestamps | None = None,
    ) -> None:
        self.settings = settings
        self.timestamps = timestamps  # lines stamped in s/ms/us rewritten, wrong clocks refused
        session = Session(
            persistent=settings.persistent_session,
            expiry_s=settings.session_expiry_s,
            receive_maximum=settings.receive_maximum,
        )
        # Collectors are few and beside the broker: they retry often, so that after a broker
        # restart they are subscribed again soon (agents hold their data until then).
        self.connection = Reconnecting(
            settings, client_id, session, max_backoff_s=COLLECTOR_MAX_BACKOFF_S
        )
        self.acknowledger = Acknowledger()
        self.pipeline = pipeline
        self.dead_letters = dead_letters
        self.stats = IngestStats()
        self.leaving = False  # see Collector.leave_group
        # Readers of the validated stream beside the pipeline (roll-ups); they must not raise.
        self.taps: list[Callable[[list[bytes]], None]] = []
        self.subscription = (
            f"$share/{settings.group}/{settings.topic}" if settings.group else settings.topic
        )
        # Set while this connection holds the write path's subscription: the stream feeds
        # (collector/feed.py) subscribe only then, so the broker never takes a message for them
        # alone (after a broker restart, before this subscription is back).
        self.subscribed = asyncio.Event()

    def handle(self, topic: str, payload: bytes, receipt: Receipt | None = None) -> None:
        """Validate one message; `receipt` (if any) is told as its lines become safe."""
        stats = self.stats
        stats.messages += 1
        if len(payload) > self.settings.max_message_bytes:
            stats.oversized_messages += 1
            self.dead_letters.add(
                [payload[:200]],
                f"message of {len(payload)} bytes exceeds "
                f"max_message_bytes {self.settings.max_message_bytes} "
                "(first 200 bytes kept)",
                topic,
            )
            if receipt is not None:
                receipt.done(0)  # set aside: safe
            return
        if is_compressed(payload):
            try:
                payload = decode(payload, self.settings.max_message_bytes)
            except PayloadError as exc:
                stats.malformed_compressed_messages += 1
                self.dead_letters.add(
                    [b"base64:" + base64.b64encode(payload)],
                    f"compressed message of {len(payload)} bytes: {exc} (kept whole, base64)",
                    topic,
                )
                if receipt is not None:
                    receipt.done(0)  # set aside: safe
                return
        good, bad = check_lines(payload, self.timestamps)
        stats.lines_received += len(good) + len(bad)
        if receipt is not None:
            receipt.pending = len(good)  # the invalid ones are safe in the dead-letter file
        self.pipeline.add(good, receipt)
        for tap in self.taps:
            tap(good)
        if receipt is not None and not good:
            receipt.done(0)
        if bad:
            stats.lines_invalid += len(bad)
            for number, line, reason in bad:
                self.dead_letters.add([line], f"line {number}: {reason}", topic)

    async def run(self) -> None:
        """Subscribe and take messages until cancelled; reconnects on loss."""
        await self.connection.run(self._consume)

    async def _consume(self, client: aiomqtt.Client) -> None:
        # Receipts of an earlier connection are void: the broker redelivers those messages.
        self.acknowledger.forget()
        try:
            if self.leaving:
                # Leaving the group: the broker sends what it queued for this session only.
                await client.unsubscribe(self.subscription, timeout=10)
                log.info("leaving: unsubscribed from %s", self.subscription)
            else:
                await self._subscribe(client)
                log.info("subscribed to %s on %s", self.subscription, self.connection.describe())
                self.subscribed.set()
            async for message in client.messages:
                payload = payload_bytes(message)
                receipt = None
                if isinstance(client, AckingClient) and message.qos > 0:
                    receipt = self.acknowledger.receive(client, message)
                self.handle(str(message.topic), payload, receipt)
        finally:
            self.subscribed.clear()

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        granted = await client.subscribe(self.subscription, qos=1, timeout=10)
        for code in granted:
            value = code if isinstance(code, int) else code.value
            if value >= 0x80:
                raise SubscribeRefused(f"broker refused subscription {self.subscription}: {code}")
