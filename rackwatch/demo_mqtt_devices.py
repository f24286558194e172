"""The demo's publishing devices: a CRAH that sends JSON and a Sparkplug B gateway with a CRAH.

Both publish to the demo's Mosquitto every PUBLISH_INTERVAL_S from a small thread, with values
that move like a real unit's. The gateway behaves as a Sparkplug 3.0 edge node: NBIRTH with its
bdSeq and DBIRTH on connect, DDATA by alias with a wrapping seq, NDEATH as its will, and births
again when the agent (the primary host) asks for a rebirth. The agent maps both into `cooling`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.mqtt_devices.sparkplug import BD_SEQ_METRIC, FLOAT, INT32, REBIRTH_METRIC, UINT64
from agent.mqtt_devices.sparkplug_b_pb2 import Payload
from rackwatch import localservices
from rackwatch.localservices import Running

PUBLISH_INTERVAL_S = 2.0
JSON_DEVICE = "crah-mqtt-1"
SPARKPLUG_DEVICE = "crah-spb-1"
GROUP, EDGE_NODE = "hall-1-bms", "gw-hall1"
JSON_TOPIC = f"demo-bms/hall-1/crah/{JSON_DEVICE}/telemetry"
NODE_TOPIC = f"spBv1.0/{GROUP}/%s/{EDGE_NODE}"
DEVICE_TOPIC = f"spBv1.0/{GROUP}/%s/{EDGE_NODE}/{SPARKPLUG_DEVICE}"

# Sparkplug metric name -> (alias, data type); the agent maps them by name.
METRICS = {
    "Temperatures/Supply Air": (1, FLOAT),
    "Temperatures/Return Air": (2, FLOAT),
    "Fans/Speed": (3, FLOAT),
    "Chilled Water/Valve": (4, FLOAT),
    "Unit/Run State": (5, INT32),
}


def agent_section(mosquitto: Running) -> dict[str, Any]:
    """The agent config's `mqtt_devices:` for the two demo devices."""
    return {
        "broker": {"host": mosquitto.host, "port": mosquitto.port},
        "stale_after_s": 30,
        "subscriptions": [
            {
                "topic": "demo-bms/{room}/crah/{device}/telemetry",
                "format": "json",
                "measurement": "cooling",
                "tags": {"row": "A", "rack": "A00", "vendor": "stulz", "model": "CyberAir"},
                "devices": {JSON_DEVICE: {}},
                "fields": {
                    "supply_air_c": {"path": "temperatures.supply", "unit": "fahrenheit"},
                    "return_air_c": {"path": "temperatures.return", "unit": "fahrenheit"},
                    "rack_inlet_c": {"path": "temperatures.server_inlet", "unit": "fahrenheit"},
                    "fan_speed_pct": {"path": "fans[0].speed", "unit": "fraction"},
                    "cooling_output_w": {"path": "capacity_kw", "unit": "kilowatt"},
                    "operating_state": {"path": "mode", "type": "enum", "enum": {"1": "on"}},
                },
                "timestamp": {"path": "ts", "format": "unix_ms"},
            }
        ],
        "sparkplug": {
            "groups": [GROUP],
            "host_id": "rackwatch-demo",
            "mappings": [
                {
                    "edge_node": "gw-*",
                    "device": "crah-*",
                    "measurement": "cooling",
                    "tags": {"room": "hall-1", "row": "B", "rack": "B00", "vendor": "vertiv"},
                    "devices": {SPARKPLUG_DEVICE: {"model": "Liebert PCW"}},
                    "metrics": {
                        "supply_air_c": {"metric": "Temperatures/Supply Air"},
                        "return_air_c": {"metric": "Temperatures/Return Air"},
                        "fan_speed_pct": {"metric": "Fans/Speed"},
                        "valve_pct": {"metric": "Chilled Water/Valve"},
                        "operating_state": {
                            "metric": "Unit/Run State",
                            "type": "enum",
                            "enum": {"0": "off", "1": "on"},
                        },
                    },
                }
            ],
        },
    }


def missing(influx: Running, database: str) -> list[str]:
    """`cooling from <device>` for each demo device with no point in InfluxDB yet."""
    series = localservices.influx_query(
        influx, database, 'SHOW TAG VALUES FROM "cooling" WITH KEY = "device"'
    )
    found = set()
    for one in series:
        rows = one.get("values")
        if isinstance(rows, list):
            found |= {str(row[1]) for row in rows if isinstance(row, list) and len(row) == 2}
    return [f"cooling from {d}" for d in (JSON_DEVICE, SPARKPLUG_DEVICE) if d not in found]


class DemoPublishers:
    def __init__(self, host: str, port: int) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()  # seq is shared by the timer and paho's network thread
        self._seq = 0
        self._bd_seq = 0
        self._started = time.monotonic()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"demo-{EDGE_NODE}", protocol=mqtt.MQTTv5
        )
        self._client.will_set(NODE_TOPIC % "NDEATH", self._death(), qos=1)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect_async(host, port)
        self._thread = threading.Thread(target=self._publish_forever, name="demo devices")

    def start(self) -> None:
        self._client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._client.publish(NODE_TOPIC % "NDEATH", self._death(), qos=1).wait_for_publish(2)
        self._client.disconnect()
        self._client.loop_stop()

    # -- Sparkplug edge node ---------------------------------------------------------------

    def _death(self) -> bytes:
        metric = Payload.Metric(name=BD_SEQ_METRIC, datatype=UINT64, long_value=self._bd_seq)
        return Payload(timestamp=_now_ms(), metrics=[metric]).SerializeToString()

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        client.subscribe(NODE_TOPIC % "NCMD", qos=1)
        self._births()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        command = Payload.FromString(bytes(message.payload))
        if any(m.name == REBIRTH_METRIC and m.boolean_value for m in command.metrics):
            self._births()

    def _births(self) -> None:
        with self._lock:
            self._seq = 0
            now = _now_ms()
            bd_seq = Payload.Metric(name=BD_SEQ_METRIC, datatype=UINT64, long_value=self._bd_seq)
            node = Payload(timestamp=now, seq=self._next_seq(), metrics=[bd_seq])
            self._client.publish(NODE_TOPIC % "NBIRTH", node.SerializeToString())
            metrics = [
                _metric(name, alias, datatype, value, with_name=True)
                for (name, (alias, datatype)), value in zip(
                    METRICS.items(), self._readings(), strict=True
                )
            ]
            device = Payload(timestamp=now, seq=self._next_seq(), metrics=metrics)
            self._client.publish(DEVICE_TOPIC % "DBIRTH", device.SerializeToString())

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _readings(self) -> list[float]:
        swing = math.sin((time.monotonic() - self._started) / 20)
        return [18.5 + 0.6 * swing, 31.0 + 1.2 * swing, 62.0 + 8 * swing, 45.0 + 10 * swing, 1]

    # -- both devices, every interval ------------------------------------------------------

    def _publish_forever(self) -> None:
        while not self._stop.wait(PUBLISH_INTERVAL_S):
            if not self._client.is_connected():
                continue
            swing = math.sin((time.monotonic() - self._started) / 15)
            document = {
                "ts": _now_ms(),
                "temperatures": {
                    "supply": round(64.4 + 1.5 * swing, 1),
                    "return": round(87.8 + 2.0 * swing, 1),
                    "server_inlet": round(71.6 + 1.2 * swing, 1),
                },
                "fans": [{"speed": round(0.58 + 0.05 * swing, 3)}],
                "capacity_kw": round(38 + 4 * swing, 1),
                "mode": 1,
            }
            self._client.publish(JSON_TOPIC, json.dumps(document), qos=1)
            with self._lock:
                metrics = [
                    _metric(name, alias, datatype, value, with_name=False)
                    for (name, (alias, datatype)), value in zip(
                        METRICS.items(), self._readings(), strict=True
                    )
                ]
                data = Payload(timestamp=_now_ms(), seq=self._next_seq(), metrics=metrics)
                self._client.publish(DEVICE_TOPIC % "DDATA", data.SerializeToString())


def _metric(
    name: str, alias: int, datatype: int, value: float, *, with_name: bool
) -> Payload.Metric:
    metric = Payload.Metric(alias=alias, timestamp=_now_ms())
    if with_name:  # births name each metric and its type; data sends the alias alone
        metric.name, metric.datatype = name, datatype
    if datatype == FLOAT:
        metric.float_value = value
    else:
        metric.int_value = int(value)
    return metric


def _now_ms() -> int:
    return time.time_ns() // 10**6
