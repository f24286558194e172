"""A small typed model of Grafana 10/11 dashboard JSON: only what rackwatch's dashboards use.

Panels say what they show (title, kind, InfluxQL queries, unit, thresholds); the layout, ids,
datasource references and the per-kind boilerplate are filled in here, so every panel of every
dashboard comes out the same way. (grafana-foundation-sdk has no InfluxDB query type.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]
GRID_WIDTH = 24
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x
DATASOURCE: JSON = {"type": "influxdb", "uid": "${datasource}"}

PanelKind = Literal[
    "timeseries", "stat", "gauge", "bargauge", "table", "state-timeline", "status-history"
]
Step = tuple[float | None, str]  # threshold: from this value on, this colour

GREEN_YELLOW_RED: tuple[Step, ...] = ((None, "green"), (70.0, "yellow"), (85.0, "red"))
PLAIN: tuple[Step, ...] = ((None, "green"),)


@dataclass(frozen=True)
class Query:
    """One InfluxQL query with Grafana's macros ($timeFilter, $__interval) and variables."""

    influxql: str
    alias: str = ""  # legend: $tag_<name>, $col, $m
    table: bool = False  # result format: table instead of time series

    def to_json(self, ref_id: str) -> JSON:
        target: JSON = {
            "refId": ref_id,
            "datasource": DATASOURCE,
            "rawQuery": True,
            "query": self.influxql,
            "resultFormat": "table" if self.table else "time_series",
        }
        if self.alias:
            target["alias"] = self.alias
        return target


@dataclass(frozen=True)
class Link:
    """A data link: a click on a value opens `url`, with Grafana's ${__data.fields.<tag>} (a
    table's column) or ${__field.labels.<tag>} (a series' tag) filled in."""

    title: str
    url: str

    def to_json(self) -> JSON:
        return {"title": self.title, "url": self.url, "targetBlank": False}


@dataclass(frozen=True)
class Panel:
    title: str
    kind: PanelKind
    queries: Sequence[Query]
    unit: str = ""
    width: int = 12
    height: int = 8
    description: str = ""
    thresholds: Sequence[Step] = PLAIN
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    # Value text -> colour, for state fields (on/off, normal/battery, ...).
    states: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)  # merged over the kind's defaults
    custom: Mapping[str, Any] = field(default_factory=dict)  # fieldConfig.defaults.custom
    repeat: str | None = None  # repeat the panel per value of this variable
    links: Sequence[Link] = ()  # data links to the level below
    hide: Sequence[str] = ()  # table columns not shown (Time, where a table lists places)

    def to_json(self, panel_id: int, x: int, y: int) -> JSON:
        defaults: JSON = {
            "unit": self.unit or "none",
            "color": {"mode": "thresholds" if self.kind != "timeseries" else "palette-classic"},
            "thresholds": {
                "mode": "absolute",
                "steps": [{"value": value, "color": color} for value, color in self.thresholds],
            },
        }
        for key, value in (("min", self.min), ("max", self.max), ("decimals", self.decimals)):
            if value is not None:
                defaults[key] = value
        if self.states:
            defaults["mappings"] = [
                {
                    "type": "value",
                    "options": {
                        text: {"color": color, "index": i}
                        for i, (text, color) in enumerate(self.states.items())
                    },
                }
            ]
        if self.links:
            defaults["links"] = [link.to_json() for link in self.links]
        custom = {**_CUSTOM.get(self.kind, {}), **self.custom}
        if custom:
            defaults["custom"] = custom
        panel: JSON = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
            "datasource": DATASOURCE,
            "targets": [query.to_json(chr(ord("A") + i)) for i, query in enumerate(self.queries)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": _merge(_OPTIONS[self.kind], self.options),
        }
        if self.repeat:
            panel |= {"repeat": self.repeat, "repeatDirection": "v"}
        if self.hide:
            excluded = dict.fromkeys(self.hide, True)
            panel["transformations"] = [{"id": "organize", "options": {"excludeByName": excluded}}]
        return panel


@dataclass(frozen=True)
class Row:
    """A row header across the dashboard; the panels after it sit under it."""

    title: str


@dataclass(frozen=True)
class Variable:
    """A template variable filled from InfluxDB tag values."""

    name: str
    label: str
    query: str  # SHOW TAG VALUES ...
    multi: bool = True

    def to_json(self) -> JSON:
        return {
            "name": self.name,
            "label": self.label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": self.query,
            "definition": self.query,
            "refresh": 2,  # on time range change: new racks appear without a reload
            "multi": self.multi,
            "includeAll": self.multi,
            # One regex instead of every value: queries stay short with thousands of hosts.
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}
            if self.multi
            else {},
            "options": [],
            "sort": 1,
            "hide": 0,
            "regex": "",
        }


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variables: Sequence[Variable]
    items: Sequence[Panel | Row]
    refresh: str = "30s"
    time_from: str = "now-6h"

    def to_json(self) -> JSON:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["rackwatch"],
            "timezone": "browser",
            "editable": True,
            "graphTooltip": 1,  # shared crosshair
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": self.refresh,
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "weekStart": "",
            "links": [
                {
                    "title": "rackwatch",
                    "type": "dashboards",
                    "tags": ["rackwatch"],
                    "asDropdown": True,
                    "includeVars": True,
                    "keepTime": True,
                    "icon": "external link",
                    "targetBlank": False,
                    "tooltip": "",
                    "url": "",
                }
            ],
            "annotations": {"list": [_BUILTIN_ANNOTATIONS]},
            "templating": {"list": [_DATASOURCE_VARIABLE, *(v.to_json() for v in self.variables)]},
            "panels": self._layout(),
        }

    def _layout(self) -> list[JSON]:
        """Left to right in a 24-column grid, wrapping; a row starts a new line."""
        panels: list[JSON] = []
        x = y = line_height = 0
        for item in self.items:
            panel_id = len(panels) + 1
            if isinstance(item, Row):
                y += line_height
                x, line_height = 0, 0
                panels.append(
                    {
                        "id": panel_id,
                        "type": "row",
                        "title": item.title,
                        "collapsed": False,
                        "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1},
                        "panels": [],
                    }
                )
                y += 1
                continue
            if x + item.width > GRID_WIDTH:
                y += line_height
                x, line_height = 0, 0
            panels.append(item.to_json(panel_id, x, y))
            x += item.width
            line_height = max(line_height, item.height)
        return panels


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> JSON:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_DATASOURCE_VARIABLE: JSON = {
    "name": "datasource",
    "label": "InfluxDB",
    "type": "datasource",
    "query": "influxdb",
    "current": {},
    "hide": 0,
    "refresh": 1,
    "regex": "",
    "options": [],
    "multi": False,
    "includeAll": False,
}

_BUILTIN_ANNOTATIONS: JSON = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}

_REDUCE_LAST: JSON = {"calcs": ["lastNotNull"], "fields": "", "values": False}
_LEGEND: JSON = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}

_OPTIONS: dict[str, JSON] = {
    "timeseries": {"legend": _LEGEND, "tooltip": {"mode": "multi", "sort": "desc"}},
    "stat": {
        "reduceOptions": _REDUCE_LAST,
        "colorMode": "background",
        "graphMode": "area",
        "justifyMode": "auto",
        "textMode": "auto",
        "orientation": "auto",
    },
    "gauge": {"reduceOptions": _REDUCE_LAST, "showThresholdMarkers": True},
    "bargauge": {
        "reduceOptions": _REDUCE_LAST,
        "displayMode": "gradient",
        "orientation": "horizontal",
        "showUnfilled": True,
    },
    "table": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
    "state-timeline": {
        "legend": _LEGEND,
        "mergeValues": True,
        "showValue": "auto",
        "alignValue": "left",
        "rowHeight": 0.9,
        "tooltip": {"mode": "single"},
    },
    "status-history": {
        "legend": _LEGEND,
        "showValue": "never",
        "rowHeight": 0.9,
        "colWidth": 0.9,
        "tooltip": {"mode": "single"},
    },
}

_CUSTOM: dict[str, JSON] = {
    "timeseries": {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": True,
    },
    "table": {"align": "auto", "cellOptions": {"type": "color-text"}},
    "state-timeline": {"fillOpacity": 80, "lineWidth": 0},
    "status-history": {"fillOpacity": 80, "lineWidth": 1},
}
