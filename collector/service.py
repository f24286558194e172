"""Wires the collector together: MQTT ingest -> shards (a pipeline and InfluxDB writer each,
one without sharding), plus health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from collector.alerting.service import Alerting
from collector.config import CollectorConfig, InfluxSettings
from collector.deadletter import DeadLetters
from collector.feed import StreamFeed
from collector.ingest import Ingest
from collector.inventory import Inventory
from collector.retention import Keeper
from collector.rollup import Rollup
from collector.shards import Shards
from telemetry.brokerstats import BrokerWatch
from telemetry.config import load as load_config
from telemetry.lineproto import Timestamps, encode
from telemetry.mqtt import Session
from telemetry.reload import split_changes
from telemetry.sample import Sample

log = logging.getLogger(__name__)

SHUTDOWN_FLUSH_S = 10.0
SHUTDOWN_NOTIFY_S = 5.0  # queued notifications get this long to go out


class LeaveError(Exception):
    """Leaving the group could not finish without losing data."""


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.ready = asyncio.Event()  # set once run() has started everything
        self.dead_letters = DeadLetters(
            config.dead_letter_path, config.dead_letter_max_bytes, config.dead_letter_keep
        )
        self.shards = Shards(config, self.dead_letters)
        # The first (without sharding: the only) InfluxDB's writer and pipeline.
        self.writer = self.shards.shards[0].writer
        self.pipeline = self.shards.shards[0].pipeline
        client_id = config.mqtt.client_id or f"rackwatch-collector-{config.name}"
        times = config.timestamps
        self.ingest = Ingest(
            config.mqtt,
            client_id,
            self.shards,
            self.dead_letters,
            Timestamps(times.max_age_s, times.max_future_s) if times else None,
        )
        self.rollup = (
            Rollup(load_config(config.rollup.inventory, Inventory), config.rollup)
            if config.rollup
            else None
        )
        self.rollup_feed: StreamFeed | None = None
        self.retention = Keeper(config)  # on each shard
        if self.rollup is not None and config.rollup and config.rollup.own_subscription:
            self.rollup_feed = StreamFeed(
                "roll-ups",
                config.mqtt,
                config.mqtt.topic,
                f"{client_id}-rollup",
                Session(receive_maximum=config.mqtt.receive_maximum),
                self.rollup.prefixes,
                self.rollup.observe,
            )
        elif self.rollup is not None:
            self.ingest.taps.append(self.rollup.observe)
        self.alerting = (
            Alerting(config.alerting, self.shards.add, config.mqtt, client_id)
            if config.alerting
            else None
        )
        if self.alerting is not None and self.alerting.feed is None:
            self.ingest.taps.append(self.alerting.observe)
        self.broker_watch = BrokerWatch(config.mqtt, f"{client_id}-broker")
        alert_feed = self.alerting.feed if self.alerting is not None else None
        for feed in (self.rollup_feed, alert_feed):
            if feed is not None:
                feed.gate = self.ingest.subscribed  # never subscribed without the write path

    def health_sample(self) -> Sample:
        ingest, write = self.ingest.stats, self.shards.write_stats()
        times, dead = self.ingest.timestamps, self.dead_letters
        return Sample(
            "rackwatch_collector",
            {"collector": self.config.name},
            {
                "mqtt_connected": self.ingest.connection.connected,
                "messages_total": ingest.messages,
                "lines_received_total": ingest.lines_received,
                "lines_invalid_total": ingest.lines_invalid,
                "oversized_messages_total": ingest.oversized_messages,
                "malformed_compressed_messages_total": ingest.malformed_compressed_messages,
                "lines_written_total": write.lines_written,
                "batches_written_total": write.batches_written,
                "lines_rejected_total": write.lines_rejected,
                "partial_writes_total": write.partial_writes,
                "write_retries_total": write.retries,
                "write_duration_s": write.last_write_s,
                "lines_rejected_cardinality_total": write.lines_rejected_cardinality,
                "lines_rejected_type_conflict_total": write.lines_rejected_type_conflict,
                "lines_set_aside_known_total": write.lines_set_aside_known,
                "lines_unsorted_total": write.lines_unsorted,
                "write_requests_total": write.requests,
                "lines_time_rescaled_total": times.rescaled if times else 0,
                "lines_time_refused_total": times.refused if times else 0,
                "dead_letters_total": dead.count,
                "dead_letters_dropped_total": dead.dropped,
                "dead_letter_rotations_total": dead.rotations,
                **self.shards.pipeline_fields(),  # added up over the shards
                **self.broker_watch.health_fields(),
                **(self.rollup.health_fields() if self.rollup else {}),
                **self.retention.health_fields(),
                **(self.alerting.health_fields() if self.alerting else {}),
            },
            time.time_ns(),
        )

    async def _report_health(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            samples = self.health_samples()
            lines = [encode(sample).encode() for sample in samples]
            self.shards.add(lines)
            if self.alerting is not None:  # rules on the collector's own health (broker drops)
                self.alerting.observe(lines)

    async def _ensure_database(self) -> None:
        for _, influx in self.config.shard_settings():
            await self._ensure_one_database(influx)

    async def _ensure_one_database(self, influx: InfluxSettings) -> None:
        if influx.api != "v1" or not influx.create_database:
            return
        import httpx

        params = {"q": f'CREATE DATABASE "{influx.database}"'}
        if influx.username:
            params |= {"u": influx.username, "p": influx.password or ""}
        try:
            async with httpx.AsyncClient(timeout=influx.timeout_s) as client:
                response = await client.post(f"{influx.url.rstrip('/')}/query", params=params)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning(
                "could not create database %s at %s: %s (writes will retry)",
                influx.database,
                influx.url,
                exc,
            )

    def health_samples(self) -> list[Sample]:
        main = self.health_sample()
        return [main, *self.shards.health_samples(self.config.name, main.time_ns)]

    # What a reload (SIGHUP) applies: where InfluxDB is and how to log in, retries, the batch
    # delay and pending limit, the health interval, metrics. The rest waits for a restart: the
    # MQTT session (name, mqtt), spool and dead-letter files, and what running objects are
    # built from (batch size, write slots, gzip of batches that may be in flight).
    LIVE_KEYS = frozenset({"influxdb", "retry", "batch", "health_interval_s", "metrics"})
    FIXED_KEYS = frozenset({"batch.max_lines", "batch.max_concurrent_writes", "influxdb.gzip"})

    async def reload(self, config: CollectorConfig) -> list[str]:
        """Apply a new config without losing a line: pending and in-flight batches stay (and
        go to the new InfluxDB settings). Returns the changed keys held for a restart."""
        old = self.config
        live = self.LIVE_KEYS
        if old.sharding and config.sharding and old.sharding.layout() == config.sharding.layout():
            live |= {"sharding"}  # the nodes' settings; other shards or routing: a restart
        config, held = split_changes(old, config, live, self.FIXED_KEYS)
        self.config = config
        self.shards.reconfigure(config)
        if config.shard_settings() != old.shard_settings():
            log.info("reload: writing to %s", self.shards.describe())
            await self._ensure_database()
        if self.alerting is not None:
            self.alerting.reload_rules()  # the rules file is read again on every reload
        return held

    async def leave_group(self, quiet_s: float = 3.0) -> None:
        """Leave the share group for good without losing anything.

        Mosquitto keeps routing a share of the group's messages to a persistent session whose
        collector has gone, and drops them when the session expires. This takes what the broker
        queued for this collector's client id (without subscribing again), writes it, waits
        until nothing has arrived for `quiet_s`, then has the broker discard the session, so
        the rest of the group gets every new message.
        """
        self.ingest.leaving = True
        stop = asyncio.Event()
        running = asyncio.create_task(self.run(stop))
        seen, quiet_since = -1, 0.0
        loop = asyncio.get_running_loop()
        while not running.done():
            if not self.ingest.connection.connected or self.ingest.stats.messages != seen:
                seen, quiet_since = self.ingest.stats.messages, loop.time()
            elif loop.time() - quiet_since >= quiet_s and self.shards.pending_lines == 0:
                break
            await asyncio.sleep(0.2)
        stop.set()
        await running
        if not self.shards.idle:
            raise LeaveError(
                f"{self.shards.pending_lines} lines not written to InfluxDB: the session is "
                "kept, so the broker redelivers them; run --leave-group again when it is back"
            )
        await self.ingest.connection.end_session()
        log.info(
            "left group %s: %d queued messages written, session ended",
            self.ingest.subscription,
            seen,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; then stop taking messages and flush (bounded in time)."""
        await self._ensure_database()
        log.info(
            "collector %s: %s -> %s",
            self.config.name,
            self.ingest.subscription,
            self.shards.describe(),
        )
        ingest = asyncio.create_task(self.ingest.run(), name="mqtt ingest")
        retention = asyncio.create_task(self.retention.run(), name="retention")
        health = asyncio.create_task(self._report_health(), name="health")
        broker_watch = asyncio.create_task(self.broker_watch.run(), name="broker statistics")
        rollup = (
            asyncio.create_task(self.rollup.run(self.shards.add), name="roll-ups")
            if self.rollup
            else None
        )
        rollup_feed = (
            asyncio.create_task(self.rollup_feed.run(), name="roll-up feed")
            if self.rollup_feed
            else None
        )
        pipeline = asyncio.create_task(self.shards.run(), name="pipelines")
        alerting = (
            asyncio.create_task(self.alerting.run(), name="alerting") if self.alerting else None
        )
        self.ready.set()
        try:
            await stop.wait()
        finally:
            retention.cancel()
            connections = [ingest, health, broker_watch, *([rollup_feed] if rollup_feed else [])]
            for task in connections:
                task.cancel()
            if rollup is not None:
                rollup.cancel()
            if self.rollup is not None:
                self.rollup.save_peaks()
            # aiomqtt 2.5 waits for the broker's answer to DISCONNECT without a time limit:
            # a second cancel after a while keeps a silent broker from holding up shutdown.
            _, late = await asyncio.wait(connections, timeout=5.0)
            for task in late:
                task.cancel()
                await asyncio.wait([task], timeout=5.0)
            if self.alerting is not None and alerting is not None:
                await self.alerting.close(alerting, SHUTDOWN_NOTIFY_S)  # history before flush
            self.shards.add([encode(sample).encode() for sample in self.health_samples()])
            if not await self.shards.flush(SHUTDOWN_FLUSH_S):
                log.warning(
                    "shutdown: %d lines not written to InfluxDB within %.0f s",
                    self.shards.pending_lines,
                    SHUTDOWN_FLUSH_S,
                )
            pipeline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pipeline
            await self.shards.aclose()
