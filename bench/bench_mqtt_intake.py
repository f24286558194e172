"""Small messages through one collector: the rate it sustains as a ratio to the rate offered,
and whether the broker dropped any (docs/benchmarks.md, "MQTT intake").

    .venv/bin/python bench/bench_mqtt_intake.py [--rate 3000] [--messages 60000] [--lines 10]
        [--receive-maximum N] [--collectors 1]
    .venv/bin/python bench/bench_mqtt_intake.py --backlog --messages 300000

A private Mosquitto with the broker settings rackwatch ships (configs/mosquitto/rackwatch.conf),
a private InfluxDB 1.x and one `rackwatch collector` process. Publishers offer `--messages`
QoS 1 messages of `--lines` lines each at `--rate` per second (several MQTT connections, as many
agents would) and count the broker's acknowledgements. The clock stops when InfluxDB counts every
line; sustained = messages / that time. Dropped: the broker's own counter
($SYS/broker/publish/messages/dropped), read after the run. Collector CPU: user + system time of
the collector processes per message, which says what one core could take on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.mqtt import BrokerSettings, Reconnecting, Session, payload_bytes

BASE_NS = 1_700_000_000_000_000_000
MEASUREMENT = "intake"
PUBLISHERS = 4  # MQTT connections the load is spread over


def message(number: int, lines: int) -> bytes:
    """Message `number`: `lines` points in `lines` series, all at a timestamp of its own."""
    return "".join(
        f"{MEASUREMENT},series={j} v={number}i {BASE_NS + number}\n" for j in range(lines)
    ).encode()


@dataclass
class Offered:
    acknowledged: int = 0  # PUBACK with reason 0: the broker took it for a subscriber
    refused: int = 0  # any other reason code (0x10: no matching subscribers)
    elapsed_s: float = 0.0


def offer(
    broker: Running, topic: str, messages: int, rate: float, lines: int, timeout_s: float = 120
) -> Offered:
    """Publish `messages` at `rate` per second over PUBLISHERS connections; wait for every
    PUBACK (or `timeout_s`)."""
    result = Offered()
    lock = threading.Lock()
    done = threading.Event()

    def on_publish(
        client: paho.Client, userdata: object, mid: int, reason: object, _: object
    ) -> None:
        with lock:
            if getattr(reason, "value", reason) == 0:
                result.acknowledged += 1
            else:
                result.refused += 1
            if result.acknowledged + result.refused == messages:
                done.set()

    clients = []
    for i in range(PUBLISHERS):
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"intake-{i}", protocol=paho.MQTTv5
        )
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.on_publish = on_publish
        client.connect(broker.host, broker.port)
        client.loop_start()
        clients.append(client)
    try:
        started = time.monotonic()
        for number in range(messages):
            due = started + number / rate
            if (wait := due - time.monotonic()) > 0.001:
                time.sleep(wait)
            clients[number % PUBLISHERS].publish(topic, message(number, lines), qos=1)
        if not done.wait(timeout_s):
            raise TimeoutError(f"{result} of {messages} acknowledged within {timeout_s} s")
        result.elapsed_s = time.monotonic() - started
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
    return result


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored(influx: Running, database: str) -> int:
    rows = localservices.influx_query(influx, database, f'SELECT count("v") FROM "{MEASUREMENT}"')
    return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]


async def broker_dropped(broker: Running) -> int:
    """The broker's count of messages it dropped (queue full), from its $SYS tree."""
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe("$SYS/broker/publish/messages/dropped")
        async for reply in client.messages:
            return int(payload_bytes(reply))
    raise RuntimeError("no $SYS reply")


def collector_config(
    broker: Running, influx: Running, database: str, topic: str, workdir: Path, **mqtt: object
) -> Path:
    config = workdir / f"collector-{mqtt.get('client_id', 0)}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": f"intake-{database}",
                "mqtt": {"host": broker.host, "port": broker.port, "topic": topic, **mqtt},
                "influxdb": {"url": influx.url(), "database": database},
                "dead_letter_path": str(workdir / "dead.jsonl"),
                "health_interval_s": 3600,
            }
        )
    )
    return config


def run(args: argparse.Namespace, workdir: Path) -> None:
    influx = localservices.start_influxdb(workdir / "influxdb")
    broker = localservices.start_mosquitto(
        workdir / "mosquitto", persistent=True, extra_config="sys_interval 1"
    )
    database, topic = "intake", "rackwatch/v1/bench/agent/metrics"
    localservices.influx_create_database(influx, database)
    mqtt = {} if args.receive_maximum is None else {"receive_maximum": args.receive_maximum}
    collectors, logs = [], []
    for i in range(args.collectors):  # one share group
        config = collector_config(
            broker, influx, database, "rackwatch/v1/#", workdir, client_id=f"c{i}", **mqtt
        )
        logs.append(workdir / f"collector-{i}.log")
        with logs[-1].open("wb") as out:
            collectors.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rackwatch", "collector", "-c", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        for log, collector in zip(logs, collectors, strict=True):
            while b"subscribed to" not in log.read_bytes():
                if collector.poll() is not None:
                    raise SystemExit(log.read_text())
                time.sleep(0.05)
        cpu_before = sum(cpu_seconds(c.pid) for c in collectors)
        started = time.monotonic()
        offered = offer(broker, topic, args.messages, args.rate, args.lines)
        want, have = args.messages * args.lines, 0
        elapsed = last_change = time.monotonic() - started
        while have < want and time.monotonic() - started - last_change < 10:
            time.sleep(0.2)
            if (count := stored(influx, database)) != have:
                have, last_change = count, time.monotonic() - started
        elapsed = last_change  # when the last line arrived
        cpu_s = sum(cpu_seconds(c.pid) for c in collectors) - cpu_before
        time.sleep(1.5)  # one more $SYS interval, so the counter covers the whole run
        dropped = asyncio.run(broker_dropped(broker))
    finally:
        for collector in collectors:
            collector.terminate()
            collector.wait(30)
        localservices.stop(broker)
        localservices.stop(influx)
    offered_rate = args.messages / offered.elapsed_s
    sustained = have / args.lines / elapsed
    print(
        f"{args.messages} messages of {args.lines} lines offered at {offered_rate:,.0f}/s "
        f"(asked {args.rate:,.0f}/s) over {PUBLISHERS} connections to {args.collectors} "
        f"collector(s); receive_maximum {args.receive_maximum or 'default'}"
    )
    print(f"acknowledged by the broker: {offered.acknowledged}, refused: {offered.refused}")
    print(f"stored: {have} of {want} lines; broker dropped {dropped} messages")
    print(
        f"sustained: {sustained:,.0f} messages/s ({sustained * args.lines:,.0f} lines/s), "
        f"{sustained / offered_rate:.2f} of the offered rate"
    )
    print(
        f"collector CPU: {cpu_s / args.messages * 1e6:,.0f} us per message, so one core "
        f"takes ~{args.messages / cpu_s:,.0f} messages/s"
    )


async def park(broker: Running, topic: str) -> None:
    """Subscribe over a persistent session and leave: the broker queues for it from now on."""

    async def subscribe(client: aiomqtt.Client) -> None:
        await client.subscribe(topic, qos=1)

    settings = BrokerSettings(host=broker.host, port=broker.port)
    await Reconnecting(settings, "away", Session(persistent=True)).run(subscribe)


def backlog(args: argparse.Namespace, workdir: Path) -> None:
    """--backlog: no collector, so everything queues in the broker; what saving that store
    every second or two costs the broker (its CPU while otherwise idle, and its intake)."""
    broker = localservices.start_mosquitto(workdir / "mosquitto", persistent=True)
    store = workdir / "mosquitto" / "mosquitto.db"
    try:
        asyncio.run(park(broker, "rackwatch/v1/#"))
        offered = offer(broker, "rackwatch/v1/bench/agent/metrics", args.messages, 1e9, args.lines)
        saves, mtime = 0, store.stat().st_mtime
        cpu_before, started = cpu_seconds(broker.process.pid), time.monotonic()
        while time.monotonic() - started < 10:
            time.sleep(0.05)
            if store.stat().st_mtime != mtime:
                saves, mtime = saves + 1, store.stat().st_mtime
        cpu_s = cpu_seconds(broker.process.pid) - cpu_before
        size = store.stat().st_size
    finally:
        localservices.stop(broker)
    print(
        f"{args.messages} messages of {args.lines} lines queued for an absent collector, "
        f"taken at {args.messages / offered.elapsed_s:,.0f}/s (as fast as the broker would)"
    )
    print(
        f"store {size / 1e6:,.0f} MB, saved {saves} times in 10 s idle: "
        f"{cpu_s / 10:.0%} of a core, {size * saves / 10 / 1e6:,.0f} MB/s written"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=3000)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--lines", type=int, default=10)
    parser.add_argument("--receive-maximum", type=int, default=None)
    parser.add_argument("--collectors", type=int, default=1, help="in one share group")
    parser.add_argument("--backlog", action="store_true", help="no collector: the save cost")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-") as tmp:
        (backlog if args.backlog else run)(args, Path(tmp))


if __name__ == "__main__":
    main()
