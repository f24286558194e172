"""snmp_exporter 0.21 configuration for the walks and GETs one agent poll makes (bench_snmp.py).

Debian's prometheus-snmp-exporter is 0.21.0, which predates the `auths:`/`modules:` split of
0.23: its snmp.yml is a map of module name to module, and each module carries its own
`version` and `auth`. Checked with `prometheus-snmp-exporter --dry-run`: an `auths:` key is
refused there ("field a not found in type config.plain"), `get:` is accepted.

Metric OIDs are numeric, so no MIBs and no generator are needed. Each walked column becomes one
metric, with one gauge index label per index sub-identifier (snmp_exporter pads a shorter index
with zeros, so rows of differing index length still get distinct label sets). Columns whose
values are numbers are gauges; text columns are DisplayString (the value as a label, as a real
config would carry an outlet name), OctetString where the bytes are not UTF-8, and OID-valued
columns DisplayString too. Each GET OID becomes one metric without index (".0" scalars are
matched by their object OID, the way the generator writes them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

MetricType = str  # "gauge", "DisplayString" or "OctetString"


@dataclass(frozen=True, slots=True)
class Walked:
    """One walked column: its base OID, the longest index seen and the kind of its values."""

    oid: str
    index_length: int
    metric_type: MetricType


def metric_type(values: Iterable[object]) -> MetricType:
    """The snmp_exporter type that renders these SNMP values (gufo-snmp's Python types)."""
    kind: MetricType = "gauge"
    for value in values:
        if isinstance(value, bytes):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return "OctetString"
            kind = "DisplayString"
        elif isinstance(value, str):  # an OBJECT IDENTIFIER value
            kind = "DisplayString"
    return kind


def walked_column(oid: str, rows: Mapping[str, object]) -> Walked:
    """Describe one walk result (index suffix -> value) for the exporter."""
    length = max((index.count(".") + 1 for index in rows), default=1)
    return Walked(oid, length, metric_type(rows.values()))


def metric_name(oid: str) -> str:
    return "rw_" + oid.replace(".", "_")


def module(
    community: str,
    walks: Iterable[Walked],
    gets: Iterable[str],
    get_types: Mapping[str, MetricType],
    *,
    max_repetitions: int,
    timeout_s: float,
    retries: int,
) -> dict[str, Any]:
    """One 0.21 module: v2c with `community`, `walk` and `get` as given, a metric for each."""
    walks = list(walks)
    gets = list(dict.fromkeys(gets))
    metrics: list[dict[str, Any]] = []
    for walk in walks:
        indexes = [
            {"labelname": f"index{i + 1}", "type": "gauge"} for i in range(walk.index_length)
        ]
        metrics.append(
            {
                "name": metric_name(walk.oid),
                "oid": walk.oid,
                "type": walk.metric_type,
                "help": f"walked column {walk.oid}",
                "indexes": indexes,
            }
        )
    for oid in gets:
        base = oid.removesuffix(".0")
        metrics.append(
            {
                "name": metric_name(base),
                "oid": base,
                "type": get_types.get(oid, "gauge"),
                "help": f"GET {oid}",
            }
        )
    found: dict[str, Any] = {
        "version": 2,
        "auth": {"community": community},
        "max_repetitions": max_repetitions,
        "retries": retries,
        "timeout": f"{timeout_s:g}s",
        "walk": [walk.oid for walk in walks],
    }
    if gets:
        found["get"] = gets
    found["metrics"] = metrics
    return found


def render(modules: Mapping[str, Mapping[str, Any]]) -> str:
    """The snmp.yml text for these modules (0.21: module names at the top level)."""
    text: str = yaml.safe_dump(dict(modules), sort_keys=False, default_flow_style=False)
    return text
