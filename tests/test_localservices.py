"""rackwatch.localservices against the real servers: each one starts, serves and stops."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import httpx
import paho.mqtt.client as mqtt
import pytest
from gufo.snmp.sync import SnmpSession
from paho.mqtt.enums import CallbackAPIVersion

from rackwatch import localservices
from rackwatch.localservices import (
    Running,
    ServiceError,
    free_port,
    influx_create_database,
    influx_query,
    start_influxdb,
    start_mosquitto,
    start_snmpsim,
    start_victoria_metrics,
    stop,
)
from tests.conftest import RECORDINGS

pytestmark = pytest.mark.integration

SNMPREC_DIR = RECORDINGS  # the read-only shared recordings


def _http() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=10)


def _assert_stopped(service: Running) -> None:
    stop(service)
    assert service.process.poll() is not None
    stop(service)  # idempotent
    if service.name != "snmpsim":
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((service.host, service.port), timeout=1).close()


def test_free_port_is_bindable() -> None:
    for kind, sock_type in (("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)):
        port = free_port(kind)  # type: ignore[arg-type]
        with socket.socket(socket.AF_INET, sock_type) as sock:
            sock.bind(("127.0.0.1", port))


def test_mosquitto_delivers_a_message(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    try:
        assert broker.name == "mosquitto"
        assert broker.port != 1883
        assert broker.log_path == tmp_path / "mosquitto.log"
        with pytest.raises(ValueError, match="not an HTTP service"):
            broker.url()

        connected = threading.Event()
        subscribed = threading.Event()
        received: list[tuple[str, bytes]] = []
        got_message = threading.Event()
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
            connected.set()

        def on_subscribe(c: mqtt.Client, _u: object, _mid: int, _r: object, _p: object) -> None:
            subscribed.set()

        def on_message(c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            received.append((message.topic, bytes(message.payload)))
            got_message.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            assert connected.wait(5)
            client.subscribe("rackwatch/test/#", qos=1)
            assert subscribed.wait(5)
            client.publish("rackwatch/test/hello", b"world", qos=1).wait_for_publish(5)
            assert got_message.wait(5)
        finally:
            client.disconnect()
            client.loop_stop()
        assert received == [("rackwatch/test/hello", b"world")]
        assert "running" in broker.log_path.read_text()
    finally:
        _assert_stopped(broker)


def test_mosquitto_extra_config_is_used(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path, extra_config="max_keepalive 30\n")
    try:
        assert "max_keepalive 30" in (tmp_path / "mosquitto.conf").read_text()
    finally:
        _assert_stopped(broker)


def test_influxdb_write_and_query(tmp_path: Path) -> None:
    influx = start_influxdb(tmp_path)
    try:
        assert influx.url() == f"http://127.0.0.1:{influx.port}"
        assert influx.port != 8086
        influx_create_database(influx, "rack watch")
        influx_create_database(influx, "rack watch")  # exists already: no error
        with _http() as http:
            response = http.post(
                f"{influx.url()}/write",
                params={"db": "rack watch", "precision": "ns"},
                content=b'pdu,site=a,outlet=3 power_w=123.5,state="on" 1700000000000000000\n',
            )
        assert response.status_code == 204, response.text
        series = influx_query(influx, "rack watch", 'SELECT * FROM "pdu"')
        assert series == [
            {
                "name": "pdu",
                "columns": ["time", "outlet", "power_w", "site", "state"],
                "values": [[1700000000000000000, "3", 123.5, "a", "on"]],
            }
        ]
        assert influx_query(influx, "rack watch", 'SELECT * FROM "nothing"') == []
        with pytest.raises(ServiceError, match="database not found"):
            influx_query(influx, "no_such_db", 'SELECT * FROM "pdu"')
        with pytest.raises(ServiceError, match="error parsing query"):
            influx_query(influx, "rack watch", "SELEKT 1")
        # Everything it keeps lives in the work directory.
        assert (tmp_path / "influxdb" / "meta").is_dir()
        assert (tmp_path / "influxdb" / "wal").is_dir()
    finally:
        _assert_stopped(influx)


def test_victoria_metrics_write_and_export(tmp_path: Path) -> None:
    vm = start_victoria_metrics(tmp_path)
    try:
        assert vm.url() == f"http://127.0.0.1:{vm.port}"
        now_ns = time.time_ns()
        with _http() as http:
            response = http.post(
                f"{vm.url()}/api/v2/write",
                params={"bucket": "x", "org": "y"},
                content=f"cooling,unit=crac1 supply_c=18.5 {now_ns}\n".encode(),
            )
            assert response.status_code == 204, response.text
            # Written rows become readable after a flush, and even then only a moment later.
            lines: list[str] = []
            deadline = time.monotonic() + 10
            while not lines and time.monotonic() < deadline:
                http.get(f"{vm.url()}/internal/force_flush").raise_for_status()
                export = http.get(
                    f"{vm.url()}/api/v1/export", params={"match[]": "cooling_supply_c"}
                )
                export.raise_for_status()
                lines = export.text.splitlines()
                if not lines:
                    time.sleep(0.2)
        assert [json.loads(line) for line in lines] == [
            {
                "metric": {"__name__": "cooling_supply_c", "unit": "crac1"},
                "values": [18.5],
                "timestamps": [now_ns // 1_000_000],
            }
        ]
        assert (tmp_path / "victoria-metrics-data").is_dir()
    finally:
        _assert_stopped(vm)


def test_snmpsim_serves_recordings(tmp_path: Path) -> None:
    agent = start_snmpsim(SNMPREC_DIR, tmp_path)
    try:
        with pytest.raises(ValueError, match="not an HTTP service"):
            agent.url()
        session = SnmpSession(addr=agent.host, port=agent.port, community="apc_ap8853", timeout=2.0)
        assert session.get("1.3.6.1.2.1.1.2.0") == "1.3.6.1.4.1.318.1.3.4.6"
        # The indices went to the work directory, not into the (read-only) data directory.
        assert any((tmp_path / "snmpsim-cache").iterdir())
    finally:
        _assert_stopped(agent)


# --- failures -----------------------------------------------------------------------------


def test_snmpsim_without_recordings_fails(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ServiceError, match=r"snmpsim: no \*\.snmprec files in .*empty"):
        start_snmpsim(empty, tmp_path / "work")


def test_snmpsim_cache_inside_data_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "public.snmprec").write_text("1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.8072\n")
    with pytest.raises(ServiceError, match="must be outside the data directory"):
        start_snmpsim(tmp_path, tmp_path / "work")


def test_server_that_exits_early_reports_command_and_log(tmp_path: Path) -> None:
    live_before = dict(localservices._live)
    with pytest.raises(ServiceError) as raised:
        start_mosquitto(tmp_path, extra_config="no_such_option true\n")
    message = str(raised.value)
    assert message.startswith("mosquitto exited early with code")
    assert f"-c {tmp_path / 'mosquitto.conf'}" in message
    assert "Unknown configuration variable" in message  # from the log tail
    assert localservices._live == live_before


def test_not_ready_in_time_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Running] = []
    real_await = localservices._await_ready

    def spy(service: Running, *args: object, **kwargs: object) -> bool:
        started.append(service)
        return real_await(service, *args, **kwargs)  # type: ignore[arg-type]

    live_before = dict(localservices._live)
    monkeypatch.setattr(localservices, "_await_ready", spy)
    monkeypatch.setattr(localservices, "READY_TIMEOUT_S", 0.0)
    with pytest.raises(ServiceError, match=r"snmpsim was not ready on 127\.0\.0\.1:\d+ within 0 s"):
        start_snmpsim(SNMPREC_DIR, tmp_path)
    assert len(started) == 1
    assert started[0].process.poll() is not None
    assert localservices._live == live_before


def test_missing_binary_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # influxd lives in /usr/bin
    with pytest.raises(ServiceError, match=r"'influxd' not found .* Debian package 'influxdb'"):
        start_influxdb(tmp_path)


# --- a port taken between free_port() and the server's bind -------------------------------


@pytest.fixture
def taken_tcp_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def taken_udp_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _hand_out_first(
    monkeypatch: pytest.MonkeyPatch, taken: int, times: int = 1
) -> Callable[[], list[int]]:
    """Make free_port() return ``taken`` for its first ``times`` calls."""
    real = localservices.free_port
    handed: list[int] = []

    def fake(kind: Literal["tcp", "udp"] = "tcp") -> int:
        port = taken if len(handed) < times else real(kind)
        handed.append(port)
        return port

    monkeypatch.setattr(localservices, "free_port", fake)
    return lambda: handed


@pytest.mark.parametrize(
    "start", [start_mosquitto, start_influxdb, start_victoria_metrics], ids=lambda f: f.__name__
)
def test_tcp_port_taken_is_retried(
    start: Callable[[Path], Running],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    taken_tcp_port: int,
) -> None:
    handed = _hand_out_first(monkeypatch, taken_tcp_port)
    service = start(tmp_path)
    try:
        assert handed()[0] == taken_tcp_port
        assert service.port != taken_tcp_port
    finally:
        _assert_stopped(service)


def test_influxdb_rpc_port_taken_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_tcp_port: int
) -> None:
    real = localservices.free_port
    calls: list[int] = []

    def fake(kind: Literal["tcp", "udp"] = "tcp") -> int:
        calls.append(0)
        return taken_tcp_port if len(calls) == 2 else real(kind)  # 2nd call: the RPC port

    monkeypatch.setattr(localservices, "free_port", fake)
    influx = start_influxdb(tmp_path)
    try:
        assert len(calls) == 4
        assert f"127.0.0.1:{taken_tcp_port}" not in (tmp_path / "influxdb.conf").read_text()
    finally:
        _assert_stopped(influx)


def test_snmpsim_udp_port_taken_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_udp_port: int
) -> None:
    handed = _hand_out_first(monkeypatch, taken_udp_port)
    agent = start_snmpsim(SNMPREC_DIR, tmp_path)
    try:
        assert handed()[0] == taken_udp_port
        assert agent.port != taken_udp_port
    finally:
        _assert_stopped(agent)


def test_port_taken_every_time_gives_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_tcp_port: int
) -> None:
    live_before = dict(localservices._live)
    _hand_out_first(monkeypatch, taken_tcp_port, times=3)
    with pytest.raises(ServiceError, match="address already in use in 3 attempts") as raised:
        start_mosquitto(tmp_path)
    assert "Address already in use" in str(raised.value)
    assert localservices._live == live_before
