"""A collector frozen (SIGSTOP) past its keepalive finds, when it runs again, that the broker
has hung up: it says so in one line and connects again, with no traceback.

aiomqtt 2.5 schedules "watch the socket for writing" by file number and the socket can be
closed before that runs, or a stale watch meets the next socket under the same number; uvloop
then logged a traceback (telemetry/mqtt.py, _Client).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiomqtt
import pytest
import yaml

from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.mqtt import BrokerSettings
from tests.test_end_to_end import eventually, rackwatch_process

pytestmark = pytest.mark.integration


def test_the_hooks_the_race_fix_overrides_are_still_aiomqtts() -> None:
    assert callable(aiomqtt.Client._on_socket_register_write)
    assert callable(aiomqtt.Client._on_socket_close)
    assert BrokerSettings().keepalive_s <= 10  # a dead broker is noticed within seconds


async def test_a_collector_frozen_past_its_keepalive_reconnects_without_a_traceback(
    influxdb: Running, database: str, unique: str, tmp_path: Path
) -> None:
    broker = localservices.start_mosquitto(tmp_path / "mosquitto")
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": f"frozen-{unique}",
                "mqtt": {"host": broker.host, "port": broker.port, "keepalive_s": 5},
                "influxdb": {"url": influxdb.url(), "database": database},
                "dead_letter_path": str(tmp_path / "dead.jsonl"),
                "health_interval_s": 3600,
            }
        )
    )
    log = tmp_path / "collector.log"
    collector = await rackwatch_process("collector", config, log)
    try:
        await eventually(lambda: b"subscribed to" in log.read_bytes(), 20)
        collector.send_signal(signal.SIGSTOP)
        # Mosquitto hangs up on a client silent for 1.5 keepalives.
        await eventually(lambda: b"has exceeded timeout" in broker.log_path.read_bytes(), 30)
        collector.send_signal(signal.SIGCONT)
        await eventually(lambda: log.read_bytes().count(b"connected again") >= 1, 30)
        await eventually(lambda: log.read_bytes().count(b"subscribed to") == 2, 30)
    finally:
        collector.send_signal(signal.SIGCONT)
        collector.terminate()
        await asyncio.wait_for(collector.wait(), 30)
        localservices.stop(broker)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert text.count(f"(client rackwatch-collector-frozen-{unique}):") == 2  # lost, back
