"""Grouping, deduplication and timing (on a hand-turned clock), then every receiver's payload
against a real local HTTP server, with signatures checked the way each service checks them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from collector.alerting.alert import Notice, fingerprint
from collector.alerting.notifier import Grouper, Notifier, RateLimit
from collector.alerting.receivers import Notification, deliver
from collector.alerting.settings import AlertingSettings, Receiver
from tests.recording_http import RecordingServer

T0 = 1_800_000_000.0


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with RecordingServer() as running:
        yield running


def settings(route: dict[str, Any] | None = None, **receiver: Any) -> AlertingSettings:
    return AlertingSettings.model_validate(
        {
            "rules_file": "unused.yaml",
            "receivers": [
                {"name": "noc", "kind": "webhook", "url": "http://127.0.0.1:9/", **receiver},
                {"name": "pager", "kind": "webhook", "url": "http://127.0.0.1:9/"},
            ],
            "route": route
            or {
                "receiver": "noc",
                "group_by": ["alertname", "rack"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
            },
        }
    )


def notice(
    device: str,
    status: str = "firing",
    *,
    rack: str = "A01",
    alertname: str = "Hot",
    severity: str = "warning",
) -> Notice:
    labels = {"alertname": alertname, "severity": severity, "rack": rack, "device": device}
    return Notice(
        fingerprint(labels),
        labels,
        "firing" if status == "firing" else "resolved",
        T0,
        None if status == "firing" else T0 + 100,
        f"{device} is hot",
        30.5,
    )


def grouper(config: AlertingSettings | None = None, **kwargs: Any) -> Grouper:
    config = config or settings()
    return Grouper(config.route, {r.name: r for r in config.receivers}, **kwargs)


def devices(n: Notification) -> tuple[list[str], list[str]]:
    return [a.labels["device"] for a in n.firing], [a.labels["device"] for a in n.resolved]


def test_group_wait_then_group_interval_then_repeat() -> None:
    g = grouper()
    g.add(notice("pdu-1"), T0)
    assert g.due(T0 + 29) == []
    (first,) = g.due(T0 + 30)
    assert devices(first) == (["pdu-1"], [])
    assert first.group_labels == {"alertname": "Hot", "rack": "A01"}
    assert first.group_key == "root:{alertname='Hot',rack='A01'}"
    g.delivered(first, T0 + 30)

    g.add(notice("pdu-2"), T0 + 40)  # joins the group: waits for the group interval
    assert g.due(T0 + 329) == []
    (second,) = g.due(T0 + 330)
    assert devices(second) == (["pdu-1", "pdu-2"], [])
    g.delivered(second, T0 + 330)

    assert g.due(T0 + 630) == []  # nothing new: nothing sent
    (repeat,) = g.due(T0 + 330 + 4 * 3600 + 1)
    assert devices(repeat) == (["pdu-1", "pdu-2"], [])


def test_resolved_alerts_are_sent_once_then_forgotten() -> None:
    g = grouper()
    g.add(notice("pdu-1"), T0)
    g.add(notice("pdu-2"), T0)
    (n,) = g.due(T0 + 30)
    g.delivered(n, T0 + 30)
    g.add(notice("pdu-1", "resolved"), T0 + 100)
    (n,) = g.due(T0 + 330)
    assert devices(n) == (["pdu-2"], ["pdu-1"])
    assert n.status == "firing"
    g.delivered(n, T0 + 330)
    g.add(notice("pdu-2", "resolved"), T0 + 400)
    (n,) = g.due(T0 + 630)
    assert devices(n) == ([], ["pdu-2"])
    assert n.status == "resolved"
    g.delivered(n, T0 + 630)
    assert g.groups == {}


def test_an_alert_resolved_before_anyone_heard_of_it_is_not_sent() -> None:
    g = grouper()
    g.add(notice("pdu-1"), T0)
    g.add(notice("pdu-1", "resolved"), T0 + 10)
    assert g.due(T0 + 30) == []
    assert g.groups == {}


def test_the_same_content_is_not_queued_twice_and_a_failure_is_retried() -> None:
    g = grouper()
    g.add(notice("pdu-1"), T0)
    (n,) = g.due(T0 + 30)
    assert g.due(T0 + 330) == []  # still in flight
    g.failed(n)
    (again,) = g.due(T0 + 630)
    assert devices(again) == (["pdu-1"], [])


def test_muted_alerts_are_left_out_until_unmuted() -> None:
    muted = {"pdu-1": "silence abc"}
    g = grouper(muted=lambda labels, now: muted.get(labels["device"]))
    g.add(notice("pdu-1"), T0)
    assert g.due(T0 + 30) == []
    g.add(notice("pdu-2"), T0 + 40)
    (n,) = g.due(T0 + 330)
    assert devices(n) == (["pdu-2"], [])
    g.delivered(n, T0 + 330)
    muted.clear()
    (n,) = g.due(T0 + 630)
    assert devices(n) == (["pdu-1", "pdu-2"], [])
    assert g.muted_alerts == 2


def test_a_resolution_is_sent_even_while_muted_if_the_receiver_knew() -> None:
    muted: dict[str, str] = {}
    g = grouper(muted=lambda labels, now: muted.get(labels["device"]))
    g.add(notice("pdu-1"), T0)
    (n,) = g.due(T0 + 30)
    g.delivered(n, T0 + 30)
    muted["pdu-1"] = "agent down"
    g.add(notice("pdu-1", "resolved"), T0 + 60)
    (n,) = g.due(T0 + 330)
    assert devices(n) == ([], ["pdu-1"])


def test_send_resolved_false() -> None:
    g = grouper(settings(send_resolved=False))
    g.add(notice("pdu-1"), T0)
    (n,) = g.due(T0 + 30)
    g.delivered(n, T0 + 30)
    g.add(notice("pdu-1", "resolved"), T0 + 60)
    assert g.due(T0 + 330) == []
    assert g.groups == {}


def test_routes_first_match_wins_unless_continue() -> None:
    config = settings(
        {
            "receiver": "noc",
            "group_by": ["alertname"],
            "routes": [
                {"matchers": ['severity="critical"'], "receiver": "pager", "continue": True},
                {"matchers": ['rack=~"A.*"'], "receiver": "noc", "group_wait": "0s"},
                {"matchers": ['rack=~"A0.*"'], "receiver": "pager"},
            ],
        }
    )
    g = grouper(config)
    assert [r.name for r in g.routes_for(notice("x", severity="critical").labels)] == [
        "routes[0]",
        "routes[1]",
    ]
    assert [r.name for r in g.routes_for(notice("x").labels)] == ["routes[1]"]
    assert [r.name for r in g.routes_for(notice("x", rack="B1").labels)] == ["root"]
    g.add(notice("x", severity="critical"), T0)
    sent = g.due(T0)  # routes[1] has no group wait; routes[0] inherits the root's 30 s
    assert [n.receiver for n in sent] == ["noc"]
    assert sorted(n.receiver for n in g.due(T0 + 30)) == ["pager"]


def test_group_by_every_label() -> None:
    g = grouper(settings({"receiver": "noc", "group_by": ["..."], "group_wait": 0}))
    g.add(notice("pdu-1"), T0)
    g.add(notice("pdu-2"), T0)
    assert len(g.due(T0)) == 2


def test_a_restored_grouper_does_not_send_again() -> None:
    g = grouper()
    g.add(notice("pdu-1"), T0)
    (n,) = g.due(T0 + 30)
    g.delivered(n, T0 + 30)
    saved = g.snapshot()

    later = grouper()
    later.restore(saved, T0 + 500)
    later.add(notice("pdu-1"), T0 + 500)  # the evaluator hands its firing alerts back
    assert later.due(T0 + 530) == []
    assert later.due(T0 + 830) == []
    later.add(notice("pdu-1", "resolved"), T0 + 900)
    (n,) = later.due(T0 + 1130)
    assert devices(n) == ([], ["pdu-1"])


def test_rate_limit_is_a_sliding_window() -> None:
    limit = RateLimit(2, window_s=60)
    assert limit.wait_s(0) == 0
    assert limit.wait_s(10) == 0
    assert limit.wait_s(20) == 40  # the first send leaves the window at 60
    assert limit.wait_s(60) == 0
    assert limit.wait_s(61) == 9
    assert RateLimit(None).wait_s(0) == 0


# --- receivers, against a real HTTP server -------------------------------------------------

SECRET = "SECf00dfeedc0ffee"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"


def receiver(kind: str, server: RecordingServer, **extra: Any) -> Receiver:
    base: dict[str, Any] = {"name": kind, "kind": kind}
    base |= {
        "webhook": {"url": server.url("/webhook"), "secret": SECRET},
        "alertmanager": {"url": server.url("/am"), "external_url": "http://rackwatch.example"},
        "alertmanager_api": {"url": server.url("/") + "/"},
        "pagerduty": {"url": server.url("/v2/enqueue"), "routing_key": ROUTING_KEY},
        "dingtalk": {"url": server.url("/robot/send") + "?access_token=tok", "secret": SECRET},
        "wecom": {"url": server.url("/cgi-bin/webhook/send"), "key": "wecom-key"},
        "feishu": {"url": server.url("/open-apis/bot/v2/hook/tok"), "secret": SECRET},
    }[kind]
    config = settings()
    data = config.model_dump(by_alias=True)
    data["receivers"] = [base | extra]
    data["route"]["receiver"] = kind
    return AlertingSettings.model_validate(data).receivers[0]


def group(*notices: Notice) -> Notification:
    firing = tuple(n for n in notices if n.status == "firing")
    resolved = tuple(n for n in notices if n.status == "resolved")
    return Notification(
        "root:{alertname='Hot',rack='A01'}",
        "r",
        {"alertname": "Hot", "rack": "A01"},
        firing,
        resolved,
    )


async def send(
    kind: str, server: RecordingServer, n: Notification, now: float, **extra: Any
) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        outcome = await deliver(client, receiver(kind, server, **extra), n, now)
    assert outcome.ok, outcome


async def test_generic_webhook_is_signed_over_the_exact_body(server: RecordingServer) -> None:
    await send("webhook", server, group(notice("pdu-1"), notice("pdu-2", "resolved")), T0)
    (request,) = server.to("/webhook")
    # As a receiver checks it: HMAC-SHA256 of the raw body with the shared secret.
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-rackwatch-signature"], expected)
    body = request.json()
    assert body["status"] == "firing"
    assert body["group_labels"] == {"alertname": "Hot", "rack": "A01"}
    assert [(a["status"], a["labels"]["device"]) for a in body["alerts"]] == [
        ("firing", "pdu-1"),
        ("resolved", "pdu-2"),
    ]
    assert body["alerts"][0]["summary"] == "pdu-1 is hot"
    assert body["alerts"][0]["ends_at"] is None
    assert body["alerts"][1]["ends_at"] == "2027-01-15T08:01:40.000Z"
    tampered = request.body.replace(b"pdu-1", b"pdu-9")
    forged = "sha256=" + hmac.new(SECRET.encode(), tampered, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(request.headers["x-rackwatch-signature"], forged)


async def test_alertmanager_webhook_version_4(server: RecordingServer) -> None:
    await send("alertmanager", server, group(notice("pdu-1"), notice("pdu-2")), T0)
    body = server.to("/am")[0].json()
    # Every field of Alertmanager's webhook Message (notify/webhook), and nothing else.
    assert set(body) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "r"
    assert body["externalURL"] == "http://rackwatch.example"
    assert body["commonLabels"] == {"alertname": "Hot", "severity": "warning", "rack": "A01"}
    for alert in body["alerts"]:
        assert set(alert) == {
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        }
        assert alert["endsAt"] == "0001-01-01T00:00:00Z"
        assert alert["startsAt"] == "2027-01-15T08:00:00.000Z"
        assert len(alert["fingerprint"]) == 16


async def test_alertmanager_api_posts_postable_alerts(server: RecordingServer) -> None:
    """Alertmanager's POST /api/v2/alerts takes a list of postableAlert: labels (non-empty
    values), annotations, startsAt, endsAt, generatorURL; a firing alert's endsAt is a lease
    of four resend intervals, a resolved one's the time it ended."""
    server.respond("/api/v2/alerts", 200, b"")
    blank = notice("pdu-3")
    blank = Notice(blank.fingerprint, {**blank.labels, "row": ""}, "firing", T0, None, "s", 1.0)
    await send("alertmanager_api", server, group(notice("pdu-1"), notice("pdu-2", "resolved")), T0)
    await send("alertmanager_api", server, group(blank), T0 + 60)
    first, second = (r.json() for r in server.to("/api/v2/alerts"))
    assert first == [
        {
            "labels": {"alertname": "Hot", "severity": "warning", "rack": "A01", "device": "pdu-1"},
            "annotations": {"summary": "pdu-1 is hot"},
            "startsAt": "2027-01-15T08:00:00.000Z",
            "endsAt": "2027-01-15T08:04:00.000Z",  # T0 + 4 x 60 s
        },
        {
            "labels": {"alertname": "Hot", "severity": "warning", "rack": "A01", "device": "pdu-2"},
            "annotations": {"summary": "pdu-2 is hot"},
            "startsAt": "2027-01-15T08:00:00.000Z",
            "endsAt": "2027-01-15T08:01:40.000Z",  # when it ended
        },
    ]
    assert "row" not in second[0]["labels"]
    assert second[0]["endsAt"] == "2027-01-15T08:05:00.000Z"  # the lease, renewed


def test_alertmanager_api_alerts_are_pushed_again_before_their_lease_ends() -> None:
    """Whatever the route's repeat_interval (4 h here), a group of an Alertmanager API
    receiver is sent again every resend_interval while it fires; others keep theirs."""
    config = AlertingSettings.model_validate(
        {
            "rules_file": "unused.yaml",
            "receivers": [
                {"name": "am", "kind": "alertmanager_api", "url": "http://am:9093"},
                {"name": "noc", "kind": "webhook", "url": "http://127.0.0.1:9/"},
            ],
            "route": {
                "receiver": "am",
                "group_wait": "0s",
                "routes": [{"matchers": ["rack=A02"], "receiver": "noc"}],
            },
        }
    )
    g = grouper(config)
    g.add(notice("pdu-1"), T0)
    g.add(notice("pdu-9", rack="A02"), T0)
    sent = {n.receiver: n for n in g.due(T0)}
    assert sorted(sent) == ["am", "noc"]
    for n in sent.values():
        g.delivered(n, T0)
    assert g.due(T0 + 59) == []
    (again,) = g.due(T0 + 60)
    assert (again.receiver, devices(again)) == ("am", (["pdu-1"], []))
    g.delivered(again, T0 + 60)
    (third,) = g.due(T0 + 120)
    assert third.receiver == "am"


async def test_pagerduty_trigger_then_resolve_with_one_dedup_key(server: RecordingServer) -> None:
    server.respond("/v2/enqueue", 202, b'{"status":"success","message":"Event processed"}')
    await send("pagerduty", server, group(notice("pdu-1", severity="critical")), T0)
    await send("pagerduty", server, group(notice("pdu-1", "resolved")), T0 + 100)
    trigger, resolve = (r.json() for r in server.to("/v2/enqueue"))
    assert trigger["routing_key"] == ROUTING_KEY
    assert len(trigger["routing_key"]) == 32
    assert trigger["event_action"] == "trigger"
    assert 0 < len(trigger["dedup_key"]) <= 255
    payload = trigger["payload"]
    assert payload["severity"] == "critical"
    assert payload["source"] == "pdu-1"
    assert 0 < len(payload["summary"]) <= 1024
    assert payload["summary"].startswith("[FIRING:1] Hot")
    assert payload["custom_details"]["firing"] == ["pdu-1 is hot"]
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": trigger["dedup_key"],
    }


def dingtalk_string_sign(timestamp_ms: int) -> str:
    string_to_sign = f"{timestamp_ms}\n{SECRET}".encode()
    digest = hmac.new(SECRET.encode(), string_to_sign, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


async def test_dingtalk_sign_verifies_as_dingtalk_does(server: RecordingServer) -> None:
    # A moment whose signature holds '+' and '/', which only survive if URL-encoded.
    start_ms = int(time.time() * 1000)
    now_ms = next(
        t for t in range(start_ms, start_ms + 100_000) if {"+", "/"} <= set(dingtalk_string_sign(t))
    )
    await send("dingtalk", server, group(notice("pdu-1")), now_ms / 1000)
    (request,) = server.to("/robot/send")
    # DingTalk URL-decodes `sign` and recomputes base64(HmacSHA256(secret, "ts\nsecret")).
    assert request.query["access_token"] == ["tok"]
    timestamp = request.query["timestamp"][0]
    assert abs(int(timestamp) - time.time() * 1000) < 3600 * 1000
    assert request.query["sign"] == [dingtalk_string_sign(int(timestamp))]
    body = request.json()
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"].startswith("[FIRING:1] Hot")
    assert "pdu-1 is hot" in body["markdown"]["text"]


async def test_wecom_markdown_with_the_key_in_the_url(server: RecordingServer) -> None:
    many = [notice(f"pdu-{i:03d}-{'x' * 150}") for i in range(40)]
    await send("wecom", server, group(*many), T0)
    (request,) = server.to("/cgi-bin/webhook/send")
    assert request.query == {"key": ["wecom-key"]}
    body = request.json()
    assert body["msgtype"] == "markdown"
    assert set(body["markdown"]) == {"content"}
    assert len(body["markdown"]["content"].encode()) <= 4096  # WeCom's limit
    assert "**Firing**" in body["markdown"]["content"]


async def test_feishu_sign_verifies_as_feishu_does(server: RecordingServer) -> None:
    now = time.time()
    await send("feishu", server, group(notice("pdu-1"), notice("pdu-2", "resolved")), now)
    body = server.to("/open-apis/bot/v2/hook/tok")[0].json()
    # Feishu: HmacSHA256 keyed with "timestamp\nsecret" over an empty message, base64.
    timestamp = body["timestamp"]
    assert abs(int(timestamp) - time.time()) < 3600
    key = f"{timestamp}\n{SECRET}".encode()
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    assert body["msg_type"] == "text"
    assert "pdu-1 is hot" in body["content"]["text"]
    assert "Resolved:" in body["content"]["text"]


ON_CALL = {"mobiles": ["13800138000", "+86-139-0013-9000"], "user_ids": ["zhangsan"]}


async def test_dingtalk_mentions_on_call_in_at_and_in_the_text(server: RecordingServer) -> None:
    """DingTalk: `at.atMobiles` / `at.atUserIds` notify only if the markdown text names
    them too (@13800138000)."""
    await send("dingtalk", server, group(notice("pdu-1")), T0, mention=ON_CALL)
    await send("dingtalk", server, group(notice("pdu-1", "resolved")), T0, mention=ON_CALL)
    firing, resolved = (r.json() for r in server.to("/robot/send"))
    assert firing["at"] == {
        "atMobiles": ["13800138000", "+86-139-0013-9000"],
        "atUserIds": ["zhangsan"],
        "isAtAll": False,
    }
    text = firing["markdown"]["text"]
    assert text.endswith("@13800138000 @+86-139-0013-9000 @zhangsan")
    assert "pdu-1 is hot" in text
    assert "at" not in resolved  # a resolution wakes no one


async def test_wecom_mentions_go_in_a_text_message(server: RecordingServer) -> None:
    """WeCom's mentioned_list / mentioned_mobile_list belong to the `text` message type."""
    await send("wecom", server, group(notice("pdu-1")), T0, mention={**ON_CALL, "all": True})
    await send("wecom", server, group(notice("pdu-1")), T0, mention={"user_ids": ["lisi"]})
    everyone, one = (r.json() for r in server.to("/cgi-bin/webhook/send"))
    assert everyone["msgtype"] == "text"
    assert everyone["text"]["mentioned_list"] == ["zhangsan", "@all"]
    assert everyone["text"]["mentioned_mobile_list"] == [
        "13800138000",
        "+86-139-0013-9000",
        "@all",
    ]
    assert "pdu-1 is hot" in everyone["text"]["content"]
    assert len(everyone["text"]["content"].encode()) <= 2048
    assert one["text"]["mentioned_list"] == ["lisi"]
    assert "mentioned_mobile_list" not in one["text"]


async def test_feishu_mentions_by_user_id_in_the_text(server: RecordingServer) -> None:
    mention = {"user_ids": ["ou_7d8a6e6df7621556ce0d21922b676706ccs"], "all": True}
    await send("feishu", server, group(notice("pdu-1")), T0, mention=mention)
    text = server.to("/open-apis/bot/v2/hook/tok")[0].json()["content"]["text"]
    assert text.endswith(
        '<at user_id="ou_7d8a6e6df7621556ce0d21922b676706ccs">'
        'ou_7d8a6e6df7621556ce0d21922b676706ccs</at> <at user_id="all">所有人</at>'
    )


async def test_mentions_only_for_the_listed_severities(server: RecordingServer) -> None:
    mention = {**ON_CALL, "severities": ["critical"]}
    await send("dingtalk", server, group(notice("pdu-1")), T0, mention=mention)
    await send("dingtalk", server, group(notice("pdu-2", severity="critical")), T0, mention=mention)
    warning, critical = (r.json() for r in server.to("/robot/send"))
    assert "at" not in warning
    assert critical["at"]["atMobiles"] == ON_CALL["mobiles"]


def test_mentions_that_a_service_cannot_take_are_refused_with_where() -> None:
    with pytest.raises(ValueError, match=r"receivers\.0\.feishu\.mention[\s\S]*user id"):
        receiver_config("feishu", mention={"mobiles": ["13800138000"]})
    with pytest.raises(ValueError, match="'138-call-me' is not a phone number"):
        receiver_config("dingtalk", mention={"mobiles": ["138-call-me"]})


def receiver_config(kind: str, **extra: Any) -> None:
    AlertingSettings.model_validate(
        {
            "rules_file": "unused.yaml",
            "receivers": [{"name": "r", "kind": kind, "url": "http://x/", **extra}],
            "route": {"receiver": "r"},
        }
    )


async def test_chat_robot_errors_are_failures(server: RecordingServer) -> None:
    server.respond("/robot/send", 200, b'{"errcode":310000,"errmsg":"sign not match"}')
    server.respond("/cgi-bin/webhook/send", 200, b'{"errcode":45009,"errmsg":"api freq out"}')
    async with httpx.AsyncClient(trust_env=False) as client:
        refused = await deliver(client, receiver("dingtalk", server), group(notice("a")), T0)
        limited = await deliver(client, receiver("wecom", server), group(notice("a")), T0)
    assert (refused.ok, refused.retry) == (False, False)
    assert "310000" in refused.reason
    assert (limited.ok, limited.retry) == (False, True)


# --- the notifier's own tasks ------------------------------------------------------------------


async def test_a_receiver_that_is_down_retries_then_fails_without_holding_up_others(
    server: RecordingServer,
) -> None:
    server.respond("/down", 503, b"unavailable")
    config = AlertingSettings.model_validate(
        {
            "rules_file": "unused.yaml",
            "receivers": [
                {
                    "name": "down",
                    "kind": "webhook",
                    "url": server.url("/down"),
                    "max_attempts": 3,
                    "retry_initial_s": 0.2,
                    "retry_max_s": 0.5,
                },
                {"name": "up", "kind": "webhook", "url": server.url("/up")},
            ],
            "route": {
                "receiver": "up",
                "group_wait": 0,
                "routes": [{"receiver": "down", "continue": True}, {"receiver": "up"}],
            },
        }
    )
    notifier = Notifier(config)
    task = asyncio.create_task(notifier.run())
    try:
        notifier.submit(notice("pdu-1"))
        await server.wait_for(lambda: len(server.to("/up")) == 1, "the healthy receiver")
        assert len(server.to("/down")) < 3  # it did not wait for the other's retries
        await server.wait_for(
            lambda: notifier.workers["down"].stats.failed == 1, "the failure counted"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(server.to("/down")) == 3
    assert notifier.workers["down"].stats.attempts == 3
    assert notifier.workers["up"].stats.sent == 1
    assert notifier.stats().failed == 1


async def test_a_refusal_is_not_retried_and_retry_after_is_honoured(
    server: RecordingServer,
) -> None:
    server.respond("/webhook", 400, b"bad request")
    async with httpx.AsyncClient(trust_env=False) as client:
        outcome = await deliver(client, receiver("webhook", server), group(notice("a")), T0)
    assert (outcome.ok, outcome.retry) == (False, False)
    server.respond("/webhook", 429, b"slow down", {"Retry-After": "7"})
    async with httpx.AsyncClient(trust_env=False) as client:
        outcome = await deliver(client, receiver("webhook", server), group(notice("a")), T0)
    assert (outcome.ok, outcome.retry, outcome.retry_after_s) == (False, True, 7.0)


async def test_an_unreachable_receiver_is_a_retryable_failure() -> None:
    config = receiver_at("http://127.0.0.1:9/nothing-listens-here")
    async with httpx.AsyncClient(trust_env=False) as client:
        outcome = await deliver(client, config, group(notice("a")), T0)
    assert (outcome.ok, outcome.retry) == (False, True)
    assert outcome.reason


def receiver_at(url: str) -> Receiver:
    data = settings().model_dump(by_alias=True)
    data["receivers"][0]["url"] = url
    data["receivers"][0]["secret"] = None
    return AlertingSettings.model_validate(data).receivers[0]
