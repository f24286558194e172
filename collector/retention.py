"""History in InfluxDB 1.x: raw data for days, 5-minute aggregates for a year (docs/operations.md,
"History").

rackwatch keeps two retention policies in the collector's database: the one it writes to (raw;
its duration is changed only when `retention.raw_duration` is set) and `retention.policy`
(5-minute aggregates), filled by one continuous query per measurement of telemetry/schema.yaml.
Each field keeps its name and is aggregated by its kind: gauges averaged, counters, states and
text by their last value, so a dashboard query reads either policy unchanged. A third,
never-expiring policy holds `rp_config`, from which the dashboards' `$rp` variable picks the
policy for the time range shown.

`ensure` is idempotent: it creates what is missing, alters what differs, and replaces a
continuous query whose definition changed (its name carries a hash of its text).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from collector.alerting.durations import parse_duration
from collector.config import CollectorConfig, InfluxSettings, RetentionSettings
from telemetry.schema import Schema, schema

log = logging.getLogger(__name__)

CONFIG_MEASUREMENT = "rp_config"
# Event measurements: each point stands alone, and averaging them means nothing. They stay
# in the raw policy only.
EVENTS = frozenset(
    {"snmp_trap", "accelerator_event", "alert", "alert_active", "mqtt_device_event", "rp_config"}
)
RETRY_S = 600.0  # a set-up that failed (InfluxDB down, no rights) is tried again this often
_GO_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class RetentionError(Exception):
    """InfluxDB refused or could not be asked; the message says which statement and why."""


@dataclass
class Report:
    """What `ensure` changed; empty lists: everything was in place."""

    created: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def changed(self) -> bool:
        return bool(self.created or self.altered or self.dropped)


def influx_duration(seconds: float) -> str:
    """An InfluxQL duration literal; 0 means infinite."""
    return "INF" if seconds == 0 else f"{int(seconds)}s"


def parse_go_duration(text: str) -> float:
    """`SHOW RETENTION POLICIES` durations (`336h0m0s`, `0s` for infinite) in seconds."""
    found = _GO_DURATION.fullmatch(text)
    if not found or not text:
        raise RetentionError(f"unexpected duration {text!r} from InfluxDB")
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return hours * 3600.0 + minutes * 60.0 + seconds


def _q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def aggregate(kind: str, field_type: str) -> str:
    """How a field is carried into the 5-minute policy: numbers that are levels averaged,
    counters and everything else (states, text) by their last value."""
    return "mean" if kind == "gauge" and field_type in ("float", "int") else "last"


def downsample_select(
    measurement: str, fields: Sequence[str], database: str, source: str, target: str, every: str
) -> str:
    defs = schema().fields
    select = ", ".join(
        f"{aggregate(defs[f].kind, defs[f].type)}({_q(f)}) AS {_q(f)}" for f in fields
    )
    return (
        f"SELECT {select} INTO {_q(database)}.{_q(target)}.{_q(measurement)} "
        f"FROM {_q(database)}.{_q(source)}.{_q(measurement)} GROUP BY time({every}), *"
    )


def continuous_queries(
    settings: RetentionSettings, database: str, raw_policy: str, shipped: Schema | None = None
) -> dict[str, str]:
    """CQ name -> CREATE statement, one per measurement that is not an event."""
    shipped = shipped or schema()
    every = influx_duration(settings.interval)
    resample = influx_duration(settings.resample_for)
    out = {}
    for measurement, definition in sorted(shipped.measurements.items()):
        if measurement in EVENTS:
            continue
        select = downsample_select(
            measurement, definition.fields, database, raw_policy, settings.policy, every
        )
        body = f"RESAMPLE EVERY {every} FOR {resample} BEGIN {select} END"
        digest = hashlib.sha256(body.encode()).hexdigest()[:8]
        name = f"{settings.policy}_{measurement}_{digest}"  # the policy's own: its name's prefix
        out[name] = f"CREATE CONTINUOUS QUERY {_q(name)} ON {_q(database)} {body}"
    return out


def config_lines(settings: RetentionSettings, raw_policy: str) -> bytes:
    """The dashboards' choice: the raw policy for time ranges up to `raw_max_span`, the
    5-minute one beyond (the earlier point wins: `ORDER BY time LIMIT 1`)."""
    raw_ms = int(settings.raw_max_span * 1000)
    return (
        f'{CONFIG_MEASUREMENT},idx=1 rp="{raw_policy}",max_span_ms={raw_ms}i 1\n'
        f'{CONFIG_MEASUREMENT},idx=2 rp="{settings.policy}",max_span_ms={2**63 - 1}i 2\n'
    ).encode()


class InfluxQL:
    """Statements against InfluxDB 1.x's /query, as the collector's user."""

    def __init__(self, client: httpx.AsyncClient, influx: InfluxSettings) -> None:
        self.client = client
        self.influx = influx

    def _auth(self) -> dict[str, str]:
        if self.influx.username is None:
            return {}
        return {"u": self.influx.username, "p": self.influx.password or ""}

    async def run(self, statement: str) -> list[dict[str, Any]]:
        url = self.influx.url.rstrip("/") + "/query"
        params = {"db": self.influx.database, **self._auth()}
        try:
            response = await self.client.post(url, params=params, data={"q": statement})
        except httpx.HTTPError as exc:
            raise RetentionError(f"{url}: {type(exc).__name__}: {exc}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        error = answer.get("error") or next(
            (r["error"] for r in answer.get("results", []) if "error" in r), None
        )
        if response.status_code >= 300 or error:
            raise RetentionError(
                f"InfluxDB refused {statement[:120]!r}: HTTP {response.status_code}: "
                f"{error or response.text[:200]}"
            )
        return [s for r in answer.get("results", []) for s in r.get("series", [])]

    async def write(self, policy: str, body: bytes) -> None:
        url = self.influx.url.rstrip("/") + "/write"
        params = {"db": self.influx.database, "rp": policy, **self._auth()}
        try:
            response = await self.client.post(url, params=params, content=body)
        except httpx.HTTPError as exc:
            raise RetentionError(f"{url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise RetentionError(f"InfluxDB refused rp_config: {response.text[:200]}")


async def ensure(
    client: httpx.AsyncClient, influx: InfluxSettings, settings: RetentionSettings
) -> Report:
    """Bring the database's retention policies and continuous queries to `settings`."""
    if influx.api != "v1":
        raise RetentionError(
            "retention policies and continuous queries are InfluxDB 1.x's; with the v2 API "
            "use buckets and tasks (docs/operations.md, History)"
        )
    db = influx.database
    ql = InfluxQL(client, influx)
    report = Report()
    policies = await _policies(ql, db)
    raw = influx.retention_policy or next((n for n, p in policies.items() if p["default"]), "")
    if not raw:
        raise RetentionError(f"database {db!r} has no default retention policy")
    if raw not in policies:
        raise RetentionError(f"influxdb.retention_policy {raw!r} is not in database {db!r}")
    wanted = {
        settings.policy: settings.duration,
        settings.config_policy: 0.0,
    }
    if settings.raw_duration is not None:
        wanted[raw] = settings.raw_duration
    for name, duration in wanted.items():
        known = policies.get(name)
        literal = influx_duration(duration)
        if known is None:
            await ql.run(
                f"CREATE RETENTION POLICY {_q(name)} ON {_q(db)} DURATION {literal} REPLICATION 1"
            )
            report.created.append(f"retention policy {name} ({literal})")
        elif parse_go_duration(str(known["duration"])) != duration:
            await ql.run(f"ALTER RETENTION POLICY {_q(name)} ON {_q(db)} DURATION {literal}")
            report.altered.append(f"retention policy {name} ({literal})")
    queries = continuous_queries(settings, db, raw)
    existing = await _continuous_queries(ql, db)
    for name in sorted(existing):
        if name.startswith(f"{settings.policy}_") and name not in queries:
            await ql.run(f"DROP CONTINUOUS QUERY {_q(name)} ON {_q(db)}")
            report.dropped.append(f"continuous query {name}")
    for name, statement in queries.items():
        if name not in existing:
            await ql.run(statement)
            report.created.append(f"continuous query {name}")
    await ql.write(settings.config_policy, config_lines(settings, raw))
    return report


async def backfill(
    client: httpx.AsyncClient,
    influx: InfluxSettings,
    settings: RetentionSettings,
    start_ns: int,
    end_ns: int,
) -> None:
    """Run every continuous query's SELECT by hand over [start, end): aggregates for data
    written before the queries existed (or while InfluxDB's CQ service was off)."""
    ql = InfluxQL(client, influx)
    db = influx.database
    raw = influx.retention_policy or next(
        (n for n, p in (await _policies(ql, db)).items() if p["default"]), ""
    )
    every = influx_duration(settings.interval)
    for measurement, definition in sorted(schema().measurements.items()):
        if measurement in EVENTS:
            continue
        select = downsample_select(measurement, definition.fields, db, raw, settings.policy, every)
        where = f" WHERE time >= {start_ns} AND time < {end_ns} GROUP BY"
        await ql.run(select.replace(" GROUP BY", where, 1))


async def apply(config: CollectorConfig, backfill_for: str | None = None) -> list[str]:
    """`rackwatch retention`: ensure, optionally backfill, on each shard (the one InfluxDB
    without sharding); what was done, as lines (prefixed by the shard's name when sharded)."""
    seconds = None
    if backfill_for is not None:
        try:
            seconds = float(parse_duration(backfill_for))
        except (TypeError, ValueError) as exc:
            raise RetentionError(f"--backfill {backfill_for!r}: {exc}") from exc
    lines = []
    for name, influx in config.history_targets():
        prefix = f"shard {name}: " if config.sharding is not None else ""
        async with httpx.AsyncClient(timeout=influx.timeout_s, trust_env=False) as client:
            try:
                report = await ensure(client, influx, config.retention)
                done = [f"created {what}" for what in report.created]
                done += [f"altered {what}" for what in report.altered]
                done += [f"dropped {what}" for what in report.dropped]
                if not report.changed():
                    done.append(
                        "retention policies and continuous queries: in place, nothing changed"
                    )
                if seconds is not None:
                    end = time.time_ns()
                    start = end - int(seconds * 1e9)
                    await backfill(client, influx, config.retention, start, end)
                    done.append(
                        f"aggregated the last {backfill_for} into {config.retention.policy}"
                    )
            except RetentionError as exc:
                raise RetentionError(f"{prefix}{exc}") from exc
        lines += [prefix + line for line in done]
    return lines


class Keeper:
    """The collector's side: set up at start on each shard (each its own InfluxDB), in the
    background, again after a failure."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        self.errors = 0  # set-ups that failed, all shards
        self.ready = False  # set up on every shard
        self.attempted = asyncio.Event()  # set after each try

    async def run(self) -> None:
        if not self.config.retention.enabled:
            return
        labelled = [
            (f"retention (shard {name})" if self.config.sharding else "retention", influx)
            for name, influx in self.config.history_targets()
        ]
        done = await asyncio.gather(*(self._keep(influx, label) for label, influx in labelled))
        self.ready = all(done)

    async def _keep(self, influx: InfluxSettings, label: str) -> bool:
        """Set up one InfluxDB, trying again until it works; False: nothing to set up (v2)."""
        settings = self.config.retention
        if influx.api != "v1":
            log.info("%s: the v2 API has buckets and tasks, set up by hand (docs)", label)
            return False
        async with httpx.AsyncClient(timeout=influx.timeout_s, trust_env=False) as client:
            while True:
                try:
                    report = await ensure(client, influx, settings)
                except RetentionError as exc:
                    self.errors += 1
                    self.attempted.set()
                    log.warning("%s: %s (again in %.0f s)", label, exc, RETRY_S)
                    await asyncio.sleep(RETRY_S)
                    continue
                self.attempted.set()
                if report.changed():
                    log.info(
                        "%s: created %d, altered %d, dropped %d (%s)",
                        label,
                        len(report.created),
                        len(report.altered),
                        len(report.dropped),
                        "; ".join([*report.created, *report.altered, *report.dropped][:5]),
                    )
                return True

    def health_fields(self) -> dict[str, int | bool]:
        return {"retention_errors_total": self.errors}


async def _policies(ql: InfluxQL, db: str) -> dict[str, dict[str, Any]]:
    series = await ql.run(f"SHOW RETENTION POLICIES ON {_q(db)}")
    out = {}
    for one in series:
        columns = one["columns"]
        for row in one.get("values", []):
            entry = dict(zip(columns, row, strict=True))
            out[str(entry["name"])] = entry
    return out


async def _continuous_queries(ql: InfluxQL, db: str) -> set[str]:
    series = await ql.run("SHOW CONTINUOUS QUERIES")
    return {str(row[0]) for one in series if one.get("name") == db for row in one.get("values", [])}
