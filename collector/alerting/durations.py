"""Durations in configs: `90s`, `5m`, `1h30m`, `500ms`, or a plain number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a Prometheus-style duration string; other input is left for
    pydantic to refuse with its own message."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        raise ValueError("empty duration")
    try:
        return float(text)
    except ValueError:
        pass
    position = 0
    seconds = 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match[1]) * _SECONDS[match[2]]
        position = match.end()
    if position != len(text):
        raise ValueError(f"{value!r} is not a duration (e.g. 30s, 5m, 1h30m, 500ms)")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""Seconds, written as a number or as `30s`, `5m`, `1h30m`, `500ms`, `1d`."""


def format_duration(seconds: float) -> str:
    """The inverse for messages: 90.0 -> `1m30s`."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out = ""
    remaining = seconds
    for unit in ("d", "h", "m"):
        whole = int(remaining // _SECONDS[unit])
        if whole:
            out += f"{whole}{unit}"
            remaining -= whole * _SECONDS[unit]
    if remaining or not out:
        out += f"{remaining:g}s"
    return out
