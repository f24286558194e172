"""A second, non-shared subscription for work that must see whole agents' streams, for
collectors that share the stream (alerting: docs/alerting.md; roll-ups: docs/schema.md).

A shared subscription hands each message to one collector of the group, so no collector sees
all of any agent's samples. Alerting and roll-ups therefore may also subscribe to the topic
without `$share/`, over their own connection, and read the messages of the agents they own:
those whose `<site>/<agent>` topic levels hash (CRC-32) to their shard (one shard: all).
These lines only feed the reader; the group's ingest writes them to InfluxDB.

A feed must never be the reason the broker takes a message: a publisher counts a message the
broker took as delivered. Its session is therefore clean (nothing outlives the connection, so a
broker restart does not restore it), and it subscribes only while the ingest holds the write
path's subscription (`gate`). Samples published while the collector is away are not replayed to
the readers; the ingest still writes them.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable

import aiomqtt

from telemetry.lineproto import check_lines
from telemetry.mqtt import AckingClient, BrokerSettings, Reconnecting, Session, payload_bytes

log = logging.getLogger(__name__)


def owner_of(topic: str) -> str:
    """`<site>/<agent>` of `<prefix>/<site>/<agent>/metrics`; the whole topic otherwise."""
    levels = topic.split("/")
    return "/".join(levels[-3:-1]) if len(levels) >= 3 else topic


class StreamFeed:
    def __init__(
        self,
        role: str,
        broker: BrokerSettings,
        topic: str,
        client_id: str,
        session: Session,
        prefixes: tuple[bytes, ...],
        observe: Callable[[list[bytes]], None],
        *,
        shard: int = 0,
        shards: int = 1,
    ) -> None:
        if session.persistent:
            raise ValueError("a stream feed's session must not outlive its connection")
        self.role = role
        self.connection = Reconnecting(broker, client_id, session, max_backoff_s=2.0)
        self.topic = topic
        self.shard = shard
        self.shards = shards
        self.prefixes = prefixes
        self.observe = observe
        self.messages = 0
        self.owned_messages = 0
        self.lines_invalid = 0
        self.gate: asyncio.Event | None = None  # set while the write path is subscribed

    def owns(self, topic: str) -> bool:
        shards = self.shards
        return shards == 1 or zlib.crc32(owner_of(topic).encode()) % shards == self.shard

    def handle(self, topic: str, payload: bytes) -> None:
        self.messages += 1
        if not self.owns(topic):
            return
        self.owned_messages += 1
        # Only the lines the reader needs are validated: the ingest validates the rest.
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
        if self.gate is not None and not self.gate.is_set():
            log.info("%s: waiting for the ingest to subscribe first", self.role)
            await self.gate.wait()
        await client.subscribe(self.topic, qos=1, timeout=10)
        log.info(
            "%s: subscribed to %s (shard %d of %d)", self.role, self.topic, self.shard, self.shards
        )
        async for message in client.messages:
            self.handle(str(message.topic), payload_bytes(message))
            if isinstance(client, AckingClient) and message.qos > 0:
                client.ack(message)  # evaluated (or not ours): nothing to redeliver
