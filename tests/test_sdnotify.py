"""Running under systemd, for real: a real `$NOTIFY_SOCKET` hears READY, WATCHDOG pings,
RELOADING/READY around SIGHUP and STOPPING from running `rackwatch agent` and `collector`
processes; a bad config on SIGHUP is refused while the old one runs on; the Prometheus
endpoint serves the health counters."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiomqtt
import httpx
import pytest
import yaml

from agent.config import AgentConfig
from agent.service import Agent
from collector.config import CollectorConfig
from collector.service import Collector
from rackwatch.localservices import Running, free_port, influx_query
from telemetry.sdnotify import Notifier
from tests.test_end_to_end import eventually, rackwatch_process

pytestmark = pytest.mark.integration

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


class NotifyListener:
    """The service manager's end of `$NOTIFY_SOCKET`: a bound AF_UNIX datagram socket, read
    all the time as systemd does (senders block once a few datagrams wait unread:
    net.unix.max_dgram_qlen is 10 here)."""

    def __init__(self, address: str) -> None:
        self.address = address  # a path, or @name for an abstract socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []
        self._queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self.sock.close()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self._queue.put_nowait(dict(line.split("=", 1) for line in data.decode().splitlines()))

    async def next(self, timeout_s: float = 20.0) -> dict[str, str]:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        message = await asyncio.wait_for(self._queue.get(), timeout_s)
        self.messages.append(message)
        return message

    async def until(self, key: str, timeout_s: float = 20.0) -> dict[str, str]:
        """The next message carrying `key`; WATCHDOG pings in between are kept, not returned."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            message = await self.next(max(0.1, deadline - asyncio.get_running_loop().time()))
            if key in message:
                return message

    def count(self, key: str) -> int:
        return sum(key in message for message in self.messages)


@contextmanager
def listening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    """A notify socket in `tmp_path`, named to the processes started inside (env inherited)."""
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    try:
        yield listener
    finally:
        listener.close()


@asynccontextmanager
async def process(role: str, config: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await rackwatch_process(role, config, log)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` whose labels include `labels`."""
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match[1] for k, v in labels.items()):
            return float(match[2])
    return None


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    return response.text


# --- the notifier on its own ----------------------------------------------------------------


async def test_notifier_speaks_the_protocol_on_an_abstract_socket(unique: str) -> None:
    listener = NotifyListener(f"@rackwatch-test-{unique}")
    notifier = Notifier({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "3000000"})
    try:
        assert notifier.watchdog_s == 3.0
        assert notifier.ready("polling 3 devices")
        assert await listener.next() == {"READY": "1", "STATUS": "polling 3 devices"}
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading()
        reloading = await listener.next()
        assert reloading["RELOADING"] == "1"
        assert int(reloading["MONOTONIC_USEC"]) >= before
        assert notifier.stopping()
        assert await listener.next() == {"STOPPING": "1"}
    finally:
        notifier.close()
        listener.close()


def test_notifier_without_a_socket_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_s is None


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    other = str(os.getpid() + 1)
    notifier = Notifier(
        {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": other}
    )
    assert notifier.watchdog_s is None
    mine = Notifier({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_s == 0.001


def test_a_vanished_manager_is_reported_once_and_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not notifier.ready()
    assert not notifier.watchdog()
    notifier.close()
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


# --- the agent process --------------------------------------------------------------------


def agent_settings(
    mosquitto: Running, snmpsim: Running, prefix: str, metrics_port: int, recordings: list[str]
) -> dict[str, object]:
    return {
        "agent": {"name": "notify-agent", "site": "qiyang-a1"},
        "mqtt": {
            "host": mosquitto.host,
            "port": mosquitto.port,
            "topic_prefix": prefix,
            "flush_interval_s": 0.2,
        },
        "defaults": {"interval_s": 1, "jitter_s": 0, "timeout_s": 1},
        "health_interval_s": 1,
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "credentials": {r: {"community": r} for r in recordings},
        "devices": [
            {"name": f"pdu-{r}", "address": f"{snmpsim.host}:{snmpsim.port}", "credentials": r}
            for r in recordings
        ],
    }


async def metric_reaches(port: int, name: str, least: float, **labels: str) -> float:
    """Scrape until `name{labels}` is at least `least`; its value."""
    deadline = time.monotonic() + 20
    while True:
        value = metric(await scrape(port), name, **labels)
        if value is not None and value >= least:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} = {value}, wanted >= {least}")
        await asyncio.sleep(0.3)


async def test_agent_notifies_systemd_and_reloads_on_sighup(
    mosquitto: Running,
    snmpsim: Running,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix, port = f"rackwatch/v1-{unique}", free_port()
    config, log = tmp_path / "agent.yaml", tmp_path / "agent.log"
    one, two = "apc_ap8853", "apc_ap8959eu3"
    settings = agent_settings(mosquitto, snmpsim, prefix, port, [one])
    config.write_text(yaml.safe_dump(settings))
    published: list[bytes] = []

    async def subscribe() -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe(f"{prefix}/#", qos=1)
            async for message in client.messages:
                published.append(bytes(message.payload))

    subscriber = asyncio.create_task(subscribe())
    with listening(tmp_path, monkeypatch) as notify:
        async with process("agent", config, log) as agent:
            assert (await notify.until("READY"))["STATUS"] == "running"
            for _ in range(3):  # pinged from the event loop, at half of WATCHDOG_USEC
                await notify.until("WATCHDOG")
            polls_before = await metric_reaches(
                port, "rackwatch_agent_polls_ok_total", 2, device=f"pdu-{one}"
            )

            # A good config: one more device (applied), a bigger MQTT batch (held).
            settings = agent_settings(mosquitto, snmpsim, prefix, port, [one, two])
            settings["mqtt"]["max_batch_lines"] = 500  # type: ignore[index]
            config.write_text(yaml.safe_dump(settings))
            agent.send_signal(signal.SIGHUP)
            assert "MONOTONIC_USEC" in await notify.until("RELOADING")
            status = (await notify.until("READY"))["STATUS"]
            assert status.startswith("running; reloaded at ")
            assert status.endswith("restart pending for mqtt")
            await metric_reaches(port, "rackwatch_agent_polls_ok_total", 1, device=f"pdu-{two}")
            # The unchanged device kept its poller and counters; the publisher kept its topic.
            await metric_reaches(
                port, "rackwatch_agent_polls_ok_total", polls_before + 1, device=f"pdu-{one}"
            )
            await eventually(lambda: any(f"device=pdu-{two}".encode() in p for p in published))

            # A broken config is refused; everything goes on as before.
            config.write_text(config.read_text().replace("interval_s: 1\n", "interval_s: fast\n"))
            agent.send_signal(signal.SIGHUP)
            await notify.until("RELOADING")
            assert "refused" in (await notify.until("READY"))["STATUS"]
            polls_two = metric(
                await scrape(port), "rackwatch_agent_polls_ok_total", device=f"pdu-{two}"
            )
            assert polls_two is not None
            await metric_reaches(
                port, "rackwatch_agent_polls_ok_total", polls_two + 2, device=f"pdu-{two}"
            )

            pings = notify.count("WATCHDOG")
            agent.send_signal(signal.SIGTERM)
            await notify.until("STOPPING")
            assert await asyncio.wait_for(agent.wait(), 30) == 0
    subscriber.cancel()
    output = log.read_text()
    assert "changes to mqtt take effect at the next restart" in output
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "fast" in text)
    assert (
        f"reload refused, the running config stays: {config}:{line}: defaults.interval_s: "
        in output
    )
    assert pings >= 5


def offline_agent(mqtt_port: int, snmpsim: Running, device: str, batch: int) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "agent": {"name": "queue-agent", "site": "qiyang-a1"},
            "mqtt": {"port": mqtt_port, "max_batch_lines": batch},
            "defaults": {"interval_s": 0.5, "jitter_s": 0, "timeout_s": 1},
            "health_interval_s": 0.2,
            "credentials": {"default": {"community": "apc_ap8853"}},
            "devices": [{"name": device, "address": f"{snmpsim.host}:{snmpsim.port}"}],
        }
    )


async def test_agent_reload_keeps_the_publisher_and_its_queue(snmpsim: Running) -> None:
    """The broker is away: lines wait in the publisher's queue; a reload keeps every one."""
    mqtt_port = free_port()  # nothing listens there
    agent = Agent(offline_agent(mqtt_port, snmpsim, "pdu-a", 2000))
    publisher = agent.publisher
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:

        def polled_and_queued() -> bool:
            """pdu-a polled and lines queued for the broker"""
            return agent.pollers["pdu-a"].stats.polls_ok >= 1 and publisher.queued_lines > 0

        await eventually(polled_and_queued)
        queued = publisher.queued_lines
        held = await agent.reload(offline_agent(mqtt_port, snmpsim, "pdu-b", 7))
        assert held == ["mqtt"]
        assert agent.publisher is publisher
        assert publisher.queued_lines >= queued
        assert agent.config.mqtt.max_batch_lines == 2000  # what runs is what config says
        assert list(agent.pollers) == ["pdu-b"]
        await eventually(lambda: agent.pollers["pdu-b"].stats.polls_ok >= 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


# --- the collector process ----------------------------------------------------------------


def collector_settings(
    mosquitto: Running, influx_url: str, database: str, unique: str, metrics_port: int
) -> dict[str, object]:
    return {
        "name": f"notify-{unique}",
        "mqtt": {
            "host": mosquitto.host,
            "port": mosquitto.port,
            "topic": f"{unique}/#",
            "group": unique,
            "client_id": f"collector-notify-{unique}",
        },
        "influxdb": {"url": influx_url, "database": database, "timeout_s": 2},
        "batch": {"max_lines": 5000, "max_delay_s": 0.2},
        "retry": {"initial_s": 0.1, "max_s": 0.5},
        "health_interval_s": 0.5,
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
    }


async def publish_points(mosquitto: Running, unique: str, first: int, count: int) -> None:
    lines = "".join(
        f"notify,n={i} v={i}i {1700000000000000000 + i}\n" for i in range(first, first + count)
    )
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.publish(f"{unique}/site/agent/metrics", lines.encode(), qos=1)


def stored(influxdb: Running, database: str) -> int:
    rows = influx_query(influxdb, database, 'SELECT count("v") FROM "notify"')
    return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]


async def publish_until(
    done: Callable[[], bool], mosquitto: Running, unique: str, first: int
) -> None:
    """Publish points first..first+9 until `done()`: READY does not wait for the broker (nor
    for the subscription), so the first message may find nobody. Points are idempotent."""
    deadline = time.monotonic() + 20
    while not done():
        assert time.monotonic() < deadline, f"points from {first} never arrived"
        await publish_points(mosquitto, unique, first, 10)
        await asyncio.sleep(0.5)


async def test_collector_notifies_systemd_and_reloads_influxdb_settings(
    mosquitto: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    other_database = f"{database}_b"
    config, log = tmp_path / "collector.yaml", tmp_path / "collector.log"
    settings = collector_settings(mosquitto, influxdb.url(), database, unique, port)
    settings["dead_letter_path"] = str(tmp_path / "dead.jsonl")
    settings["influxdb"]["create_database"] = True  # type: ignore[index]
    config.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("RACKWATCH_LOG_FORMAT", "json")
    with listening(tmp_path, monkeypatch) as notify:
        async with process("collector", config, log) as collector:
            assert (await notify.until("READY"))["STATUS"] == "running"
            await notify.until("WATCHDOG")
            await publish_until(lambda: stored(influxdb, database) == 10, mosquitto, unique, 0)
            await metric_reaches(port, "rackwatch_collector_lines_written_total", 10)

            # Another database (applied: later writes go there) and another group (held).
            settings["influxdb"]["database"] = other_database  # type: ignore[index]
            settings["mqtt"]["group"] = f"{unique}-b"  # type: ignore[index]
            config.write_text(yaml.safe_dump(settings))
            collector.send_signal(signal.SIGHUP)
            await notify.until("RELOADING")
            assert (await notify.until("READY"))["STATUS"].endswith("restart pending for mqtt")
            await publish_until(
                lambda: stored(influxdb, other_database) == 10, mosquitto, unique, 10
            )

            # A config that does not validate is refused; writes go on where they went.
            settings["influxdb"]["api"] = "v3"  # type: ignore[index]
            config.write_text(yaml.safe_dump(settings))
            collector.send_signal(signal.SIGHUP)
            await notify.until("RELOADING")
            assert "refused" in (await notify.until("READY"))["STATUS"]
            await publish_until(
                lambda: stored(influxdb, other_database) == 20, mosquitto, unique, 20
            )
            assert stored(influxdb, database) == 10

            collector.send_signal(signal.SIGTERM)
            await notify.until("STOPPING")
            assert await asyncio.wait_for(collector.wait(), 30) == 0
    entries = [json.loads(line) for line in log.read_text().splitlines()]  # JSON, every line
    messages = {entry["message"]: entry for entry in entries}
    assert (
        messages["reloaded the config; changes to mqtt take effect at the next restart"]["level"]
        == "warning"
    )
    refused = next(e for e in entries if e["message"].startswith("reload refused"))
    assert refused["level"] == "error"
    assert refused["logger"] == "rackwatch"
    assert refused["message"].startswith(f"reload refused, the running config stays: {config}:")
    assert "influxdb.api: Input should be 'v1' or 'v2'" in refused["message"]
    assert not any("/write?" in e["message"] for e in entries)  # httpx's URLs carry passwords


async def test_collector_reload_sends_waiting_batches_to_the_new_influxdb(
    mosquitto: Running, influxdb: Running, database: str, unique: str
) -> None:
    """InfluxDB configured wrong (nothing listens there): the batch in flight retries and later
    lines wait. A reload with the right URL delivers all of them; none is lost."""
    dead_url = f"http://127.0.0.1:{free_port()}"
    settings = collector_settings(mosquitto, dead_url, database, unique, free_port())
    del settings["metrics"]
    collector = Collector(CollectorConfig.model_validate(settings))
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        await collector.ready.wait()
        await publish_until(lambda: collector.ingest.stats.messages > 0, mosquitto, unique, 0)
        for first in (10, 20):
            await publish_points(mosquitto, unique, first, 10)
        await eventually(lambda: collector.writer.stats.retries >= 2)
        fixed = CollectorConfig.model_validate(
            collector_settings(mosquitto, influxdb.url(), database, unique, free_port())
        )
        assert await collector.reload(fixed) == []
        await eventually(lambda: stored(influxdb, database) == 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_agent_reload_reopens_the_trap_receiver_with_new_communities(
    mosquitto: Running, unique: str
) -> None:
    port = free_port("udp")

    def config(community: str) -> AgentConfig:
        return AgentConfig.model_validate(
            {
                "agent": {"name": "trap-reload", "site": "qiyang-a1"},
                "mqtt": {
                    "host": mosquitto.host,
                    "port": mosquitto.port,
                    "topic_prefix": unique,
                    "flush_interval_s": 0.1,
                },
                "traps": {"listen": f"127.0.0.1:{port}", "communities": [community]},
            }
        )

    async def trap(community: str, oid: str) -> None:
        sender = await asyncio.create_subprocess_exec(
            "snmptrap", "-v", "2c", "-c", community, f"127.0.0.1:{port}", "", oid
        )
        assert await asyncio.wait_for(sender.wait(), 20) == 0

    received: list[bytes] = []

    async def listen() -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe(f"{unique}/#", qos=1)
            async for message in client.messages:
                received.extend(bytes(message.payload).splitlines())

    listener = asyncio.create_task(listen())
    agent = Agent(config("old-community"))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await agent.ready.wait()
        await trap("old-community", "1.3.6.1.4.1.318.0.1")
        await eventually(lambda: any(b"1.3.6.1.4.1.318.0.1" in line for line in received))
        assert await agent.reload(config("new-community")) == []
        await trap("old-community", "1.3.6.1.4.1.318.0.2")  # refused now
        await trap("new-community", "1.3.6.1.4.1.318.0.3")
        await eventually(lambda: any(b"1.3.6.1.4.1.318.0.3" in line for line in received))
        assert not any(b"1.3.6.1.4.1.318.0.2" in line for line in received)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        listener.cancel()


async def test_a_reload_refused_for_its_rules_file_says_so_and_why(
    mosquitto: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The config loads but the rules file it names does not: the reload is refused as a
    whole, STATUS= gives the first problem, the running rules stay; a good file then loads."""
    rules = tmp_path / "rules.yaml"
    good_rules = "rules:\n  - alert: Hot\n    measurement: notify\n    field: v\n    above: 1e9\n"
    rules.write_text(good_rules, encoding="utf-8")
    config, log = tmp_path / "collector.yaml", tmp_path / "collector.log"
    settings = collector_settings(mosquitto, influxdb.url(), database, unique, free_port())
    settings["alerting"] = {
        "rules_file": "rules.yaml",  # beside the config
        "state_path": str(tmp_path / "alert-state.json"),
        "receivers": [{"name": "noc", "kind": "webhook", "url": f"http://127.0.0.1:{free_port()}"}],
        "route": {"receiver": "noc"},
    }
    config.write_text(yaml.safe_dump(settings))
    with listening(tmp_path, monkeypatch) as notify:
        async with process("collector", config, log) as collector:
            assert (await notify.until("READY"))["STATUS"] == "running"
            rules.write_text(good_rules.replace("above: 1e9", "above: 1e9\n    for: soon"))
            collector.send_signal(signal.SIGHUP)
            await notify.until("RELOADING")
            status = (await notify.until("READY"))["STATUS"]
            assert re.fullmatch(
                rf"running; reload at \d\d:\d\d:\d\d refused: {rules}:6: rules\[0\]\.for: "
                r"'soon' is not a duration .*",
                status,
            ), status
            assert "reloaded" not in status

            rules.write_text(good_rules.replace("Hot", "Hotter"))
            collector.send_signal(signal.SIGHUP)
            await notify.until("RELOADING")
            assert re.fullmatch(
                r"running; reloaded at \d\d:\d\d:\d\d", (await notify.until("READY"))["STATUS"]
            )
            collector.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(collector.wait(), 30) == 0
    output = log.read_text()
    refused = f"reload refused, the running config stays: {rules}:6: rules[0].for: 'soon'"
    assert refused in output
    assert output.count("alert rules reloaded") == 1  # the good file only


async def test_a_restart_binds_the_metrics_port_while_the_old_process_drains(
    mosquitto: Running,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """InfluxDB is away, so the stopping collector spends its flush time (10 s) trying to
    write; the new process, started at once, binds the same metrics port meanwhile."""
    port = free_port()
    dead_influx = f"http://127.0.0.1:{free_port()}"
    config, log = tmp_path / "collector.yaml", tmp_path / "collector.log"
    config.write_text(
        yaml.safe_dump(collector_settings(mosquitto, dead_influx, "db", unique, port))
    )
    with listening(tmp_path, monkeypatch) as notify:
        async with process("collector", config, log) as old:
            assert (await notify.until("READY"))["STATUS"] == "running"
            await metric_reaches(port, "rackwatch_collector_messages_total", 0)
            old.send_signal(signal.SIGTERM)
            await notify.until("STOPPING")
            async with process("collector", config, log) as new:
                assert (await notify.until("READY"))["STATUS"] == "running"
                assert old.returncode is None  # still draining: the port was let go first
                assert "rackwatch_collector_pending_lines" in await scrape(port)
                assert await asyncio.wait_for(old.wait(), 30) == 0
                new.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(new.wait(), 30) == 0
    assert "cannot listen" not in log.read_text()


async def test_a_metrics_port_refused_on_reload_shows_in_the_status(
    mosquitto: Running,
    influxdb: Running,
    database: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The config reloads but its new metrics port is taken: STATUS= says so and where the
    endpoint stays; once the port is free, the next reload moves it."""
    old_port = free_port()
    config, log = tmp_path / "collector.yaml", tmp_path / "collector.log"
    settings = collector_settings(mosquitto, influxdb.url(), database, unique, old_port)
    config.write_text(yaml.safe_dump(settings))
    with (
        socket.create_server(("127.0.0.1", 0)) as taken,
        listening(tmp_path, monkeypatch) as notify,
    ):
        new_port = taken.getsockname()[1]
        async with process("collector", config, log) as collector:
            assert (await notify.until("READY"))["STATUS"] == "running"
            settings["metrics"] = {"listen": f"127.0.0.1:{new_port}"}
            config.write_text(yaml.safe_dump(settings))
            collector.send_signal(signal.SIGHUP)
            await notify.until("RELOADING")
            status = (await notify.until("READY"))["STATUS"]
            assert re.fullmatch(
                rf"running; reloaded at \d\d:\d\d:\d\d; metrics.listen 127.0.0.1:{new_port} "
                rf"refused: Address already in use, still on 127.0.0.1:{old_port}",
                status,
            ), status
            assert "rackwatch_collector_pending_lines" in await scrape(old_port)

            taken.close()
            collector.send_signal(signal.SIGHUP)
            await notify.until("RELOADING")
            assert re.fullmatch(
                r"running; reloaded at \d\d:\d\d:\d\d", (await notify.until("READY"))["STATUS"]
            )
            assert "rackwatch_collector_pending_lines" in await scrape(new_port)
            with pytest.raises(httpx.ConnectError):
                await scrape(old_port)
            collector.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(collector.wait(), 30) == 0
