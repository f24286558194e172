"""Grafana's substitutions in InfluxQL panel queries, to run them outside Grafana (the tests,
dashboards/render.py): `$timeFilter`, `$__interval` and template variables, the way Grafana's
InfluxDB data source formats them for a regex match."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence

ALL = ".*"  # the variables' allValue
# Single-valued variables left unset: the value Grafana would pick for a short range.
DEFAULTS = {"rp": "autogen"}  # the raw data: InfluxDB's default retention policy
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def regex_value(values: Sequence[str] | None) -> str:
    """A variable's text inside `/^...$/`: All, one value, or several as an alternation."""
    if values is None:
        return ALL
    escaped = [re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(
    query: str,
    variables: Mapping[str, Sequence[str] | None],
    *,
    time_range: str = "1h",
    interval: str = "10s",
) -> str:
    """`query` as Grafana sends it: time filter over the last `time_range`, `$__interval` as
    `interval`, `${__from}` / `${__to}` as epoch milliseconds, each `$name` / `${name}` as
    `regex_value` of its values (None: All, or DEFAULTS for a single-valued variable)."""
    query = query.replace("$timeFilter", f"time > now() - {time_range}")
    query = query.replace("$__interval", interval)
    to_ms = int(time.time() * 1000)
    span = re.fullmatch(r"(\d+)([smhd])", time_range)
    if span is None:
        raise ValueError(f"time range {time_range!r}: a number and s, m, h or d")
    from_ms = to_ms - int(span.group(1)) * _UNITS_S[span.group(2)] * 1000
    query = query.replace("${__from}", str(from_ms)).replace("${__to}", str(to_ms))

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"query uses ${name}, which is not a variable: {query}")
        values = variables[name]
        if values is None and name in DEFAULTS:
            return DEFAULTS[name]
        return regex_value(values)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, query)


def variables_used(query: str) -> set[str]:
    """The template variables a query names (Grafana's own macros left out)."""
    names = {a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", query)}
    return {name for name in names if not name.startswith("__") and name != "timeFilter"}
