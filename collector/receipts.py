"""Acknowledging MQTT messages only once every line in them is safe.

A line is safe once InfluxDB has taken it, or it was set aside as invalid, or (with a spool)
it is on disk. Each message gets a receipt counting its lines still in flight; receipts are
acknowledged in the order their messages arrived, as MQTT expects of QoS 1, and only on the
connection that delivered them. After a reconnect the broker redelivers whatever was not
acknowledged (at least once; InfluxDB stores a repeated point once).
"""

from __future__ import annotations

from collections import deque

import aiomqtt

from telemetry.mqtt import AckingClient


class Receipt:
    __slots__ = ("_owner", "client", "message", "pending")

    def __init__(self, owner: Acknowledger, client: AckingClient, message: aiomqtt.Message):
        self._owner = owner
        self.client = client
        self.message = message
        self.pending = 0  # lines of it not yet safe; set once the message is parsed

    def done(self, lines: int) -> None:
        """`lines` of this message are safe."""
        self.pending -= lines
        if self.pending <= 0:
            self._owner.flush()


class Acknowledger:
    def __init__(self) -> None:
        self._receipts: deque[Receipt] = deque()
        self.acknowledged = 0

    @property
    def outstanding(self) -> int:
        return len(self._receipts)

    def receive(self, client: AckingClient, message: aiomqtt.Message) -> Receipt:
        """A receipt for a message just read; acknowledged once `done` brings it to zero."""
        receipt = Receipt(self, client, message)
        self._receipts.append(receipt)
        return receipt

    def flush(self) -> None:
        while self._receipts and self._receipts[0].pending <= 0:
            receipt = self._receipts.popleft()
            receipt.client.ack(receipt.message)
            self.acknowledged += 1

    def forget(self) -> None:
        """The connection is gone: the broker will redeliver all of these."""
        self._receipts.clear()
