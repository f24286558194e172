"""When a series has stopped reporting: the bound after which its threshold alerts end.

A device removed, a tag renamed (a PDU's `rated_a` changed from 16 to 20 leaves the old series
behind), a feed the collector lost: the series simply stops, and nothing would ever clear its
alert. So a threshold alert whose series has not carried the rule's field for `stale_after`
ends: resolved (or, if it was still pending, inactive) with the reason "stale: ...".

Without `alerting.stale_after`, the bound is derived from the series' own interval:
STALE_INTERVALS intervals, at least STALE_FLOOR_S (rides out a broker restart or a short outage
without a resolve-and-page-again) and at most STALE_CEILING_S (a defined end even for a series
whose interval was read across an outage). A series seen only once has no interval yet and
gets the floor. The interval is the longest recent gap between two samples (sample times, not
arrival), each older gap counting INTERVAL_DECAY as much per sample since: a gateway that
sends a burst of records every 10 minutes has a 10-minute interval, not the burst's second.

Absence and event rules never go stale: silence is what an absence rule fires on, and events
end by their own `resolve_after`.
"""

from __future__ import annotations

from collector.alerting.durations import format_duration

STALE_INTERVALS = 4
STALE_FLOOR_S = 300.0
STALE_CEILING_S = 3600.0
INTERVAL_DECAY = 0.9


def next_interval(interval: float | None, gap: float) -> float:
    """The series' interval after a new gap between two of its samples."""
    return gap if interval is None else max(gap, interval * INTERVAL_DECAY)


def stale_bound(interval: float | None, configured: float | None = None) -> float:
    """Seconds without a sample after which a series is stale."""
    if configured is not None:
        return configured
    if interval is None:
        return STALE_FLOOR_S
    return min(max(STALE_INTERVALS * interval, STALE_FLOOR_S), STALE_CEILING_S)


def stale_reason(silent_s: float, bound_s: float) -> str:
    return (
        f"stale: series not seen for {format_duration(round(silent_s, 1))}"
        f" (stale after {format_duration(round(bound_s, 1))})"
    )
