"""Property: whatever the order of samples, tag changes and silences, the real evaluator ends
up with no alert firing whose condition is not true in the latest data, and none missing
whose condition is; and no receiver is left believing an alert fires that does not.

Random steps against one rule set (a ratio rule on a rating tag, a health rule, an absence
rule): a phase reading, a device's health, a rating tag changed (a new series, the old one
left behind), an agent-only health sample, each after a random wait (seconds to a quarter of
an hour of silence). After every step the clock ticks and the evaluator is held against a
model of the latest data: a series counts while it is not stale (its bound from
`stale_bound`, the documented rule), and its latest sample decides. The second property adds
silences (a device's alerts muted, then not) and two receivers behind the real grouper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.alerting.alert import Notice, Status
from collector.alerting.evaluator import Transition
from collector.alerting.notifier import Grouper
from collector.alerting.settings import AlertingSettings
from collector.alerting.staleness import next_interval, stale_bound
from tests.test_alerting_evaluator import T0, Harness, line

RULES = """
rules:
  - alert: PhaseHigh
    measurement: pdu_phase
    field: current_a
    relative_to_tag: rated_a
    above: 0.8
    clear_below: 0.75
    for: 30s
  - alert: Unreachable
    measurement: rackwatch_agent
    field: up
    equals: false
    for: 20s
  - alert: AgentDown
    measurement: rackwatch_agent
    absent: {by: [site, agent], interval: 10s, intervals: 3}
"""
FOR_S = {"PhaseHigh": 30.0, "Unreachable": 20.0}
DEVICES = ("p0", "p1", "p2")
RATINGS = ("16", "20", "32")
AGENT = {"site": "s1", "agent": "ag1"}


@dataclass
class Series:
    times: list[float] = field(default_factory=list)  # distinct sample times, in order
    gaps: float | None = None  # the interval the documented rule reads from them
    fires: bool = False  # the latest sample meets the fire condition
    clears: bool = False  # ... and the clear condition

    def add(self, at: float, fires: bool, clears: bool) -> None:
        if not self.times or at > self.times[-1]:
            if self.times:
                self.gaps = next_interval(self.gaps, at - self.times[-1])
            self.times.append(at)
        self.fires, self.clears = fires, clears

    def interval(self) -> float | None:
        return self.gaps

    def fresh(self, now: float, configured: float | None) -> bool:
        return now - self.times[-1] <= stale_bound(self.interval(), configured)


@dataclass
class Model:
    ratings: dict[str, str] = field(default_factory=lambda: dict.fromkeys(DEVICES, "16"))
    series: dict[tuple[str, ...], Series] = field(default_factory=dict)  # (alert, tags...)
    agent_seen: float | None = None


wait = st.one_of(st.integers(0, 40), st.integers(0, 900))
step = st.one_of(
    st.tuples(
        st.just("phase"),
        st.sampled_from(DEVICES),
        st.sampled_from([0.0, 11.0, 12.5, 13.0, 15.0, 17.0, 25.0, 30.0]),
        wait,
    ),
    st.tuples(st.just("health"), st.sampled_from(DEVICES), st.booleans(), wait),
    st.tuples(st.just("rating"), st.sampled_from(DEVICES), st.sampled_from(RATINGS), wait),
    st.tuples(st.just("agent"), st.just(""), st.just(""), wait),
)
# A device's alerts silenced (True) or no longer (False).
silence = st.tuples(st.just("silence"), st.sampled_from(DEVICES), st.booleans(), wait)


def run(h: Harness, model: Model, step: tuple[str, str, object, int]) -> None:
    kind, device, arg, dt = step
    h.at(h.clock.now - T0 + dt)
    now = h.clock.now
    if kind == "phase":
        assert isinstance(arg, float)
        rating = model.ratings[device]
        tags = {**AGENT, "device": device, "phase": "1", "rated_a": rating}
        h.feed(line("pdu_phase", tags, {"current_a": arg}, now))
        ratio = arg / float(rating)
        model.series.setdefault(("PhaseHigh", device, rating), Series()).add(
            now, ratio > 0.8, ratio < 0.75
        )
    elif kind == "health":
        h.feed(line("rackwatch_agent", {**AGENT, "device": device}, {"up": arg}, now))  # type: ignore[dict-item]
        model.series.setdefault(("Unreachable", device), Series()).add(now, not arg, bool(arg))
        model.agent_seen = now
    elif kind == "rating":
        assert isinstance(arg, str)
        model.ratings[device] = arg  # only the next reading shows it: a new series
    else:
        h.feed(line("rackwatch_agent", AGENT, {"devices": 3}, now))
        model.agent_seen = now
    h.evaluator.tick()


def check(h: Harness, model: Model, configured: float | None) -> None:
    now = h.clock.now
    alerts = {}
    for alert in h.evaluator.alerts.values():
        name = alert.labels["alertname"]
        if name == "PhaseHigh":
            key: tuple[str, ...] = (name, alert.labels["device"], alert.labels["rated_a"])
        elif name == "Unreachable":
            key = (name, alert.labels["device"])
        else:
            key = (name,)
        alerts[key] = alert
    # AgentDown fires exactly while the agent, once seen, has been silent past its bound.
    agent_down = model.agent_seen is not None and now - model.agent_seen > 30
    assert (("AgentDown",) in alerts) == agent_down
    for key, alert in alerts.items():
        if key == ("AgentDown",):
            continue
        series = model.series[key]
        # Nothing lives on a series that stopped reporting.
        assert series.fresh(now, configured), (key, alert)
        if alert.state == "firing":
            assert not series.clears, (key, "fires though its latest sample clears it")
        else:
            assert series.fires, (key, "pending though its latest sample does not fire")
            # The clock promotes a pending alert once `for` has passed on a series seen twice.
            overdue = now - alert.active_since >= FOR_S[key[0]]
            assert not (overdue and series.interval() is not None), (key, "overdue")
    for key, series in model.series.items():
        if series.fires and series.fresh(now, configured):
            assert key in alerts, (key, "its latest sample fires, yet no alert")


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, max_size=60), configured=st.sampled_from([None, 60.0, 600.0]))
def test_no_alert_fires_against_the_latest_data(
    steps: list[tuple[str, str, object, int]], configured: float | None
) -> None:
    h = Harness(RULES, stale_after=configured)
    model = Model()
    for step in steps:
        run(h, model, step)
        check(h, model, configured)


RECEIVERS = ("noc", "pager")


def notice(transition: Transition) -> Notice | None:
    """What the collector's alerting hands the notifier for a transition (service.py)."""
    alert = transition.alert
    status: Status
    if transition.state == "firing":
        status, ends_at = "firing", None
    elif transition.state == "resolved" and transition.previous == "firing":
        status, ends_at = "resolved", transition.at
    else:
        return None
    return Notice(
        alert.fingerprint,
        alert.labels,
        status,
        alert.active_since,
        ends_at,
        transition.summary,
        alert.value,
        transition.end_reason,
    )


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.one_of(step, silence), max_size=60))
def test_no_receiver_is_left_believing_an_alert_fires(
    steps: list[tuple[str, str, object, int]],
) -> None:
    h = Harness(RULES)
    model = Model()
    muted: set[str] = set()
    config = AlertingSettings.model_validate(
        {
            "rules_file": "unused.yaml",
            "receivers": [
                {"name": name, "kind": "webhook", "url": "http://127.0.0.1:9/"}
                for name in RECEIVERS
            ],
            # Every change goes out at once, to both receivers.
            "route": {
                "receiver": "noc",
                "group_by": ["alertname", "device"],
                "group_wait": 0,
                "group_interval": 0,
                "repeat_interval": "4h",
                "routes": [{"receiver": "noc", "continue": True}, {"receiver": "pager"}],
            },
        }
    )
    grouper = Grouper(
        config.route,
        {r.name: r for r in config.receivers},
        lambda labels, now: "silence" if labels.get("device") in muted else None,
    )
    believed: dict[str, set[str]] = {name: set() for name in RECEIVERS}
    for step in steps:
        told = len(h.seen)
        if step[0] == "silence":
            h.at(h.clock.now - T0 + step[3])
            (muted.add if step[2] else muted.discard)(step[1])
            h.evaluator.tick()
        else:
            run(h, model, step)
        now = h.clock.now
        for transition in h.seen[told:]:
            change = notice(transition)
            if change is not None:
                grouper.add(change, now)
        for notification in grouper.due(now):
            grouper.delivered(notification, now)
            heard = believed[notification.receiver]
            heard |= {a.fingerprint for a in notification.firing}
            heard -= {a.fingerprint for a in notification.resolved}
        firing = {a.fingerprint for a in h.evaluator.alerts.values() if a.state == "firing"}
        unmuted = {
            a.fingerprint
            for a in h.evaluator.alerts.values()
            if a.state == "firing" and a.labels.get("device") not in muted
        }
        for name, heard in believed.items():
            assert heard <= firing, (name, "told of an alert that no longer fires")
            assert unmuted <= heard, (name, "not told of an unmuted firing alert")
