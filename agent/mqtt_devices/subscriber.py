"""The agent's subscription to publishing devices: one MQTT connection, every message mapped.

Messages are handled one at a time, synchronously and quickly, in the order they arrive; a
message that cannot be used is counted and logged once per topic, and the loop goes on. What a
message yields goes to `emit(origin, samples)`, the same path polled devices take. A QoS 1
message is acknowledged once mapped, and the broker may send `receive_maximum` ahead: a burst
the agent falls behind on waits here, not in the broker's queue, which drops what overflows it
(docs/mqtt-devices.md, "Bursts"); that broker's own drop counter is watched. With a
Sparkplug `host_id`, the connection's will is the host's offline STATE and its first act is the
online STATE (same timestamp, retained), as Sparkplug 3.0 asks of a primary host application.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt_devices.config import MqttDevicesConfig
from agent.mqtt_devices.fields import BadPayload
from agent.mqtt_devices.health import HEALTH_MEASUREMENT, ActivityTracker, BadPayloadLog
from agent.mqtt_devices.payloads import SubscriptionDecoder
from agent.mqtt_devices.sparkplug import (
    SparkplugHost,
    parse_state,
    rebirth_request,
    state_payload,
    state_topic,
)
from telemetry.brokerstats import BrokerWatch
from telemetry.mqtt import AckingClient, Reconnecting, Session, payload_bytes
from telemetry.sample import Sample

log = logging.getLogger(__name__)

ORIGIN = "mqtt devices"
STATE_PUBLISH_TIMEOUT_S = 2.0
# The host reads its own STATE back; not seeing it means edge nodes cannot either.
STATE_ECHO_TIMEOUT_S = 10.0

Emit = Callable[[str, list[Sample]], None]


class DeviceSubscriber:
    def __init__(
        self,
        config: MqttDevicesConfig,
        site: str,
        agent: str,
        emit: Emit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.site = site
        self.agent = agent
        self.emit = emit
        self.decoders = [SubscriptionDecoder(s, site) for s in config.subscriptions]
        self.sparkplug = (
            SparkplugHost(config.sparkplug, site, agent, clock) if config.sparkplug else None
        )
        self.host_id = config.sparkplug.host_id if config.sparkplug else None
        self.activity = ActivityTracker(clock)
        self._state_seen = asyncio.Event()
        self.subscribed = asyncio.Event()  # set while subscribed (and, as host, online)
        self.bad_payloads = BadPayloadLog()
        self.messages = 0
        self.oversized = 0
        self.unmatched = 0
        self.refused_subscriptions = 0
        self._state_ms = 0  # the timestamp of this connection's STATE will and birth
        client_id = config.client_id or f"rackwatch-devices-{agent}"
        self.connection = Reconnecting(
            config.broker,
            client_id,
            # Acknowledged once mapped: at most receive_maximum wait here, the rest at the broker.
            Session(persistent=False, receive_maximum=config.receive_maximum),
            will=self._state_will if self.host_id else None,
        )
        # Often the site's broker: what it dropped after acknowledging it to a device. Watched
        # once the subscription is up, so a refused login is reported once, not twice.
        self.broker_watch = BrokerWatch(config.broker, f"{client_id}-broker")
        self._broker_watching: asyncio.Task[None] | None = None
        # Mosquitto's acl_file grants every subscription and then withholds what the user may
        # not read, so silence is all a refused device shows; say where to look.
        self.activity.silence_hint = (
            f"is it publishing, and may {self.connection.describe()} read its topic?"
        )
        for decoder in self.decoders:
            for device in decoder.subscription.devices:
                self.activity.expect(device, decoder.tags({}, device), self._stale_s(decoder))
        if self.sparkplug is not None:
            for device, tags in self.sparkplug.expected_devices():
                self.activity.expect(device, tags, config.stale_after_s)

    def _stale_s(self, decoder: SubscriptionDecoder) -> float:
        return decoder.subscription.stale_after_s or self.config.stale_after_s

    # -- one message -----------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, now_ns: int | None = None) -> str | None:
        """Map one message; returns the NCMD topic to send a rebirth request to, if any."""
        self.messages += 1
        now_ns = time.time_ns() if now_ns is None else now_ns
        try:
            if self.sparkplug is not None and topic.startswith("spBv1.0/"):
                return self._sparkplug(topic, payload, now_ns)
            self._subscription(topic, payload, now_ns)
        except Exception as exc:  # a bug here must cost one message, not the subscription
            if topic not in self.bad_payloads.per_topic:
                log.exception("MQTT topic %s: message not processed", topic)
            self.bad_payloads.report(topic, f"not processed: {exc!r}")
        return None

    def _subscription(self, topic: str, payload: bytes, now_ns: int) -> None:
        for decoder in self.decoders:
            captures = decoder.pattern.match(topic)
            if captures is not None:
                break
        else:
            self.unmatched += 1
            return
        device = decoder.device_name(captures)
        if not payload:
            return  # an empty retained message only clears the broker's copy
        try:
            if len(payload) > self.config.max_payload_bytes:
                self.oversized += 1
                raise BadPayload(
                    f"{len(payload)} bytes, over max_payload_bytes "
                    f"({self.config.max_payload_bytes})"
                )
            samples = decoder.decode(captures, payload, now_ns)
        except BadPayload as exc:
            self.bad_payloads.report(topic, str(exc))
            if device is not None:
                self.activity.bad_payload(
                    device, decoder.tags(captures, device), self._stale_s(decoder)
                )
            samples = exc.kept
        if not samples:
            return
        self.emit(ORIGIN, samples)
        for name in dict.fromkeys(s.tags["device"] for s in samples if "device" in s.tags):
            tags = next(s.tags for s in samples if s.tags.get("device") == name)
            self.activity.heard(name, tags, self._stale_s(decoder))

    def _sparkplug(self, topic: str, payload: bytes, now_ns: int) -> str | None:
        assert self.sparkplug is not None
        if len(payload) > self.config.max_payload_bytes:
            self.oversized += 1
            self.bad_payloads.report(
                topic,
                f"{len(payload)} bytes, over max_payload_bytes ({self.config.max_payload_bytes})",
            )
            return None
        outcome = self.sparkplug.handle(topic, payload, now_ns)
        if outcome.problem is not None:
            self.bad_payloads.report(topic, outcome.problem)
            if outcome.culprit is not None:
                self.activity.bad_payload(*outcome.culprit, self.config.stale_after_s)
        if outcome.samples:
            self.emit(ORIGIN, outcome.samples)
        for name, tags in dict(outcome.heard).items():
            self.activity.heard(name, tags, self.config.stale_after_s, online=True)
        for name in outcome.offline:
            self.activity.offline(name)
        return outcome.rebirth_topic

    # -- the connection --------------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe and map messages until cancelled; reconnects on loss."""
        watchers = [asyncio.create_task(self._watch_staleness(), name="mqtt device staleness")]
        try:
            await self.connection.run(self._session)
        finally:
            if self._broker_watching is not None:
                watchers.append(self._broker_watching)
                self._broker_watching = None
            for watcher in watchers:
                watcher.cancel()
            await asyncio.wait(watchers, timeout=STATE_PUBLISH_TIMEOUT_S)

    async def close(self, task: asyncio.Task[None], timeout_s: float) -> None:
        """Stop `task` (running `run()`): the offline STATE goes out, then a clean DISCONNECT;
        a broker that does not answer cannot hold up shutdown beyond `timeout_s`."""
        task.cancel()
        _, late = await asyncio.wait([task], timeout=timeout_s)
        for pending in late:
            pending.cancel()
            await asyncio.wait([pending], timeout=timeout_s)

    async def _watch_staleness(self) -> None:
        stale_after = [self.config.stale_after_s] + [self._stale_s(d) for d in self.decoders]
        interval_s = min(max(min(stale_after) / 4, 0.5), 15.0)
        while True:
            await asyncio.sleep(interval_s)
            self.activity.check()

    def _filters(self) -> list[tuple[str, int]]:
        filters: list[tuple[str, int]] = [
            (d.pattern.filter, d.subscription.qos) for d in self.decoders
        ]
        if self.sparkplug is not None:
            filters += [(f, 1) for f in self.sparkplug.filters()]
        if self.host_id is not None:
            filters.append((state_topic(self.host_id), 1))
        return filters

    async def _session(self, client: aiomqtt.Client) -> None:
        for topic_filter, qos in self._filters():
            await self._subscribe(client, topic_filter, qos)
        echo = None
        if self.host_id is not None:
            self._state_seen.clear()
            await self._publish_state(client, online=True)
            echo = asyncio.create_task(self._expect_state_echo(), name="sparkplug STATE echo")
        self.subscribed.set()
        if self._broker_watching is None:
            self._broker_watching = asyncio.create_task(
                self.broker_watch.run(), name="mqtt device broker statistics"
            )
        try:
            async for message in client.messages:
                data = payload_bytes(message)
                topic = message.topic.value
                if self.host_id is not None and topic == state_topic(self.host_id):
                    await self._on_own_state(client, data)
                    rebirth = None
                else:
                    rebirth = self.handle(topic, data)
                if isinstance(client, AckingClient):
                    client.ack(message)
                if rebirth is not None:
                    await client.publish(rebirth, rebirth_request(time.time_ns() // 10**6), qos=0)
        finally:
            self.subscribed.clear()
            if echo is not None:
                echo.cancel()
            if self.host_id is not None:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(STATE_PUBLISH_TIMEOUT_S):
                        await self._publish_state(client, online=False)

    async def _subscribe(self, client: aiomqtt.Client, topic_filter: str, qos: int) -> None:
        granted = await client.subscribe(topic_filter, qos=qos)
        for code in granted:
            if isinstance(code, ReasonCode) and code.is_failure:
                self.refused_subscriptions += 1
                log.error(
                    "%s refused the subscription to %s: %s (the broker's ACL for this user?)",
                    self.connection.describe(),
                    topic_filter,
                    code,
                )
            else:
                log.info("subscribed to %s on %s", topic_filter, self.connection.describe())

    def _state_will(self) -> aiomqtt.Will:
        assert self.host_id is not None
        self._state_ms = time.time_ns() // 10**6
        return aiomqtt.Will(
            state_topic(self.host_id), state_payload(False, self._state_ms), qos=1, retain=True
        )

    async def _publish_state(self, client: aiomqtt.Client, *, online: bool) -> None:
        assert self.host_id is not None
        payload = state_payload(online, self._state_ms)
        await client.publish(state_topic(self.host_id), payload, qos=1, retain=True)

    async def _on_own_state(self, client: aiomqtt.Client, payload: bytes) -> None:
        """Someone said this host is offline while it is not (Sparkplug 3.0 asks the host to
        answer with its online STATE); an older session's will is only overwritten."""
        state = parse_state(payload)
        if state == (True, self._state_ms):
            self._state_seen.set()
        if state is not None and not state[0] and state[1] >= self._state_ms:
            log.warning("Sparkplug STATE of host %s was set offline; republishing", self.host_id)
            await self._publish_state(client, online=True)

    async def _expect_state_echo(self) -> None:
        try:
            await asyncio.wait_for(self._state_seen.wait(), STATE_ECHO_TIMEOUT_S)
        except TimeoutError:
            log.error(
                "%s did not deliver this host's online STATE on %s back within %g s, so edge "
                "nodes cannot see it either: the broker's ACL must let this user publish and "
                "subscribe there",
                self.connection.describe(),
                state_topic(self.host_id or ""),
                STATE_ECHO_TIMEOUT_S,
            )

    # -- health ----------------------------------------------------------------------------

    def health_samples(self, time_ns: int) -> list[Sample]:
        agent_tags = {"site": self.site, "agent": self.agent}
        samples = self.activity.samples(agent_tags, time_ns)
        devices = self.activity.devices.values()
        samples.append(
            Sample(
                HEALTH_MEASUREMENT,
                agent_tags,
                {
                    "mqtt_connected": self.connection.connected,
                    "mqtt_connection_failures_total": self.connection.failures,
                    "subscriptions_refused_total": self.refused_subscriptions,
                    "messages_total": self.messages,
                    "bad_payloads_total": self.bad_payloads.total,
                    "oversized_messages_total": self.oversized,
                    "unmatched_messages_total": self.unmatched,
                    "rebirth_requests_total": self.sparkplug.rebirth_requests
                    if self.sparkplug
                    else 0,
                    "devices": len(devices),
                    "stale_devices": sum(1 for d in devices if d.stale),
                    **self.broker_watch.health_fields(),
                },
                time_ns,
            )
        )
        return samples
