"""An InfluxDB filled by the demo's pipeline: snmpsim -> agent -> Mosquitto -> collector (with
roll-ups) -> InfluxDB, all real, on private loopback ports. For the dashboard tests and the
README's pictures (dashboards/render.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rackwatch import demo, localservices
from rackwatch.localservices import Running, ServiceError

DATABASE = demo.DATABASE


def points(influx: Running, measurements: Iterable[str]) -> dict[str, int]:
    """Points per measurement (the most of any field)."""
    found = {}
    for measurement in measurements:
        series = localservices.influx_query(
            influx, DATABASE, f'SELECT count(*) FROM "{measurement}"'
        )
        counts = [
            int(value)
            for one in series
            for row in one.get("values") or []  # type: ignore[attr-defined]
            for value in row[1:]
            if isinstance(value, int | float)
        ]
        found[measurement] = max(counts, default=0)
    return found


@contextmanager
def filled_by_demo(
    workdir: Path,
    measurements: Iterable[str],
    *,
    min_points: int = 3,
    run_s: float = 0.0,
    timeout_s: float = 120.0,
    until: Callable[[Running], bool] = lambda influx: True,
) -> Iterator[Running]:
    """Run the demo's devices, agent and collector until each of `measurements` has
    `min_points` points, `until(influx)` holds and at least `run_s` seconds have passed; then
    stop the agent and collector and yield InfluxDB (stopped on exit)."""
    wanted = sorted(set(measurements))
    recordings = demo.find_shared(None) / "devices" / "snmprec"
    data = workdir / "snmprec"
    data.mkdir(parents=True, exist_ok=True)
    for device in demo.DEMO_DEVICES:
        text = demo.device_recording(recordings, device)
        (data / f"{device}.snmprec").write_text(text, encoding="utf-8")
    services: list[Running] = []
    children: list[subprocess.Popen[bytes]] = []
    try:
        mosquitto = localservices.start_mosquitto(workdir / "mosquitto")
        services.append(mosquitto)
        influx = localservices.start_influxdb(workdir / "influxdb")
        services.append(influx)
        snmp = localservices.start_snmpsim(data, workdir / "snmpsim")
        services.append(snmp)
        localservices.influx_create_database(influx, DATABASE)
        agent_config, collector_config = demo.write_configs(workdir, mosquitto, influx, snmp)
        children.append(demo.start_rackwatch("collector", collector_config, workdir))
        children.append(demo.start_rackwatch("agent", agent_config, workdir))
        started = time.monotonic()
        deadline = started + max(timeout_s, run_s + 60)
        while (
            min((found := points(influx, wanted)).values(), default=min_points) < min_points
            or time.monotonic() < started + run_s
            or not until(influx)
        ):
            exited = [child.args for child in children if child.poll() is not None]
            if exited:
                raise ServiceError(f"{exited} exited; logs in {workdir}")
            if time.monotonic() > deadline:
                raise ServiceError(f"the demo did not fill InfluxDB: {found}; logs in {workdir}")
            time.sleep(2)
        for child in children:
            demo._stop_child(child)
        yield influx
    finally:
        for child in children:
            demo._stop_child(child)
        for service in reversed(services):
            localservices.stop(service)
