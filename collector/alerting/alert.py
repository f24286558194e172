"""One alert's identity and state, as the evaluator keeps it and the notifier sees it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from telemetry.sample import FieldValue

State = Literal["pending", "firing"]
Status = Literal["firing", "resolved"]


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit identity of a label set (the alert name and severity included)."""
    text = json.dumps(sorted(labels.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Vars(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def render(template: str, labels: Mapping[str, str], values: Mapping[str, Any]) -> str:
    """A rule's summary with the labels and values filled in; never raises."""
    name = labels.get("alertname", "alert")
    if not template:
        return f"{name}: {_brief(values.get('value'))}"
    try:
        return template.format_map(_Vars({**labels, **values}))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        # A format spec that does not fit the value (`{value:.1f}` on a string).
        return f"{name}: {_brief(values.get('value'))} ({template})"


def _brief(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass(slots=True)
class Alert:
    """An alert that is pending or firing; resolved alerts are dropped from the evaluator."""

    fingerprint: str
    rule_key: str  # which rule made it: alert|severity|measurement
    labels: dict[str, str]  # alertname and severity included
    state: State
    active_since: float  # wall-clock seconds: the condition has held since
    fired_at: float | None = None
    value: FieldValue | None = None  # what the rule compared (a ratio, a rate, the reading)
    reading: FieldValue | None = None  # the field as the device reported it
    rating: float | None = None  # relative_to_tag's number
    last_point_ns: int = 0  # newest sample seen for it; older ones are ignored
    last_seen: float = 0.0  # wall clock of the last sample for which the condition held
    clear_since: float | None = None  # keep_firing_for: the condition cleared at
    extra: dict[str, str] = field(default_factory=dict)  # absent: what fell silent, since
    # Threshold alerts end when their series goes stale (docs/alerting.md, "Stale series"):
    last_sample: float = 0.0  # wall clock of the series' last sample that carried the field
    interval: float | None = None  # the series' observed sampling interval, seconds

    def values(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "reading": self.reading,
            "rating": self.rating,
            **self.extra,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "rule": self.rule_key,
            "labels": self.labels,
            "state": self.state,
            "active_since": self.active_since,
            "fired_at": self.fired_at,
            "value": self.value,
            "reading": self.reading,
            "rating": self.rating,
            "last_point_ns": self.last_point_ns,
            "last_seen": self.last_seen,
            "clear_since": self.clear_since,
            "extra": self.extra,
            "last_sample": self.last_sample,
            "interval": self.interval,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        state = data["state"]
        if state not in ("pending", "firing"):
            raise ValueError(f"unknown alert state {state!r}")
        return cls(
            fingerprint=str(data["fingerprint"]),
            rule_key=str(data["rule"]),
            labels={str(k): str(v) for k, v in data["labels"].items()},
            state=state,
            active_since=float(data["active_since"]),
            fired_at=None if data.get("fired_at") is None else float(data["fired_at"]),
            value=data.get("value"),
            reading=data.get("reading"),
            rating=data.get("rating"),
            last_point_ns=int(data.get("last_point_ns", 0)),
            last_seen=float(data.get("last_seen", 0.0)),
            clear_since=None if data.get("clear_since") is None else float(data["clear_since"]),
            extra={str(k): str(v) for k, v in data.get("extra", {}).items()},
            # A state file from before staleness: the last sample is unknown, so "now" (the
            # restore gives every threshold alert a fresh grace period anyway).
            last_sample=float(data.get("last_sample", 0.0)),
            interval=None if data.get("interval") is None else float(data["interval"]),
        )


@dataclass(frozen=True, slots=True)
class Notice:
    """What the notifier is told about one alert: its labels and whether it fires."""

    fingerprint: str
    labels: Mapping[str, str]
    status: Status
    starts_at: float
    ends_at: float | None
    summary: str
    value: FieldValue | None
    end_reason: str = ""  # why a resolved alert ended ("stale: ...", "cleared", ...)

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "warning")

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "labels": dict(self.labels),
            "status": self.status,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "summary": self.summary,
            "value": self.value,
            "end_reason": self.end_reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Notice:
        status = data["status"]
        if status not in ("firing", "resolved"):
            raise ValueError(f"unknown notice status {status!r}")
        return cls(
            fingerprint=str(data["fingerprint"]),
            labels={str(k): str(v) for k, v in data["labels"].items()},
            status=status,
            starts_at=float(data["starts_at"]),
            ends_at=None if data.get("ends_at") is None else float(data["ends_at"]),
            summary=str(data.get("summary", "")),
            value=data.get("value"),
            end_reason=str(data.get("end_reason", "")),
        )
