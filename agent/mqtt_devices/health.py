"""What the agent knows about each publishing device: when it was last heard, what it sent.

A device not heard from for its `stale_after_s` is stale (a `rackwatch_mqtt_device` health
sample with `stale=true`, which alert rules can use); a device the config lists counts from
the agent's start, so a restart does not mark everything stale at once. Bad payloads are counted
per topic and logged once per topic, so a misbehaving publisher cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from telemetry.sample import FieldValue, Sample

log = logging.getLogger(__name__)

HEALTH_MEASUREMENT = "rackwatch_mqtt_device"
MAX_DEVICES = 10_000  # topics with wildcards must not grow memory without bound
MAX_TOPICS = 10_000
_HEALTH_TAGS = ("site", "room", "row", "rack", "device")


@dataclass(slots=True)
class DeviceActivity:
    tags: dict[str, str]
    stale_after_s: float
    since: float  # when we began to expect it
    last_heard: float | None = None
    messages: int = 0
    bad_payloads: int = 0
    stale: bool = False
    online: bool | None = None  # Sparkplug births and deaths; None for other formats

    def age_s(self, now: float) -> float:
        return now - (self.last_heard if self.last_heard is not None else self.since)


class ActivityTracker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.devices: dict[str, DeviceActivity] = {}
        self.silence_hint = ""  # added to the warning about a device never heard
        self._full_logged = False

    def _get(
        self, device: str, tags: Mapping[str, str], stale_after_s: float
    ) -> DeviceActivity | None:
        activity = self.devices.get(device)
        if activity is None:
            if len(self.devices) >= MAX_DEVICES:
                if not self._full_logged:
                    log.warning("tracking %d MQTT devices; more are not tracked", MAX_DEVICES)
                    self._full_logged = True
                return None
            activity = DeviceActivity(dict(tags), stale_after_s, since=self.clock())
            self.devices[device] = activity
        return activity

    def expect(self, device: str, tags: Mapping[str, str], stale_after_s: float) -> None:
        self._get(device, tags, stale_after_s)

    def heard(
        self,
        device: str,
        tags: Mapping[str, str],
        stale_after_s: float,
        online: bool | None = None,
    ) -> None:
        activity = self._get(device, tags, stale_after_s)
        if activity is None:
            return
        now = self.clock()
        if activity.stale:
            log.info("MQTT device %s: publishing again after %.0f s", device, activity.age_s(now))
            activity.stale = False
        activity.tags = dict(tags)
        activity.last_heard = now
        activity.messages += 1
        if online is not None:
            activity.online = online

    def bad_payload(self, device: str, tags: Mapping[str, str], stale_after_s: float) -> None:
        activity = self._get(device, tags, stale_after_s)
        if activity is not None:
            activity.bad_payloads += 1

    def offline(self, device: str) -> None:
        activity = self.devices.get(device)
        if activity is not None:
            activity.online = False

    def check(self) -> None:
        """Mark devices stale that have been silent too long; log each change once."""
        now = self.clock()
        for device, activity in self.devices.items():
            age_s = activity.age_s(now)
            if not activity.stale and age_s >= activity.stale_after_s:
                activity.stale = True
                if activity.last_heard is not None:
                    log.warning("MQTT device %s: nothing for %.0f s; marked stale", device, age_s)
                else:
                    log.warning(
                        "MQTT device %s: never heard in %.0f s; marked stale (%s)",
                        device,
                        age_s,
                        self.silence_hint or "is it publishing?",
                    )

    def samples(self, agent_tags: Mapping[str, str], time_ns: int) -> list[Sample]:
        self.check()
        now = self.clock()
        samples = []
        for activity in self.devices.values():
            tags = {k: activity.tags[k] for k in _HEALTH_TAGS if activity.tags.get(k)}
            fields: dict[str, FieldValue] = {
                "stale": activity.stale,
                "age_s": round(activity.age_s(now), 3),
                "messages_total": activity.messages,
                "bad_payloads_total": activity.bad_payloads,
            }
            if activity.online is not None:
                fields["online"] = activity.online
            samples.append(Sample(HEALTH_MEASUREMENT, {**agent_tags, **tags}, fields, time_ns))
        return samples


class BadPayloadLog:
    """Bad payloads per topic: the first of each topic is logged with its reason, the rest
    counted."""

    def __init__(self) -> None:
        self.per_topic: dict[str, int] = {}
        self.total = 0
        self._full_logged = False

    def report(self, topic: str, reason: str) -> None:
        self.total += 1
        count = self.per_topic.get(topic)
        if count is not None:
            self.per_topic[topic] = count + 1
            return
        if len(self.per_topic) >= MAX_TOPICS:
            if not self._full_logged:
                log.warning("bad payloads on %d MQTT topics; new topics are not logged", MAX_TOPICS)
                self._full_logged = True
            return
        self.per_topic[topic] = 1
        log.warning(
            "MQTT topic %s: bad payload: %s (counted, not logged again for this topic)",
            topic,
            reason,
        )
