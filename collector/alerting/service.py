"""Alerting in the collector: rules on the stream -> transitions -> history and notifications.

The evaluator reads the validated lines the ingest passes it (or its own subscription, see
feed.py); each transition becomes an `alert` line in the collector's pipeline and, when an
alert starts or stops firing, a change for the notifier, which groups and sends in its own
tasks. State is saved after every delivered notification and at most a tick after any other
change, and once more at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from collector.alerting.alert import Alert, Notice
from collector.alerting.evaluator import Evaluator, Transition
from collector.alerting.history import active_sample, history_line, line_of
from collector.alerting.notifier import Notifier
from collector.alerting.rules import RuleFile
from collector.alerting.settings import AlertingSettings
from collector.alerting.silences import Silences
from collector.config import MqttSettings
from collector.feed import StreamFeed
from telemetry import config
from telemetry.config import ConfigError
from telemetry.mqtt import Session
from telemetry.statefile import StateFile

log = logging.getLogger(__name__)


class Alerting:
    def __init__(
        self,
        settings: AlertingSettings,
        add_lines: Callable[[list[bytes]], None],
        mqtt: MqttSettings | None = None,
        client_id: str = "rackwatch-collector",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`add_lines` takes history lines for InfluxDB; `mqtt` and `client_id` are the
        collector's, for ownership by subscription. Raises telemetry.config.ConfigError when
        the rules file is not usable."""
        self.settings = settings
        self.rules = config.load(settings.rules_file, RuleFile)
        self.add_lines = add_lines
        self.clock = clock
        self.state = StateFile(settings.state_path, "alert state")
        self.silences = Silences(settings.silences, settings.silences_file)
        self.evaluator = Evaluator(
            self.rules,
            self._transition,
            max_age_s=settings.max_sample_age,
            stale_after=settings.stale_after,
            clock=clock,
        )
        self.notifier = Notifier(settings, self.muted, self._delivered, clock)
        self.feed = None
        if settings.ownership.source == "subscription":
            mqtt = mqtt or MqttSettings()
            session = Session(receive_maximum=mqtt.receive_maximum)  # clean: collector/feed.py
            self.feed = StreamFeed(
                "alerting",
                mqtt,
                mqtt.topic,
                f"{client_id}-alerting",
                session,
                self.evaluator.prefixes,
                self.evaluator.observe,
                shard=settings.ownership.shard,
                shards=settings.ownership.shards,
            )
        self.history_lines = 0
        self.active_lines = 0
        self._active_at = clock()  # when the last `alert_active` snapshot went out
        self._active: dict[str, Alert] = {}  # what it listed, by fingerprint
        self._dirty = False
        self._restore()

    def _restore(self) -> None:
        saved = self.state.load()
        now = self.clock()
        try:
            self.notifier.grouper.restore(saved.get("notifier", []), now)
            self.evaluator.restore(saved.get("evaluator", {}), now)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            log.error("alert state %s unusable (%r); starting empty", self.state.path, exc)
            self.notifier.grouper.groups.clear()
            self.evaluator.alerts.clear()
        for alert in self.evaluator.firing():
            self.notifier.submit(self._notice(alert, "firing", None, self.evaluator.summary(alert)))
        if self.evaluator.alerts:
            log.info(
                "alerting: %d alerts taken back from %s",
                len(self.evaluator.alerts),
                self.state.path,
            )

    def reload_rules(self) -> bool:
        """Read the rules file again (SIGHUP). Alerts of rules that remain carry over, with
        their state; alerts of rules that are gone are resolved. A file that does not load is
        refused with its errors, and the rules in use stay. True if the new rules are in use."""
        try:
            rules = config.load(self.settings.rules_file, RuleFile)
        except ConfigError as exc:
            log.error("alert rules not reloaded, the old ones stay in use: %s", exc)
            return False
        old = self.evaluator
        evaluator = Evaluator(
            rules,
            self._transition,
            max_age_s=self.settings.max_sample_age,
            stale_after=self.settings.stale_after,
            clock=self.clock,
        )
        self.evaluator = evaluator  # before restore: resolutions of dropped rules go through it
        evaluator.restore(old.snapshot(), self.clock(), restart=False)
        self.rules = rules
        if self.feed is not None:
            self.feed.prefixes = evaluator.prefixes
            self.feed.observe = evaluator.observe
        self._dirty = True
        log.info(
            "alert rules reloaded from %s: %d rules", self.settings.rules_file, len(rules.rules)
        )
        return True

    # --- the ingest side -------------------------------------------------------------------------

    def observe(self, lines: list[bytes]) -> None:
        """The ingest tap: validated lines, on the hot path."""
        self.evaluator.observe(lines)

    def _transition(self, transition: Transition) -> None:
        self._dirty = True
        if self.settings.history:
            line = history_line(transition)
            if line is not None:
                self.add_lines([line])
                self.history_lines += 1
        if transition.state == "firing":
            notice = self._notice(transition.alert, "firing", None, transition.summary)
        elif transition.state == "resolved" and transition.previous == "firing":
            notice = self._notice(
                transition.alert,
                "resolved",
                transition.at,
                transition.summary,
                transition.end_reason,
            )
        else:
            return
        self.notifier.submit(notice)

    @staticmethod
    def _notice(
        alert: Alert, status: str, ends_at: float | None, summary: str, end_reason: str = ""
    ) -> Notice:
        return Notice(
            alert.fingerprint,
            dict(alert.labels),
            "firing" if status == "firing" else "resolved",
            alert.active_since,
            ends_at,
            summary,
            alert.value,
            end_reason,
        )

    def muted(self, labels: Mapping[str, str], now: float) -> str | None:
        silence = self.silences.muting(labels, now)
        if silence is not None:
            return f"silence {silence.id}"
        return self.evaluator.muted_by(labels)

    # --- the clock and the disk ------------------------------------------------------------------

    def _delivered(self) -> None:
        self.save()  # right away: a restart must not send it again

    def save(self) -> None:
        snapshot = {
            "evaluator": self.evaluator.snapshot(),
            "notifier": self.notifier.grouper.snapshot(),
        }
        if self.state.save(snapshot):
            self._dirty = False

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self.notifier.run(), name="alert notifier"),
            asyncio.create_task(self._tick_forever(), name="alert clock"),
        ]
        if self.feed is not None:
            tasks.append(asyncio.create_task(self.feed.run(), name="alert feed"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.evaluation_interval)
            try:
                self.tick()
            except Exception:  # the next tick may do better; ingest goes on regardless
                log.exception("alerting: evaluation tick failed")

    def tick(self) -> None:
        self.silences.refresh()
        now = self.clock()
        self.evaluator.tick(now)
        if self._dirty or self.evaluator.changed:
            self.save()
        interval = self.settings.active_interval
        if interval and now - self._active_at >= interval:
            self._active_at = now
            self.write_active(now)

    def write_active(self, now: float) -> None:
        """An `alert_active` point for each alert firing now (Grafana's "firing now" table)."""
        firing = {alert.fingerprint: alert for alert in self.evaluator.firing()}
        samples = [
            active_sample(a, self.evaluator.summary(a), self.muted(a.labels, now), now)
            for a in firing.values()
        ]
        # What the last snapshot listed and no longer fires: one `resolved` point, so that the
        # table drops it now rather than when its last point leaves the window.
        samples += [
            active_sample(alert, "", None, now, "resolved")
            for key, alert in self._active.items()
            if key not in firing
        ]
        self._active = firing
        lines = [line for line in map(line_of, samples) if line is not None]
        if lines:
            self.add_lines(lines)
            self.active_lines += len(lines)

    async def close(self, task: asyncio.Task[None], timeout_s: float) -> None:
        """Give queued notifications `timeout_s` to go out, stop, and save the state."""
        if not task.done():
            self.notifier.dispatch_due()
            if not await self.notifier.drain(timeout_s):
                log.warning("shutdown: notifications still queued after %.0f s", timeout_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.save()

    def health_fields(self) -> dict[str, Any]:
        sent = self.notifier.stats()
        stats = self.evaluator.stats
        alerts = self.evaluator.alerts.values()
        return {
            "alerts_firing": sum(1 for a in alerts if a.state == "firing"),
            "alerts_pending": sum(1 for a in alerts if a.state == "pending"),
            "alert_lines_parsed_total": stats.lines_parsed,
            "alert_stale_samples_total": stats.samples_stale,
            "alerts_stale_total": stats.alerts_stale,
            "alert_history_lines_total": self.history_lines,
            "alert_active_lines_total": self.active_lines,
            "notifications_sent_total": sent.sent,
            "notifications_failed_total": sent.failed,
            "notification_attempts_total": sent.attempts,
            "notifications_dropped_total": sent.dropped + self.notifier.dropped,
            "alert_state_write_errors_total": self.state.errors,
        }
