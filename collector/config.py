"""The collector's YAML config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from collector.alerting.durations import Duration
from collector.alerting.settings import AlertingSettings
from telemetry.config import KeyPath, Secret, StrictModel
from telemetry.metrics import MetricsSettings
from telemetry.mqtt import BrokerSettings


class MqttSettings(BrokerSettings):
    client_id: str | None = None  # default: rackwatch-collector-<name>; unique per collector
    # Collectors in one group split the stream (MQTT v5 shared subscription). null: a plain
    # subscription, for a single collector; Mosquitto 2.0 restores plain subscriptions of a
    # persistent session after a broker restart, but not shared ones (docs/reliability.md).
    group: str | None = Field(default="rackwatch", pattern=r"^[^/+#]+$")
    topic: str = "rackwatch/v1/#"
    # A message is acknowledged only once its lines are in InfluxDB (or set aside). With a
    # persistent session the broker keeps what was not acknowledged for this client id while
    # it is away and redelivers it: a collector killed mid-batch loses nothing.
    persistent_session: bool = True
    session_expiry_s: int = Field(default=3600, ge=0)
    # Messages in flight to this collector, unacknowledged until written (MQTT v5 Receive
    # Maximum; it overrides Mosquitto's max_inflight_messages): 1,000 lets a batch's worth of
    # small messages be in flight. Keep receive_maximum x lines per message under
    # batch.max_pending_lines (docs/reliability.md, "The broker").
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)


class InfluxSettings(StrictModel):
    """InfluxDB 1.x `/write` (database, rp, user/password) or `/api/v2/write` (org, bucket, token).

    The v2 API is spoken by InfluxDB 2.x, 3.x, 1.8+ and VictoriaMetrics.
    """

    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v1"
    database: str = "rackwatch"
    retention_policy: str | None = None
    username: str | None = None
    password: Secret | None = None
    org: str = ""
    bucket: str = ""
    token: Secret | None = None
    gzip: bool = True
    timeout_s: float = Field(default=10.0, gt=0)
    create_database: bool = Field(
        default=False, description="v1 only: CREATE DATABASE at start-up if it is missing"
    )

    @model_validator(mode="after")
    def _v2_needs_bucket(self) -> InfluxSettings:
        if self.api == "v2" and not self.bucket:
            raise ValueError("api v2 needs bucket (and org, token for InfluxDB 2.x)")
        return self


class ShardSettings(StrictModel):
    """One InfluxDB node (or a VictoriaMetrics vminsert) taking part of the stream: the
    collector's `influxdb` settings with the keys given here replaced."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # Values of `route_by`'s tag this shard takes; none: the default shard, which takes the
    # lines no other shard matches (and those without the tag: the collector's own health).
    match: list[str] | None = Field(default=None, min_length=1)
    url: str
    api: Literal["v1", "v2"] | None = None
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: Secret | None = None
    org: str | None = None
    bucket: str | None = None
    token: Secret | None = None
    # History (retention policies, continuous queries) set up here too; false for a shard
    # that speaks no InfluxQL (VictoriaMetrics).
    retention: bool = True

    def influx(self, base: InfluxSettings) -> InfluxSettings:
        """This shard's settings: `base` with this shard's keys replaced."""
        given = self.model_dump(exclude={"name", "match", "retention"}, exclude_none=True)
        return InfluxSettings.model_validate({**base.model_dump(), **given})


class ShardingSettings(StrictModel):
    """Lines spread over several InfluxDB nodes (collector/shards.py, docs/operations.md
    "Several InfluxDB nodes"): by a tag's value (`site`, `room`), each shard listing the
    values it takes, or by a hash of the series (`series`: measurement and tag set), which
    needs no lists and keeps each series on one shard while the shard list stays the same."""

    route_by: Literal["site", "room", "series"] = "series"
    shards: list[ShardSettings] = Field(min_length=1)

    def layout(self) -> tuple[object, ...]:
        """What the running shards are built from (a reload that changes it waits for a
        restart); the rest is each node's connection settings."""
        return (self.route_by, *((s.name, tuple(s.match or ())) for s in self.shards))

    def problems(self, base: InfluxSettings) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        names: set[str] = set()
        owner: dict[str, str] = {}
        defaults = []
        for i, shard in enumerate(self.shards):
            if shard.name in names:
                found.append((("shards", i, "name"), f"duplicate shard {shard.name!r}"))
            names.add(shard.name)
            try:
                shard.influx(base)
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    found.append((("shards", i), error["msg"].removeprefix("Value error, ")))
            if shard.match is None:
                defaults.append(i)
                continue
            if self.route_by == "series":
                found.append(
                    (("shards", i, "match"), "route_by series spreads series by hash: no match")
                )
                continue
            for j, value in enumerate(shard.match):
                if value in owner:
                    found.append(
                        (
                            ("shards", i, "match", j),
                            f"{self.route_by} {value!r} is already shard {owner[value]!r}'s",
                        )
                    )
                owner[value] = shard.name
        if self.route_by != "series":
            if not defaults:
                found.append(
                    (
                        ("shards",),
                        f"route_by {self.route_by} needs a default shard (one without match) "
                        f"for lines of other {self.route_by}s and lines without the tag "
                        "(the collector's own health)",
                    )
                )
            for i in defaults[1:]:
                found.append((("shards", i), "a second default shard (without match)"))
        return found


class BatchSettings(StrictModel):
    max_lines: int = Field(default=5000, ge=1)
    max_delay_s: float = Field(default=1.0, gt=0)
    max_concurrent_writes: int = Field(default=2, ge=1, le=16)
    # Lines held while InfluxDB is slow or down; beyond this the oldest are dropped and counted.
    max_pending_lines: int = Field(default=1_000_000, ge=1)


class SpoolSettings(StrictModel):
    """Where batches wait on disk when InfluxDB has been failing for `after_s`: their MQTT
    messages are then acknowledged, so a long outage neither fills the broker's queue nor
    holds the collector's memory. Replayed when writes succeed again."""

    directory: Path
    max_bytes: int = Field(default=4 * 1024 * 1024 * 1024, ge=64 * 1024)
    after_s: float = Field(default=30.0, ge=0)


class TimestampSettings(StrictModel):
    """Line timestamps the collector takes: read in ns, us, ms or s, whichever puts them from
    `max_age_s` before to `max_future_s` after its clock, and rewritten in ns; a line that no
    precision puts there goes to the dead-letter file (telemetry/lineproto.py Timestamps)."""

    # The defaults catch clocks that are wrong (a reset RTC, another precision, a time zone
    # taken for UTC), not late deliveries: tighten max_age_s to refuse old backfills.
    max_age_s: float = Field(default=5 * 365 * 86400.0, gt=0, le=10 * 365 * 86400.0)
    max_future_s: float = Field(default=600.0, ge=0, le=365 * 86400.0)


class RetrySettings(StrictModel):
    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=30.0, gt=0)


class RollupSettings(StrictModel):
    """Rack, row, room and site power against capacity, and PUE, computed on the stream
    (collector/rollup.py). Roll-ups need every PDU's lines: by default they read the lines this
    collector takes, which is right when it takes the whole stream (a group of one, or
    `group: null`). With several collectors in a group, set `own_subscription: true` on exactly
    one of them: it then reads the whole stream through a second, non-shared subscription."""

    inventory: Path  # racks, feed ratings, facility meters (configs/inventory.example.yaml)
    interval_s: float = Field(default=10.0, gt=0)
    stale_after_s: float = Field(default=120.0, gt=0)  # older readings no longer count
    peak_window_s: float = Field(default=7 * 86400.0, gt=0)  # stranded = capacity - this peak
    # A feed whose PDUs measure a voltage further than this from its nominal one is flagged
    # (`feed_power.voltage_mismatch`): a wrong inventory, or a PDU on another supply.
    voltage_tolerance_pct: float = Field(default=5.0, gt=0)
    # A rack at or above this share of its capacity counts in racks_near_limit (row, room, site).
    near_limit_pct: float = Field(default=80.0, gt=0)
    own_subscription: bool = False
    # Where the peaks behind stranded capacity are kept across restarts (none: in memory only).
    state_path: Path | None = None


class RetentionSettings(StrictModel):
    """History in InfluxDB 1.x (collector/retention.py, docs/operations.md "History"): a
    retention policy of 5-minute aggregates filled by continuous queries, set up at start.
    Durations in seconds or with a unit (`14d`, `5m`)."""

    enabled: bool = True  # InfluxDB 1.x only; the v2 API: buckets and tasks, by hand
    # How long raw data stays: the policy the collector writes to is altered to this; unset:
    # left as it is (InfluxDB's default `autogen` keeps everything).
    raw_duration: Duration | None = Field(default=None, ge=3600)
    policy: str = Field(default="rackwatch_5m", pattern=r"^[A-Za-z0-9_]+$")
    duration: Duration = Field(default=400 * 86400.0, ge=0)  # aggregates; 0: forever
    interval: Duration = Field(default=300.0, ge=60)
    # Each run recomputes this much, so late (spooled) data lands in its aggregate.
    resample_for: Duration = Field(default=900.0, ge=60)
    # Dashboards read raw data for time ranges up to this, aggregates beyond.
    raw_max_span: Duration = Field(default=2 * 86400.0, gt=0)
    config_policy: str = Field(default="rackwatch_forever", pattern=r"^[A-Za-z0-9_]+$")


class CollectorConfig(StrictModel):
    name: str = "collector"
    mqtt: MqttSettings = MqttSettings()
    influxdb: InfluxSettings = InfluxSettings()
    # Several InfluxDB nodes, each its own shard; `influxdb` then holds what they share.
    sharding: ShardingSettings | None = None
    batch: BatchSettings = BatchSettings()
    retry: RetrySettings = RetrySettings()
    spool: SpoolSettings | None = None
    dead_letter_path: Path = Path("rackwatch-dead-letter.jsonl")
    # Rotated past this size, keeping this many old files (.1 the newest); the oldest goes.
    dead_letter_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    dead_letter_keep: int = Field(default=4, ge=0, le=100)
    timestamps: TimestampSettings | None = TimestampSettings()  # null: taken as they come
    health_interval_s: float = Field(default=10.0, gt=0)
    rollup: RollupSettings | None = None
    retention: RetentionSettings = RetentionSettings()  # history (docs/operations.md)
    metrics: MetricsSettings | None = None  # Prometheus endpoint; off unless set
    alerting: AlertingSettings | None = None  # rules on the stream, notifications (alerting.md)

    def problems(self) -> list[tuple[KeyPath, str]]:
        found: list[tuple[KeyPath, str]] = []
        if self.sharding is not None:
            found += [
                (("sharding", *path), message)
                for path, message in self.sharding.problems(self.influxdb)
            ]
        if self.alerting is not None:
            found += [(("alerting", *path), message) for path, message in self.alerting.problems()]
        return found

    def shard_settings(self) -> list[tuple[str, InfluxSettings]]:
        """(name, settings) of each InfluxDB the collector writes to; one, named after the
        host, without sharding."""
        if self.sharding is None:
            return [("influxdb", self.influxdb)]
        return [(shard.name, shard.influx(self.influxdb)) for shard in self.sharding.shards]

    def history_targets(self) -> list[tuple[str, InfluxSettings]]:
        """The InfluxDBs whose history (collector/retention.py) the collector sets up."""
        if self.sharding is None:
            return self.shard_settings()
        keep = {shard.name for shard in self.sharding.shards if shard.retention}
        return [(name, influx) for name, influx in self.shard_settings() if name in keep]
