"""Alerts as points written to InfluxDB with the collector's own lines (docs/schema.md):
every transition as an `alert` point, for Grafana's annotations and state timelines, and every
firing alert as an `alert_active` point each `alerting.active_interval`, for the NOC's "firing
now" table (the newest snapshot is what fires; transitions alone cannot say that for an alert
that began before the dashboard's time range)."""

from __future__ import annotations

from collector.alerting.alert import Alert
from collector.alerting.evaluator import Transition
from telemetry.lineproto import LineProtocolError, encode
from telemetry.sample import FieldValue, Sample


def history_sample(transition: Transition) -> Sample:
    alert = transition.alert
    fields: dict[str, FieldValue] = {"state": transition.state, "summary": transition.summary}
    if transition.end_reason:
        fields["end_reason"] = transition.end_reason
    _add_value(fields, alert)
    return Sample("alert", alert.labels, fields, int(transition.at * 1e9))


def active_sample(
    alert: Alert, summary: str, silenced_by: str | None, now: float, state: str = "firing"
) -> Sample:
    """One alert as it stands at `now`: firing, with its age and what mutes it ("" if
    nothing), or `resolved` in the first snapshot after it ended."""
    fields: dict[str, FieldValue] = {
        "state": state,
        "summary": summary,
        "age_s": max(0.0, now - alert.active_since),
        "silenced_by": silenced_by or "",
    }
    _add_value(fields, alert)
    return Sample("alert_active", alert.labels, fields, int(now * 1e9))


def _add_value(fields: dict[str, FieldValue], alert: Alert) -> None:
    # One type per field forever: `value` is a float, and left out when not a number.
    value = alert.value
    if isinstance(value, bool):
        fields["value"] = 1.0 if value else 0.0
    elif isinstance(value, int | float):
        fields["value"] = float(value)


def history_line(transition: Transition) -> bytes | None:
    """The line to write, or None when the labels cannot be written (a control character)."""
    return line_of(history_sample(transition))


def line_of(sample: Sample) -> bytes | None:
    try:
        return encode(sample).encode()
    except LineProtocolError:
        return None
