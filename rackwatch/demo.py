"""`rackwatch demo`: a live hall on this machine, from private servers on free loopback ports.

It starts Mosquitto, InfluxDB and snmpsim under a temporary directory (never touching a server
already running), serves shared recordings (six PDUs of three vendors, an InRow cooling unit, a
Liebert room unit, a Smart-UPS, a three-phase UPS-MIB UPS, an Eltek DC plant and an AVTECH
environment monitor) with values that move over time, runs a real agent and a real collector
(with roll-ups) as child processes, and shows data arriving: a table per device kind. With
`--duration N` it runs N seconds without interaction and exits 0 only once an InfluxQL query has
found points of every simulated kind. Everything it started is stopped on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import yaml

from rackwatch import demo_mqtt_devices, localservices
from rackwatch.localservices import Running, ServiceError

DATABASE = "rackwatch"
EXPECTED_MEASUREMENTS = (
    "pdu",
    "pdu_phase",
    "pdu_bank",
    "pdu_outlet",
    "cooling",
    "ups",
    "dc_power",
    "dc_rectifier",
    "dc_battery",
    "env_sensor",
    "env_contact",
    "rackwatch_agent",
    "rackwatch_collector",
    "rackwatch_mqtt_device",
    "accelerator",
    "accelerator_host",
    "accelerator_job",
    "mqtt_device_event",
    "rack_power",
    "row_power",
    "site_power",
    "pue",
)
VERIFY_GRACE_S = 20.0
NPU_SMI_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "npu_smi"

# Demo row: three racks with an A and a B feed each (APC metered, APC switched, and a Raritan
# beside an Eaton), the InRow cooling unit, a Liebert room unit, the row's UPS (three phases,
# through the UPS-MIB), the row's -48 V DC plant, an environment monitor in A01, and `ups-main`,
# whose output stands in for the site's utility meter (PUE). A PDU's feed: its name's last letter.
DEMO_DEVICES = {
    "pdu-a01-a": ("apc_ap8853", "A01"),
    "pdu-a01-b": ("apc_ap8853", "A01"),
    "pdu-a02-a": ("apc_ap8959eu3", "A02"),
    "pdu-a02-b": ("apc_ap8959eu3", "A02"),
    "pdu-a03-a": ("raritan-pdu_px2", "A03"),
    "pdu-a03-b": ("eatonpdu_2", "A03"),
    "ups-main": ("apc_smart1500", "A00"),
    "crah-1": ("liebert_weblbds", "A00"),  # room cooling (humidity) on a Liebert GP card
    "inrow-a01": ("apc-inrow", "A01"),
    "ups-row-a": ("generex-ups_cs141", "A00"),
    "dc-plant-a": ("enexus_enexus", "A00"),  # a -48 V Eltek eNexus plant: 7 rectifiers
    "env-a01": ("avtech_roomalert12e", "A01"),  # probe with dew point, four contacts
}

# OID prefixes left out of a device's recording. The Liebert GP card's recording also holds
# the readings of a Liebert UPS behind the same card (UPS-MIB, LIEBERT-GP-POWER-MIB), which
# would show the demo's CRAH as a UPS too; a card that serves a CRAH has neither.
LEFT_OUT = {"crah-1": ("1.3.6.1.2.1.33.", "1.3.6.1.4.1.476.1.42.3.5.")}

# OID -> snmpsim numeric variation, so the readings move like a real load does. By recording,
# or by device name where one device moves unlike the others on its recording.
# Values stay near the recorded ones; `rate` sets the speed of the swing.
MOVING_VALUES = {
    "ups-main": {  # output power in W: about 1.4 times the racks' IT load
        "1.3.6.1.4.1.318.1.1.1.4.2.8.0": "function=sin,rate=0.02,scale=400,offset=6400",
    },
    "apc_ap8853": {
        "1.3.6.1.4.1.318.1.1.26.6.3.1.5.1": "function=sin,rate=0.2,scale=6,offset=49",
        "1.3.6.1.4.1.318.1.1.26.6.3.1.7.1": "function=sin,rate=0.2,scale=14,offset=114",
        "1.3.6.1.4.1.318.1.1.26.4.3.1.5.1": "function=sin,rate=0.2,scale=14,offset=114",
        "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1": "rate=1,initial=35128",
        "1.3.6.1.4.1.318.1.1.12.2.3.1.1.2.3": "function=sin,rate=0.2,scale=6,offset=47",
    },
    "apc_ap8959eu3": {
        "1.3.6.1.4.1.318.1.1.26.6.3.1.5.1": "function=cos,rate=0.1,scale=4,offset=13",
        "1.3.6.1.4.1.318.1.1.26.4.3.1.5.1": "function=cos,rate=0.1,scale=8,offset=27",
        "1.3.6.1.4.1.318.1.1.26.4.3.1.9.1": "rate=0.5,initial=19677",
    },
    "apc-inrow": {  # rack inlet and return air, tenths of a degree C
        "1.3.6.1.4.1.318.1.1.13.3.2.2.2.7.0": "function=sin,rate=0.05,scale=15,offset=214",
        "1.3.6.1.4.1.318.1.1.13.3.2.2.2.11.0": "function=sin,rate=0.05,scale=12,offset=238",
    },
    "enexus_enexus": {  # load and rectifier current in A; the bus in hundredths of a volt
        "1.3.6.1.4.1.12148.10.9.2.5.0": "function=sin,rate=0.05,scale=6,offset=72",
        "1.3.6.1.4.1.12148.10.5.2.5.0": "function=sin,rate=0.05,scale=6,offset=72",
        "1.3.6.1.4.1.12148.10.10.5.5.0": "function=sin,rate=0.05,scale=4,offset=5453",
    },
    "apc_smart1500": {  # load in tenths of a percent
        "1.3.6.1.4.1.318.1.1.1.4.3.3.0": "function=sin,rate=0.1,scale=30,offset=176",
    },
}

_FEED_16A = {"rated_a": 16, "voltage_v": 230}
# The racks' feeds for roll-ups; A03's B feed is a 120 V circuit, near what one feed can carry.
DEMO_INVENTORY = {
    "racks": [
        {
            "site": "qiyang-a1",
            "room": "hall-1",
            "row": "A",
            "rack": rack,
            "feeds": {
                "A": _FEED_16A,
                "B": _FEED_16A if rack != "A03" else {**_FEED_16A, "rated_a": 20, "voltage_v": 120},
            },
        }
        for rack in ("A01", "A02", "A03")
    ],
    "sites": {
        "qiyang-a1": {
            "facility": [
                {"measurement": "ups", "field": "output_power_w", "tags": {"device": "ups-main"}}
            ]
        }
    },
}


def find_shared(explicit: Path | None) -> Path:
    candidates = (
        [explicit]
        if explicit
        else [
            Path(os.environ["RACKWATCH_SHARED"]) if "RACKWATCH_SHARED" in os.environ else None,
            Path.cwd().parent / "shared",
            Path(__file__).resolve().parents[2] / "shared",
        ]
    )
    for candidate in candidates:
        if candidate and (localservices.shared_folder(candidate) / "devices" / "snmprec").is_dir():
            return localservices.shared_folder(candidate)
    raise ServiceError(
        "cannot find shared/devices/snmprec (the device recordings); pass --shared PATH or set "
        "RACKWATCH_SHARED to the shared folder or its devices folder"
    )


def device_recording(recordings: Path, device: str) -> str:
    """What snmpsim serves for a demo device: its recording, moving, without LEFT_OUT."""
    recording = DEMO_DEVICES[device][0]
    moving = MOVING_VALUES.get(device, MOVING_VALUES.get(recording, {}))
    return moving_recording(recordings / f"{recording}.snmprec", moving, LEFT_OUT.get(device, ()))


def moving_recording(source: Path, moving: dict[str, str], left_out: tuple[str, ...] = ()) -> str:
    """The recording with some values replaced by snmpsim `numeric` variations."""
    out = []
    for line in source.read_text(encoding="utf-8").splitlines():
        oid, _, rest = line.partition("|")
        if oid.startswith(left_out):
            continue
        tag = rest.partition("|")[0]
        if oid in moving:
            line = f"{oid}|{tag}:numeric|{moving[oid]},min=0,max=2147483647"
            if "initial=" not in line:
                line += ",initial=0"
        out.append(line)
    return "\n".join(out) + "\n"


def demo_accelerators(workdir: Path) -> dict[str, object]:
    """An NPU host in rack A03: eight Ascend 910B3 as `npu-smi` printed them on a real machine
    (recorded in tests/data/npu_smi, with its source), answered by the tests' stand-in."""
    recordings = workdir / "npu-smi"
    recordings.mkdir(exist_ok=True)
    (recordings / "info.txt").write_bytes((NPU_SMI_DATA / "info_910b3_x8.txt").read_bytes())
    command = workdir / "npu-smi.sh"
    command.write_text(
        f'#!/bin/sh\nFAKE_NPU_SMI_DIR={recordings} exec {NPU_SMI_DATA / "npu-smi"} "$@"\n',
        encoding="utf-8",
    )
    command.chmod(0o755)
    return {
        "host": "npu-a03-01",
        "room": "hall-1",
        "row": "A",
        "rack": "A03",
        "interval_s": 5,
        "tags": {"cluster": "ascend-demo"},
        "ascend": {"command": str(command)},
        "jobs": {"slurm": True, "proc_root": str(demo_proc(workdir))},
    }


# The recording's process table (NPU -> pid) and, as the demo's stand-in for /proc, the real
# Slurm cgroup texts of tests/data/slurm (cgroups.source) put on those pids: NPUs 0-3 run one
# job, 4-7 another, so the accelerators dashboard has jobs to show.
DEMO_JOBS = {
    1067983: "cgroup_v2_job_840392.txt",
    1070524: "cgroup_v2_job_840392.txt",
    1073093: "cgroup_v2_job_840392.txt",
    1075396: "cgroup_v2_job_840392.txt",
    1077642: "cgroup_v1_job_280678.txt",
    1079652: "cgroup_v1_job_280678.txt",
    1082071: "cgroup_v1_job_280678.txt",
    1084428: "cgroup_v1_job_280678.txt",
}


def demo_proc(workdir: Path) -> Path:
    proc = workdir / "proc"
    for pid, recording in DEMO_JOBS.items():
        (proc / str(pid)).mkdir(parents=True, exist_ok=True)
        text = (NPU_SMI_DATA.parent / "slurm" / recording).read_bytes()
        (proc / str(pid) / "cgroup").write_bytes(text)
    return proc


def write_configs(
    workdir: Path, mosquitto: Running, influx: Running, snmp: Running
) -> tuple[Path, Path]:
    agent = {
        "agent": {"name": "demo-agent", "site": "qiyang-a1"},
        "mqtt": {
            "host": mosquitto.host,
            "port": mosquitto.port,
            "spool_dir": str(workdir / "agent-spool"),
        },
        "defaults": {"interval_s": 5, "jitter_s": 0.5, "timeout_s": 1, "retries": 1},
        "health_interval_s": 5,
        "credentials": {name: {"version": "2c", "community": name} for name in DEMO_DEVICES},
        "mqtt_devices": demo_mqtt_devices.agent_section(mosquitto),  # a JSON and a Sparkplug CRAH
        "accelerators": demo_accelerators(workdir),
        "devices": [
            {
                "name": name,
                "address": f"{snmp.host}:{snmp.port}",
                "credentials": name,
                "room": "hall-1",
                "row": "A",
                "rack": rack,
                "tags": {"feed": name[-1].upper()} if name.startswith("pdu-") else {},
            }
            for name, (_, rack) in DEMO_DEVICES.items()
        ],
    }
    collector = {
        "name": "demo-collector",
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
        "influxdb": {
            "url": influx.url(),
            "api": "v1",
            "database": DATABASE,
            "create_database": True,
        },
        "dead_letter_path": str(workdir / "dead-letter.jsonl"),
        "health_interval_s": 5,
        "spool": {"directory": str(workdir / "collector-spool")},
        "rollup": {
            "inventory": str(workdir / "inventory.yaml"),
            "interval_s": 5,
            "state_path": str(workdir / "rollup-peaks.json"),
        },
    }
    (workdir / "inventory.yaml").write_text(yaml.safe_dump(DEMO_INVENTORY), encoding="utf-8")
    agent_path, collector_path = workdir / "agent.yaml", workdir / "collector.yaml"
    agent_path.write_text(yaml.safe_dump(agent, sort_keys=False), encoding="utf-8")
    collector_path.write_text(yaml.safe_dump(collector, sort_keys=False), encoding="utf-8")
    return agent_path, collector_path


def start_rackwatch(role: str, config: Path, workdir: Path) -> subprocess.Popen[bytes]:
    with (workdir / f"{role}.log").open("wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "rackwatch", role, "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def counts(influx: Running) -> dict[str, int]:
    """Points per measurement (the largest per-field count) in the demo database."""
    found = {}
    for measurement in EXPECTED_MEASUREMENTS:
        series = localservices.influx_query(
            influx, DATABASE, f'SELECT count(*) FROM "{measurement}"'
        )
        total = 0
        for one in series:
            values = one.get("values")
            if isinstance(values, list) and values:
                total = max(int(v) for v in values[0][1:] if isinstance(v, int | float))
        found[measurement] = total
    return found


# What the live view shows per device kind: (heading, measurements, field, format) per column.
# Rows are the devices whose profile is of that kind (the `kind` tag of their health samples),
# so a cooling unit whose card also reports a UPS stays under cooling. A column takes the first
# of its measurements that has the field for the device; inlets are summed, as the roll-ups
# take a PDU's power (docs/schema.md): not every PDU reports a device total.
Column = tuple[str, tuple[str, ...], str, str]
LATEST: tuple[tuple[str, tuple[Column, ...]], ...] = (
    (
        "pdu",
        (
            ("POWER W", ("pdu", "pdu_inlet"), "power_w", ".0f"),
            ("ENERGY KWH", ("pdu", "pdu_inlet"), "energy_kwh", ".1f"),
        ),
    ),
    (
        "cooling",
        (
            ("INLET C", ("cooling",), "rack_inlet_c", ".1f"),
            ("RETURN C", ("cooling",), "return_air_c", ".1f"),
        ),
    ),
    (
        "ups",
        (
            ("LOAD %", ("ups",), "load_pct", ".1f"),
            ("RUNTIME S", ("ups",), "runtime_s", ".0f"),
        ),
    ),
    (
        "dc_power",
        (
            ("BUS V", ("dc_power",), "voltage_v", ".2f"),
            ("LOAD A", ("dc_power",), "load_current_a", ".1f"),
        ),
    ),
)


def kinds(influx: Running) -> dict[str, str]:
    """device -> kind, from the health samples of polled and MQTT devices."""
    found: dict[str, str] = {}
    for measurement in ("rackwatch_agent", "rackwatch_mqtt_device"):
        query = f'SELECT last("up") FROM "{measurement}" GROUP BY "device", "kind"'
        for one in localservices.influx_query(influx, DATABASE, query):
            tags = one.get("tags")
            if isinstance(tags, dict) and tags.get("device") and tags.get("kind"):
                found[str(tags["device"])] = str(tags["kind"])
    return found


def latest_values(influx: Running, measurement: str, field: str) -> dict[str, tuple[float, str]]:
    """device -> (latest value, summed over the device's other series such as inlets; model)."""
    series = localservices.influx_query(
        influx, DATABASE, f'SELECT last("{field}") FROM "{measurement}" GROUP BY *'
    )
    found: dict[str, tuple[float, str]] = {}
    for one in series:
        tags, values = one.get("tags"), one.get("values")
        if not (isinstance(tags, dict) and isinstance(values, list) and values):
            continue
        value = values[0][1]
        if isinstance(value, int | float):
            device = str(tags.get("device"))
            total, model = found.get(device, (0.0, ""))
            found[device] = (total + value, model or str(tags.get("model") or ""))
    return found


def latest(influx: Running, kind: str, columns: tuple[Column, ...]) -> list[list[object]]:
    """[device, model, *latest value of each column] per device of `kind`, sorted by device."""
    devices = sorted(device for device, of in kinds(influx).items() if of == kind)
    rows: dict[str, list[object]] = {device: [device, ""] for device in devices}
    for _, measurements, field, _ in columns:
        read = [latest_values(influx, m, field) for m in measurements]
        for device, row in rows.items():
            value, model = next((r[device] for r in read if device in r), (None, ""))
            row.append(value)
            row[1] = row[1] or model
    return list(rows.values())


def render(influx: Running, started: float) -> str:
    lines = [
        f"rackwatch demo: {time.monotonic() - started:5.0f} s   (Ctrl-C to stop)",
        "",
        f"{'MEASUREMENT':<22}{'POINTS':>8}",
    ]
    lines += [f"{m:<22}{n:>8}" for m, n in counts(influx).items()]
    for kind, columns in LATEST:
        heading = f"{kind.upper():<12}{'MODEL':<12}"
        lines += ["", heading + "".join(f"{title:>12}" for title, *_ in columns)]
        for device, model, *values in latest(influx, kind, columns):
            cells = "".join(
                f"{value:>12{fmt}}" if isinstance(value, int | float) else f"{'-':>12}"
                for value, (*_, fmt) in zip(values, columns, strict=True)
            )
            lines.append(f"{device!s:<12}{model or '-'!s:<12}{cells}")
    return "\n".join(lines)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def demo(duration_s: float | None, shared: Path | None) -> int:
    signal.signal(signal.SIGTERM, _raise_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="rackwatch-demo-"))
    services: list[Running] = []
    children: list[subprocess.Popen[bytes]] = []
    publishers: demo_mqtt_devices.DemoPublishers | None = None
    ok = False
    try:
        recordings = find_shared(shared) / "devices" / "snmprec"
        data = workdir / "snmprec"
        data.mkdir()
        for name in DEMO_DEVICES:
            text = device_recording(recordings, name)
            (data / f"{name}.snmprec").write_text(text, encoding="utf-8")
        print(f"starting Mosquitto, InfluxDB and snmpsim under {workdir} ...", flush=True)
        mosquitto = localservices.start_mosquitto(workdir / "mosquitto")
        services.append(mosquitto)
        influx = localservices.start_influxdb(workdir / "influxdb")
        services.append(influx)
        localservices.influx_create_database(influx, DATABASE)
        snmp = localservices.start_snmpsim(data, workdir / "snmpsim")
        services.append(snmp)
        agent_config, collector_config = write_configs(workdir, mosquitto, influx, snmp)
        children.append(start_rackwatch("collector", collector_config, workdir))
        children.append(start_rackwatch("agent", agent_config, workdir))
        publishers = demo_mqtt_devices.DemoPublishers(mosquitto.host, mosquitto.port)
        publishers.start()
        print(
            f"MQTT {mosquitto.host}:{mosquitto.port}  InfluxDB {influx.url()}  "
            f"SNMP {snmp.host}:{snmp.port} (udp)  logs in {workdir}",
            flush=True,
        )
        ok = watch(influx, duration_s, children)
    except KeyboardInterrupt:
        ok = duration_s is None  # Ctrl-C is how an interactive demo ends
    except ServiceError as exc:
        print(f"rackwatch demo: {exc}", file=sys.stderr)
    finally:
        if publishers is not None:
            publishers.stop()
        for child in children:
            _stop_child(child)
        for service in reversed(services):
            localservices.stop(service)
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"rackwatch demo: logs kept in {workdir}", file=sys.stderr)
    return 0 if ok else 1


def watch(
    influx: Running, duration_s: float | None, children: list[subprocess.Popen[bytes]]
) -> bool:
    started = time.monotonic()
    if duration_s is None:
        while True:
            _check_children(children)
            print("\033[H\033[2J" + render(influx, started), flush=True)
            time.sleep(2)
    deadline = started + duration_s
    while time.monotonic() < deadline:
        _check_children(children)
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        print(
            f"  {time.monotonic() - started:4.0f} s  points: "
            + ", ".join(f"{m}={n}" for m, n in counts(influx).items()),
            flush=True,
        )
    # Points of every kind must be there; give late health reports a short grace.
    grace_end = time.monotonic() + VERIFY_GRACE_S
    while True:
        found = counts(influx)
        missing = [m for m, n in found.items() if n == 0]
        missing += demo_mqtt_devices.missing(influx, DATABASE)
        # The live view lists a device under its kind once its health report has landed.
        reported = kinds(influx)
        missing += [f"health of {d}" for d in DEMO_DEVICES if d not in reported]
        if not missing:
            print(render(influx, started))
            print("demo ok: points of every kind landed in InfluxDB")
            return True
        if time.monotonic() > grace_end:
            print(f"demo FAILED: no points for {', '.join(missing)}", file=sys.stderr)
            return False
        time.sleep(1)


def _check_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is not None:
            raise ServiceError(f"{child.args!r} exited with {child.returncode}")


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
