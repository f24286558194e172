"""The MQTT connection both sides keep: broker settings and a reconnect loop (aiomqtt 2.x).

The agent publishes through it and the collector subscribes through it; each hands in a
`session` coroutine that does its work on a connected client. A lost connection is retried
with capped, jittered exponential backoff, logged once when it goes and once when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import aiomqtt
from pydantic import Field

from telemetry.config import Secret, StrictModel

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


class BrokerSettings(StrictModel):
    """Where the broker is and how to log in; the agent and collector configs extend this."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: Secret | None = None
    keepalive_s: int = Field(default=30, ge=5)


class Reconnecting:
    """Runs a session on an MQTT v5 connection until the session returns; reconnects on loss."""

    def __init__(self, broker: BrokerSettings, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id
        self.connected = False
        self.failures = 0

    def describe(self) -> str:
        return f"MQTT broker {self.broker.host}:{self.broker.port} (client {self.client_id})"

    async def run(self, session: Callable[[aiomqtt.Client], Awaitable[None]]) -> None:
        backoff_s = INITIAL_BACKOFF_S
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier=self.client_id,
                    username=self.broker.username,
                    password=self.broker.password,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    keepalive=self.broker.keepalive_s,
                    timeout=10,
                ) as client:
                    if self.failures:
                        log.info("%s: connected again", self.describe())
                    self.connected = True
                    backoff_s = INITIAL_BACKOFF_S
                    await session(client)
                    return  # leaving the block disconnects cleanly
            except aiomqtt.MqttError as exc:
                if self.connected or self.failures == 0:
                    log.warning("%s: %s; retrying", self.describe(), exc)
                self.failures += 1
            finally:
                self.connected = False
            await asyncio.sleep(random.uniform(0.5, 1.0) * backoff_s)
            backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
