"""The MQTT connection both sides keep: broker settings and a reconnect loop (aiomqtt 2.x).

The agent publishes through it and the collector subscribes through it; each hands in a
`session` coroutine that does its work on a connected client. A lost connection is retried
with capped, jittered exponential backoff, logged once when it goes and once when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field, field_validator, model_validator

from telemetry.config import Secret, StrictModel

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


class TlsSettings(StrictModel):
    """TLS to the broker. The server's certificate and name are always verified (against
    `ca_file`, or the system's trusted CAs); a client certificate is optional."""

    ca_file: Path | None = None
    cert_file: Path | None = None  # client certificate (PEM); the key may be in the same file
    key_file: Path | None = None
    key_password: Secret | None = None

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"{path}: no such file")
        return path

    @model_validator(mode="after")
    def _usable(self) -> TlsSettings:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        try:  # at load, so `rackwatch check` finds a bad certificate or a wrong key password
            self.context()
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot use these certificates: {exc}") from None
        return self

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file, self.key_password)
        return context


class BrokerSettings(StrictModel):
    """Where the broker is and how to log in; the agent and collector configs extend this."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: Secret | None = None
    # A silent broker (or a connection that died unseen) is noticed within about this long
    # (paho-mqtt pings after it is idle this long, and gives up after as long again without an
    # answer); after a freeze (SIGSTOP) it pings at once.
    keepalive_s: int = Field(default=10, ge=5)
    tls: TlsSettings | None = None  # usually with port 8883


class _Client(aiomqtt.Client):
    """aiomqtt 2.5 with its socket watches made safe on a connection that dies under them.

    When paho-mqtt has something to send, aiomqtt schedules "watch this socket for writing"
    by file number, and on close it stops watching for reading only. After a freeze (SIGSTOP)
    past the keepalive the broker has hung up: the socket closes before the scheduled watch
    runs, or a stale write watch meets the next connection's socket under the same number, and
    uvloop logged a traceback (OSError, RuntimeError). Here the write watch is set up only on an
    open socket, removed on close, and a socket the loop refuses ends the connection, which
    Reconnecting reports in one line. These are aiomqtt's own hooks (pinned below 3; a test
    fails if they move); the write callback is aiomqtt's."""

    def _on_socket_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        def callback() -> None:
            try:
                client.loop_write()
            except Exception as exc:  # a broken connection: aiomqtt's way of ending it
                self._end(exc)

        def watch() -> None:
            try:
                if sock.fileno() >= 0:  # -1 once closed
                    self._loop.add_writer(sock.fileno(), callback)
            except (OSError, RuntimeError) as exc:
                self._end(aiomqtt.MqttError(f"socket gone: {exc}"))

        # paho-mqtt may call this from another thread (connect runs in an executor).
        self._loop.call_soon_threadsafe(watch)

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        if sock.fileno() >= 0:
            self._loop.remove_writer(sock.fileno())
        super()._on_socket_close(client, userdata, sock)

    def _end(self, exc: Exception) -> None:
        if not self._disconnected.done():
            self._disconnected.set_exception(exc)


class AckingClient(_Client):
    """An aiomqtt client whose QoS 1 messages are acknowledged by the application.

    aiomqtt 2.5 acknowledges every message as soon as it is read off the socket. The paho-mqtt
    client underneath can leave that to the application (`manual_ack_set`, `ack`); aiomqtt just
    does not expose it. Reaching paho through aiomqtt's one attribute for it, in this one class,
    keeps the rest of the code on aiomqtt's public API (the version is pinned below 3, and a
    test fails if the attribute moves). The broker redelivers anything not acknowledged when
    the session resumes, so a collector that dies mid-batch loses nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paho = self._client  # aiomqtt 2.x: the paho-mqtt client it drives
        self._paho.manual_ack_set(True)

    def ack(self, message: aiomqtt.Message) -> None:
        self._paho.ack(message.mid, message.qos)


NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT v5 PUBACK reason code


def payload_bytes(message: aiomqtt.Message) -> bytes:
    """A received message's payload as bytes (aiomqtt types it loosely)."""
    payload = message.payload
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode()


class ConfirmingClient(_Client):
    """An aiomqtt client whose QoS 1 publishes report the reason code of the broker's PUBACK.

    aiomqtt 2.5 waits for the PUBACK but drops its reason code. In MQTT v5 the code 0x10 "No
    matching subscribers" means the broker took the message and threw it away: Mosquitto says
    so after a restart, until the collectors have subscribed again, and whenever no collector
    is subscribed at all. A publisher must not count such a message as delivered. As in
    AckingClient, paho-mqtt is reached through aiomqtt's one attribute for it: its `publish`
    is wrapped to learn each message id, its `on_publish` to keep each reason code.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._paho = self._client
        self._reasons: dict[int, int] = {}
        self._mids: dict[asyncio.Task[Any] | None, int] = {}
        forward_on_publish: Any = self._paho.on_publish  # aiomqtt's own handler
        paho_publish = self._paho.publish

        def on_publish(client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            self._reasons[mid] = int(getattr(reason, "value", reason))
            forward_on_publish(client, userdata, mid, reason, props)

        def publish(*args: Any, **kwargs: Any) -> Any:
            info = paho_publish(*args, **kwargs)
            self._mids[asyncio.current_task()] = info.mid  # before aiomqtt awaits the PUBACK
            return info

        self._paho.on_publish = on_publish
        self._paho.publish = publish  # type: ignore[method-assign]

    async def publish_confirmed(self, topic: str, payload: bytes, timeout_s: float) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (0: taken for subscribers)."""
        task = asyncio.current_task()
        try:
            await self.publish(topic, payload, qos=1, timeout=timeout_s)
        finally:
            mid = self._mids.pop(task, None)
        return self._reasons.pop(mid, 0) if mid is not None else 0


@dataclass(frozen=True, slots=True)
class Session:
    """How a subscriber's session outlives its connection (MQTT v5)."""

    persistent: bool = False
    expiry_s: int = 3600  # how long the broker keeps it (and queues for it) while we are away
    receive_maximum: int = 100  # unacknowledged QoS 1 messages the broker may send us


class Reconnecting:
    """Runs a session on an MQTT v5 connection until the session returns; reconnects on loss."""

    def __init__(
        self,
        broker: BrokerSettings,
        client_id: str,
        session: Session | None = None,
        max_backoff_s: float = MAX_BACKOFF_S,
        will: Callable[[], aiomqtt.Will] | None = None,  # asked anew for every connection
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.session = session
        self.max_backoff_s = max_backoff_s
        self.connected = False
        self.failures = 0
        self.connections = 0  # successful connects so far; more than one means a reconnect
        self.will = will
        self._tls = broker.tls.context() if broker.tls else None

    def describe(self) -> str:
        user = f", user {self.broker.username}" if self.broker.username else ""
        return f"MQTT broker {self.broker.host}:{self.broker.port} (client {self.client_id}{user})"

    def _client(self) -> aiomqtt.Client:
        options: dict[str, Any] = {}
        kind: type[aiomqtt.Client] = ConfirmingClient
        if self.session is not None:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.ReceiveMaximum = self.session.receive_maximum
            if self.session.persistent:
                properties.SessionExpiryInterval = self.session.expiry_s
            options = {"properties": properties, "clean_start": not self.session.persistent}
            kind = AckingClient
        return kind(
            self.broker.host,
            self.broker.port,
            identifier=self.client_id,
            username=self.broker.username,
            password=self.broker.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=self.broker.keepalive_s,
            timeout=10,
            tls_context=self._tls,
            will=self.will() if self.will else None,
            **options,
        )

    async def end_session(self) -> None:
        """Connect once with a clean start and no session expiry: the broker discards this
        client id's persistent session, its subscriptions and anything queued for it."""
        async with Reconnecting(self.broker, self.client_id)._client():
            pass

    async def run(self, session: Callable[[aiomqtt.Client], Awaitable[None]]) -> None:
        backoff_s = INITIAL_BACKOFF_S
        while True:
            try:
                async with self._client() as client:
                    if self.failures:
                        log.info("%s: connected again", self.describe())
                    self.connected = True
                    self.connections += 1
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
            backoff_s = min(backoff_s * 2, self.max_backoff_s)
