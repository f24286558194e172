"""Notifications as Alertmanager sends them: routed, grouped, deduplicated, rate-limited and
retried, in tasks of their own so that nothing here ever holds up ingest.

Alert changes arrive on a bounded queue (`submit` never waits; a full queue drops and counts).
Each alert goes to the first matching route (or further ones marked `continue`), else the
root, and into that route's group for its `group_by` labels. A new group is sent after
`group_wait`; after that its changes go out at most every `group_interval`, and a group still
firing is sent again after `repeat_interval`. A group is sent only when it has a firing alert
its receiver has not heard of, a resolved alert the receiver was told was firing, or a repeat
is due; the same content is never queued twice. Silenced or dependency-muted alerts are left
out of firing notifications; their resolution is still sent if the receiver knew of them.

Every receiver has its own bounded queue and worker: a receiver that is down retries with
capped, jittered exponential backoff, then counts a failure (the group is tried again at its
next group_interval), and never delays another receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from collector.alerting.alert import Notice
from collector.alerting.matchers import Matcher, matches_all
from collector.alerting.receivers import DEFAULT_RATE_PER_MINUTE, Notification, deliver
from collector.alerting.settings import AlertingSettings, Receiver, RootRoute

log = logging.getLogger(__name__)

Muted = Callable[[Mapping[str, str], float], str | None]


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    matchers: tuple[Matcher, ...]
    receiver: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    continue_: bool = False

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_by == ("...",):
            return dict(sorted(labels.items()))
        return {name: labels.get(name, "") for name in self.group_by}


def compile_routes(root: RootRoute) -> tuple[Route, list[Route]]:
    top = Route(
        "root",
        (),
        root.receiver,
        tuple(root.group_by),
        root.group_wait,
        root.group_interval,
        root.repeat_interval,
    )
    children = [
        Route(
            f"routes[{i}]",
            tuple(child.matchers),
            child.receiver,
            tuple(child.group_by if child.group_by is not None else top.group_by),
            child.group_wait if child.group_wait is not None else top.group_wait,
            child.group_interval if child.group_interval is not None else top.group_interval,
            child.repeat_interval if child.repeat_interval is not None else top.repeat_interval,
            child.continue_,
        )
        for i, child in enumerate(root.routes)
    ]
    return top, children


class _Group:
    __slots__ = (
        "alerts",
        "in_flight",
        "key",
        "labels",
        "last_sent",
        "next_flush",
        "notified",
        "route",
    )

    def __init__(self, key: str, route: Route, labels: dict[str, str], next_flush: float):
        self.key = key
        self.route = route
        self.labels = labels
        self.alerts: dict[str, Notice] = {}
        self.next_flush = next_flush
        self.notified: set[str] = set()  # told as firing, not yet as resolved
        self.last_sent: float | None = None
        self.in_flight: tuple[frozenset[str], frozenset[str]] | None = None


class Grouper:
    """The grouping and deduplication logic, free of I/O and of the clock."""

    def __init__(
        self, root: RootRoute, receivers: Mapping[str, Receiver], muted: Muted | None = None
    ) -> None:
        self.root, self.routes = compile_routes(root)
        self.by_name = {r.name: r for r in (self.root, *self.routes)}
        self.receivers = receivers
        self.muted: Muted = muted or (lambda labels, now: None)
        self.groups: dict[str, _Group] = {}
        self.muted_alerts = 0  # firing alerts left out of a notification, so far
        self.flushes = 0  # groups looked at because their time had come

    def routes_for(self, labels: Mapping[str, str]) -> list[Route]:
        matched = []
        for route in self.routes:
            if matches_all(route.matchers, labels):
                matched.append(route)
                if not route.continue_:
                    break
        return matched or [self.root]

    def add(self, notice: Notice, now: float) -> None:
        for route in self.routes_for(notice.labels):
            labels = route.group_labels(notice.labels)
            key = f"{route.name}:{{{','.join(f'{k}={v!r}' for k, v in labels.items())}}}"
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = _Group(key, route, labels, now + route.group_wait)
            group.alerts[notice.fingerprint] = notice

    def next_due(self) -> float | None:
        return min((g.next_flush for g in self.groups.values()), default=None)

    def due(self, now: float) -> list[Notification]:
        out = []
        for group in list(self.groups.values()):
            if group.next_flush > now:
                continue
            group.next_flush = now + min(group.route.group_interval, self._resend(group))
            self.flushes += 1
            notification = self._flush(group, now)
            if notification is not None:
                out.append(notification)
            self._tidy(group)
        return out

    def _flush(self, group: _Group, now: float) -> Notification | None:
        firing = []
        for alert in group.alerts.values():
            if alert.status != "firing":
                continue
            if self.muted(alert.labels, now) is None:
                firing.append(alert)
            else:
                self.muted_alerts += 1
        resolved = [
            a
            for a in group.alerts.values()
            if a.status == "resolved" and a.fingerprint in group.notified
        ]
        if resolved and not self.receivers[group.route.receiver].send_resolved:
            group.notified -= {a.fingerprint for a in resolved}
            resolved = []
        new = any(a.fingerprint not in group.notified for a in firing)
        every = min(group.route.repeat_interval, self._resend(group))
        repeat = bool(firing) and (group.last_sent is None or now - group.last_sent >= every)
        if not (new or resolved or repeat):
            return None
        content = (
            frozenset(a.fingerprint for a in firing),
            frozenset(a.fingerprint for a in resolved),
        )
        if group.in_flight == content:
            return None
        group.in_flight = content
        return Notification(
            group.key,
            group.route.receiver,
            dict(group.labels),
            tuple(sorted(firing, key=lambda a: (a.starts_at, a.fingerprint))),
            tuple(sorted(resolved, key=lambda a: (a.ends_at or 0.0, a.fingerprint))),
        )

    def _resend(self, group: _Group) -> float:
        """Alertmanager's API wants firing alerts pushed again before their lease runs out."""
        receiver = self.receivers[group.route.receiver]
        return receiver.resend_interval if receiver.kind == "alertmanager_api" else math.inf

    def _tidy(self, group: _Group) -> None:
        """Forget resolved alerts no one needs to hear of, and groups left empty."""
        waiting = group.in_flight[1] if group.in_flight else frozenset()
        for fp, alert in list(group.alerts.items()):
            if alert.status == "resolved" and fp not in group.notified and fp not in waiting:
                del group.alerts[fp]
        if not group.alerts and group.in_flight is None:
            del self.groups[group.key]

    def delivered(self, notification: Notification, now: float) -> None:
        group = self.groups.get(notification.group_key)
        if group is None:
            return
        told_resolved = {a.fingerprint for a in notification.resolved}
        group.notified = (group.notified | {a.fingerprint for a in notification.firing}) - (
            told_resolved
        )
        group.last_sent = now
        group.in_flight = None
        for fp in told_resolved:
            alert = group.alerts.get(fp)
            if alert is not None and alert.status == "resolved":
                del group.alerts[fp]
        self._tidy(group)

    def failed(self, notification: Notification) -> None:
        group = self.groups.get(notification.group_key)
        if group is not None:
            group.in_flight = None

    def snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "key": g.key,
                "route": g.route.name,
                "labels": g.labels,
                "alerts": [a.to_json() for a in g.alerts.values()],
                "notified": sorted(g.notified),
                "last_sent": g.last_sent,
            }
            for g in self.groups.values()
        ]

    def restore(self, groups: Sequence[Mapping[str, Any]], now: float) -> None:
        for item in groups:
            route = self.by_name.get(item["route"])
            if route is None or route.receiver not in self.receivers:
                continue  # the route is gone from the config
            group = _Group(item["key"], route, dict(item["labels"]), now + route.group_wait)
            group.alerts = {a["fingerprint"]: Notice.from_json(a) for a in item["alerts"]}
            group.notified = set(item["notified"])
            group.last_sent = item["last_sent"]
            self.groups[group.key] = group


@dataclass(slots=True)
class ReceiverStats:
    sent: int = 0  # notifications delivered
    failed: int = 0  # notifications given up on (after retries, or refused outright)
    attempts: int = 0  # requests made, retries included
    dropped: int = 0  # the receiver's queue was full


class _Worker:
    """Sends one receiver's notifications, in order, one at a time."""

    def __init__(
        self,
        receiver: Receiver,
        grouper: Grouper,
        on_change: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self.receiver = receiver
        self.grouper = grouper
        self.on_change = on_change
        self.clock = clock
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(receiver.queue_size)
        self.stats = ReceiverStats()
        self.rate = RateLimit(
            receiver.rate_limit_per_minute or DEFAULT_RATE_PER_MINUTE.get(receiver.kind)
        )

    def enqueue(self, notification: Notification) -> None:
        try:
            self.queue.put_nowait(notification)
        except asyncio.QueueFull:
            self.stats.dropped += 1
            self.stats.failed += 1
            self.grouper.failed(notification)
            log.error(
                "receiver %s: %d notifications waiting; dropped one",
                self.receiver.name,
                self.queue.qsize(),
            )

    async def run(self, client: httpx.AsyncClient) -> None:
        while True:
            notification = await self.queue.get()
            try:
                await self._send(client, notification)
            except Exception:  # a bug must cost this notification, not the receiver
                log.exception("receiver %s: notification failed", self.receiver.name)
                self.stats.failed += 1
                self.grouper.failed(notification)
            finally:
                self.queue.task_done()

    async def _send(self, client: httpx.AsyncClient, notification: Notification) -> None:
        receiver = self.receiver
        reason = ""
        try:
            for attempt in range(1, receiver.max_attempts + 1):
                await self._within_rate_limit()
                self.stats.attempts += 1
                outcome = await deliver(client, receiver, notification, self.clock())
                if outcome.ok:
                    self.stats.sent += 1
                    self.grouper.delivered(notification, self.clock())
                    self.on_change()
                    return
                reason = outcome.reason
                if not outcome.retry or attempt == receiver.max_attempts:
                    break
                delay = min(receiver.retry_max_s, receiver.retry_initial_s * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                if outcome.retry_after_s is not None:
                    delay = max(delay, min(outcome.retry_after_s, receiver.retry_max_s))
                log.warning(
                    "receiver %s: attempt %d of %d failed (%s); again in %.1f s",
                    receiver.name,
                    attempt,
                    receiver.max_attempts,
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.grouper.failed(notification)
            raise
        self.stats.failed += 1
        self.grouper.failed(notification)
        log.error(
            "receiver %s: notification for %s failed: %s (%d failed so far)",
            receiver.name,
            notification.group_key,
            reason,
            self.stats.failed,
        )

    async def _within_rate_limit(self) -> None:
        wait_s = self.rate.wait_s(time.monotonic())
        while wait_s > 0:
            await asyncio.sleep(wait_s)  # a send slot frees up at a known time
            wait_s = self.rate.wait_s(time.monotonic())


class RateLimit:
    """At most `limit` sends in any `window_s` (a sliding window); None: no limit."""

    def __init__(self, limit: int | None, window_s: float = 60.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._sent_at: deque[float] = deque()

    def wait_s(self, now: float) -> float:
        """0 and the send is counted, or how long to wait before asking again."""
        if self.limit is None:
            return 0.0
        while self._sent_at and now - self._sent_at[0] >= self.window_s:
            self._sent_at.popleft()
        if len(self._sent_at) < self.limit:
            self._sent_at.append(now)
            return 0.0
        return self._sent_at[0] + self.window_s - now


class Notifier:
    def __init__(
        self,
        settings: AlertingSettings,
        muted: Muted | None = None,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        receivers = {r.name: r for r in settings.receivers}
        self.grouper = Grouper(settings.route, receivers, muted)
        self.clock = clock
        self.on_change = on_change
        self.workers = {
            name: _Worker(receiver, self.grouper, on_change, clock)
            for name, receiver in receivers.items()
        }
        self._inbox: asyncio.Queue[Notice] = asyncio.Queue(settings.queue_size)
        self.dropped = 0  # alert changes lost to a full queue

    def submit(self, notice: Notice) -> None:
        """Hand over an alert change; never waits."""
        try:
            self._inbox.put_nowait(notice)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("notifier: queue full; %d alert changes dropped", self.dropped)

    def stats(self) -> ReceiverStats:
        total = ReceiverStats()
        for worker in self.workers.values():
            total.sent += worker.stats.sent
            total.failed += worker.stats.failed
            total.attempts += worker.stats.attempts
            total.dropped += worker.stats.dropped
        return total

    async def run(self) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            tasks = [
                asyncio.create_task(worker.run(client), name=f"receiver {name}")
                for name, worker in self.workers.items()
            ]
            try:
                await self._dispatch_forever()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _dispatch_forever(self) -> None:
        while True:
            now = self.clock()
            due = self.grouper.next_due()
            wait = 1.0 if due is None else min(1.0, max(0.0, due - now))
            notice = None
            with contextlib.suppress(TimeoutError):
                notice = await asyncio.wait_for(self._inbox.get(), wait)
            try:
                if notice is not None:
                    self.grouper.add(notice, self.clock())
                while not self._inbox.empty():
                    self.grouper.add(self._inbox.get_nowait(), self.clock())
                self.dispatch_due()
            except Exception:  # keep notifying the other groups
                log.exception("notifier: dispatch failed")

    def dispatch_due(self) -> None:
        notifications = self.grouper.due(self.clock())
        for notification in notifications:
            self.workers[notification.receiver].enqueue(notification)
        if notifications:
            self.on_change()

    async def drain(self, timeout_s: float) -> bool:
        """Wait for queued notifications to be sent (or fail); False if time ran out."""
        waits = [asyncio.create_task(w.queue.join()) for w in self.workers.values()]
        if not waits:
            return True
        _, late = await asyncio.wait(waits, timeout=timeout_s)
        for task in late:
            task.cancel()
        return not late
