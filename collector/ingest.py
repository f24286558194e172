"""Takes line-protocol batches off MQTT through a shared subscription and validates each line.

Valid lines go to the pipeline untouched (no re-encoding); each invalid line goes to the
dead-letter file with its topic, line number and reason, so one bad device never costs the
good lines in the same message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiomqtt

from collector.config import MqttSettings
from collector.deadletter import DeadLetters
from collector.pipeline import Pipeline
from telemetry.lineproto import check_lines
from telemetry.mqtt import Reconnecting

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    lines_received: int = 0
    lines_invalid: int = 0
    oversized_messages: int = 0


class SubscribeRefused(aiomqtt.MqttError):
    """The broker refused the subscription (ACL, or shared subscriptions unsupported)."""


class Ingest:
    def __init__(
        self, settings: MqttSettings, client_id: str, pipeline: Pipeline, dead_letters: DeadLetters
    ) -> None:
        self.settings = settings
        self.connection = Reconnecting(settings, client_id)
        self.pipeline = pipeline
        self.dead_letters = dead_letters
        self.stats = IngestStats()
        self.subscription = f"$share/{settings.group}/{settings.topic}"

    def handle(self, topic: str, payload: bytes) -> None:
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
            return
        good, bad = check_lines(payload)
        stats.lines_received += len(good) + len(bad)
        self.pipeline.add(good)
        if bad:
            stats.lines_invalid += len(bad)
            for number, line, reason in bad:
                self.dead_letters.add([line], f"line {number}: {reason}", topic)

    async def run(self) -> None:
        """Subscribe and take messages until cancelled; reconnects on loss."""
        await self.connection.run(self._consume)

    async def _consume(self, client: aiomqtt.Client) -> None:
        await self._subscribe(client)
        log.info("subscribed to %s on %s", self.subscription, self.connection.describe())
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, str):
                payload = payload.encode()
            elif not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            self.handle(str(message.topic), bytes(payload))

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        granted = await client.subscribe(self.subscription, qos=1, timeout=10)
        for code in granted:
            value = code if isinstance(code, int) else code.value
            if value >= 0x80:
                raise SubscribeRefused(f"broker refused subscription {self.subscription}: {code}")
