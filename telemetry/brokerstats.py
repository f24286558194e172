"""The broker's own counters, read from its `$SYS` tree, for the health of whoever subscribes.

Mosquitto drops a QoS 1 message it has already acknowledged to the publisher when a client's
queue is full (`max_queued_messages` / `max_queued_bytes`): the publisher counts it as
delivered, so only the broker knows. Mosquitto 2.0 publishes that count as
`$SYS/broker/publish/messages/dropped` (every `sys_interval`, 10 s by default; it starts again
at 0 when the broker restarts), and the size of its message store beside it. The collector
watches rackwatch's broker (the default rule BrokerDroppedMessages pages on any increase); the
agent watches the broker its MQTT devices publish to, often the site's own. Both report them as
`broker_*` health fields. `$SYS` topics match no `#` subscription, and this connection's
session is clean: it never makes the broker take a data message.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiomqtt

from telemetry.mqtt import BrokerSettings, Reconnecting, payload_bytes

log = logging.getLogger(__name__)

# $SYS topic -> health field
TOPICS = {
    "$SYS/broker/publish/messages/dropped": "broker_dropped_messages_total",
    "$SYS/broker/store/messages/count": "broker_stored_messages",
    "$SYS/broker/store/messages/bytes": "broker_stored_bytes",
}


@dataclass(slots=True)
class BrokerStats:
    values: dict[str, int]
    invalid: int = 0  # $SYS payloads that were not a whole number


class BrokerWatch:
    def __init__(self, broker: BrokerSettings, client_id: str) -> None:
        self.connection = Reconnecting(broker, client_id, max_backoff_s=10.0)
        self.stats = BrokerStats({})

    def health_fields(self) -> dict[str, int]:
        """What the broker last reported (nothing before its first report, or if it publishes
        no $SYS tree), and how many of its reports could not be read."""
        return {**self.stats.values, "broker_stats_invalid_total": self.stats.invalid}

    def handle(self, topic: str, payload: bytes) -> None:
        field = TOPICS.get(topic)
        if field is None:
            return
        try:
            self.stats.values[field] = int(payload)
        except ValueError:
            self.stats.invalid += 1
            if self.stats.invalid == 1:
                log.warning("broker statistics: %s is %r, not a number", topic, payload[:40])

    async def run(self) -> None:
        await self.connection.run(self._consume)

    async def _consume(self, client: aiomqtt.Client) -> None:
        granted = await client.subscribe([(topic, 0) for topic in TOPICS], timeout=10)
        refused = [t for t, code in zip(TOPICS, granted, strict=False) if _code(code) >= 0x80]
        if refused:
            log.warning(
                "%s refused $SYS subscriptions %s: broker drops are not watched",
                self.connection.describe(),
                ", ".join(refused),
            )
        async for message in client.messages:
            self.handle(str(message.topic), payload_bytes(message))


def _code(code: object) -> int:
    return code if isinstance(code, int) else int(getattr(code, "value", 0))
