"""A subscription of alerting's own, for collectors that share the stream (docs/alerting.md).

A shared subscription hands each message to one collector of the group, so no collector sees
all of any agent's samples. An alerting collector therefore also subscribes to the topic
without `$share/`, over its own persistent session, and evaluates the messages of the agents
it owns: those whose `<site>/<agent>` topic levels hash (CRC-32) to its shard. With one shard
per alerting collector, every agent's alerts have exactly one owner. These lines only feed
the evaluator; the group's ingest writes them to InfluxDB.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable

import aiomqtt

from collector.alerting.settings import Ownership
from telemetry.lineproto import check_lines
from telemetry.mqtt import AckingClient, BrokerSettings, Reconnecting, Session

log = logging.getLogger(__name__)


def owner_of(topic: str) -> str:
    """`<site>/<agent>` of `<prefix>/<site>/<agent>/metrics`; the whole topic otherwise."""
    levels = topic.split("/")
    return "/".join(levels[-3:-1]) if len(levels) >= 3 else topic


class AlertFeed:
    def __init__(
        self,
        broker: BrokerSettings,
        topic: str,
        client_id: str,
        session: Session,
        ownership: Ownership,
        prefixes: tuple[bytes, ...],
        observe: Callable[[list[bytes]], None],
    ) -> None:
        self.connection = Reconnecting(broker, client_id, session, max_backoff_s=2.0)
        self.topic = topic
        self.ownership = ownership
        self.prefixes = prefixes
        self.observe = observe
        self.messages = 0
        self.owned_messages = 0
        self.lines_invalid = 0

    def owns(self, topic: str) -> bool:
        shards = self.ownership.shards
        return shards == 1 or zlib.crc32(owner_of(topic).encode()) % shards == self.ownership.shard

    def handle(self, topic: str, payload: bytes) -> None:
        self.messages += 1
        if not self.owns(topic):
            return
        self.owned_messages += 1
        # Only the lines the rules read are validated: the ingest validates the rest.
        picked = [line for line in payload.split(b"\n") if line.startswith(self.prefixes)]
        if not picked:
            return
        good, bad = check_lines(b"\n".join(picked))
        self.lines_invalid += len(bad)
        if good:
            self.observe(good)

    async def run(self) -> None:
        await self.connection.run(self._consume)

    async def _consume(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.topic, qos=1, timeout=10)
        log.info(
            "alerting: subscribed to %s (shard %d of %d)",
            self.topic,
            self.ownership.shard,
            self.ownership.shards,
        )
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, str):
                payload = payload.encode()
            elif not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            self.handle(str(message.topic), bytes(payload))
            if isinstance(client, AckingClient) and message.qos > 0:
                client.ack(message)  # evaluated (or not ours): nothing to redeliver
