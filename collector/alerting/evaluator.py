"""Evaluates alert rules on the validated line stream, as it passes through the collector.

`observe` runs on the ingest path for every message, so it does as little as it can: one
`bytes.startswith` against the measurements the rules name drops every other line, and the
lines that remain are read by `points` (tags once per series, only the compared fields). The
state machine runs on the collector's wall clock; sample timestamps only order samples and
time rates. `tick` (every second) promotes pending alerts whose `for` has passed, resolves
events and `keep_firing_for` holds, ends threshold alerts whose series went stale
(staleness.py), and finds what fell silent.

Per series only what the rules need from one sample to the next is kept, about 600 bytes
with the cached head (bench/bench_alerting_memory.py): its plan (the rules that select it and
the fields they read, one object shared by all such series), each rule's alert fingerprint,
ratings and absence keys (shared), the newest sample's time and the interval. Tags are read
again from the head when an alert opens; a series that no rule selects is one shared empty
series.

Samples older than `max_age_s` (a spool replayed after an outage) are not evaluated: the
present state arrives with the live samples beside them, and paging for an hour-old
condition that has since cleared helps no one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from collector.alerting.alert import Alert, fingerprint, render
from collector.alerting.durations import format_duration
from collector.alerting.matchers import matches_all
from collector.alerting.points import (
    decode_value,
    find_fields,
    head_end,
    read_any_head,
    read_fields,
    split_fields,
)
from collector.alerting.rules import Dependency, Rule, RuleFile
from collector.alerting.staleness import next_interval, stale_bound, stale_reason
from telemetry.lineproto import LineProtocolError
from telemetry.sample import FieldValue

log = logging.getLogger(__name__)

HEALTH_MEASUREMENT = "rackwatch_agent"
# Cached series heads (~600 bytes each: bench/bench_alerting_memory.py); past this the cache
# starts over. A hall of 40,000 PDUs and 70,000 cards is 300,000-600,000 series.
MAX_SERIES = 1_000_000
_NUMBERS = frozenset([int, float])  # not bool: a flag is no number here
_DIGITS = frozenset(b"%d" % d for d in range(10))  # a value ending in one is a float
_BACKSLASH, _QUOTE, _COMMA = b"\\"[0], b'"'[0], b","[0]


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert changed state: inactive -> pending -> firing -> resolved (or pending ->
    inactive when the condition cleared before `for` had passed)."""

    alert: Alert  # a copy, as of the change
    previous: str
    state: str
    at: float
    summary: str
    end_reason: str = ""  # why it ended (resolved or inactive): "cleared", "stale: ...", ...


def rule_key(rule: Rule) -> str:
    return f"{rule.alert}|{rule.severity}|{rule.measurement}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Compiled:
    """A rule, with what the hot path needs precomputed."""

    __slots__ = (
        "change",
        "equals",
        "field",
        "index",
        "key",
        "kind",
        "limit",
        "op",
        "relative",
        "relative_field",
        "rule",
        "series_matchable",
        "summary_fields",
        "wanted",
    )

    def __init__(self, index: int, rule: Rule) -> None:
        self.index = index
        self.rule = rule
        self.key = rule_key(rule)
        self.kind = rule.kind
        self.field = rule.field or ""
        self.relative = rule.relative_to_tag
        self.relative_field = rule.relative_to_field
        self.change = rule.change
        equals = rule.equals
        self.equals: tuple[FieldValue, ...] = (
            () if equals is None else tuple(equals) if isinstance(equals, list) else (equals,)
        )
        self.op = "in" if equals is not None else "gt" if rule.above is not None else "lt"
        limit = rule.above if rule.above is not None else rule.below
        self.limit = 0.0 if limit is None else limit
        names = [rule.field] if rule.field else []
        if rule.relative_to_field:
            names.append(rule.relative_to_field)
        self.summary_fields = tuple(rule.summary_fields)
        self.wanted = tuple(dict.fromkeys([*names, *rule.label_fields, *rule.summary_fields]))
        # Matchers over tags alone can be decided once per series.
        self.series_matchable = not rule.label_fields

    def fires(self, value: FieldValue) -> bool:
        op = self.op
        if op == "in":
            return value in self.equals
        if value.__class__ is bool or not isinstance(value, int | float):
            return False
        return value > self.limit if op == "gt" else value < self.limit

    def clears(self, value: FieldValue) -> bool:
        if self.op == "in":
            return value not in self.equals
        number = _number(value)
        if number is None:
            return False
        rule = self.rule
        if rule.above is not None:
            return (
                number < rule.clear_below if rule.clear_below is not None else number <= rule.above
            )
        assert rule.below is not None
        return number > rule.clear_above if rule.clear_above is not None else number >= rule.below

    def labels(self, tags: Mapping[str, str]) -> dict[str, str]:
        rule = self.rule
        return {**tags, **rule.labels, "alertname": rule.alert, "severity": rule.severity}


class _Plan:
    """The rules that apply to a series and the fields they read: one object shared by every
    series of the same measurement that the same matchers select."""

    __slots__ = ("absent", "compiled", "keys", "point_labels", "relative", "wanted")

    def __init__(self, compiled: tuple[_Compiled, ...]) -> None:
        self.compiled = compiled
        names = dict.fromkeys(name for c in compiled for name in c.wanted)
        self.wanted = frozenset(names)
        self.keys = tuple((name, name.encode() + b"=") for name in names)
        self.relative = any(c.relative for c in compiled)
        self.absent = any(c.rule.absent for c in compiled)
        # Rules whose labels take field values need the series' tags on every point.
        self.point_labels = not all(c.series_matchable for c in compiled)


class _Series:
    """One measurement + tag set: only what its rules need from one sample to the next. The
    tags themselves are read again from `key` (the head) when an alert opens, unless a rule
    labels every point with them."""

    __slots__ = ("absent", "interval", "key", "last_ns", "learn", "plan", "prints", "ratings")

    def __init__(
        self,
        key: bytes,
        plan: _Plan,
        prints: tuple[str, ...],
        ratings: tuple[float | None, ...] | None,
        absent: tuple[tuple[str, ...] | None, ...] | None,
        learn: tuple[tuple[str, str], str] | None,
    ) -> None:
        self.key = key
        self.plan = plan
        self.prints = prints  # per rule: the alert's fingerprint ("" if labelled per point)
        self.ratings = ratings  # per rule: relative_to_tag's number (None: no rule has one)
        self.absent = absent  # per rule: the absence key (None: no absence rule)
        self.learn = learn  # ((site, device), agent): a health sample to learn an agent from
        self.last_ns = 0  # newest sample's time
        self.interval: float | None = None  # its recent longest gap, seconds (staleness.py)


# Series that no rule reads (and that teach no agent): one shared object, no state of their own.
_NOTHING = _Series(b"", _Plan(()), (), None, None, None)


@dataclass(slots=True)
class EvaluatorStats:
    lines_seen: int = 0  # lines offered
    lines_parsed: int = 0  # lines of a measurement some rule names
    samples_stale: int = 0  # older than max_age_s: not evaluated
    alerts_stale: int = 0  # threshold alerts ended because their series stopped reporting
    errors: int = 0  # lines that could not be read (only with an unvalidated feed)


class Evaluator:
    def __init__(
        self,
        rules: RuleFile,
        emit: Callable[[Transition], None],
        *,
        max_age_s: float = 300.0,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.emit = emit
        self.max_age_s = max_age_s
        self.stale_after = stale_after  # None: derived from each series' interval
        self.clock = clock
        self.compiled = [_Compiled(i, rule) for i, rule in enumerate(rules.rules)]
        self._by_key = {c.key: c for c in self.compiled}
        self._by_measurement: dict[str, list[_Compiled]] = {}
        for compiled in self.compiled:
            self._by_measurement.setdefault(compiled.rule.measurement, []).append(compiled)
        self.dependencies = rules.dependencies
        # `agent` of a device alert is learned from the agents' health samples.
        self._learn_agents = any("agent" in d.equal for d in rules.dependencies)
        measurements = set(self._by_measurement)
        if self._learn_agents:
            measurements.add(HEALTH_MEASUREMENT)
        self.measurements = frozenset(measurements)
        self.prefixes = tuple(
            m.encode() + end for m in sorted(measurements) for end in (b",", b" ")
        )
        self._series: dict[bytes, _Series] = {}
        self._plans: dict[tuple[_Compiled, ...], _Plan] = {}
        self._shared: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # ratings, absence keys
        self.alerts: dict[str, Alert] = {}
        self._previous: dict[str, tuple[int, float]] = {}  # change rules: last sample
        self._seen: dict[tuple[int, tuple[str, ...]], float] = {}  # absent rules: last seen
        self._absent: dict[tuple[int, tuple[str, ...]], str] = {}  # ... and their alerts
        self.agent_of: dict[tuple[str, str], str] = {}  # (site, device) -> agent
        self._sources: list[list[Alert]] | None = None  # firing dependency sources, cached
        self.stats = EvaluatorStats()
        self.changed = False  # something worth saving happened since the last snapshot

    # --- the hot path ------------------------------------------------------------------------

    def observe(self, lines: list[bytes]) -> None:
        """Evaluate the lines of measurements the rules name; never raises."""
        self.stats.lines_seen += len(lines)
        prefixes = self.prefixes
        picked = [line for line in lines if line.startswith(prefixes)]
        if not picked:
            return
        self.stats.lines_parsed += len(picked)
        now = self.clock()
        now_ns = int(now * 1e9)
        oldest_ns = now_ns - int(self.max_age_s * 1e9)
        for line in picked:
            try:
                self._line(line, now, now_ns, oldest_ns)
            except (LineProtocolError, ValueError, UnicodeDecodeError) as exc:
                self._error("line not evaluated: %s", exc)
            except Exception as exc:  # a bug here must not stop the ingest it runs in
                self._error("line not evaluated: %r", exc, trace=True)

    def _error(self, message: str, exc: BaseException, trace: bool = False) -> None:
        self.stats.errors += 1
        if self.stats.errors == 1 or self.stats.errors % 1000 == 0:
            log.warning(
                "alerting: " + message + " (%d so far)",
                exc,
                self.stats.errors,
                exc_info=exc if trace else None,
            )

    def _line(self, line: bytes, now: float, now_ns: int, oldest_ns: int) -> None:
        head, _, rest = line.partition(b" ")
        if head.endswith(b"\\"):  # an escaped space: the head goes on (rare, but every NVIDIA
            end = head_end(line)  # card's model tag has them)
            if end < 0:
                raise ValueError("no field section")
            head, rest = line[:end], line[end + 1 :]
        series = self._series.get(head)
        if series is None:
            series = self._new_series(head)
        if series is _NOTHING:
            return
        keys = series.plan.keys
        # `int in bytes` is a memchr; `bytes in bytes` costs several times more.
        if _BACKSLASH in rest:  # escapes in the fields: the full parser (rare)
            self._line_in_full(series, line, now, now_ns, oldest_ns)
            return
        if _QUOTE in rest:
            section, stamp = split_fields(rest)
            found = find_fields(section, keys, quoted=True)
            if found is None:  # a quote in a field key (legal, never seen in practice)
                self._line_in_full(series, line, now, now_ns, oldest_ns)
                return
            fields = found
        else:
            # The common case, inline: `find` each wanted field; floats decode directly.
            section, _, stamp = rest.partition(b" ")
            fields = {}
            for name, key in keys:
                start = section.find(key)
                while start > 0 and section[start - 1] != _COMMA:  # a longer name ending in it
                    start = section.find(key, start + 1)
                if start < 0:
                    continue
                start += len(key)
                end = section.find(_COMMA, start)
                raw = section[start:] if end < 0 else section[start:end]
                fields[name] = float(raw) if raw[-1:] in _DIGITS else decode_value(raw)
        self._evaluate(series, fields, int(stamp) if stamp else now_ns, now, oldest_ns)

    def _line_in_full(
        self, series: _Series, line: bytes, now: float, now_ns: int, oldest_ns: int
    ) -> None:
        fields, time_ns = read_fields(line, now_ns)
        wanted = series.plan.wanted
        self._evaluate(
            series, {k: v for k, v in fields.items() if k in wanted}, time_ns, now, oldest_ns
        )

    def _evaluate(
        self,
        series: _Series,
        fields: dict[str, FieldValue],
        time_ns: int,
        now: float,
        oldest_ns: int,
    ) -> None:
        if time_ns < oldest_ns:
            self.stats.samples_stale += 1
            return
        if series.learn is not None:
            self._learn_agent(*series.learn)
        if time_ns > series.last_ns:
            if series.last_ns:
                series.interval = next_interval(series.interval, (time_ns - series.last_ns) / 1e9)
            series.last_ns = time_ns
        alerts = self.alerts
        ratings = series.ratings
        for i, compiled in enumerate(series.plan.compiled):
            kind = compiled.kind
            if kind == "threshold":
                labels: dict[str, str] | None = None
                if compiled.series_matchable:
                    print_ = series.prints[i]
                else:
                    labels = self._point_labels(compiled, series, fields)
                    if labels is None:
                        continue
                    print_ = fingerprint(labels)
                reading = fields.get(compiled.field)
                if reading is None:
                    continue
                value: FieldValue = reading
                rating = None if ratings is None else ratings[i]
                if rating is None and compiled.relative_field is not None:
                    rating = _stated_rating(fields.get(compiled.relative_field))
                if compiled.relative is not None or compiled.relative_field is not None:
                    if rating is None or reading.__class__ not in _NUMBERS:
                        continue
                    value = reading / rating  # type: ignore[operator]
                if compiled.change is not None:
                    changed = self._changed(compiled, print_, value, time_ns)
                    if changed is None:
                        continue
                    value = changed
                alert = alerts.get(print_)
                if alert is not None:
                    if time_ns >= alert.last_point_ns:  # the series still reports: not stale
                        alert.last_sample = now
                        alert.interval = series.interval or alert.interval
                        if compiled.summary_fields:
                            _note_fields(alert, compiled.summary_fields, fields)
                    self._advance(alert, compiled, value, reading, rating, time_ns, now)
                elif compiled.fires(value):
                    if labels is None:
                        labels = compiled.labels(read_any_head(series.key)[1])
                    alert = Alert(
                        print_, compiled.key, labels, "pending", now, interval=series.interval
                    )
                    if compiled.summary_fields:
                        _note_fields(alert, compiled.summary_fields, fields)
                    self._open(alert, compiled.rule, value, reading, rating, time_ns, now)
            elif kind == "event":
                point_labels = self._point_labels(compiled, series, fields)
                if point_labels is not None:
                    print_ = fingerprint(point_labels)
                    self._event(compiled, print_, point_labels, fields, time_ns, now)
            elif series.absent is not None:
                key = series.absent[i]
                if key is not None:
                    self._present(compiled, key, now)

    def _point_labels(
        self, compiled: _Compiled, series: _Series, fields: Mapping[str, FieldValue]
    ) -> dict[str, str] | None:
        """Labels with the rule's label_fields; None when its matchers do not match them."""
        rule = compiled.rule
        labels = compiled.labels(read_any_head(series.key)[1])
        if not rule.label_fields:
            return labels
        extra = {name: _label_text(fields[name]) for name in rule.label_fields if name in fields}
        labels.update(extra)
        return labels if matches_all(rule.matchers, labels) else None

    def _new_series(self, key: bytes) -> _Series:
        measurement, tags = read_any_head(key)
        compiled = tuple(
            c
            for c in self._by_measurement.get(measurement, ())
            if not c.series_matchable or matches_all(c.rule.matchers, tags)
        )
        learn = None
        if self._learn_agents and measurement == HEALTH_MEASUREMENT:
            device, agent = tags.get("device"), tags.get("agent")
            if device and agent:
                # One string per site and agent, however many devices: they repeat.
                learn = ((sys.intern(tags.get("site", "")), device), sys.intern(agent))
        if len(self._series) >= MAX_SERIES:
            self._series.clear()
        if not compiled and learn is None:
            self._series[key] = _NOTHING
            return _NOTHING
        plan = self._plans.get(compiled)
        if plan is None:
            plan = self._plans[compiled] = _Plan(compiled)
        prints = tuple(
            fingerprint(c.labels(tags)) if c.kind == "threshold" and c.series_matchable else ""
            for c in compiled
        )
        ratings = None
        if plan.relative:
            ratings = self._share(
                tuple(_rating(tags.get(c.relative)) if c.relative else None for c in compiled)
            )
        absent = None
        if plan.absent:
            absent = self._share(tuple(_absent_key(c, tags) for c in compiled))
        series = _Series(key, plan, prints, ratings, absent, learn)
        self._series[key] = series
        return series

    def _share(self, value: tuple[Any, ...]) -> tuple[Any, ...]:
        """One object for equal small tuples (ratings, absence keys): few values, many series."""
        return self._shared.setdefault(value, value)

    def _advance(
        self,
        alert: Alert,
        compiled: _Compiled,
        value: FieldValue,
        reading: FieldValue,
        rating: float | None,
        time_ns: int,
        now: float,
    ) -> None:
        """A new sample for an open threshold alert."""
        if time_ns < alert.last_point_ns:
            return
        self._update(alert, value, reading, rating, time_ns)
        rule = compiled.rule
        if alert.state == "pending":
            if not compiled.fires(value):
                self._drop(alert, "inactive", now, "cleared")
                return
            alert.last_seen = now
            if now - alert.active_since >= rule.for_:
                self._fire(alert, now)
        elif compiled.clears(value):
            alert.clear_since = alert.clear_since if alert.clear_since is not None else now
            if now - alert.clear_since >= rule.keep_firing_for:
                self._drop(alert, "resolved", now, "cleared")
        else:
            alert.clear_since = None
            alert.last_seen = now

    def _changed(
        self, compiled: _Compiled, print_: str, value: FieldValue, time_ns: int
    ) -> float | None:
        """The increase, delta or rate since the series' previous sample, if there is one."""
        number = _number(value)
        if number is None:
            return None
        previous = self._previous.get(print_)
        if previous is not None and time_ns <= previous[0]:
            return None  # out of order or repeated
        self._previous[print_] = (time_ns, number)
        if previous is None:
            return None
        change = number - previous[1]
        if compiled.change == "increase" and change < 0:
            return None  # a counter reset
        if compiled.change == "rate":
            return change / ((time_ns - previous[0]) / 1e9) * compiled.rule.per
        return change

    def _open(
        self,
        alert: Alert,
        rule: Rule,
        value: FieldValue,
        reading: FieldValue,
        rating: float | None,
        time_ns: int,
        now: float,
    ) -> None:
        alert.last_seen = alert.last_sample = now
        self._update(alert, value, reading, rating, time_ns)
        self.alerts[alert.fingerprint] = alert
        if rule.for_ <= 0:
            self._fire(alert, now, "inactive")
        else:
            self._move(alert, "inactive", "pending", now)

    def _event(
        self,
        compiled: _Compiled,
        print_: str,
        labels: dict[str, str],
        fields: Mapping[str, FieldValue],
        time_ns: int,
        now: float,
    ) -> None:
        alert = self.alerts.get(print_)
        first = next(iter(fields.values()), None)
        if alert is None:
            alert = Alert(print_, compiled.key, labels, "pending", now)
            self.alerts[print_] = alert
            self._update(alert, first, first, None, time_ns)
            alert.last_seen = now
            self._fire(alert, now, "inactive")
            return
        self._update(alert, first, first, None, time_ns)
        alert.last_seen = now

    def _present(self, compiled: _Compiled, key: tuple[str, ...], now: float) -> None:
        slot = (compiled.index, key)
        if slot not in self._seen:
            self.changed = True  # a new key to remember across restarts
        self._seen[slot] = now
        print_ = self._absent.pop(slot, None) if self._absent else None
        if print_ is not None and print_ in self.alerts:
            self._drop(self.alerts[print_], "resolved", now, "reporting again")

    def _update(
        self,
        alert: Alert,
        value: FieldValue | None,
        reading: FieldValue | None,
        rating: float | None,
        time_ns: int,
    ) -> None:
        alert.value = value
        alert.reading = reading
        alert.rating = rating
        alert.last_point_ns = time_ns

    def _learn_agent(self, where: tuple[str, str], agent: str) -> None:
        if self.agent_of.get(where) != agent:
            self.agent_of[where] = agent
            self.changed = True

    # --- transitions --------------------------------------------------------------------------

    def _fire(self, alert: Alert, now: float, previous: str = "pending") -> None:
        alert.state = "firing"
        alert.fired_at = now
        alert.clear_since = None
        self._move(alert, previous, "firing", now)

    def _drop(self, alert: Alert, state: str, now: float, reason: str) -> None:
        del self.alerts[alert.fingerprint]
        self._previous.pop(alert.fingerprint, None)
        self._move(alert, alert.state, state, now, reason)

    def _move(self, alert: Alert, previous: str, state: str, now: float, reason: str = "") -> None:
        self.changed = True
        self._sources = None
        summary = self.summary(alert)
        self.emit(
            Transition(
                replace(alert, labels=dict(alert.labels)), previous, state, now, summary, reason
            )
        )

    def summary(self, alert: Alert) -> str:
        compiled = self._by_key.get(alert.rule_key)
        template = compiled.rule.summary if compiled else ""
        return render(template, alert.labels, alert.values())

    # --- the clock ----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Time-driven changes: `for` passed, holds and events run out, series go stale, keys
        fall silent."""
        now = self.clock() if now is None else now
        for alert in list(self.alerts.values()):
            compiled = self._by_key.get(alert.rule_key)
            if compiled is None:
                continue
            rule = compiled.rule
            if rule.kind == "event":
                assert rule.event is not None
                if now - alert.last_seen >= rule.event.resolve_after:
                    quiet = f"quiet: no new event for {format_duration(rule.event.resolve_after)}"
                    self._drop(alert, "resolved", now, quiet)
            elif rule.kind == "threshold":
                # Before `for` promotes it: a series that stopped proves nothing any more.
                silent = now - alert.last_sample
                bound = stale_bound(alert.interval, self.stale_after)
                if silent > bound:
                    self.stats.alerts_stale += 1
                    state = "resolved" if alert.state == "firing" else "inactive"
                    self._drop(alert, state, now, stale_reason(silent, bound))
                elif (
                    alert.state == "pending"
                    and now - alert.active_since >= rule.for_
                    # Only a series with a known cadence (two samples seen) is trusted to
                    # still hold between samples; one seen once must confirm with a second.
                    and alert.interval is not None
                ):
                    self._fire(alert, now)
                elif (
                    alert.state == "firing"
                    and alert.clear_since is not None
                    and now - alert.clear_since >= rule.keep_firing_for
                ):
                    self._drop(alert, "resolved", now, "cleared")
        forgotten = []
        for (index, key), seen in self._seen.items():
            rule = self.compiled[index].rule
            assert rule.absent is not None
            forget_after = rule.absent.forget_after
            if forget_after is not None and now - seen > forget_after:
                forgotten.append((index, key))
            elif (index, key) in self._absent:
                continue
            elif now - seen > rule.absent.interval * rule.absent.intervals:
                self._fire_absent(self.compiled[index], key, seen, now)
        for slot in forgotten:
            self._forget(slot, now)

    def _forget(self, slot: tuple[int, tuple[str, ...]], now: float) -> None:
        """An absence key silent past `forget_after` (taken out of service): no longer
        watched, its alert resolved with the reason."""
        absent = self.compiled[slot[0]].rule.absent
        assert absent is not None
        assert absent.forget_after is not None
        silent = now - self._seen.pop(slot)
        self.changed = True
        print_ = self._absent.pop(slot, None)
        if print_ is not None and print_ in self.alerts:
            reason = (
                f"forgotten: silent for {format_duration(round(silent, 1))}"
                f" (forget_after {format_duration(absent.forget_after)})"
            )
            self._drop(self.alerts[print_], "resolved", now, reason)

    def _fire_absent(
        self, compiled: _Compiled, key: tuple[str, ...], seen: float, now: float
    ) -> None:
        rule = compiled.rule
        assert rule.absent is not None
        labels = compiled.labels(dict(zip(rule.absent.by, key, strict=True)))
        print_ = fingerprint(labels)
        alert = Alert(print_, compiled.key, labels, "pending", seen, last_seen=seen)
        alert.value = now - seen
        alert.extra = {"silent_s": f"{now - seen:.0f}"}
        self.alerts[print_] = alert
        self._absent[(compiled.index, key)] = print_
        self._fire(alert, now, "inactive")

    # --- dependencies -------------------------------------------------------------------------

    def label(self, labels: Mapping[str, str], name: str) -> str:
        """A label's value, with `agent` of a device alert learned from the health samples."""
        value = labels.get(name, "")
        if not value and name == "agent":
            value = self.agent_of.get((labels.get("site", ""), labels.get("device", "")), "")
        return value

    def muted_by(self, labels: Mapping[str, str]) -> str | None:
        """The dependency (name, or its firing source's alert name) muting an alert, if any."""
        if not self.dependencies:
            return None
        if self._sources is None:
            firing = [a for a in self.alerts.values() if a.state == "firing"]
            self._sources = [
                [a for a in firing if matches_all(d.source, a.labels)] for d in self.dependencies
            ]
        for dependency, sources in zip(self.dependencies, self._sources, strict=True):
            if not sources or matches_all(dependency.source, labels):
                continue
            if dependency.target and not matches_all(dependency.target, labels):
                continue
            wanted = [self.label(labels, name) for name in dependency.equal]
            for source in sources:
                have = [self.label(source.labels, name) for name in dependency.equal]
                if all(have) and have == wanted:
                    return _describe(dependency, source)
        return None

    # --- restarts -----------------------------------------------------------------------------

    def firing(self) -> Iterator[Alert]:
        return (a for a in self.alerts.values() if a.state == "firing")

    def snapshot(self) -> dict[str, Any]:
        self.changed = False
        return {
            "alerts": [alert.to_json() for alert in self.alerts.values()],
            "seen": [[self.compiled[i].key, list(key), at] for (i, key), at in self._seen.items()],
            "agents": [[site, device, agent] for (site, device), agent in self.agent_of.items()],
        }

    def restore(
        self, data: Mapping[str, Any], now: float | None = None, *, restart: bool = True
    ) -> list[Alert]:
        """Take back a snapshot. After a `restart`, keys that were reporting get a fresh grace
        period from `now` (the collector was away, not they), and so do the series of threshold
        alerts before they can go stale; a reload keeps every clock. Returns alerts whose rule
        is gone; they are resolved, through `emit`, so receivers hear of it."""
        now = self.clock() if now is None else now
        gone = []
        for item in data.get("alerts", []):
            alert = Alert.from_json(item)
            compiled = self._by_key.get(alert.rule_key)
            if compiled is None:
                gone.append(alert)
                continue
            self.alerts[alert.fingerprint] = alert
            if restart or not alert.last_sample:
                alert.last_sample = now
            if compiled.rule.absent is not None:
                key = tuple(alert.labels.get(tag, "") for tag in compiled.rule.absent.by)
                self._absent[(compiled.index, key)] = alert.fingerprint
                self._seen[(compiled.index, key)] = alert.last_seen
        for rule_key_, key, *at in data.get("seen", []):
            compiled = self._by_key.get(rule_key_)
            if compiled is not None and compiled.rule.absent is not None:
                seen = now if restart or not at else float(at[0])
                self._seen.setdefault((compiled.index, tuple(key)), seen)
        for site, device, agent in data.get("agents", []):
            self.agent_of[(site, device)] = agent
        for alert in gone:
            self.alerts[alert.fingerprint] = alert
            self._drop(alert, "resolved", now, "rule removed")
        self._sources = None
        return gone


def _stated_rating(value: FieldValue | None) -> float | None:
    """A rating field the device states (rated_current_a); 0 or none means it states none."""
    if not isinstance(value, int | float) or value.__class__ not in _NUMBERS:
        return None
    return float(value) if value > 0 else None


def _absent_key(compiled: _Compiled, tags: Mapping[str, str]) -> tuple[str, ...] | None:
    """The key an absence rule watches this series under; None if a tag of it is missing."""
    absent = compiled.rule.absent
    if absent is None:
        return None
    key = tuple(tags.get(tag, "") for tag in absent.by)
    return None if "" in key else key


def _rating(tag: str | None) -> float | None:
    if not tag:
        return None
    try:
        value = float(tag)
    except ValueError:
        return None
    return value if value > 0 else None


def _note_fields(alert: Alert, names: tuple[str, ...], fields: Mapping[str, FieldValue]) -> None:
    """The latest values of a rule's summary_fields, for its summary."""
    for name in names:
        if name in fields:
            alert.extra[name] = _label_text(fields[name])


def _label_text(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _describe(dependency: Dependency, source: Alert) -> str:
    if dependency.name:
        return dependency.name
    labels = source.labels
    where = ", ".join(f"{k}={labels[k]}" for k in ("site", "agent", "device") if k in labels)
    return f"{source.labels.get('alertname', '')} ({where})"
