"""Private instances of real servers (Mosquitto, InfluxDB 1.x, VictoriaMetrics, snmpsim).

Each ``start_*`` function picks a free 127.0.0.1 port, writes whatever configuration the
server needs into the given work directory, starts the server in its own process group
(so a Ctrl-C in the parent's terminal does not reach it before the parent cleans up), sends
its stdout and stderr to ``<workdir>/<name>.log`` and waits until it really serves. ``stop``
ends it again. Used by the pytest fixtures and by ``rackwatch demo``; nothing here depends
on pytest.

Nothing here ever touches the system's own instances: every server gets its own port,
configuration, data directory and log. The servers come from Debian packages (mosquitto,
influxdb, victoria-metrics); snmpsim comes from the ``demo`` extra of this package.
"""

from __future__ import annotations

import atexit
import dataclasses
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gufo.snmp import NoSuchInstance, SnmpError
from gufo.snmp.sync import SnmpSession

__all__ = [
    "Running",
    "ServiceError",
    "SnmpV3User",
    "free_port",
    "influx_create_database",
    "influx_query",
    "restart",
    "start_influxdb",
    "start_mosquitto",
    "start_snmpd",
    "start_snmpsim",
    "start_victoria_metrics",
    "stop",
]

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
"""How long one start attempt may take until the server serves."""
POLL_INTERVAL_S = 0.1
START_ATTEMPTS = 3
"""Starts tried, each on a new port, when the chosen port was taken in the meantime."""
LOG_TAIL_LINES = 20
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"

_HTTP_SERVICES = frozenset({"influxdb", "victoria-metrics"})
_ADDRESS_IN_USE = "address already in use"
_SBIN_DIRS = (Path("/usr/sbin"), Path("/sbin"))
# snmpsim logs this once it has handed the UDP endpoint to the event loop; the bind itself
# happens later, and a failed bind is swallowed (the process keeps running, deaf).
_SNMPSIM_LISTENING = "Listening at UDP/IPv4 endpoint"
_SNMPSIM_BIND_GRACE_S = 2.0
# Talk to our own loopback servers directly, whatever *_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(RuntimeError):
    """A private server could not be found, started or used.

    The message names the service, the command line and the last lines of its log.
    """


@dataclass(frozen=True)
class Running:
    """A started server; hand it to `stop` when done."""

    name: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    workdir: Path
    # How it was started, so `restart` can bring it back on the same port with the same state.
    command: tuple[str, ...] = field(default=(), repr=False, compare=False)
    env: Mapping[str, str] | None = field(default=None, repr=False, compare=False)
    ready: Callable[[Running], bool] | None = field(default=None, repr=False, compare=False)

    def url(self) -> str:
        """Base URL of an HTTP service ("http://127.0.0.1:PORT")."""
        if self.name not in _HTTP_SERVICES:
            msg = f"{self.name} is not an HTTP service; use host and port"
            raise ValueError(msg)
        return f"http://{self.host}:{self.port}"


# Every server started here and not yet stopped, by pid; stopped at interpreter exit as a
# safety net for callers that die without cleaning up.
_live: dict[int, Running] = {}


def free_port(kind: Literal["tcp", "udp"] = "tcp") -> int:
    """A port on 127.0.0.1 that was free a moment ago (the kernel's choice)."""
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


# The broker settings `make install-service` puts in /etc/mosquitto/conf.d/.
BROKER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mosquitto" / "rackwatch.conf"


def start_mosquitto(workdir: Path, *, extra_config: str = "", persistent: bool = False) -> Running:
    """Start Mosquitto with an anonymous MQTT listener on 127.0.0.1.

    ``persistent`` keeps sessions, subscriptions and queued messages in ``workdir`` across a
    `restart`, with the settings rackwatch ships for production brokers
    (configs/mosquitto/rackwatch.conf: autosave every second, queue limits). ``extra_config``
    is appended to the generated ``mosquitto.conf`` verbatim (a later setting wins).
    """
    binary = _find_binary("mosquitto", "mosquitto")
    workdir = _prepare_workdir(workdir)
    config_path = workdir / "mosquitto.conf"

    def prepare(port: int) -> list[str]:
        lines = [
            f"listener {port} {HOST}",
            "allow_anonymous true",
            *(
                [f"persistence_location {workdir}/", BROKER_CONFIG.read_text(encoding="utf-8")]
                if persistent
                else ["persistence false"]
            ),
            # stdout is block-buffered when it is a file; stderr is not.
            "log_dest stderr",
        ]
        if _is_root():
            # As root, Mosquitto switches to the user "mosquitto" after reading this file,
            # and could no longer read files (password_file, certificates) in a private
            # work directory. Stay who we are.
            lines.append("user root")
        config_path.write_text("\n".join(lines) + "\n" + extra_config + "\n", encoding="utf-8")
        return [binary, "-c", str(config_path)]

    def ready(service: Running) -> bool:
        return " running" in _read_log(service.log_path) and _tcp_connects(service)

    return _launch("mosquitto", workdir, "tcp", prepare, ready)


def start_influxdb(
    workdir: Path, *, max_series_per_database: int = 1_000_000, max_values_per_tag: int = 100_000
) -> Running:
    """Start InfluxDB 1.x with all its state under ``workdir``; `Running.port` is its HTTP API.

    The two limits are InfluxDB's own (its defaults; 0 turns one off): tests set them small.
    """
    binary = _find_binary("influxd", "influxdb")
    workdir = _prepare_workdir(workdir)
    config_path = workdir / "influxdb.conf"
    # INFLUXDB_* variables override the configuration file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def prepare(port: int) -> list[str]:
        rpc_port = free_port("tcp")
        while rpc_port == port:
            rpc_port = free_port("tcp")
        limits = (max_series_per_database, max_values_per_tag)
        config_path.write_text(_influxdb_config(workdir, port, rpc_port, limits), encoding="utf-8")
        return [binary, "run", "-config", str(config_path)]

    def ready(service: Running) -> bool:
        return _http_status(f"{service.url()}/ping") == 204

    return _launch("influxdb", workdir, "tcp", prepare, ready, env=env)


def start_victoria_metrics(workdir: Path) -> Running:
    """Start single-node VictoriaMetrics with its storage under ``workdir``."""
    binary = _find_binary("victoria-metrics", "victoria-metrics")
    workdir = _prepare_workdir(workdir)
    storage = workdir / "victoria-metrics-data"

    def prepare(port: int) -> list[str]:
        return [
            binary,
            f"-httpListenAddr={HOST}:{port}",
            f"-storageDataPath={storage}",
            "-retentionPeriod=1",  # months
        ]

    def ready(service: Running) -> bool:
        return _http_status(f"{service.url()}/health") == 200

    return _launch("victoria-metrics", workdir, "tcp", prepare, ready)


@dataclass(frozen=True)
class SnmpV3User:
    """A USM user for net-snmp's snmpd: protocols as snmpd spells them (SHA-256, AES, ...)."""

    name: str
    auth_protocol: str | None = None
    auth_password: str | None = None
    priv_protocol: str | None = None
    priv_password: str | None = None

    def config_lines(self) -> list[str]:
        create = f"createUser {self.name}"
        level = "noauth"
        if self.auth_protocol:
            create += f' {self.auth_protocol} "{self.auth_password}"'
            level = "auth"
            if self.priv_protocol:
                create += f' {self.priv_protocol} "{self.priv_password}"'
                level = "priv"
        return [create, f"rouser {self.name} {level}"]


def start_snmpd(
    workdir: Path,
    users: Sequence[SnmpV3User],
    community: str = "public",
    *,
    extra_config: str = "",
) -> Running:
    """Start net-snmp's snmpd (Debian package snmpd) with SNMPv3 users on a free UDP port.

    Only the given users and a read-only v2c `community` (for the readiness check) are
    configured; the system's snmpd.conf is not read (-C), and USM state is kept in `workdir`.
    `extra_config` is appended verbatim (e.g. `proxy` lines that serve a recording over v3).
    """
    binary = _find_binary("snmpd", "snmpd")
    workdir = _prepare_workdir(workdir)
    config_path = workdir / "snmpd.conf"
    persistent = workdir / "snmpd-persistent"
    persistent.mkdir(exist_ok=True)

    def prepare(port: int) -> list[str]:
        lines = [f"agentAddress udp:{HOST}:{port}", f"rocommunity {community} {HOST}"]
        for user in users:
            lines += user.config_lines()
        config_path.write_text("\n".join(lines) + "\n" + extra_config + "\n", encoding="utf-8")
        return [binary, "-C", "-c", str(config_path), "-f", "-Lo", "-p", str(workdir / "pid")]

    def ready(service: Running) -> bool:
        return _snmp_answers(service, community)

    return _launch(
        "snmpd",
        workdir,
        "udp",
        prepare,
        ready,
        env={**os.environ, "SNMP_PERSISTENT_DIR": str(persistent)},
    )


def start_snmpsim(data_dir: Path, workdir: Path) -> Running:
    """Start snmpsim serving ``data_dir`` (``<community>.snmprec`` files) over SNMP/UDP.

    Ready once an SNMPv2c GET of sysObjectID for the first community (sorted) answers.
    """
    binary = _snmpsim_binary()
    workdir = _prepare_workdir(workdir)
    data_dir = data_dir.absolute()
    if not data_dir.is_dir():
        raise ServiceError(f"snmpsim: data directory {data_dir} does not exist")
    recordings = sorted(data_dir.glob("*.snmprec"))
    if not recordings:
        raise ServiceError(
            f"snmpsim: no *.snmprec files in {data_dir}; nothing to serve "
            "(each file <community>.snmprec answers SNMP community <community>)"
        )
    community = recordings[0].stem
    cache_dir = workdir / "snmpsim-cache"
    if cache_dir.resolve().is_relative_to(data_dir.resolve()):
        raise ServiceError(
            f"snmpsim: cache directory {cache_dir} must be outside the data directory {data_dir}"
        )
    env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true", "PYTHONUNBUFFERED": "1"}

    def prepare(port: int) -> list[str]:
        return [
            binary,
            f"--data-dir={data_dir}",
            f"--agent-udpv4-endpoint={HOST}:{port}",
            f"--cache-dir={cache_dir}",
        ]

    def ready(service: Running) -> bool:
        return _snmp_answers(service, community)

    return _launch(
        "snmpsim", workdir, "udp", prepare, ready, env=env, port_lost=_SnmpsimBindWatch()
    )


def shared_folder(path: Path) -> Path:
    """The shared folder (recordings in `devices/snmprec` under it) from what
    `RACKWATCH_SHARED` or `--shared` names: that folder, or its `devices/` or
    `devices/snmprec/` folder."""
    if path.name == "snmprec" and path.parent.name == "devices":
        return path.parent.parent
    if path.name == "devices" and (path / "snmprec").is_dir():
        return path.parent
    return path


def stop(service: Running, timeout_s: float = 10) -> None:
    """SIGTERM the server's process group, wait up to ``timeout_s``, then SIGKILL. Idempotent."""
    process = service.process
    _live.pop(process.pid, None)
    if process.poll() is not None:
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def influx_query(service: Running, db: str, query: str) -> list[dict[str, object]]:
    """Run an InfluxQL read query; returns the result's series (empty when there are none).

    Timestamps come back as integer nanoseconds. Raises `ServiceError` when InfluxDB reports
    an error.
    """
    params = urllib.parse.urlencode({"db": db, "q": query, "epoch": "ns"})
    status, body = _http("GET", f"{service.url()}/query?{params}")
    return _influx_series(service, query, status, body)


def influx_create_database(service: Running, db: str) -> None:
    """CREATE DATABASE ``db`` (a no-op when it exists)."""
    query = f"CREATE DATABASE {_influx_identifier(db)}"
    status, body = _http(
        "POST",
        f"{service.url()}/query",
        data=urllib.parse.urlencode({"q": query}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _influx_series(service, query, status, body)


# --- starting and waiting -----------------------------------------------------------------


def _launch(
    name: str,
    workdir: Path,
    kind: Literal["tcp", "udp"],
    prepare: Callable[[int], list[str]],
    ready: Callable[[Running], bool],
    *,
    env: Mapping[str, str] | None = None,
    port_lost: Callable[[Running], bool] | None = None,
) -> Running:
    """Start ``name`` on a fresh port until it serves; retry when the port was taken."""
    log_path = workdir / f"{name}.log"
    command: list[str] = []
    for _attempt in range(START_ATTEMPTS):
        port = free_port(kind)
        command = prepare(port)
        with log_path.open("wb") as log:
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ServiceError(
                    _describe(name, f"could not be started: {exc}", command, log_path)
                ) from exc
        service = Running(name, HOST, port, process, log_path, workdir, tuple(command), env, ready)
        _live[process.pid] = service
        try:
            if _await_ready(service, command, ready, port_lost):
                return service
        except BaseException:
            stop(service)
            raise
        stop(service)  # the port was taken; try another one
    raise ServiceError(
        _describe(
            name,
            f"could not get a free port: {_ADDRESS_IN_USE} in {START_ATTEMPTS} attempts",
            command,
            log_path,
        )
    )


def restart(service: Running, down_s: float = 0.0) -> Running:
    """Stop a server and start it again on the same port with the same data: an outage.

    `down_s` is how long it stays down. Returns the new `Running`; the old one is stopped.
    """
    stop(service)
    time.sleep(down_s)
    if not service.command or service.ready is None:
        raise ServiceError(f"{service.name}: not started by this module; cannot restart it")
    with service.log_path.open("ab") as log:
        process = subprocess.Popen(
            service.command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=service.workdir,
            env=service.env,
            start_new_session=True,
        )
    again = dataclasses.replace(service, process=process)
    _live[process.pid] = again
    try:
        if not _await_ready(again, service.command, service.ready, None):
            raise ServiceError(f"{service.name}: port {service.port} was taken while it was down")
    except BaseException:
        stop(again)
        raise
    return again


def _await_ready(
    service: Running,
    command: Sequence[str],
    ready: Callable[[Running], bool],
    port_lost: Callable[[Running], bool] | None,
) -> bool:
    """True once ``service`` serves, False when its port turned out to be taken."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        code = service.process.poll()
        if code is not None:
            if _ADDRESS_IN_USE in _log_tail(service.log_path).lower():
                return False
            raise ServiceError(
                _describe(service.name, f"exited early with code {code}", command, service.log_path)
            )
        if ready(service):
            return True
        if port_lost is not None and port_lost(service):
            return False
        if time.monotonic() > deadline:
            raise ServiceError(
                _describe(
                    service.name,
                    f"was not ready on {service.host}:{service.port} within {READY_TIMEOUT_S:g} s",
                    command,
                    service.log_path,
                )
            )
        time.sleep(POLL_INTERVAL_S)


class _SnmpsimBindWatch:
    """Tells when snmpsim says it listens but, for a while, holds no socket on its port.

    pysnmp binds the UDP endpoint in a background future and drops a bind error on the floor,
    so snmpsim on a taken port keeps running without serving. Linux only (reads /proc); on
    other systems this never fires and a taken port ends in the readiness timeout.
    """

    def __init__(self) -> None:
        self._unbound_since: dict[int, float] = {}  # by pid: one watch serves all attempts

    def __call__(self, service: Running) -> bool:
        pid = service.process.pid
        if _SNMPSIM_LISTENING not in _read_log(service.log_path):
            return False
        if _process_holds_udp_port(pid, service.port) is not False:
            self._unbound_since.pop(pid, None)
            return False
        now = time.monotonic()
        since = self._unbound_since.setdefault(pid, now)
        return now - since >= _SNMPSIM_BIND_GRACE_S


def _process_holds_udp_port(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` has a UDP socket bound to ``port``; None when unknowable."""
    proc = Path("/proc", str(pid))
    try:
        inodes = set()
        for fd in (proc / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
        for table in ("udp", "udp6"):
            lines = (proc / "net" / table).read_text(encoding="ascii").splitlines()[1:]
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    return True
    except (OSError, ValueError, IndexError):
        return None
    return False


def _find_binary(executable: str, package: str) -> str:
    found = shutil.which(executable)
    if found is not None:
        return found
    for directory in _SBIN_DIRS:
        candidate = directory / executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    searched = ", ".join(str(d) for d in _SBIN_DIRS)
    raise ServiceError(
        f"{package}: executable {executable!r} not found on PATH or in {searched}; "
        f"install the Debian package {package!r} (apt-get install {package})"
    )


def _snmpsim_binary() -> str:
    name = "snmpsim-command-responder"
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is not None:
        return found
    raise ServiceError(
        f"snmpsim: {name!r} not found next to {sys.executable} or on PATH; "
        "install this package with its demo extra (pip install 'rackwatch[demo]')"
    )


def _prepare_workdir(workdir: Path) -> Path:
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        process.send_signal(sig)


@atexit.register
def _stop_leftovers() -> None:
    for service in list(_live.values()):
        stop(service, timeout_s=5)


# --- logs and messages --------------------------------------------------------------------


def _read_log(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            data = log.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _describe(name: str, problem: str, command: Sequence[str], log_path: Path) -> str:
    tail = _log_tail(log_path)
    body = "\n".join(f"    {line}" for line in tail.splitlines()) if tail else "    (empty)"
    return (
        f"{name} {problem}\n"
        f"  command: {shlex.join(command)}\n"
        f"  log {log_path} (last {LOG_TAIL_LINES} lines):\n{body}"
    )


# --- readiness probes ---------------------------------------------------------------------


def _tcp_connects(service: Running) -> bool:
    try:
        with socket.create_connection((service.host, service.port), timeout=0.5):
            return True
    except OSError:
        return False


def _http(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, exc.read()
        finally:
            exc.close()


def _http_status(url: str) -> int | None:
    try:
        return _http("GET", url, timeout=1.0)[0]
    except (OSError, http.client.HTTPException):
        return None


def _snmp_answers(service: Running, community: str) -> bool:
    try:
        session = SnmpSession(
            addr=service.host, port=service.port, community=community, timeout=0.5
        )
        session.get(SYS_OBJECT_ID)
    except NoSuchInstance:
        return True  # it answered
    except (OSError, SnmpError):  # TimeoutError is an OSError
        return False
    return True


# --- InfluxDB -----------------------------------------------------------------------------


def _toml_string(value: str | Path) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def _influxdb_config(
    workdir: Path, http_port: int, rpc_port: int, limits: tuple[int, int] = (1_000_000, 100_000)
) -> str:
    state = workdir / "influxdb"
    max_series, max_values = limits
    return f"""\
# Generated by rackwatch.localservices for a private, throw-away InfluxDB.
reporting-disabled = true
bind-address = {_toml_string(f"{HOST}:{rpc_port}")}

[meta]
  dir = {_toml_string(state / "meta")}

[data]
  dir = {_toml_string(state / "data")}
  wal-dir = {_toml_string(state / "wal")}
  query-log-enabled = false
  max-series-per-database = {max_series}
  max-values-per-tag = {max_values}

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = {_toml_string(f"{HOST}:{http_port}")}
  auth-enabled = false
  log-enabled = true
  pprof-enabled = false
  unix-socket-enabled = false

[ifql]
  enabled = false

[logging]
  suppress-logo = true

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false

[continuous_queries]
  enabled = false
"""


def _influx_identifier(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _influx_series(
    service: Running, query: str, status: int, body: bytes
) -> list[dict[str, object]]:
    def fail(problem: str) -> ServiceError:
        return ServiceError(f"{service.name} at {service.url()}: query {query!r} {problem}")

    try:
        document: object = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", errors="replace")[:500]
        raise fail(f"returned HTTP {status} and no JSON: {text!r}") from None
    if not isinstance(document, dict):
        raise fail(f"returned HTTP {status} and unexpected JSON: {document!r}")
    if "error" in document:
        raise fail(f"failed (HTTP {status}): {document['error']}")
    results = document.get("results")
    if status != 200 or not isinstance(results, list):
        raise fail(f"returned HTTP {status} and unexpected JSON: {document!r}")
    series: list[dict[str, object]] = []
    for result in results:
        if not isinstance(result, dict):
            raise fail(f"returned an unexpected result: {result!r}")
        if "error" in result:
            raise fail(f"failed: {result['error']}")
        for item in result.get("series", []):
            if not isinstance(item, dict):
                raise fail(f"returned an unexpected series: {item!r}")
            series.append(item)
    return series
