"""The RoCE network port of each Ascend NPU through Huawei's `hccn_tool`.

Per chip (by its device id, as `hccn_tool -i D` takes it) four commands, each parsed into
fields of that chip's `accelerator` sample: `-link -g` (link state), `-stat -g` (packet, byte,
PFC and queue-pair error counters), `-optical -g` (the optical module's transmit and receive
power and its temperature) and `-status -g` (the port's speed). Which of hccn_tool's keys feeds
which field is the table below; keys it prints that are not in the table are not read. Only keys
seen in real output are in the tables. Not read: received PFC frames (`mac_rx_pfc_pkt_num`; the
`-stat` outputs found print it elided).

A four-lane module (QSFP) prints its powers per lane, `Tx Power0` .. `Rx Power3`: the field is
the weakest lane's, since one dirty or cracked fibre shows as one lane's receive power falling
below the module's own `RxPower Low Thres` (kept as `optical_rx_power_low_w`) while the others
stay normal, and the link then fails. A reading hccn_tool could not take (`NA`, `not
supported`, as it prints them) gives no field; a lane that prints one is left out of the
weakest (whether a dark lane prints NA or a near-zero power is not known from real output: the
captured weak lane prints 0.0054 mW).
"""

from __future__ import annotations

import math
import re

from agent.accelerators.tool_source import OutputError
from telemetry.sample import FieldValue

# `-stat -g` "key:value" lines -> counter field.
STAT_KEYS: dict[str, str] = {
    "nic_tx_all_pkg_num": "roce_tx_packets_total",
    "nic_rx_all_pkg_num": "roce_rx_packets_total",
    "nic_tx_all_oct_num": "roce_tx_bytes_total",
    "nic_rx_all_oct_num": "roce_rx_bytes_total",
    "mac_tx_pfc_pkt_num": "roce_tx_pfc_packets_total",
    "roce_qp_status_err_num": "roce_qp_errors_total",
}
# `-optical -g` "Key : value unit" lines -> (field, unit printed, factor to the field's unit).
OPTICAL_KEYS: dict[str, tuple[str, str, float]] = {
    "Tx Power": ("optical_tx_power_w", "mW", 0.001),
    "Rx Power": ("optical_rx_power_w", "mW", 0.001),
    "temperature": ("optical_temp_c", "C", 1.0),  # the module's, "47 C"
    "RxPower Low Thres": ("optical_rx_power_low_w", "mW", 0.001),
}
_LANE = re.compile(r"((?:Tx|Rx) Power)\d+")  # "Rx Power1": lane 1's
_NO_READING = ("NA", "not supported")
COMMANDS = ("-link", "-stat", "-optical", "-status")


def parse_link(text: str) -> dict[str, FieldValue]:
    """`link status: UP` (or DOWN)."""
    name, _, state = text.strip().partition(":")
    if name.strip().lower() != "link status" or state.strip() not in ("UP", "DOWN"):
        raise OutputError(f"{text.strip()[:80]!r} is not 'link status: UP|DOWN'")
    return {"roce_link_up": state.strip() == "UP"}


def parse_stat(text: str) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {}
    for number, line in enumerate(text.splitlines(), 1):
        key, colon, value = line.partition(":")
        name = STAT_KEYS.get(key.strip())
        if not colon or name is None:
            continue  # the heading, counters not read, the manual's "..."
        try:
            fields[name] = int(value.strip())
        except ValueError:
            raise OutputError(
                f"line {number}: {key.strip()} {value.strip()!r} is no count"
            ) from None
    if not fields:
        raise OutputError("none of " + ", ".join(STAT_KEYS))
    return fields


def parse_optical(text: str) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {}
    for number, line in enumerate(text.splitlines(), 1):
        key, colon, value = line.partition(":")
        lane = _LANE.fullmatch(key.strip())
        known = OPTICAL_KEYS.get(lane.group(1) if lane else key.strip())
        if not colon or known is None or value.strip() in _NO_READING:
            continue
        name, unit, factor = known
        number_text = value.strip().removesuffix(unit).strip()
        try:
            reading = float(number_text) * factor
        except ValueError:
            reading = math.nan
        if not math.isfinite(reading):  # not a number, or "nan"/"inf", which line protocol lacks
            raise OutputError(f"line {number}: {key.strip()} {value.strip()!r} is no {unit}")
        previous = fields.get(name)
        if lane is not None and isinstance(previous, float):
            reading = min(previous, reading)  # the weakest lane so far
        fields[name] = reading
    return fields


def parse_status(text: str) -> dict[str, FieldValue]:
    """`-status -g` (ethtool's report): the port's speed, `Speed: 200000Mb/s`."""
    for number, line in enumerate(text.splitlines(), 1):
        key, colon, value = line.partition(":")
        if key.strip() != "Speed" or not colon:
            continue
        speed = value.split()[0] if value.split() else ""
        if not speed.endswith("Mb/s"):
            continue  # "Unknown!" while the link is down: no speed
        try:
            return {"roce_link_speed_gbps": float(speed.removesuffix("Mb/s")) / 1000.0}
        except ValueError:
            raise OutputError(f"line {number}: Speed {value.strip()!r} is no Mb/s") from None
    return {}


PARSERS = {
    "-link": parse_link,
    "-stat": parse_stat,
    "-optical": parse_optical,
    "-status": parse_status,
}
