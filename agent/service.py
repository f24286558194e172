"""Wires the agent together: devices -> pollers -> line protocol -> publisher, plus health."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from agent.config import AgentConfig, Device
from agent.profile import builtin_profiles
from agent.publisher import Publisher
from agent.scheduler import PeriodicPoller
from agent.snmp import SnmpDevice, SnmpTarget
from agent.traps import Notification, TrapReceiver
from telemetry.lineproto import LineProtocolError, encode
from telemetry.sample import FieldValue, Sample

log = logging.getLogger(__name__)

SHUTDOWN_DRAIN_S = 5.0


def location_tags(config: AgentConfig, device: Device) -> dict[str, str]:
    return {
        **device.tags,
        "site": config.agent.site,
        "room": device.room,
        "row": device.row,
        "rack": device.rack,
        "device": device.name,
    }


def build_device(config: AgentConfig, device: Device) -> SnmpDevice:
    host, port = device.host_port()
    credentials = config.credentials[device.credentials]
    defaults = config.defaults
    target = SnmpTarget(
        host=host,
        port=port,
        community=credentials.community or "",
        version=credentials.version,
        user=credentials.user or "",
        auth_protocol=credentials.auth_protocol,
        auth_password=credentials.auth_password,
        priv_protocol=credentials.priv_protocol,
        priv_password=credentials.priv_password,
        timeout_s=device.timeout_s or defaults.timeout_s,
        retries=defaults.retries if device.retries is None else device.retries,
        max_repetitions=device.max_repetitions or defaults.max_repetitions,
    )
    profile = builtin_profiles()[device.profile] if device.profile else None
    return SnmpDevice(device.name, target, location_tags(config, device), profile)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        name = config.agent.name
        topic = f"{config.mqtt.topic_prefix}/{config.agent.site}/{name}/metrics"
        self.publisher = Publisher(config.mqtt, topic, client_id=f"rackwatch-agent-{name}")
        self.encode_errors = 0
        self.pollers: dict[str, PeriodicPoller] = {}
        self._devices_by_host = {d.host_port()[0]: d for d in config.devices}
        for device in config.devices:
            source = build_device(config, device)
            interval_s = device.interval_s or config.defaults.interval_s
            self.pollers[device.name] = PeriodicPoller(
                device.name,
                source.collect,
                self._emit,
                interval_s=interval_s,
                jitter_s=config.defaults.jitter_s,
                deadline_s=device.deadline_s or interval_s,
            )

    def _start_traps(self) -> TrapReceiver | None:
        settings = self.config.traps
        if settings is None:
            return None
        host, port = settings.host_port()
        receiver = TrapReceiver(host, port, settings.communities, settings.users, self._on_trap)
        receiver.start()
        return receiver

    def _on_trap(self, note: Notification) -> None:
        """One `snmp_trap` event; and a poll of the sender, whose readings just changed."""
        device = self._devices_by_host.get(note.source_host)
        tags = {
            "site": self.config.agent.site,
            "agent": self.config.agent.name,
            "trap_oid": note.trap_oid,
        }
        if device is not None:
            tags |= location_tags(self.config, device)
        fields: dict[str, FieldValue] = {
            "source": f"{note.source_host}:{note.source_port}",
            "varbinds": "; ".join(f"{oid}={value}" for oid, value in note.varbinds),
            "inform": note.inform,
        }
        self._emit("traps", [Sample("snmp_trap", tags, fields, time.time_ns())])
        if device is not None and self.config.traps and self.config.traps.poll_on_trap:
            self.pollers[device.name].poll_now()

    def _emit(self, origin: str, samples: Iterable[Sample]) -> None:
        lines = []
        for sample in samples:
            try:
                lines.append(encode(sample))
            except LineProtocolError as exc:
                self.encode_errors += 1
                if self.encode_errors == 1 or self.encode_errors % 1000 == 0:
                    log.warning(
                        "%s: sample %s not sent: %s (%d so far)",
                        origin,
                        sample.measurement,
                        exc,
                        self.encode_errors,
                    )
        self.publisher.submit(lines)

    def health_samples(self) -> list[Sample]:
        now = time.time_ns()
        base = {"site": self.config.agent.site, "agent": self.config.agent.name}
        samples = []
        for device in self.config.devices:
            stats = self.pollers[device.name].stats
            tags = {
                **base,
                "device": device.name,
                "room": device.room,
                "row": device.row,
                "rack": device.rack,
            }
            samples.append(
                Sample(
                    "rackwatch_agent",
                    tags,
                    {
                        "up": stats.up,
                        "polls_ok_total": stats.polls_ok,
                        "polls_failed_total": stats.polls_failed,
                        "overruns_total": stats.overruns,
                        "samples_emitted_total": stats.samples_emitted,
                        "poll_duration_s": stats.last_duration_s,
                    },
                    now,
                )
            )
        published = self.publisher.stats
        spool = self.publisher.spool
        spool_fields: dict[str, FieldValue] = {}
        if spool is not None:
            spool_fields = {
                "spool_records": spool.stats.records,
                "spool_bytes": spool.stats.bytes,
                "spooled_lines_total": published.spooled_lines,
                "replayed_lines_total": published.replayed_lines,
                "spool_dropped_records_total": spool.stats.dropped_records,
                "spool_torn_records_total": spool.stats.torn_records,
                "spool_corrupt_records_total": spool.stats.corrupt_records,
                "spool_write_errors_total": spool.stats.write_errors,
            }
        samples.append(
            Sample(
                "rackwatch_agent",
                base,
                {
                    "devices": len(self.pollers),
                    "queue_lines": self.publisher.queued_lines,
                    "published_lines_total": published.published_lines,
                    "dropped_lines_total": published.dropped_lines,
                    "mqtt_connection_failures_total": self.publisher.connection.failures,
                    "encode_errors_total": self.encode_errors,
                    "mqtt_connected": self.publisher.connected,
                    **spool_fields,
                },
                now,
            )
        )
        return samples

    async def _report_health(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            self._emit("health", self.health_samples())

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then flush what is queued (bounded in time)."""
        log.info(
            "agent %s at site %s: %d devices",
            self.config.agent.name,
            self.config.agent.site,
            len(self.pollers),
        )
        publisher = asyncio.create_task(self.publisher.run(), name="mqtt publisher")
        traps = self._start_traps()
        workers = [
            asyncio.create_task(poller.run(), name=f"device {name}")
            for name, poller in self.pollers.items()
        ]
        workers.append(asyncio.create_task(self._report_health(), name="health"))
        try:
            await stop.wait()
        finally:
            if traps is not None:
                traps.close()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._emit("health", self.health_samples())
            if not await self.publisher.drain(SHUTDOWN_DRAIN_S):
                log.warning(
                    "shutdown: %d lines not acknowledged by the broker were dropped",
                    self.publisher.queued_lines,
                )
            await self.publisher.close(publisher, timeout_s=5.0)
