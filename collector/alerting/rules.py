"""Alert rules: a YAML file validated like every config (`telemetry.config.load`), so an error
reads `file:line: rules[3].clear_below: problem`.

One rule watches one measurement and is one of four kinds, told apart by its keys:

- **threshold** (`field` with `above`, `below` or `equals`): fires once the condition has held
  for `for`; a separate `clear_below` / `clear_above` gives hysteresis, and `keep_firing_for`
  holds it through short dips. `relative_to_tag` divides the reading by a number the series
  carries as a tag (a rating), `change` compares the increase, delta or rate of change since
  the series' previous sample instead of the reading;
- **absent** (`absent:`): a key (e.g. site and agent) that reported before and has been silent
  for `intervals` x `interval`; with `forget_after`, a key silent that long is forgotten (an
  agent taken out of service) and its alert resolved;
- **event** (`event:`): every point is an occurrence (a trap, an XID, a Sparkplug death);
  resolved once none has come for `resolve_after`.

`matchers` select series by tag (`rack=~"A0[1-4]"`); `label_fields` copy fields into the
labels (an XID number, so each XID is its own alert); `summary_fields` only lend their latest
values to the summary (a sysObjectID to name), leaving the alert's identity alone.
`dependencies` mute alerts behind a firing one (an agent down, a PDU unreachable): see
docs/alerting.md.
"""

from __future__ import annotations

import string
from collections import Counter
from typing import Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from collector.alerting.durations import Duration
from collector.alerting.matchers import MatcherField
from telemetry.config import KeyPath, StrictModel

Severity = Literal["critical", "error", "warning", "info"]
EqualsValue = StrictBool | StrictStr | StrictInt | StrictFloat
Change = Literal["increase", "delta", "rate"]

_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class AbsentSpec(StrictModel):
    by: list[str] = Field(min_length=1)  # the tags that name what must keep reporting
    interval: Duration  # how often it reports
    intervals: int = Field(default=3, ge=1)  # silent this many intervals: absent
    forget_after: Duration | None = None  # silent this long: forgotten, its alert resolved


class EventSpec(StrictModel):
    resolve_after: Duration = 3600.0  # no new occurrence for this long: resolved


class Rule(StrictModel):
    alert: str = Field(pattern=_NAME)
    severity: Severity = "warning"
    summary: str = ""  # a str.format template over the labels, value, reading, rating
    labels: dict[str, str] = {}
    measurement: str = Field(min_length=1)
    matchers: list[MatcherField] = []
    label_fields: list[str] = []
    summary_fields: list[str] = []  # threshold: fields the summary may name, not labels

    # threshold
    field: str | None = None
    above: float | None = None
    below: float | None = None
    equals: EqualsValue | list[EqualsValue] | None = None
    clear_below: float | None = None
    clear_above: float | None = None
    relative_to_tag: str | None = None
    # The rating the device states in the same point (rated_current_a); a series that carries
    # `relative_to_tag` is judged against that tag instead (a hand-set override).
    relative_to_field: str | None = None
    change: Change | None = None
    per: Duration = Field(default=1.0, gt=0)  # the unit of `change: rate` (1s, 1m, 1h)
    for_: Duration = Field(default=0.0, alias="for")
    keep_firing_for: Duration = 0.0

    absent: AbsentSpec | None = None
    event: EventSpec | None = None

    @property
    def kind(self) -> Literal["threshold", "absent", "event"]:
        if self.absent is not None:
            return "absent"
        if self.event is not None:
            return "event"
        return "threshold"

    def problems(self) -> list[tuple[KeyPath, str]]:
        """Cross-key mistakes, as (key path within the rule, message)."""
        found: list[tuple[KeyPath, str]] = []
        kinds = [k for k in ("field", "absent", "event") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found.append(
                (
                    (),
                    "a rule needs exactly one of field (threshold), absent: or event:"
                    + (f"; found {', '.join(kinds)}" if kinds else ""),
                )
            )
            return found
        threshold_keys = (
            "above",
            "below",
            "equals",
            "clear_below",
            "clear_above",
            "relative_to_tag",
            "change",
        )
        if self.kind != "threshold":
            for key in threshold_keys:
                if getattr(self, key) is not None:
                    found.append(((key,), f"{key} is for threshold rules (with field:)"))
            for key, value in (("for", self.for_), ("keep_firing_for", self.keep_firing_for)):
                if value:
                    found.append(((key,), f"{key} is for threshold rules (with field:)"))
            if self.summary_fields:
                found.append(
                    (("summary_fields",), "summary_fields is for threshold rules (with field:)")
                )
        else:
            found += self._threshold_problems()
        absent = self.absent
        if absent is not None and absent.forget_after is not None:
            fires_after = absent.interval * absent.intervals
            if absent.forget_after <= fires_after:
                found.append(
                    (
                        ("absent", "forget_after"),
                        f"forget_after ({absent.forget_after:g} s) must be over interval x "
                        f"intervals ({fires_after:g} s), when the alert fires",
                    )
                )
        try:
            list(string.Formatter().parse(self.summary))
        except ValueError as exc:
            found.append((("summary",), f"bad template: {exc}"))
        return found

    def _threshold_problems(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        conditions = [k for k in ("above", "below", "equals") if getattr(self, k) is not None]
        if len(conditions) != 1:
            found.append(
                (
                    ("field",),
                    "a threshold rule needs exactly one of above, below, equals"
                    + (f"; found {', '.join(conditions)}" if conditions else ""),
                )
            )
            return found
        if self.clear_below is not None:
            if self.above is None:
                found.append((("clear_below",), "clear_below goes with above"))
            elif self.clear_below > self.above:
                found.append(
                    (
                        ("clear_below",),
                        f"clear_below ({self.clear_below:g}) must not be over above "
                        f"({self.above:g})",
                    )
                )
        if self.clear_above is not None:
            if self.below is None:
                found.append((("clear_above",), "clear_above goes with below"))
            elif self.clear_above < self.below:
                found.append(
                    (
                        ("clear_above",),
                        f"clear_above ({self.clear_above:g}) must not be under below "
                        f"({self.below:g})",
                    )
                )
        if self.equals is not None:
            for key in ("relative_to_tag", "relative_to_field", "change"):
                if getattr(self, key):
                    found.append(((key,), f"{key} needs a numeric condition (above or below)"))
                    break
        return found


class Dependency(StrictModel):
    """While an alert matching `source` fires, alerts matching `target` whose `equal` labels
    have the same values are not notified (an alert matching `source` never mutes itself).

    The label `agent` of an alert without one is the agent that reports its device's health
    (learned from `rackwatch_agent`), so `equal: [site, agent]` reaches every device behind an
    agent."""

    name: str = ""
    source: list[MatcherField] = Field(min_length=1)
    target: list[MatcherField] = []
    equal: list[str] = Field(min_length=1)


class RuleFile(StrictModel):
    rules: list[Rule] = Field(min_length=1)
    dependencies: list[Dependency] = []

    def problems(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        for i, rule in enumerate(self.rules):
            found += [(("rules", i, *path), message) for path, message in rule.problems()]
        # Two rules may share an alert name (a warning and a critical level), not a severity too.
        seen = Counter((rule.alert, rule.severity, rule.measurement) for rule in self.rules)
        for i, rule in enumerate(self.rules):
            if seen[(rule.alert, rule.severity, rule.measurement)] > 1:
                found.append(
                    (
                        ("rules", i, "alert"),
                        f"another rule on {rule.measurement} is also {rule.alert!r} with "
                        f"severity {rule.severity}; their alerts would be one",
                    )
                )
        return found

    def measurements(self) -> set[str]:
        return {rule.measurement for rule in self.rules}
