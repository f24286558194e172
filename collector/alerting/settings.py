"""The collector config's `alerting:` section: rules, where notifications go, silences, state.

The rules live in their own file (`rules_file`, see rules.py), loaded when the collector starts
and checked on their own by `rackwatch check -c alert-rules.yaml`.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, field_validator

from collector.alerting.durations import Duration
from collector.alerting.matchers import MatcherField
from telemetry.config import KeyPath, Secret, StrictModel

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ReceiverBase(StrictModel):
    name: str = Field(pattern=_NAME)
    send_resolved: bool = True
    timeout_s: float = Field(default=10.0, gt=0)
    # Each notification is tried up to max_attempts times, waiting retry_initial_s, then twice
    # as long each time (with jitter) up to retry_max_s; then it counts as failed.
    max_attempts: int = Field(default=5, ge=1)
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    # At most this many notifications a minute; default: the service's documented limit.
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    queue_size: int = Field(default=1000, ge=1)  # waiting notifications; beyond: failed


class WebhookReceiver(ReceiverBase):
    """Generic JSON; with `secret`, `X-Rackwatch-Signature: sha256=<hex HMAC-SHA256 of body>`."""

    kind: Literal["webhook"]
    url: Secret
    secret: Secret | None = None
    headers: dict[str, Secret] = {}


class AlertmanagerReceiver(ReceiverBase):
    """Alertmanager's webhook payload (version 4), for tools that already take it."""

    kind: Literal["alertmanager"]
    url: Secret
    headers: dict[str, Secret] = {}
    external_url: str = ""


class AlertmanagerApiReceiver(ReceiverBase):
    """Alertmanager's own API: POST <url>/api/v2/alerts, for sites whose Alertmanager does the
    routing. Firing alerts are sent again every `resend_interval`, each valid for four of
    them (as Prometheus does), so Alertmanager resolves them itself if rackwatch goes away."""

    kind: Literal["alertmanager_api"]
    url: Secret  # Alertmanager's base URL: http://alertmanager:9093
    headers: dict[str, Secret] = {}
    resend_interval: Duration = Field(default=60.0, gt=0)
    generator_url: str = ""  # each alert's generatorURL (a Grafana dashboard, say)


class Mentions(StrictModel):
    """Whom a chat robot's message about firing alerts @mentions: on-call phone numbers and
    user ids (DingTalk and WeCom take both, Feishu user ids, open_ids or union_ids only)."""

    mobiles: list[str] = []
    user_ids: list[str] = []
    all: bool = False  # @all (everyone in the group)
    # Only for notifications with a firing alert of one of these severities; empty: any.
    severities: list[str] = []

    @field_validator("mobiles")
    @classmethod
    def _phone_numbers(cls, mobiles: list[str]) -> list[str]:
        for mobile in mobiles:
            if not re.fullmatch(r"\+?[0-9][0-9-]{4,19}", mobile):
                raise ValueError(f"{mobile!r} is not a phone number (digits, + and - only)")
        return mobiles


class PagerDutyReceiver(ReceiverBase):
    kind: Literal["pagerduty"]
    routing_key: Secret
    url: str = "https://events.pagerduty.com/v2/enqueue"
    source: str = ""  # payload.source; default: the alerts' device, agent or site


class DingTalkReceiver(ReceiverBase):
    kind: Literal["dingtalk"]
    url: Secret  # https://oapi.dingtalk.com/robot/send?access_token=...
    secret: Secret | None = None  # the robot's "加签" secret (SEC...)
    mention: Mentions | None = None  # at.atMobiles / at.atUserIds / at.isAtAll


class WeComReceiver(ReceiverBase):
    kind: Literal["wecom"]
    key: Secret
    url: str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
    # mentioned_list / mentioned_mobile_list: these go with WeCom's `text` message only, so a
    # receiver with mentions sends text (at most 2048 bytes) instead of markdown.
    mention: Mentions | None = None


class FeishuReceiver(ReceiverBase):
    """Feishu, or Lark with an open.larksuite.com hook URL."""

    kind: Literal["feishu"]
    url: Secret  # https://open.feishu.cn/open-apis/bot/v2/hook/...
    secret: Secret | None = None  # the bot's signature verification secret
    mention: Mentions | None = None  # <at user_id="..."> in the text; no phone numbers

    @field_validator("mention")
    @classmethod
    def _no_mobiles(cls, mention: Mentions | None) -> Mentions | None:
        if mention is not None and mention.mobiles:
            raise ValueError(
                "Feishu custom bots @mention by user id (user_id, open_id or union_id), "
                "not by phone number: use mention.user_ids"
            )
        return mention


Receiver = Annotated[
    WebhookReceiver
    | AlertmanagerReceiver
    | AlertmanagerApiReceiver
    | PagerDutyReceiver
    | DingTalkReceiver
    | WeComReceiver
    | FeishuReceiver,
    Field(discriminator="kind"),
]


class ChildRoute(StrictModel):
    """Alerts matching every matcher go to `receiver`; unset timings are the root's."""

    matchers: list[MatcherField] = []
    receiver: str
    continue_: bool = Field(default=False, alias="continue")
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None


class RootRoute(StrictModel):
    """Alertmanager's timing: a new group waits `group_wait` to collect its first alerts;
    changes to a group go out at most every `group_interval`; a group still firing is sent
    again after `repeat_interval`. `group_by: ["..."]` groups by every label."""

    receiver: str
    group_by: list[str] = ["alertname", "site", "rack"]
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 4 * 3600.0
    # First match wins, unless it says `continue: true`; no match: the root's receiver.
    routes: list[ChildRoute] = []


class SilenceSettings(StrictModel):
    """A maintenance window: alerts matching every matcher are not notified in it."""

    matchers: list[MatcherField] = Field(min_length=1)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    comment: str = ""
    created_by: str = "config"

    def window(self) -> tuple[datetime, datetime]:
        return self.starts_at, self.ends_at


class Ownership(StrictModel):
    """Which alerts this collector owns (docs/alerting.md).

    `ingest`: it evaluates the lines it takes; right only when it takes the whole stream (the
    only collector, or `mqtt.group: null`). `subscription`: it opens a second, non-shared
    subscription for alerting alone and evaluates the agents whose `site/agent` topic levels
    hash to `shard` of `shards`; give every shard to exactly one collector."""

    source: Literal["ingest", "subscription"] = "ingest"
    shards: int = Field(default=1, ge=1)
    shard: int = Field(default=0, ge=0)


class AlertingSettings(StrictModel):
    rules_file: Path
    state_path: Path = Path("rackwatch-alert-state.json")
    silences_file: Path | None = None  # managed by `rackwatch silence ...`
    silences: list[SilenceSettings] = []
    receivers: list[Receiver] = Field(min_length=1)
    route: RootRoute
    ownership: Ownership = Ownership()
    max_sample_age: Duration = 300.0  # older samples (replayed spools) are not evaluated
    # A threshold alert whose series has not reported for this long ends (resolved, "stale");
    # unset: derived from each series' interval (collector/alerting/staleness.py).
    stale_after: Duration | None = None
    evaluation_interval: Duration = Field(default=1.0, gt=0)  # the clock for `for`, absence
    queue_size: int = Field(default=10_000, ge=1)  # changes waiting for the notifier
    history: bool = True  # every transition as an `alert` point in InfluxDB
    # Every firing alert as an `alert_active` point this often (Grafana's "firing now"); 0: off.
    active_interval: Duration = 60.0

    def problems(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        names: set[str] = set()
        for i, receiver in enumerate(self.receivers):
            if receiver.name in names:
                found.append((("receivers", i, "name"), f"duplicate receiver {receiver.name!r}"))
            names.add(receiver.name)
        known = ", ".join(sorted(names))
        if self.route.receiver not in names:
            found.append(
                (("route", "receiver"), f"no receiver named {self.route.receiver!r}; have {known}")
            )
        for i, route in enumerate(self.route.routes):
            if route.receiver not in names:
                found.append(
                    (
                        ("route", "routes", i, "receiver"),
                        f"no receiver named {route.receiver!r}; have {known}",
                    )
                )
        for i, silence in enumerate(self.silences):
            if silence.ends_at <= silence.starts_at:
                found.append((("silences", i, "ends_at"), "ends_at must be after starts_at"))
        if self.stale_after is not None and self.stale_after <= 0:
            found.append((("stale_after",), "stale_after must be over 0 (unset: derived)"))
        if self.ownership.shard >= self.ownership.shards:
            found.append(
                (
                    ("ownership", "shard"),
                    f"shard {self.ownership.shard} of {self.ownership.shards}: "
                    f"shards are numbered 0 to {self.ownership.shards - 1}",
                )
            )
        return found
