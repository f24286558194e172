"""Every alert has a defined end: threshold alerts whose series stops reporting end as stale,
with the reason; absence and event alerts keep their own ends. Through the real evaluator and
the default rule set, on a clock the test turns by hand."""

from __future__ import annotations

import json

import pytest

from collector.alerting.alert import Notice
from collector.alerting.evaluator import Evaluator, Transition
from collector.alerting.history import history_line
from collector.alerting.receivers import Notification, build
from collector.alerting.rules import RuleFile
from collector.alerting.settings import AlertingSettings
from collector.alerting.staleness import STALE_CEILING_S, STALE_FLOOR_S, stale_bound
from telemetry import config
from telemetry.config import ConfigError
from telemetry.lineproto import parse_line
from tests.test_alerting_evaluator import (
    DEFAULT_RULES,
    INLET,
    T0,
    TAGS,
    Clock,
    Harness,
    inlet,
    line,
    rules,
)


class Default:
    """The shipped rule set (configs/alert-rules.yaml) on a hand-turned clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.seen: list[Transition] = []
        rules = config.load(DEFAULT_RULES, RuleFile)
        self.evaluator = Evaluator(rules, self.seen.append, clock=self.clock)

    def feed(self, *lines: bytes) -> None:
        self.evaluator.observe(list(lines))

    def tick(self, seconds: float) -> None:
        self.clock.now = T0 + seconds
        self.evaluator.tick()

    def named(self, alertname: str) -> list[Transition]:
        return [t for t in self.seen if t.alert.labels["alertname"] == alertname]


PDU = {"site": "s1", "room": "h1", "row": "A", "rack": "A01", "device": "pdu-a01-a"}


def phase(rated_a: str, current_a: float, at: float) -> bytes:
    tags = {**PDU, "phase": "1", "rated_a": rated_a}
    return line("pdu_phase", tags, {"current_a": current_a}, T0 + at)


def device_health(device: str, at: float, **fields: object) -> bytes:
    tags = {"site": "s1", "agent": "ag1", "rack": "A01", "device": device}
    values = {"up": True, "polls_ok_total": 1, "polls_failed_total": 0, **fields}
    return line("rackwatch_agent", tags, values, T0 + at)  # type: ignore[arg-type]


def agent_health(at: float) -> bytes:
    return line("rackwatch_agent", {"site": "s1", "agent": "ag1"}, {"devices": 2}, T0 + at)


def test_a_rating_tag_changed_from_16_to_20_a_resolves_the_old_alert_as_stale() -> None:
    d = Default()
    for at in range(0, 120, 30):  # 14 A of 16: 88 %, over 80 % for over a minute
        d.clock.now = T0 + at
        d.feed(phase("16", 14.0, at))
        d.tick(at)
    old = d.named("PduPhaseCurrentHigh")
    assert [t.state for t in old] == ["pending", "firing"]
    assert old[-1].alert.labels["rated_a"] == "16"
    # The rating is corrected: the same 14 A is 70 % of 20 A, a new series, never judged high.
    for at in range(120, 900, 30):
        d.clock.now = T0 + at
        d.feed(phase("20", 14.0, at))
        d.tick(at)
    ends = [t for t in d.named("PduPhaseCurrentHigh") if t.state == "resolved"]
    assert len(ends) == 1
    end = ends[0]
    assert end.alert.labels["rated_a"] == "16"
    # The series reported every 30 s: stale after the floor, 5 min, counted from its last sample.
    assert end.at == T0 + 90 + STALE_FLOOR_S + 30  # the first tick past 5 min of silence
    assert end.end_reason == "stale: series not seen for 5m30s (stale after 5m)"
    assert d.evaluator.alerts == {}
    assert d.evaluator.stats.alerts_stale == 1


def test_a_removed_device_resolves_while_its_agent_goes_on() -> None:
    d = Default()
    for at in range(0, 150, 30):
        d.clock.now = T0 + at
        d.feed(
            agent_health(at),
            device_health("pdu-gone", at, up=False, polls_failed_total=at // 30 + 1),
            device_health("ups-1", at, polls_ok_total=at // 30 + 1),
        )
        d.tick(at)
    assert [t.state for t in d.named("DeviceUnreachable")] == ["pending", "firing"]
    # pdu-gone is taken out of the agent's config: its health samples stop, the rest go on.
    for at in range(150, 900, 30):
        d.clock.now = T0 + at
        d.feed(agent_health(at), device_health("ups-1", at, polls_ok_total=at // 30 + 1))
        d.tick(at)
    unreachable = d.named("DeviceUnreachable")
    assert [t.state for t in unreachable] == ["pending", "firing", "resolved"]
    assert unreachable[-1].end_reason.startswith("stale: series not seen for 5m")
    assert d.named("AgentDown") == []


def test_a_health_sample_from_before_the_first_poll_never_pages() -> None:
    """Issue 20 item 1, rule side: an agent's first health sample can come before its first
    poll, `up=false` without `kind`; then the device answers and its samples carry `kind`, a
    series of their own. The lone sample proves nothing after its minute: it ends, unpaged."""
    d = Default()
    d.feed(device_health("pdu-1", 0, up=False, polls_ok_total=0))
    for at in range(5, 900, 30):
        d.clock.now = T0 + at
        tags = {"site": "s1", "agent": "ag1", "rack": "A01", "device": "pdu-1", "kind": "pdu"}
        d.feed(line("rackwatch_agent", tags, {"up": True}, T0 + at))
        d.tick(at)
    assert [(t.state, t.end_reason[:6]) for t in d.named("DeviceUnreachable")] == [
        ("pending", ""),
        ("inactive", "stale:"),
    ]


def test_an_unsupported_device_is_not_unreachable_and_says_what_to_add() -> None:
    """Issue 20 item 3: a device that answers SNMP but has no profile reports health state
    `unsupported` (up: it answers), with its sysObjectID and sysDescr."""
    d = Default()
    for at in range(0, 600, 30):
        d.clock.now = T0 + at
        d.feed(
            device_health(
                "pdu-x",
                at,
                state="unsupported",
                polls_ok_total=0,
                sys_object_id="1.3.6.1.4.1.99999.1.2",
                sys_descr="Acme PDU 3000 v1.2",
            )
        )
        d.tick(at)
    assert d.named("DeviceUnreachable") == []
    (fired,) = d.named("DeviceUnsupported")
    assert fired.state == "firing"
    assert fired.alert.labels["severity"] == "info"
    assert fired.summary == (
        "pdu-x (rack A01) answers SNMP but no profile reads it: sysObjectID "
        "1.3.6.1.4.1.99999.1.2, sysDescr 'Acme PDU 3000 v1.2'; add a profile for it"
    )
    # Given a profile, it reports state ok and the alert clears.
    d.feed(device_health("pdu-x", 600, state="ok"))
    assert [t.state for t in d.named("DeviceUnsupported")] == ["firing", "resolved"]
    assert d.named("DeviceUnsupported")[-1].end_reason == "cleared"


def test_the_bound_follows_the_series_interval_between_a_floor_and_a_ceiling() -> None:
    assert stale_bound(None) == STALE_FLOOR_S  # seen once: no interval yet
    assert stale_bound(10.0) == STALE_FLOOR_S
    assert stale_bound(600.0) == 2400.0  # four intervals
    assert stale_bound(7200.0) == STALE_CEILING_S
    assert stale_bound(7200.0, configured=90.0) == 90.0

    h = Harness(INLET)
    for at in (0, 600, 1200):  # every 10 min: stale after 40 min
        h.at(at)
        inlet(h, 30.0)
    assert h.states() == [("RackInletHot", "pending"), ("RackInletHot", "firing")]
    h.tick(1200 + 2399)
    assert h.states()[-1] == ("RackInletHot", "firing")
    h.tick(1200 + 2401)
    assert h.states()[-1] == ("RackInletHot", "resolved")
    assert h.seen[-1].end_reason == "stale: series not seen for 40m1s (stale after 40m)"


def test_a_configured_stale_after_applies_to_every_series() -> None:
    h = Harness(INLET, stale_after=45.0)
    for at in (0, 30, 60):
        h.at(at)
        inlet(h, 30.0)
    h.tick(105)
    assert h.states()[-1] == ("RackInletHot", "firing")
    h.tick(106)
    assert h.states()[-1] == ("RackInletHot", "resolved")


def test_a_pending_alert_whose_series_stops_ends_inactive_and_never_fires() -> None:
    h = Harness(INLET.replace("for: 60s", "for: 10m"))
    for at in (0, 30):
        h.at(at)
        inlet(h, 30.0)
    for at in range(31, 1000, 10):
        h.tick(at)
    assert h.states() == [("RackInletHot", "pending"), ("RackInletHot", "inactive")]
    assert h.seen[-1].end_reason.startswith("stale: ")


def test_a_series_that_keeps_reporting_without_the_field_goes_stale() -> None:
    """The device still reports, but no longer the field the rule compares: no sample can
    clear the alert any more, so it ends as stale too."""
    h = Harness(INLET)
    for at in (0, 30, 60, 90):
        h.at(at)
        inlet(h, 30.0)
    for at in range(120, 500, 30):
        h.at(at)
        h.feed(line("cooling", TAGS, {"supply_air_c": 18.0}, T0 + at))
        h.tick(at)
    assert h.states()[-1] == ("RackInletHot", "resolved")
    assert h.seen[-1].end_reason.startswith("stale: ")


ABSENT_AND_EVENT = """
rules:
  - alert: AgentDown
    measurement: rackwatch_agent
    absent: {by: [site, agent], interval: 30s, intervals: 3}
  - alert: Xid
    measurement: accelerator_event
    label_fields: [xid]
    event: {resolve_after: 2h}
"""


def test_absence_and_event_alerts_never_go_stale() -> None:
    h = Harness(ABSENT_AND_EVENT)
    h.feed(
        line("rackwatch_agent", {"site": "s1", "agent": "a1"}, {"devices": 1}, T0),
        line("accelerator_event", {"host": "h1", "index": "0"}, {"xid": 79}, T0),
    )
    for at in range(0, 2 * 3600, 60):  # two silent hours
        h.tick(at)
    assert h.states() == [("Xid", "firing"), ("AgentDown", "firing")]
    h.tick(2 * 3600)
    assert h.states()[-1] == ("Xid", "resolved")
    assert h.seen[-1].end_reason == "quiet: no new event for 2h"
    assert [a.labels["alertname"] for a in h.evaluator.alerts.values()] == ["AgentDown"]
    h.at(2 * 3600 + 1)
    h.feed(line("rackwatch_agent", {"site": "s1", "agent": "a1"}, {"devices": 1}, h.clock.now))
    assert h.states()[-1] == ("AgentDown", "resolved")
    assert h.seen[-1].end_reason == "reporting again"


def test_a_restart_gives_a_fresh_grace_period_and_a_reload_does_not() -> None:
    h = Harness(INLET)
    for at in (0, 30, 60, 90):
        h.at(at)
        inlet(h, 30.0)
    saved = h.evaluator.snapshot()

    restarted = Harness(INLET)
    restarted.at(3600)  # an hour away: the collector was, not necessarily the device
    restarted.evaluator.restore(saved)
    restarted.tick(3600 + STALE_FLOOR_S)
    assert restarted.seen == []
    restarted.tick(3600 + STALE_FLOOR_S + 1)
    assert restarted.states() == [("RackInletHot", "resolved")]

    reloaded = Harness(INLET)
    reloaded.at(200)
    reloaded.evaluator.restore(saved, restart=False)  # SIGHUP: the clock never stopped
    reloaded.tick(90 + STALE_FLOOR_S + 1)
    assert reloaded.states() == [("RackInletHot", "resolved")]


def test_the_end_reason_reaches_the_history_and_the_webhook_body() -> None:
    h = Harness(INLET, stale_after=60.0)
    for at in (0, 30, 60, 90):
        h.at(at)
        inlet(h, 30.0)
    h.tick(151)
    resolved = h.seen[-1]
    assert resolved.state == "resolved"

    point = history_line(resolved)
    assert point is not None
    fields = parse_line(point).fields
    assert fields["state"] == "resolved"
    assert fields["end_reason"] == "stale: series not seen for 1m1s (stale after 1m)"
    firing = history_line(h.seen[1])
    assert firing is not None
    assert "end_reason" not in parse_line(firing).fields

    alert = resolved.alert
    notice = Notice(
        alert.fingerprint,
        alert.labels,
        "resolved",
        alert.active_since,
        resolved.at,
        resolved.summary,
        alert.value,
        resolved.end_reason,
    )
    settings = AlertingSettings.model_validate(
        {
            "rules_file": "rules.yaml",
            "receivers": [{"name": "r", "kind": "webhook", "url": "http://127.0.0.1:9/h"}],
            "route": {"receiver": "r"},
        }
    )
    notification = Notification("g", "r", {}, (), (notice,))
    body = json.loads(build(settings.receivers[0], notification, T0 + 200).body)
    (sent,) = body["alerts"]
    assert sent["status"] == "resolved"
    assert sent["end_reason"] == resolved.end_reason
    assert Notice.from_json(notice.to_json()) == notice  # kept across restarts


def test_stale_after_must_be_positive() -> None:
    base = {
        "rules_file": "rules.yaml",
        "receivers": [{"name": "r", "kind": "webhook", "url": "http://127.0.0.1:9/h"}],
        "route": {"receiver": "r"},
    }
    assert AlertingSettings.model_validate({**base, "stale_after": "10m"}).stale_after == 600.0
    problems = AlertingSettings.model_validate({**base, "stale_after": 0}).problems()
    assert problems == [(("stale_after",), "stale_after must be over 0 (unset: derived)")]


def test_a_series_that_reports_in_bursts_keeps_the_interval_between_bursts() -> None:
    """A gateway sends five records a second apart every 10 minutes: its interval is read from
    the gaps between bursts, so an alert lives from burst to burst."""
    h = Harness(INLET.replace("for: 60s", "for: 0s"))
    for burst in range(6):
        for record in range(5):
            at = burst * 600 + record
            h.at(at)
            inlet(h, 20.0 if burst < 2 else 30.0)
            h.tick(at)
        for at in range(burst * 600 + 30, burst * 600 + 600, 30):
            h.tick(at)
    assert h.states() == [("RackInletHot", "firing")]
    last = 5 * 600 + 4
    h.tick(last + 1000)
    assert h.states() == [("RackInletHot", "firing")]
    h.tick(last + 2400)  # 4 intervals of 596 s, less the decay over the burst's records
    assert h.states()[-1] == ("RackInletHot", "resolved")


def test_the_end_reason_reaches_alertmanager_and_the_chat_robots() -> None:
    notice = Notice(
        "f1",
        {"alertname": "A", "severity": "warning"},
        "resolved",
        T0,
        T0 + 400,
        "pdu-1 phase 1: 14 A",
        0.9,
        "stale: series not seen for 5m1s (stale after 5m)",
    )
    settings = AlertingSettings.model_validate(
        {
            "rules_file": "rules.yaml",
            "receivers": [
                {"name": "am", "kind": "alertmanager", "url": "http://127.0.0.1:9/am"},
                {"name": "wecom", "kind": "wecom", "key": "k"},
            ],
            "route": {"receiver": "am"},
        }
    )
    alertmanager, wecom = settings.receivers
    notification = Notification("g", "am", {}, (), (notice,))
    (sent,) = json.loads(build(alertmanager, notification, T0 + 401).body)["alerts"]
    assert sent["annotations"] == {"summary": notice.summary, "end_reason": notice.end_reason}
    text = json.loads(build(wecom, notification, T0 + 401).body)["markdown"]["content"]
    assert "; stale: series not seen for 5m1s (stale after 5m))" in text


def test_summary_fields_are_for_threshold_rules() -> None:
    with pytest.raises(ConfigError, match=r"rules\[0\].summary_fields: summary_fields is for"):
        rules(
            "rules:\n  - alert: X\n    measurement: m\n    event: {}\n"
            "    summary_fields: [sys_descr]\n"
        )


def test_an_absence_key_silent_past_forget_after_is_resolved_and_forgotten() -> None:
    """An agent taken out of service: AgentDown pages, and ends after `forget_after` with the
    reason, instead of firing for ever (and across restarts)."""
    h = Harness(ABSENT_AND_EVENT.replace("intervals: 3}", "intervals: 3, forget_after: 1h}"))
    h.feed(line("rackwatch_agent", {"site": "s1", "agent": "a1"}, {"devices": 1}, T0))
    h.tick(91)
    assert h.states() == [("AgentDown", "firing")]
    h.tick(3600)
    assert h.states() == [("AgentDown", "firing")]
    h.tick(3601)
    assert h.states() == [("AgentDown", "firing"), ("AgentDown", "resolved")]
    assert h.seen[-1].end_reason == "forgotten: silent for 1h1s (forget_after 1h)"
    assert h.evaluator.snapshot()["seen"] == []
    h.tick(7200)
    assert len(h.seen) == 2  # forgotten: never fires again
    h.at(7201)  # back in service: watched again from its first report
    h.feed(line("rackwatch_agent", {"site": "s1", "agent": "a1"}, {"devices": 1}, h.clock.now))
    h.tick(7201 + 91)
    assert h.states()[-1] == ("AgentDown", "firing")


def test_forget_after_must_come_after_the_alert_fires() -> None:
    with pytest.raises(ConfigError, match=r"rules\[0\].absent.forget_after: forget_after \(60 s\)"):
        rules(
            "rules:\n  - alert: X\n    measurement: m\n"
            "    absent: {by: [agent], interval: 30s, intervals: 3, forget_after: 1m}\n"
        )


def test_a_reload_keeps_the_absence_clock_running() -> None:
    """An agent that fell silent 80 s before a reload is down 10 s after it, not 90 s."""
    h = Harness(ABSENT_AND_EVENT)
    h.feed(line("rackwatch_agent", {"site": "s1", "agent": "a1"}, {"devices": 1}, T0))
    h.tick(80)
    reloaded = Harness(ABSENT_AND_EVENT)
    reloaded.at(80)
    reloaded.evaluator.restore(h.evaluator.snapshot(), restart=False)
    reloaded.tick(91)
    assert reloaded.states() == [("AgentDown", "firing")]


def stated_phase(current_a: float, rated_current_a: float, at: float, **tags: str) -> bytes:
    fields = {"current_a": current_a, "rated_current_a": rated_current_a}
    return line("pdu_phase", {**PDU, "phase": "1", **tags}, fields, T0 + at)


def test_a_pdu_is_judged_by_the_rating_it_states_and_a_tag_overrides_it() -> None:
    d = Default()
    for at in range(0, 120, 30):  # 14 A of a stated 16 A: 88 %, no rating tag
        d.clock.now = T0 + at
        d.feed(stated_phase(14.0, 16.0, at))
        d.tick(at)
    fired = d.named("PduPhaseCurrentHigh")
    assert [t.state for t in fired] == ["pending", "firing"]
    assert fired[-1].alert.rating == 16.0
    # The same PDU with a hand-set 32 A tag: 44 %, the tag wins, nothing pages.
    other = Default()
    for at in range(0, 120, 30):
        other.clock.now = T0 + at
        other.feed(stated_phase(14.0, 16.0, at, rated_a="32"))
        other.tick(at)
    assert other.named("PduPhaseCurrentHigh") == []
    # A device that states 0 (no rating) and has no tag is not judged.
    none = Default()
    for at in range(0, 120, 30):
        none.clock.now = T0 + at
        none.feed(stated_phase(14.0, 0.0, at))
        none.tick(at)
    assert none.named("PduPhaseCurrentHigh") == []
