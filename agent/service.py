"""Wires the agent together: devices -> pollers -> line protocol -> publisher, plus health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from agent.accelerators.sources import Accelerators
from agent.config import AgentConfig, Device
from agent.mqtt_devices.subscriber import DeviceSubscriber
from agent.open_files import check_open_files
from agent.publisher import Publisher
from agent.registry import load_registry
from agent.scheduler import FAILED, FAILURE_REASONS, PeriodicPoller, PollStats
from agent.snmp import SnmpDevice, SnmpTarget, UnsupportedDevice
from agent.traps import Notification, TrapNames, TrapNamesError, TrapReceiver
from agent.workers import ONLY, Worker
from telemetry.lineproto import LineProtocolError, encode
from telemetry.reload import split_changes
from telemetry.sample import FieldValue, Sample

log = logging.getLogger(__name__)

SHUTDOWN_DRAIN_S = 5.0
# Polls that walk tables (a device's first, one after its layout changed, every 15 min) cost
# 4-26 steady polls: at most this many at once, so a cold start of thousands of devices leaves
# the publisher its share of the CPU. The rest wait their turn, outside their deadline.
PLAN_WALKS_AT_ONCE = 32
# The `kind` of a device whose profile was neither configured nor known when it was first
# reported (it had not answered yet): kept, since a series must not change its tags.
UNKNOWN_KIND = "unknown"


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
    registry = load_registry(config.profiles_dir)  # read once, kept until a file changes
    profile = registry.profiles[device.profile] if device.profile else None
    return SnmpDevice(device.name, target, location_tags(config, device), profile, registry)


def _poll_setup(config: AgentConfig, device: Device) -> tuple[object, ...]:
    """Everything a device's poller is built from: equal setups can keep their poller."""
    return (device, config.credentials.get(device.credentials), config.defaults, config.agent)


class Agent:
    def __init__(self, config: AgentConfig, worker: Worker = ONLY) -> None:
        self.config = config
        self.worker = worker  # polls only its own devices (agent/workers.py)
        name = config.agent.name
        topic = f"{config.mqtt.topic_prefix}/{config.agent.site}/{name}/metrics"
        client_id = f"rackwatch-agent-{name}" + (f"-w{worker.index}" if worker.count > 1 else "")
        self.publisher = Publisher(config.mqtt, topic, client_id=client_id)
        self.encode_errors = 0
        self.pollers: dict[str, PeriodicPoller] = {}
        self.ready = asyncio.Event()  # set once run() has started everything
        self._poll_tasks: dict[str, asyncio.Task[None]] = {}
        self._sources: dict[str, SnmpDevice] = {}  # by device name, for their kind
        self._health_tags: dict[str, dict[str, str]] = {}  # by poller, fixed once reported
        self._traps: TrapReceiver | None = None
        self._trap_names: TrapNames | None = None  # read with the receiver, never without it
        self._devices_by_host = {d.host_port()[0]: d for d in config.devices}
        self._profiles = load_registry(config.profiles_dir)  # what the pollers are built with
        self._plan_walks = asyncio.Semaphore(PLAN_WALKS_AT_ONCE)  # shared by every device
        for device in config.devices:
            if worker.owns(device.name):
                self.pollers[device.name] = self._device_poller(config, device)
        # Accelerator pollers live beside the device pollers; a reload leaves them alone.
        self.accelerator_pollers: list[str] = []
        self.accelerators: Accelerators | None = None
        if config.accelerators is not None:
            interval_s = config.accelerators.interval_s
            self.accelerators = Accelerators(
                config.accelerators,
                config.agent.site,
                lambda samples: self._emit("accelerator events", samples),
            )
            for vendor, collect in self.accelerators.polls.items():
                name = f"accelerators:{vendor}"
                self.pollers[name] = PeriodicPoller(
                    name,
                    collect,
                    self._emit,
                    interval_s=interval_s,
                    jitter_s=config.defaults.jitter_s,
                    deadline_s=interval_s,
                    ready=self.publisher.room,
                )
                self.accelerator_pollers.append(name)
        self.mqtt_devices = (
            DeviceSubscriber(config.mqtt_devices, config.agent.site, name, self._emit)
            if config.mqtt_devices
            else None
        )

    def _device_poller(self, config: AgentConfig, device: Device) -> PeriodicPoller:
        source = build_device(config, device)
        self._sources[device.name] = source
        interval_s = device.interval_s or config.defaults.interval_s
        return PeriodicPoller(
            device.name,
            source.collect,
            self._emit,
            interval_s=interval_s,
            jitter_s=config.defaults.jitter_s,
            deadline_s=device.deadline_s or interval_s,
            unsupported=(UnsupportedDevice,),
            gate=lambda: self._plan_walks if source.needs_plan else contextlib.nullcontext(),
            ready=self.publisher.room,  # a publisher behind the polls stretches them
        )

    def _start_poller(self, name: str) -> None:
        self._poll_tasks[name] = asyncio.create_task(
            self.pollers[name].run(), name=f"device {name}"
        )

    def _start_traps(self) -> TrapReceiver | None:
        settings = self.config.traps
        if settings is None:
            return None
        self._trap_names = TrapNames(settings.names_file, settings.severity)
        host, port = settings.host_port()
        receiver = TrapReceiver(host, port, settings.communities, settings.users, self._on_trap)
        receiver.start()
        return receiver

    def _on_trap(self, note: Notification) -> None:
        """One `snmp_trap` event; and a poll of the sender, whose readings just changed."""
        device = self._trap_sender(note.source_host)
        assert self._trap_names is not None  # set before the receiver that calls us
        named = self._trap_names.name(note)
        tags = {
            "site": self.config.agent.site,
            "agent": self.config.agent.name,
            "trap_oid": note.trap_oid,
            "trap_name": named.name,  # bounded like trap_oid: a tag, to GROUP BY
            "trap_severity": named.severity,  # not `severity`: an alert's own label
        }
        if device is not None:
            tags |= location_tags(self.config, device)
        fields: dict[str, FieldValue] = {
            "source": f"{note.source_host}:{note.source_port}",
            "varbinds": "; ".join(f"{oid}={value}" for oid, value in note.varbinds),
            "varbinds_named": "; ".join(f"{name}={value}" for name, value in named.varbinds),
            "inform": note.inform,
        }
        if named.module:
            fields["trap_module"] = named.module
        self._emit("traps", [Sample("snmp_trap", tags, fields, time.time_ns())])
        # No poller: an unknown sender, or another worker's device (polled on its schedule).
        poller = self.pollers.get(device.name) if device is not None else None
        if poller is not None and self.config.traps and self.config.traps.poll_on_trap:
            poller.poll_now()

    def _trap_sender(self, host: str) -> Device | None:
        """The device a trap came from: by its configured address or, for a device named by
        host name, by the address the name last resolved to (known once it has been polled)."""
        device = self._devices_by_host.get(host)
        if device is None:
            name = next((n for n, s in self._sources.items() if s.address == host), None)
            device = next((d for d in self.config.devices if d.name == name), None)
        return device

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

    def _poller_tags(self, name: str) -> dict[str, str]:
        """A poller's health tags: which device (or accelerator vendor), where, and what it is
        (its profile's kind; alert dependencies use it). Fixed when first reported, so its
        series keeps one identity (an alert on it can resolve) however late the kind is
        learned; a reload that changes the device starts a new poller and a new series."""
        tags = self._health_tags.get(name)
        if tags is None:
            base = self._base_tags()
            device = next((d for d in self.config.devices if d.name == name), None)
            if device is not None:
                source = self._sources.get(name)
                kind = (source.kind if source else None) or UNKNOWN_KIND
                place = {"room": device.room, "row": device.row, "rack": device.rack}
                tags = {**base, "device": name, **place, "kind": kind}
            else:
                host = self.config.accelerators.host if self.config.accelerators else ""
                tags = {**base, "device": name, "host": host}
            self._health_tags[name] = tags
        return tags

    def _base_tags(self) -> dict[str, str]:
        base = {"site": self.config.agent.site, "agent": self.config.agent.name}
        if self.worker.count > 1:  # workers of one agent keep their series apart
            base["worker"] = self.worker.label
        return base

    def health_samples(self) -> list[Sample]:
        now = time.time_ns()
        base = self._base_tags()
        samples = []
        for name, poller in self.pollers.items():
            # Nothing is known of a device before its first poll has finished: no sample, so
            # no `up=false` that is not a real failure, and no series without its kind.
            if not poller.stats.stale:
                fields = _poll_fields(poller.stats)
                source = self._sources.get(name)
                if source is not None:  # an SNMP device: values its profile could not read
                    fields["values_unlisted_unit_total"] = source.unlisted_units
                samples.append(Sample("rackwatch_agent", self._poller_tags(name), fields, now))
        published = self.publisher.stats
        spool = self.publisher.spool
        spool_fields: dict[str, FieldValue] = {}
        if spool is not None:
            spool_fields = {
                "spool_records": spool.stats.records,
                "spool_bytes": spool.stats.bytes,
                "spooled_lines_total": published.spooled_lines,
                "replayed_lines_total": published.replayed_lines,
                "overflow_lines_total": published.overflow_lines,
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
                    # The broker had no subscriber for our topic (no collector subscribed).
                    "mqtt_unrouted": self.publisher.unrouted,
                    "unrouted_publishes_total": published.unrouted_publishes,
                    # Polls that waited for a publisher behind them (back-pressure).
                    "backpressure_waits_total": published.backpressure_waits,
                    **spool_fields,
                },
                now,
            )
        )
        if self.mqtt_devices is not None:
            samples += self.mqtt_devices.health_samples(now)
        return samples

    async def _report_health(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            self._emit("health", self.health_samples())

    # What a reload (SIGHUP) applies. The rest waits for a restart: the agent's identity and
    # mqtt, since the publisher, with its queue and spool, lives on unchanged.
    LIVE_KEYS = frozenset(
        {
            "defaults",
            "credentials",
            "health_interval_s",
            "traps",
            "metrics",
            "devices",
            "profiles_dir",
        }
    )

    async def reload(self, config: AgentConfig) -> list[str]:
        """Apply a new config: new or changed devices get new pollers, removed ones stop, the
        rest keep theirs (and their counters). Returns the changed keys held for a restart."""
        old = self.config
        config, held = split_changes(old, config, self.LIVE_KEYS)
        before = {d.name: _poll_setup(old, d) for d in old.devices}
        after = {d.name: _poll_setup(config, d) for d in config.devices}
        # Profiles read again: a changed site profile gives every device a new poller.
        profiles, self._profiles = self._profiles, load_registry(config.profiles_dir)
        renewed = profiles is not self._profiles
        stale = [name for name, setup in before.items() if renewed or after.get(name) != setup]
        stopped = [self._poll_tasks.pop(name) for name in stale if name in self._poll_tasks]
        for task in stopped:
            task.cancel()
        for name in stale:
            self.pollers.pop(name, None)  # None: another worker's device
            self._sources.pop(name, None)
            self._health_tags.pop(name, None)
        self.config = config
        self._devices_by_host = {d.host_port()[0]: d for d in config.devices}
        check_open_files(sum(self.worker.owns(d.name) for d in config.devices))
        for device in config.devices:
            if device.name not in self.pollers and self.worker.owns(device.name):
                self.pollers[device.name] = self._device_poller(config, device)
                if self.ready.is_set():
                    self._start_poller(device.name)
        await asyncio.gather(*stopped, return_exceptions=True)
        if config.traps != old.traps and self.ready.is_set():
            await self._replace_traps()
        log.info(
            "reload: %d devices, %d of them new or changed, %d removed",
            len(config.devices),
            sum(before.get(name) != setup for name, setup in after.items()),
            len(set(before) - set(after)),
        )
        return held

    async def _replace_traps(self) -> None:
        if self._traps is not None:
            self._traps.close()
            self._traps = None
            await asyncio.sleep(0)  # the transport lets go of its socket on the next turn
        try:
            self._traps = self._start_traps()
        except (OSError, TrapNamesError) as exc:
            listen = self.config.traps.listen if self.config.traps else "?"
            log.error("traps: cannot listen on %s: %s; no traps until fixed", listen, exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then flush what is queued (bounded in time)."""
        log.info(
            "agent %s at site %s%s: %d devices",
            self.config.agent.name,
            self.config.agent.site,
            f", worker {self.worker.label}" if self.worker.count > 1 else "",
            len(self.pollers),
        )
        check_open_files(sum(self.worker.owns(d.name) for d in self.config.devices))
        publisher = asyncio.create_task(self.publisher.run(), name="mqtt publisher")
        self._traps = self._start_traps()
        for name in self.pollers:
            self._start_poller(name)
        health = asyncio.create_task(self._report_health(), name="health")
        mqtt_devices = (
            asyncio.create_task(self.mqtt_devices.run(), name="mqtt devices")
            if self.mqtt_devices
            else None
        )
        if self.accelerators is not None:
            self.accelerators.start()
        self.ready.set()
        try:
            await stop.wait()
        finally:
            if self._traps is not None:
                self._traps.close()
            workers = [health, *self._poll_tasks.values()]
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if self.accelerators is not None:
                await self.accelerators.stop()
            if self.mqtt_devices is not None and mqtt_devices is not None:
                await self.mqtt_devices.close(mqtt_devices, timeout_s=5.0)
            self._emit("health", self.health_samples())
            if not await self.publisher.drain(SHUTDOWN_DRAIN_S):
                log.warning(
                    "shutdown: %d lines not acknowledged by the broker were dropped",
                    self.publisher.queued_lines,
                )
            await self.publisher.close(publisher, timeout_s=5.0)


def _poll_fields(stats: PollStats) -> dict[str, FieldValue]:
    """One poller's health fields (docs/schema.md, `rackwatch_agent`)."""
    fields: dict[str, FieldValue] = {
        "up": stats.up,
        "state": stats.state,
        "polls_ok_total": stats.polls_ok,
        "polls_failed_total": stats.polls_failed,
        **{f"polls_failed_{reason}_total": stats.failures[reason] for reason in FAILURE_REASONS},
        "polls_unsupported_total": stats.polls_unsupported,
        "overruns_total": stats.overruns,
        "samples_emitted_total": stats.samples_emitted,
        "poll_duration_s": stats.last_duration_s,
    }
    if stats.state == FAILED:
        fields["error"] = _printable(stats.last_error)
    if isinstance(stats.unsupported, UnsupportedDevice):  # what the NOC needs to add a profile
        fields["sys_object_id"] = _printable(stats.unsupported.sys_object_id)
        fields["sys_descr"] = _printable(stats.unsupported.sys_descr)
    return fields


def _printable(text: str) -> str:
    # A device's text (a sysDescr often ends in CR LF) with no control characters, which line
    # protocol cannot carry: one would cost the whole health sample.
    return "".join(c if c.isprintable() else " " for c in text).strip()
