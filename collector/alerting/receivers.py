"""What each receiver is sent, how it is signed, and how its answer is read.

Payloads follow the services' own documentation (cited at each builder); the tests check each
against those formats and verify signatures the way the receiving service does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from collector.alerting.alert import Notice
from collector.alerting.settings import (
    AlertmanagerApiReceiver,
    AlertmanagerReceiver,
    DingTalkReceiver,
    FeishuReceiver,
    Mentions,
    PagerDutyReceiver,
    Receiver,
    WebhookReceiver,
    WeComReceiver,
)

SIGNATURE_HEADER = "X-Rackwatch-Signature"
MAX_LISTED_ALERTS = 20  # chat messages list this many alerts, then "and N more"

# Documented per-robot/per-key limits, as defaults for `rate_limit_per_minute`.
DEFAULT_RATE_PER_MINUTE = {
    "pagerduty": 120,  # Events API v2: about 120 events a minute per integration key
    "dingtalk": 20,  # custom robot: 20 messages a minute
    "wecom": 20,  # group robot: 20 messages a minute
    "feishu": 100,  # custom bot: 100 a minute (and 5 a second) per bot
}
# Answers (HTTP 200) that mean "slow down": retried; any other non-zero code is final.
RATE_LIMITED_CODES = {
    "dingtalk": {130101},  # sending too fast
    "wecom": {45009},  # API call frequency over the limit
    "feishu": {11232},  # rate limited
}
# Longest message body the chat services take (bytes of UTF-8).
MAX_TEXT_BYTES = {"dingtalk": 20000, "wecom": 4096, "feishu": 20000}
WECOM_TEXT_BYTES = 2048  # WeCom's `text` message, the one that can @mention
# Alertmanager keeps a firing alert this many resend intervals past its last push (Prometheus
# sends endsAt = now + 4 x its resend delay), then resolves it on its own.
ALERTMANAGER_VALIDITY = 4
PAGERDUTY_SEVERITY = {
    "critical": "critical",
    "error": "error",
    "warning": "warning",
    "info": "info",
}


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for one receiver about one group of alerts."""

    group_key: str
    receiver: str
    group_labels: Mapping[str, str]
    firing: tuple[Notice, ...]
    resolved: tuple[Notice, ...]

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"

    @property
    def alerts(self) -> tuple[Notice, ...]:
        return (*self.firing, *self.resolved)


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    body: bytes
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    retry: bool = False
    reason: str = ""
    retry_after_s: float | None = None


def rfc3339(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _json(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _common_labels(notification: Notification) -> dict[str, str]:
    alerts = notification.alerts
    if not alerts:
        return {}
    common = dict(alerts[0].labels)
    for alert in alerts[1:]:
        common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
    return common


# --- builders ---------------------------------------------------------------------------------


def build(receiver: Receiver, notification: Notification, now: float) -> Request:
    if isinstance(receiver, WebhookReceiver):
        return _webhook(receiver, notification, now)
    if isinstance(receiver, AlertmanagerReceiver):
        return _alertmanager(receiver, notification)
    if isinstance(receiver, AlertmanagerApiReceiver):
        return _alertmanager_api(receiver, notification, now)
    if isinstance(receiver, PagerDutyReceiver):
        return _pagerduty(receiver, notification, now)
    if isinstance(receiver, DingTalkReceiver):
        return _dingtalk(receiver, notification, now)
    if isinstance(receiver, WeComReceiver):
        return _wecom(receiver, notification)
    return _feishu(receiver, notification, now)


def sign_body(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _webhook(receiver: WebhookReceiver, n: Notification, now: float) -> Request:
    """rackwatch's own JSON (docs/alerting.md); the signature covers the exact body bytes,
    which carry `sent_at`, so a receiver can refuse replays."""
    body = _json(
        {
            "version": "1",
            "receiver": n.receiver,
            "status": n.status,
            "group_key": n.group_key,
            "group_labels": dict(n.group_labels),
            "sent_at": rfc3339(now),
            "alerts": [
                {
                    "status": a.status,
                    "fingerprint": a.fingerprint,
                    "alertname": a.alertname,
                    "severity": a.severity,
                    "labels": dict(a.labels),
                    "summary": a.summary,
                    "value": a.value,
                    "starts_at": rfc3339(a.starts_at),
                    "ends_at": rfc3339(a.ends_at) if a.ends_at is not None else None,
                    "end_reason": a.end_reason,  # "" while firing
                }
                for a in n.alerts
            ],
        }
    )
    headers = {"Content-Type": "application/json", **receiver.headers}
    if receiver.secret:
        headers[SIGNATURE_HEADER] = sign_body(receiver.secret, body)
    return Request(receiver.url, body, headers=headers)


def _annotations(alert: Notice) -> dict[str, str]:
    if alert.end_reason:
        return {"summary": alert.summary, "end_reason": alert.end_reason}
    return {"summary": alert.summary}


def _alertmanager(receiver: AlertmanagerReceiver, n: Notification) -> Request:
    """https://prometheus.io/docs/alerting/latest/configuration/#webhook_config (version 4)."""
    common = _common_labels(n)
    summaries = {a.summary for a in n.alerts}
    body = _json(
        {
            "version": "4",
            "groupKey": n.group_key,
            "truncatedAlerts": 0,
            "status": n.status,
            "receiver": n.receiver,
            "groupLabels": dict(n.group_labels),
            "commonLabels": common,
            "commonAnnotations": {"summary": summaries.pop()} if len(summaries) == 1 else {},
            "externalURL": receiver.external_url,
            "alerts": [
                {
                    "status": a.status,
                    "labels": dict(a.labels),
                    "annotations": _annotations(a),
                    "startsAt": rfc3339(a.starts_at),
                    # Alertmanager's zero time for "not ended".
                    "endsAt": rfc3339(a.ends_at) if a.ends_at else "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                    "fingerprint": a.fingerprint,
                }
                for a in n.alerts
            ],
        }
    )
    return Request(
        receiver.url, body, headers={"Content-Type": "application/json", **receiver.headers}
    )


def _alertmanager_api(receiver: AlertmanagerApiReceiver, n: Notification, now: float) -> Request:
    """https://github.com/prometheus/alertmanager/blob/main/api/v2/openapi.yaml, postAlerts:
    POST /api/v2/alerts with a list of postableAlert (labels, annotations, startsAt, endsAt,
    generatorURL). A firing alert's endsAt is a lease that the next push renews; a resolved
    one's is when it ended."""
    lease = now + ALERTMANAGER_VALIDITY * receiver.resend_interval
    alerts = []
    for a in n.alerts:
        alert: dict[str, Any] = {
            # Alertmanager drops empty label values and refuses an alert without labels.
            "labels": {k: v for k, v in a.labels.items() if v},
            "annotations": _annotations(a),
            "startsAt": rfc3339(a.starts_at),
            "endsAt": rfc3339(a.ends_at if a.ends_at is not None else lease),
        }
        if receiver.generator_url:
            alert["generatorURL"] = receiver.generator_url
        alerts.append(alert)
    url = receiver.url.rstrip("/") + "/api/v2/alerts"
    return Request(
        url, _json(alerts), headers={"Content-Type": "application/json", **receiver.headers}
    )


def pagerduty_dedup_key(group_key: str) -> str:
    """One PagerDuty alert per group (as Alertmanager does): a stable 64-character key, under
    the API's 255."""
    return hashlib.sha256(group_key.encode()).hexdigest()


def _pagerduty(receiver: PagerDutyReceiver, n: Notification, now: float) -> Request:
    """https://developer.pagerduty.com/docs/events-api-v2/trigger-events/: POST /v2/enqueue
    with routing_key, event_action (trigger or resolve) and dedup_key; a trigger carries
    payload.summary (at most 1024 characters), source and severity; 202 means accepted."""
    event: dict[str, Any] = {
        "routing_key": receiver.routing_key,
        "event_action": "trigger" if n.firing else "resolve",
        "dedup_key": pagerduty_dedup_key(n.group_key),
    }
    if n.firing:
        worst = min(n.firing, key=lambda a: _SEVERITY_ORDER.get(a.severity, 9))
        labels = _common_labels(n)
        event["client"] = "rackwatch"
        event["payload"] = {
            "summary": _title(n)[:1024],
            "source": receiver.source
            or labels.get("device")
            or labels.get("agent")
            or labels.get("site")
            or "rackwatch",
            "severity": PAGERDUTY_SEVERITY.get(worst.severity, "warning"),
            "timestamp": rfc3339(now),
            "class": worst.alertname,
            "group": labels.get("site", ""),
            "custom_details": {
                "firing": [a.summary for a in n.firing],
                "resolved": [a.summary for a in n.resolved],
                "group_labels": dict(n.group_labels),
            },
        }
        if not event["payload"]["group"]:
            del event["payload"]["group"]
    return Request(receiver.url, _json(event), headers={"Content-Type": "application/json"})


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """base64(HMAC-SHA256(key=secret, "timestamp\\nsecret")), sent URL-encoded in the query
    string; `timestamp` in milliseconds, within an hour of DingTalk's clock."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


def _dingtalk(receiver: DingTalkReceiver, n: Notification, now: float) -> Request:
    """https://open.dingtalk.com/document/group/custom-robot-access: markdown msgtype with a
    title and text; with a secret, `timestamp` (ms) and `sign` as query parameters."""
    params = {}
    if receiver.secret:
        timestamp_ms = int(now * 1000)
        params = {
            "timestamp": str(timestamp_ms),
            "sign": dingtalk_sign(receiver.secret, timestamp_ms),
        }
    mention = _mentioning(receiver.mention, n)
    # DingTalk notifies those in `at` only when the text names them too (@mobile, @userid).
    tail = ""
    if mention is not None:
        names = [*mention.mobiles, *mention.user_ids] + (["all"] if mention.all else [])
        tail = "\n\n" + " ".join(f"@{name}" for name in names)
    text = _clip(_markdown(n), MAX_TEXT_BYTES["dingtalk"] - len(tail.encode())) + tail
    message: dict[str, Any] = {
        "msgtype": "markdown",
        "markdown": {"title": _title(n)[:64], "text": text},
    }
    if mention is not None:
        message["at"] = {
            "atMobiles": mention.mobiles,
            "atUserIds": mention.user_ids,
            "isAtAll": mention.all,
        }
    body = _json(message)
    return Request(receiver.url, body, params=params, headers={"Content-Type": "application/json"})


def _mentioning(mention: Mentions | None, n: Notification) -> Mentions | None:
    """Whom to @mention: only for firing alerts, and of the listed severities if any."""
    if mention is None or not n.firing:
        return None
    if mention.severities and not any(a.severity in mention.severities for a in n.firing):
        return None
    return mention


def _wecom(receiver: WeComReceiver, n: Notification) -> Request:
    """https://developer.work.weixin.qq.com/document/path/91770: POST ...webhook/send?key=KEY,
    msgtype markdown, content at most 4096 bytes of UTF-8."""
    mention = _mentioning(receiver.mention, n)
    if mention is None:
        text = _clip(_markdown(n), MAX_TEXT_BYTES["wecom"])
        body = _json({"msgtype": "markdown", "markdown": {"content": text}})
    else:  # only WeCom's text message takes mentioned_list / mentioned_mobile_list
        everyone = ["@all"] if mention.all else []
        content: dict[str, Any] = {"content": _clip(_plain(n), WECOM_TEXT_BYTES)}
        if mention.user_ids or mention.all:
            content["mentioned_list"] = [*mention.user_ids, *everyone]
        if mention.mobiles or mention.all:
            content["mentioned_mobile_list"] = [*mention.mobiles, *everyone]
        body = _json({"msgtype": "text", "text": content})
    return Request(
        receiver.url,
        body,
        params={"key": receiver.key},
        headers={"Content-Type": "application/json"},
    )


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """base64(HMAC-SHA256(key="timestamp\\nsecret", message=b"")), as Feishu's sample code
    computes it (the secret goes into the key, the message is empty)."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def _feishu(receiver: FeishuReceiver, n: Notification, now: float) -> Request:
    """https://open.feishu.cn/document/ukTMukTMukTM/ucTM5YjL3ETO24yNxkjN (custom bot guide):
    msg_type text, with `timestamp` (seconds, a string) and `sign` in the body when the bot
    checks signatures (within an hour of Feishu's clock); the body must stay under 20 KB."""
    message: dict[str, Any] = {}
    if receiver.secret:
        timestamp_s = int(now)
        message = {"timestamp": str(timestamp_s), "sign": feishu_sign(receiver.secret, timestamp_s)}
    mention = _mentioning(receiver.mention, n)
    tail = ""
    if mention is not None:
        ats = [f'<at user_id="{html.escape(i)}">{html.escape(i)}</at>' for i in mention.user_ids]
        if mention.all:
            ats.append('<at user_id="all">所有人</at>')  # Feishu's own form for everyone
        tail = "\n" + " ".join(ats)
    text = _clip(_plain(n), MAX_TEXT_BYTES["feishu"] - 1024 - len(tail.encode())) + tail
    message |= {"msg_type": "text", "content": {"text": text}}
    return Request(receiver.url, _json(message), headers={"Content-Type": "application/json"})


# --- message text ------------------------------------------------------------------------------

_SEVERITY_ORDER = {"critical": 0, "error": 1, "warning": 2, "info": 3}


def _title(n: Notification) -> str:
    names = sorted({a.alertname for a in (n.firing or n.resolved)})
    where = " ".join(f"{k}={v}" for k, v in n.group_labels.items() if k != "alertname" and v)
    head = f"[FIRING:{len(n.firing)}]" if n.firing else "[RESOLVED]"
    return " ".join(part for part in (head, ", ".join(names), where) if part)


def _lines(alerts: tuple[Notice, ...]) -> list[str]:
    shown = [
        f"{a.summary} ({a.severity}, since {rfc3339(a.starts_at)[:19].replace('T', ' ')} UTC"
        + (f"; {a.end_reason})" if a.end_reason else ")")
        for a in alerts[:MAX_LISTED_ALERTS]
    ]
    if len(alerts) > MAX_LISTED_ALERTS:
        shown.append(f"... and {len(alerts) - MAX_LISTED_ALERTS} more")
    return shown


def _markdown(n: Notification) -> str:
    out = [f"### rackwatch {_title(n)}"]
    if n.firing:
        out += ["**Firing**", *(f"- {line}" for line in _lines(n.firing))]
    if n.resolved:
        out += ["**Resolved**", *(f"- {line}" for line in _lines(n.resolved))]
    return "\n".join(out)


def _plain(n: Notification) -> str:
    out = [f"rackwatch {_title(n)}"]
    if n.firing:
        out += ["Firing:", *(f"- {line}" for line in _lines(n.firing))]
    if n.resolved:
        out += ["Resolved:", *(f"- {line}" for line in _lines(n.resolved))]
    return "\n".join(out)


def _clip(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 4].decode(errors="ignore") + "\n..."


# --- sending -----------------------------------------------------------------------------------


async def deliver(
    client: httpx.AsyncClient, receiver: Receiver, notification: Notification, now: float
) -> Outcome:
    """One attempt: build, POST, judge the answer. Never raises for network trouble."""
    request = build(receiver, notification, now)
    try:
        # httpx's `params=` would replace a query the URL already has (DingTalk's token).
        response = await client.post(
            httpx.URL(request.url).copy_merge_params(dict(request.params)),
            content=request.body,
            headers=dict(request.headers),
            timeout=receiver.timeout_s,
        )
    except httpx.HTTPError as exc:
        return Outcome(False, retry=True, reason=f"{type(exc).__name__}: {exc}".rstrip(": "))
    return judge(receiver.kind, response.status_code, response.headers, response.content)


def judge(kind: str, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    if status in (408, 429) or status >= 500:
        return Outcome(
            False, retry=True, reason=f"HTTP {status}", retry_after_s=_retry_after(headers)
        )
    if not 200 <= status < 300:
        return Outcome(False, reason=f"HTTP {status}: {body[:200].decode(errors='replace')}")
    if kind not in RATE_LIMITED_CODES:
        return Outcome(True)
    # The chat robots answer 200 with their own error code.
    try:
        answer = json.loads(body)
        code = int(answer.get("errcode", answer.get("code", answer.get("StatusCode", 0))))
    except (ValueError, TypeError, AttributeError):
        return Outcome(False, reason=f"unreadable answer: {body[:200].decode(errors='replace')}")
    if code == 0:
        return Outcome(True)
    message = answer.get("errmsg", answer.get("msg", ""))
    return Outcome(False, retry=code in RATE_LIMITED_CODES[kind], reason=f"error {code}: {message}")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - datetime.now(UTC).timestamp())
    except (TypeError, ValueError):
        return None
