"""Every alert transition as an `alert` point, written to InfluxDB with the collector's own
lines, for Grafana's annotations and state timelines (docs/schema.md, "alert")."""

from __future__ import annotations

from collector.alerting.evaluator import Transition
from telemetry.lineproto import LineProtocolError, encode
from telemetry.sample import FieldValue, Sample


def history_sample(transition: Transition) -> Sample:
    alert = transition.alert
    fields: dict[str, FieldValue] = {"state": transition.state, "summary": transition.summary}
    if transition.end_reason:
        fields["end_reason"] = transition.end_reason
    value = alert.value
    # One type per field forever: `value` is a float, and left out when not a number.
    if isinstance(value, bool):
        fields["value"] = 1.0 if value else 0.0
    elif isinstance(value, int | float):
        fields["value"] = float(value)
    return Sample("alert", alert.labels, fields, int(transition.at * 1e9))


def history_line(transition: Transition) -> bytes | None:
    """The line to write, or None when the labels cannot be written (a control character)."""
    try:
        return encode(history_sample(transition)).encode()
    except LineProtocolError:
        return None
