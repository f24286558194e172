"""Several InfluxDB nodes, each a shard of the stream (docs/operations.md, "Several InfluxDB
nodes").

Each line goes to exactly one shard: by the value of its `site` or `room` tag (a shard lists
the values it takes; the default shard takes the rest), or by a hash of its series
(measurement and sorted tag set), spread by rendezvous hashing so that adding or removing a
shard moves only the series that shard gains or loses. Each shard has its own writer, batches,
write slots, retries and spool, so a node that is down spools its own lines while the others
keep writing. A message's receipt counts its lines whichever shards take them: it is
acknowledged once every shard it touched has its lines written or spooled, as with one node.
Spools an earlier layout left (one node's before sharding, a shard's since removed or
renamed) are written out through the router at start, so changing the layout loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from collector.config import CollectorConfig, InfluxSettings, ShardingSettings, SpoolSettings
from collector.deadletter import DeadLetters
from collector.influx import InfluxWriter, WriteStats
from collector.pipeline import Pipeline
from collector.receipts import Receipt
from collector.refusal import series_key
from telemetry import rendezvous
from telemetry.sample import Sample
from telemetry.spool import Spool

log = logging.getLogger(__name__)

_UNESCAPED_COMMA = re.compile(rb"(?<!\\),")
_ESCAPE = re.compile(rb"\\(.)")
# Series keys whose shard is remembered (lines repeat their series every poll); past this
# many (some 30 MB of keys) the memory is cleared and filled again: a miss costs one hash.
ROUTE_CACHE_MAX = 200_000


class Router:
    """Which shard (an index into the shard list) takes a line."""

    def __init__(self, settings: ShardingSettings) -> None:
        self.route_by = settings.route_by
        names = [shard.name for shard in settings.shards]
        self._seeds = [rendezvous.digest(name.encode()) for name in names]
        self._tag = f"{settings.route_by}=".encode()
        self._owner = {
            value.encode(): i
            for i, shard in enumerate(settings.shards)
            for value in shard.match or ()
        }
        self._default = next((i for i, s in enumerate(settings.shards) if s.match is None), 0)
        self._cache: dict[bytes, int] = {}

    def route(self, line: bytes) -> int:
        space = line.find(b" ")
        # Without a backslash before it, the first space ends the series key.
        key = line[:space] if space > 0 and line.find(b"\\", 0, space) < 0 else series_key(line)
        shard = self._cache.get(key)
        if shard is None:
            shard = self._by_hash(key) if self.route_by == "series" else self._by_tag(key)
            if len(self._cache) >= ROUTE_CACHE_MAX:
                self._cache.clear()
            self._cache[key] = shard
        return shard

    def split(self, lines: Iterable[bytes], shards: int) -> list[list[bytes]]:
        parts: list[list[bytes]] = [[] for _ in range(shards)]
        route = self.route
        for line in lines:
            parts[route(line)].append(line)
        return parts

    def _by_tag(self, key: bytes) -> int:
        for tag in _UNESCAPED_COMMA.split(key)[1:]:
            if tag.startswith(self._tag):
                value = _ESCAPE.sub(rb"\1", tag[len(self._tag) :])
                return self._owner.get(value, self._default)
        return self._default

    def _by_hash(self, key: bytes) -> int:
        measurement, *tags = _UNESCAPED_COMMA.split(key)
        return rendezvous.owner(b",".join([measurement, *sorted(tags)]), self._seeds)


@dataclass
class Shard:
    name: str
    settings: InfluxSettings
    writer: InfluxWriter
    pipeline: Pipeline


class Shards:
    """The collector's write path: one pipeline and writer per InfluxDB node (one without
    sharding), and the router that hands each line to one of them."""

    def __init__(self, config: CollectorConfig, dead_letters: DeadLetters) -> None:
        named = config.shard_settings()
        self.sharded = config.sharding is not None
        self.router = Router(config.sharding) if config.sharding is not None else None
        self.spool = config.spool
        self.drained_lines = 0  # from spools an earlier layout left
        self.shards = []
        for name, settings in named:
            spool = config.spool
            if spool is not None and self.sharded:
                # Each shard replays its own: a directory each, the space split between them.
                spool = spool.model_copy(
                    update={
                        "directory": spool.directory / name,
                        "max_bytes": max(spool.max_bytes // len(named), 64 * 1024),
                    }
                )
            writer = InfluxWriter(settings, config.retry, dead_letters)
            self.shards.append(Shard(name, settings, writer, Pipeline(config.batch, writer, spool)))

    def add(self, lines: list[bytes], receipt: Receipt | None = None) -> None:
        for shard, part in zip(self.shards, self._split(lines), strict=True):
            if part:
                shard.pipeline.add(part, receipt)

    def _split(self, lines: list[bytes]) -> list[list[bytes]]:
        if self.router is None:
            return [lines]
        return self.router.split(lines, len(self.shards))

    def describe(self) -> str:
        if self.router is None:
            return self.shards[0].writer.describe()
        return f"{len(self.shards)} shards by {self.router.route_by}: " + ", ".join(
            f"{shard.name} {shard.writer.describe()}" for shard in self.shards
        )

    def reconfigure(self, config: CollectorConfig) -> None:
        """New InfluxDB settings (a reload); the shard list itself waits for a restart."""
        for shard, (_, settings) in zip(self.shards, config.shard_settings(), strict=True):
            shard.settings = settings
            shard.writer.reconfigure(settings, config.retry)
            shard.pipeline.settings = config.batch

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for shard in self.shards:
                group.create_task(shard.pipeline.run(), name=f"pipeline {shard.name}")
            if self.spool is not None:
                for directory in self._left_behind(self.spool):
                    group.create_task(self._drain(directory, self.spool.max_bytes))

    def _left_behind(self, spool: SpoolSettings) -> list[Path]:
        """Spool folders with records that no shard of this layout replays."""
        in_use = {s.pipeline.spool.directory for s in self.shards if s.pipeline.spool}
        top = spool.directory
        found = [top, *sorted(p for p in top.iterdir() if p.is_dir())] if top.is_dir() else []
        return [d for d in found if d not in in_use and any(d.glob("*.seg"))]

    async def _drain(self, directory: Path, max_bytes: int) -> None:
        """Write a left-behind spool's records to the shards that take their lines now, one
        record at a time, each acknowledged once written (retried while a shard is down)."""
        try:
            spool = Spool(directory, max_bytes)
        except (OSError, ValueError) as exc:
            log.error("spool %s of an earlier layout cannot be read: %s", directory, exc)
            return
        log.info("spool %s of an earlier layout: writing it to the shards", directory)
        try:
            while (record := spool.peek()) is not None:
                lines = record.split(b"\n")
                for shard, part in zip(self.shards, self._split(lines), strict=True):
                    if part:
                        await shard.writer.write(part)
                spool.ack()
                self.drained_lines += len(lines)
        finally:
            with contextlib.suppress(OSError):
                spool.close()
        log.info("spool %s of an earlier layout: written", directory)

    async def flush(self, timeout_s: float) -> bool:
        """Write everything pending on every shard now; False if one took over `timeout_s`."""
        done = await asyncio.gather(*(s.pipeline.flush(timeout_s) for s in self.shards))
        return all(done)

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.writer.aclose()

    @property
    def idle(self) -> bool:
        return all(shard.pipeline.idle for shard in self.shards)

    @property
    def pending_lines(self) -> int:
        return sum(shard.pipeline.pending_lines for shard in self.shards)

    def write_stats(self) -> WriteStats:
        """The shards' write counters added up (failing: any shard failing)."""
        total = WriteStats()
        for shard in self.shards:
            stats = shard.writer.stats
            for field in fields(WriteStats):
                value = getattr(stats, field.name)
                if isinstance(value, int) and not isinstance(value, bool):  # the counters
                    setattr(total, field.name, getattr(total, field.name) + value)
            total.last_write_s = max(total.last_write_s, stats.last_write_s)
            total.failing = total.failing or stats.failing
        return total

    def pipeline_fields(self) -> dict[str, int]:
        """The shards' pending, dropped and spool figures added up (health fields)."""
        pipelines = [shard.pipeline for shard in self.shards]
        found = {
            "sorting_lines": sum(shard.writer.sorting_lines for shard in self.shards),
            "lines_dropped_total": sum(p.dropped_lines for p in pipelines),
            "pending_lines": sum(p.pending_lines for p in pipelines),
        }
        spooling = [p for p in pipelines if p.spool is not None]
        if spooling:
            found |= {
                "spool_records": sum(p.spool.stats.records for p in spooling if p.spool),
                "spool_bytes": sum(p.spool.stats.bytes for p in spooling if p.spool),
                "spooled_lines_total": sum(p.spooled_lines for p in spooling),
                "replayed_lines_total": sum(p.replayed_lines for p in spooling),
                "spool_dropped_records_total": sum(
                    p.spool.stats.dropped_records for p in spooling if p.spool
                ),
                "spool_write_errors_total": sum(
                    p.spool.stats.write_errors for p in spooling if p.spool
                ),
            }
        return found

    def health_samples(self, collector: str, time_ns: int) -> list[Sample]:
        """One `rackwatch_collector_shard` sample per shard; none without sharding."""
        if self.router is None:
            return []
        samples = []
        for shard in self.shards:
            write, pipeline = shard.writer.stats, shard.pipeline
            spool = pipeline.spool
            samples.append(
                Sample(
                    "rackwatch_collector_shard",
                    {"collector": collector, "shard": shard.name},
                    {
                        "write_failing": write.failing,
                        "lines_written_total": write.lines_written,
                        "batches_written_total": write.batches_written,
                        "lines_rejected_total": write.lines_rejected,
                        "write_retries_total": write.retries,
                        "write_requests_total": write.requests,
                        "write_duration_s": write.last_write_s,
                        "pending_lines": pipeline.pending_lines,
                        "lines_dropped_total": pipeline.dropped_lines,
                        **(
                            {
                                "spool_records": spool.stats.records,
                                "spool_bytes": spool.stats.bytes,
                                "spooled_lines_total": pipeline.spooled_lines,
                                "replayed_lines_total": pipeline.replayed_lines,
                            }
                            if spool is not None
                            else {}
                        ),
                    },
                    time_ns,
                )
            )
        return samples
