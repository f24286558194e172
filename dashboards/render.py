"""Pictures of the main dashboards for the README: `python -m dashboards.render`.

From demo data (default): runs the demo's pipeline for a few minutes (dashboards/demodata.py).
From the synthetic hub of 20,000 racks (`--synthetic`, dashboards/synthetic.py): an hour of
roll-ups and device series in a private InfluxDB, the devices polled from real recordings
through a private snmpsim (RACKWATCH_SHARED, as for the tests) and the H100 probe. Either way
each panel's own query (from dashboards/json, with Grafana's substitutions) goes to that
InfluxDB, and the panels are drawn where the dashboard places them, in Grafana's dark colours.
A variable without "All" takes its first value, as Grafana does. A view with no data at all
is skipped and said so.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from collector.config import InfluxSettings
from dashboards.build import OUT
from dashboards.demodata import DATABASE, filled_by_demo
from dashboards.macros import interpolate, variables_used
from dashboards.synthetic import (
    RECORDINGS,
    Layout,
    Windows,
    generate,
    opening_values,
    poll_real,
    write_latest,
)
from rackwatch import localservices
from rackwatch.localservices import Running

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "img"
VIEWS = ("hub-overview", "rows-and-racks", "pdu-detail", "accelerators")
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLOURS = {
    "green": "#73bf69",
    "yellow": "#fade2a",
    "orange": "#ff9830",
    "red": "#f2495c",
    "blue": "#5794f2",
    "gray": "#8e8e8e",
    "transparent": PANEL,
}
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#705da0"]
# The synthetic hub's PDU view opens at a site's first PDU, whose gaps are made up
# (dashboards/synthetic.py); the picture shows the second, a Sentry4 as recorded.
SYNTHETIC_PICKED = {"pdu-detail": {"device": "pdu-hub-a-2"}}
ROW_PX = 30  # Grafana's grid row height in pixels
MAX_SERIES = 12


@dataclass
class Series:
    label: str
    times: list[float]  # seconds since the epoch
    values: list[Any]


Picked = dict[str, list[str] | None]


def _query(influx: Running, query: str) -> list[dict[str, Any]]:
    """A panel query's series; a hub-sized one may take longer than localservices waits."""
    answer = httpx.get(
        f"{influx.url()}/query",
        params={"db": DATABASE, "q": query, "epoch": "ns"},
        timeout=600,
        trust_env=False,
    )
    body = answer.json()
    results = body.get("results") or [{}]
    if answer.status_code != 200 or "error" in body or "error" in results[0]:
        raise localservices.ServiceError(f"{query}: {answer.text[:300]}")
    return list(results[0].get("series", []))


def fetch(
    influx: Running, target: dict[str, Any], time_range: str, picked: Picked | None = None
) -> list[Series]:
    used = variables_used(target["query"])
    variables = {name: (picked or {}).get(name) for name in used}
    query = interpolate(target["query"], variables, time_range=time_range)
    out = []
    for one in _query(influx, query):
        columns, rows = one.get("columns"), one.get("values")
        tags = one.get("tags") or {}
        assert isinstance(columns, list)
        assert isinstance(rows, list)
        assert isinstance(tags, dict)
        # A table row is named by its tags, as Grafana's table shows them in columns.
        alias = target.get("alias") or " / ".join(map(str, tags.values())) or f"{one.get('name')}"
        alias = re.sub(r"\$tag_(\w+)", lambda m, tags=tags: str(tags.get(m.group(1), "")), alias)
        for i, column in enumerate(columns[1:], start=1):
            label = alias.replace("$col", str(column)).strip()
            if not target.get("alias") and len(columns) > 2:
                label = f"{label} {column}"
            times = [row[0] / 1e9 for row in rows]
            out.append(Series(label, times, [row[i] for row in rows]))
    return out


def threshold_colour(panel: dict[str, Any], value: float) -> str:
    colour = "green"
    for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]:
        if step["value"] is None or value >= step["value"]:
            colour = step["color"]
    return COLOURS.get(colour, colour)


def state_colours(panel: dict[str, Any]) -> dict[str, str]:
    mappings = panel["fieldConfig"]["defaults"].get("mappings", [])
    return {
        text: COLOURS.get(option["color"], option["color"])
        for mapping in mappings
        for text, option in mapping["options"].items()
    }


def numbers(series: Series) -> list[tuple[float, float]]:
    return [
        (t, float(v))
        for t, v in zip(series.times, series.values, strict=True)
        if isinstance(v, int | float)
    ]


def last_number(series: Series) -> float | None:
    points = numbers(series)
    return points[-1][1] if points else None


BYTE_PREFIXES = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def fmt(value: float, unit: str) -> str:
    """A value as Grafana shows it in `unit` (the units the dashboards use)."""
    if unit == "watt":
        if abs(value) >= 1e6:
            return f"{value / 1e6:.2f} MW"
        return f"{value / 1000:.2f} kW" if abs(value) >= 1000 else f"{value:.0f} W"
    if unit == "bytes":  # Grafana's IEC bytes
        power = 0
        while abs(value) >= 1024 and power < len(BYTE_PREFIXES) - 1:
            value /= 1024
            power += 1
        return f"{value:.0f} B" if power == 0 else f"{value:.1f} {BYTE_PREFIXES[power]}"
    if unit == "amp":
        return f"{value:.1f} A"
    if unit == "volt":
        return f"{value:.0f} V"
    if unit == "kwatth":
        return f"{value:.2f} kWh"
    if unit == "percent":
        return f"{value:.0f}%"
    if unit == "celsius":
        return f"{value:.1f} °C"
    if unit == "s":
        return f"{value / 60:.0f} min" if value >= 120 else f"{value:.2f} s"
    return f"{value:.2f}"


def draw_panel(
    fig: Figure, box: Sequence[float], panel: dict[str, Any], data: list[Series]
) -> None:
    ax = fig.add_axes((box[0], box[1], box[2], box[3]))
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.set_title(panel["title"], color=TEXT, fontsize=9, loc="left", pad=4)
    ax.tick_params(colors=TEXT, labelsize=7)
    data = data[:MAX_SERIES]
    kind, unit = panel["type"], panel["fieldConfig"]["defaults"].get("unit", "")
    if not data:
        _blank(ax)
        ax.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", fontsize=10)
        return
    if kind == "timeseries":
        _timeseries(ax, data, unit)
    elif kind in ("stat", "gauge"):
        _tiles(ax, panel, data, unit)
    elif kind == "bargauge":
        _bars(ax, panel, data, unit)
    elif kind == "status-history":
        _heat(ax, panel, data)
    elif kind == "state-timeline":
        _states(ax, panel, data)
    elif kind == "table":
        _table(ax, panel, data, unit)


def _clock(ax: Axes) -> None:
    ax.xaxis.set_major_formatter(lambda v, _: datetime.fromtimestamp(v).strftime("%H:%M:%S"))


def _blank(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _timeseries(ax: Axes, data: list[Series], unit: str) -> None:
    for i, series in enumerate(data):
        points = numbers(series)
        if points:
            ax.plot(
                *zip(*points, strict=True),
                color=PALETTE[i % len(PALETTE)],
                lw=1.2,
                label=series.label,
            )
    ax.grid(color=GRID, lw=0.5)
    _clock(ax)
    ax.yaxis.set_major_formatter(lambda v, _: fmt(v, unit))
    ax.legend(fontsize=6, loc="upper left", ncol=3, frameon=False, labelcolor=TEXT)


def _tiles(ax: Axes, panel: dict[str, Any], data: list[Series], unit: str) -> None:
    _blank(ax)
    width = 1 / len(data)
    for i, series in enumerate(data):
        value = last_number(series)
        if value is None:
            continue
        colour = threshold_colour(panel, value)
        ax.add_patch(Rectangle((i * width + 0.01, 0.04), width - 0.02, 0.86, color=colour))
        ax.text(
            i * width + width / 2,
            0.5,
            fmt(value, unit) if unit else f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=14 if len(data) < 4 else 10,
            color="#111217",
            weight="bold",
        )
        ax.text(i * width + width / 2, 0.15, series.label, ha="center", fontsize=7, color="#111217")


def _bars(ax: Axes, panel: dict[str, Any], data: list[Series], unit: str) -> None:
    shown = [(s.label, v) for s in data if (v := last_number(s)) is not None]
    labels = [label for label, _ in shown]
    values = [value for _, value in shown]
    ax.barh(labels, values, color=[threshold_colour(panel, v) for v in values])
    top = panel["fieldConfig"]["defaults"].get("max")
    if top is not None:
        ax.set_xlim(0, top)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(lambda v, _: fmt(v, unit))
    for y, value in enumerate(values):
        ax.text(value, y, " " + fmt(value, unit), va="center", fontsize=7, color=TEXT)


def _heat(ax: Axes, panel: dict[str, Any], data: list[Series]) -> None:
    times = sorted({t for series in data for t in series.times})
    index = {t: i for i, t in enumerate(times)}
    grid = [[float("nan")] * len(times) for _ in data]
    for row, series in enumerate(data):
        for t, value in numbers(series):
            grid[row][index[t]] = value
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    bounds = [-1e9, *(s["value"] for s in steps[1:]), 1e9]
    cmap = ListedColormap([COLOURS.get(s["color"], s["color"]) for s in steps])
    ax.imshow(
        grid,
        aspect="auto",
        cmap=cmap,
        norm=BoundaryNorm(bounds, cmap.N),
        extent=(times[0], times[-1], len(data) - 0.5, -0.5),
        interpolation="nearest",
    )
    ax.set_yticks(range(len(data)), [s.label for s in data])
    _clock(ax)


def _states(ax: Axes, panel: dict[str, Any], data: list[Series]) -> None:
    colours = state_colours(panel)
    end = max(t for series in data for t in series.times)
    for row, series in enumerate(data):
        points = list(zip(series.times, series.values, strict=True))
        for (t, value), (t_next, _) in zip(points, [*points[1:], (end, None)], strict=True):
            text = str(value).lower()
            ax.barh(
                row, max(t_next - t, 1e-5), left=t, height=0.8, color=colours.get(text, "#8e8e8e")
            )
    ax.set_yticks(range(len(data)), [s.label for s in data])
    ax.invert_yaxis()
    _clock(ax)


def _table(ax: Axes, panel: dict[str, Any], data: list[Series], unit: str) -> None:
    _blank(ax)
    rows = sorted(
        ((s.label, v) for s in data if (v := last_number(s)) is not None),
        key=lambda row: -row[1],
    )
    for i, (label, value) in enumerate(rows[:8]):
        y = 0.85 - i * 0.11
        ax.text(0.03, y, label, fontsize=8, color=TEXT, va="center")
        ax.text(
            0.97,
            y,
            fmt(value, unit),
            fontsize=8,
            ha="right",
            va="center",
            color=threshold_colour(panel, value),
        )


def render_view(
    influx: Running, name: str, time_range: str, out: Path, chosen: dict[str, str] | None = None
) -> bool:
    dashboard = json.loads((OUT / f"{name}.json").read_text(encoding="utf-8"))
    ask = lambda q: localservices.influx_query(influx, DATABASE, q)  # noqa: E731
    picked = opening_values(ask, dashboard, chosen)
    panels = dashboard["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = Figure(figsize=(16, height * ROW_PX / 100 * 1.3), facecolor=BACKGROUND)
    title_h = 0.6 / fig.get_figheight()
    fig.text(0.01, 1 - title_h / 2, dashboard["title"], color=TEXT, fontsize=13, va="center")
    scale = (1 - title_h) / height
    found = False
    for panel in panels:
        grid = panel["gridPos"]
        top = 1 - title_h - grid["y"] * scale
        if panel["type"] == "row":
            fig.text(
                0.01,
                top - scale / 2,
                re.sub(r"\$(\w+)", lambda m: _shown(picked, m[1]), panel["title"]),
                color=TEXT,
                fontsize=11,
                va="center",
                weight="bold",
            )
            continue
        # A repeated panel's title names its variable's value (or All).
        panel = {
            **panel,
            "title": re.sub(r"\$(\w+)", lambda m: _shown(picked, m[1]), panel["title"]),
        }
        data = [s for target in panel["targets"] for s in fetch(influx, target, time_range, picked)]
        found = found or bool(data)
        box = (
            grid["x"] / 24 + 0.006,
            top - grid["h"] * scale + 0.012,
            grid["w"] / 24 - (0.04 if panel["type"] in _AXES_LEFT else 0.012),
            grid["h"] * scale - 0.035,
        )
        if panel["type"] in _AXES_LEFT:
            box = (box[0] + 0.028, *box[1:])
        draw_panel(fig, box, panel, data)
    if found:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100, facecolor=BACKGROUND)
    return found


def _shown(picked: Picked, name: str) -> str:
    values = picked.get(name)
    return ", ".join(values) if values else "all"


_AXES_LEFT = ("timeseries", "bargauge", "status-history", "state-timeline")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=240, help="how long the demo runs")
    parser.add_argument(
        "--synthetic", action="store_true", help="draw the synthetic hub of 20,000 racks"
    )
    parser.add_argument("--views", nargs="+", default=list(VIEWS), choices=VIEWS)
    parser.add_argument("--out", type=Path, default=IMAGES)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rackwatch-render-") as workdir:
        if args.synthetic:
            with synthetic_site(Path(workdir), args.views) as influx:
                draw(influx, args.views, "1h", args.out, SYNTHETIC_PICKED)
            return 0
        print(f"running the demo pipeline for {args.seconds:.0f} s ...", flush=True)
        shown = {"rack_power", "site_power", "pdu", "cooling", "rackwatch_agent"}
        with filled_by_demo(Path(workdir), shown, run_s=args.seconds) as influx:
            draw(influx, args.views, f"{args.seconds + 30:.0f}s", args.out)
    return 0


def draw(
    influx: Running,
    views: Sequence[str],
    time_range: str,
    out: Path,
    chosen: dict[str, dict[str, str]] | None = None,
) -> None:
    for name in views:
        path = out / f"{name}.png"
        if render_view(influx, name, time_range, path, (chosen or {}).get(name)):
            print(f"wrote {path}")
        else:
            print(f"{name}: no data; no picture")


@contextmanager
def synthetic_site(workdir: Path, views: Sequence[str]) -> Iterator[Running]:
    """A private InfluxDB holding the synthetic hub: an hour of rows, rooms, sites, PUE and
    devices, the whole hub's racks for the last minutes, and each site's first row for the
    hour (the row the rows-and-racks picture shows)."""
    influx = localservices.start_influxdb(workdir / "influxdb")
    try:
        localservices.influx_create_database(influx, DATABASE)
        measurements = set()
        for name in views:
            dashboard = json.loads((OUT / f"{name}.json").read_text(encoding="utf-8"))
            for panel in dashboard["panels"]:
                for target in panel.get("targets", []):
                    found = re.search(r'FROM (?:"[^"]+"\.)?"([^"]+)"', target["query"])
                    if found:
                        measurements.add(found.group(1))
        windows = Windows(
            raw_s=3600, raw_racks_s=60, aggregated_s=0, aggregated_racks_s=0, first_row_s=3600
        )
        settings = InfluxSettings(url=influx.url(), database=DATABASE)
        print("writing the synthetic hub of 20,000 racks ...", flush=True)
        snmpsim = localservices.start_snmpsim(RECORDINGS, workdir / "snmpsim")
        try:
            real = poll_real(snmpsim)  # the devices, from real recordings
        finally:
            localservices.stop(snmpsim)
        written = generate(settings, measurements, Layout(), windows, real=real)
        print(f"{written.total():,} points in {written.seconds:.0f} s", flush=True)
        write_latest(settings, measurements, real=real)  # "now" is minutes old by now
        yield influx
    finally:
        localservices.stop(influx)


if __name__ == "__main__":
    sys.exit(main())
