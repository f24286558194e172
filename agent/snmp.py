"""SNMP source: polls one device with its profiles and turns what it reads into samples.

The wire work is done by gufo-snmp (a Rust core with an asyncio front; see docs/benchmarks.md
for why), one UDP session per device, kept open across polls. Every request has its own timeout
and retry count, so a dead device costs its own poll `timeout_s * (retries + 1)` per request and
nobody else anything. Within one poll each column is walked once, however many tables use it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from gufo.snmp import (
    Aes128Key,
    Aes192Key,
    Aes256Key,
    BaseAuthKey,
    BasePrivKey,
    DesKey,
    Md5Key,
    Sha1Key,
    Sha224Key,
    Sha256Key,
    Sha384Key,
    Sha512Key,
    SnmpError,
    SnmpVersion,
    User,
)
from gufo.snmp.aio import SnmpSession

from agent.mapping import (
    Counters,
    Value,
    index_parts,
    row_sample,
    row_selected,
    scalar_sample,
    text,
    unit_oid,
)
from agent.profile import Profile, TableSpec
from agent.registry import Registry, load_registry
from telemetry.sample import Sample

log = logging.getLogger(__name__)

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
GET_BATCH = 24  # OIDs per GET request: small enough for any agent's PDU size
# How often a table is walked again to find new rows (a probe plugged in, an outlet added);
# in between its values are read by GET. A vanished row triggers a walk at once.
LAYOUT_REFRESH_S = 900.0
T = TypeVar("T")


class DeviceError(Exception):
    """A poll of one device failed; the message names the device and what failed."""


class UnsupportedDevice(DeviceError):
    """The device answers SNMP, but no profile (vendor or generic) understands it: its own
    health state ("unsupported"), never "unreachable". Carries what the NOC needs to add one."""

    def __init__(self, message: str, sys_object_id: str, sys_descr: str) -> None:
        super().__init__(message)
        self.sys_object_id = sys_object_id
        self.sys_descr = sys_descr


AUTH_KEYS: dict[str, type[BaseAuthKey]] = {
    "md5": Md5Key,
    "sha": Sha1Key,
    "sha224": Sha224Key,
    "sha256": Sha256Key,
    "sha384": Sha384Key,
    "sha512": Sha512Key,
}
PRIV_KEYS: dict[str, type[BasePrivKey]] = {
    "des": DesKey,
    "aes": Aes128Key,
    "aes192": Aes192Key,
    "aes256": Aes256Key,
}


@dataclass(frozen=True, slots=True)
class SnmpTarget:
    """Where a device is and how to talk to it; v3 fields are used with version "3"."""

    host: str
    port: int
    community: str = ""
    version: str = "2c"
    timeout_s: float = 2.0
    retries: int = 1
    max_repetitions: int = 20
    user: str = ""
    auth_protocol: str | None = None  # default sha256 when auth_password is set
    auth_password: str | None = None
    priv_protocol: str | None = None  # default aes (128) when priv_password is set
    priv_password: str | None = None

    def describe(self) -> str:
        return f"{self.host}:{self.port}"

    def usm_user(self) -> User:
        auth = priv = None
        if self.auth_password:
            auth = AUTH_KEYS[self.auth_protocol or "sha256"](self.auth_password.encode())
        if self.priv_password:
            priv = PRIV_KEYS[self.priv_protocol or "aes"](self.priv_password.encode())
        return User(self.user, auth_key=auth, priv_key=priv)


@dataclass(frozen=True, slots=True)
class Identity:
    profile: Profile
    model: str
    sys_object_id: str
    matched_by: str = "configured"  # how the profile was chosen, for probe and logs


@dataclass(slots=True)
class _Layout:
    """What a walk found out about a table: its kept rows (with the columns walked), the
    columns it joins in, the value OIDs to GET on later polls, and when it was walked."""

    rows: dict[str, dict[int, Value]]
    joined: dict[str, Value]
    oids: list[str]
    setting_oids: list[str]  # joined settings read every poll (a C/F switch must apply at once)
    read_at: float


@dataclass
class _Poll:
    """What one poll has read so far, so no column is walked twice."""

    walks: dict[str, dict[str, Value]] = field(default_factory=dict)
    walked: set[int] = field(default_factory=set)  # tables whose values were walked this poll
    gets: dict[str, Value] = field(default_factory=dict)  # the other tables' values, one batch


class SnmpDevice:
    """One device polled with its profiles. `collect()` is the whole poll."""

    def __init__(
        self,
        name: str,
        target: SnmpTarget,
        tags: Mapping[str, str],
        profile: Profile | None = None,
        registry: Registry | None = None,  # default: the built-in profiles
    ) -> None:
        self.name = name
        self.target = target
        self._tags = dict(tags)
        self._forced_profile = profile
        self._registry = registry or load_registry()
        self._identity: Identity | None = None
        self._session: SnmpSession | None = None
        self._counters = Counters()
        self._uptime: int | None = None
        self._layouts: dict[int, _Layout] = {}
        # OID -> (position in the last poll's samples, field name), filled when tracing: lets
        # `rackwatch probe --trace` and the ground-truth tests say where each value came from.
        self.trace: dict[str, tuple[int, str]] | None = None

    @property
    def identity(self) -> Identity | None:
        """What the last successful identification found, if any."""
        return self._identity

    @property
    def kind(self) -> str | None:
        """pdu, cooling, ups or env_sensor: from the configured profile, else once detected."""
        profile = self._forced_profile or (self._identity.profile if self._identity else None)
        return profile.kind if profile is not None else None

    def _where(self) -> str:
        return f"{self.name} ({self.target.describe()})"

    async def _open(self) -> SnmpSession:
        if self._session is None:
            target = self.target
            v3 = target.version == "3"
            session = SnmpSession(
                addr=target.host,
                port=target.port,
                timeout=target.timeout_s,
                max_repetitions=target.max_repetitions,
                community=target.community,
                user=target.usm_user() if v3 else None,
                version={"1": SnmpVersion.v1, "3": SnmpVersion.v3}.get(
                    target.version, SnmpVersion.v2c
                ),
            )
            if v3:  # USM: learn the agent's engine ID, boots and time before the first request
                await self._retrying("SNMPv3 engine discovery", session.refresh)
            self._session = session
        return self._session

    async def _retrying(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        attempts = self.target.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await request()
            except TimeoutError:
                if attempt == attempts:
                    raise DeviceError(
                        f"{self._where()}: no answer to {what} after "
                        f"{attempts} tries of {self.target.timeout_s:g} s"
                    ) from None
            except SnmpError as exc:
                raise DeviceError(f"{self._where()}: {what}: {exc}") from None
        raise AssertionError("unreachable")

    async def get(self, oids: Iterable[str], what: str = "") -> dict[str, Value]:
        """GET many OIDs in batches; OIDs the device lacks are simply not in the result."""
        wanted = list(dict.fromkeys(oids))
        found: dict[str, Value] = {}
        session = await self._open()
        for start in range(0, len(wanted), GET_BATCH):
            batch = wanted[start : start + GET_BATCH]
            label = what or f"GET of {len(batch)} OIDs from {batch[0]}"
            found.update(await self._retrying(label, partial(session.get_many, batch)))
        return found

    async def identify(self) -> Identity:
        """Read sysObjectID/sysDescr, choose the profile and read the model name."""
        system = await self.get([SYS_OBJECT_ID, SYS_DESCR], "system group GET")
        sys_object_id = text(system.get(SYS_OBJECT_ID)).strip(".")
        sys_descr = text(system.get(SYS_DESCR))
        profile, matched_by = self._forced_profile, "configured"
        if profile is None:
            profile, matched_by = await self._choose(sys_object_id, sys_descr)
        model = ""
        for source in profile.identity.get("model", []):
            found = text((await self.get([source.oid])).get(source.oid))
            if found and source.pattern:
                match = re.search(source.pattern, found)
                found = match.group(1) if match else ""
            if found:
                model = found
                break
        return Identity(profile, model, sys_object_id, matched_by)

    async def _choose(self, sys_object_id: str, sys_descr: str) -> tuple[Profile, str]:
        """The detected profile, else the first fallback (vendor family, then standard MIB)
        whose objects the device has; UnsupportedDevice when nothing understands it."""
        profile = self._registry.detect(sys_object_id, sys_descr)
        if profile is not None:
            return profile, "sysObjectID/sysDescr"
        for candidate in self._registry.fallbacks(sys_object_id):
            for oid in candidate.detect.answers:
                if await self._has_objects(oid):
                    return candidate, f"fallback: the device answers {oid}"
        raise UnsupportedDevice(
            f"{self._where()}: no profile matches sysObjectID {sys_object_id or '(none)'} "
            f"/ sysDescr {sys_descr[:60]!r}, and it answers none of the standard MIBs "
            "rackwatch reads (UPS-MIB, ENTITY-SENSOR-MIB)",
            sys_object_id,
            sys_descr,
        )

    async def _has_objects(self, base: str) -> bool:
        """Whether the device has any object under `base` (one GETNEXT/GETBULK)."""

        async def first() -> bool:
            async for _ in (await self._open()).fetch(base):
                return True
            return False

        return await self._retrying(f"probe of {base}", first)

    async def collect(self) -> list[Sample]:
        """Poll every scalar and table of the profile once; one timestamp for the whole poll."""
        time_ns = time.time_ns()
        if self._identity is None:
            self._identity = await self.identify()
            self._layouts.clear()
        try:
            return await self._collect(self._identity, time_ns)
        except DeviceError:
            # A device that stops answering may come back as another box (or, for v3, with
            # new engine boots): identify again over a new session.
            self._identity = None
            self._session = None
            raise

    async def _collect(self, identity: Identity, time_ns: int) -> list[Sample]:
        if self.trace is not None:
            self.trace.clear()
        profiles = self._registry.with_includes(identity.profile)
        base = {**self._tags, "vendor": identity.profile.vendor, "model": identity.model}
        scalar_oids = [SYS_UPTIME] + [oid for p in profiles for oid in p.scalar_oids()]
        scalars = await self.get(scalar_oids)
        uptime = scalars.get(SYS_UPTIME)
        uptime = uptime if isinstance(uptime, int) else None
        self._counters.observe_uptime(self._uptime, uptime)
        self._uptime = uptime

        samples: list[Sample] = []
        for profile in profiles:
            for group in profile.scalars:
                tags = {**base, **{k: t.value or "" for k, t in group.tags.items()}}
                sample = scalar_sample(
                    group.measurement, tags, group.fields, scalars, time_ns, self._counters
                )
                if sample:
                    if self.trace is not None:
                        for name, spec in group.fields.items():
                            if name in sample.fields and spec.oid:
                                self.trace[spec.oid] = (len(samples), name)
                    samples.append(sample)
        poll = _Poll()
        active = await self._plan_tables(poll, [t for p in profiles for t in p.tables])
        for table, layout in active:
            joined = {**scalars, **layout.joined, **poll.gets}
            for index, columns in self._table_rows(poll, table, layout).items():
                sample = row_sample(table, index, columns, joined, base, time_ns, self._counters)
                if sample is None:
                    continue
                if self.trace is not None:
                    for name, spec in table.fields.items():
                        if name in sample.fields:
                            oid = f"{table.entry}.{spec.column}.{index}"
                            self.trace[oid] = (len(samples), name)
                samples.append(sample)
        return samples

    async def _plan_tables(
        self, poll: _Poll, tables: list[TableSpec]
    ) -> list[tuple[TableSpec, _Layout]]:
        """Decide which tables this poll reads, and read their values.

        A table's layout (its rows, descriptive and joined columns) comes from a walk that is
        repeated every LAYOUT_REFRESH_S or when a row disappears; in between, the values of the
        known rows are read with GETs, batched across all tables: a PDU poll takes a handful
        of requests instead of one walk per column. Fallback tables are planned only when the
        tables they stand in for have no rows.
        """
        active: list[tuple[TableSpec, _Layout]] = []
        rows_by_entry: dict[str, int] = {}
        for table in tables:
            primary_rows = sum(rows_by_entry.get(entry, 0) for entry in table.fallback_for)
            if primary_rows:  # stood in for: counts as having those rows, so fallbacks chain
                rows_by_entry[table.entry] = rows_by_entry.get(table.entry, 0) + primary_rows
                continue
            layout = await self._layout(poll, table)
            rows_by_entry[table.entry] = rows_by_entry.get(table.entry, 0) + len(layout.rows)
            active.append((table, layout))
        wanted = [
            oid for table, layout in active if id(table) not in poll.walked for oid in layout.oids
        ]
        wanted += [oid for _, layout in active for oid in layout.setting_oids]
        poll.gets = await self.get(wanted)
        for table, layout in active:
            if id(table) not in poll.walked and any(o not in poll.gets for o in layout.oids):
                self._layouts.pop(id(table), None)  # a row went away: walk again next poll
        return active

    async def _layout(self, poll: _Poll, table: TableSpec) -> _Layout:
        cached = self._layouts.get(id(table))
        if cached is not None and time.monotonic() - cached.read_at < LAYOUT_REFRESH_S:
            return cached
        # Lookup tables (thousands of self-describing rows) walk only what describes a row and
        # GET the values of the rows they keep; the others walk their values too.
        columns = table.own_descriptive_columns()
        if not table.lookup:
            columns |= table.value_columns()
            poll.walked.add(id(table))
        walked: dict[str, dict[int, Value]] = {}
        for column in sorted(columns):
            for index, value in (await self._walk(poll, f"{table.entry}.{column}")).items():
                walked.setdefault(index, {})[column] = value
        kept = {
            index: row
            for index, row in walked.items()
            if (parts := index_parts(table, index)) is not None and row_selected(table, parts, row)
        }
        value_columns = sorted(table.value_columns())
        if table.lookup:
            oids = [f"{table.entry}.{c}.{i}" for i in kept for c in value_columns]
        else:  # exactly the values the device has: a missing one later means a change
            oids = [
                f"{table.entry}.{c}.{i}"
                for i, row in kept.items()
                for c in value_columns
                if c in row
            ]
        settings = [
            unit_oid(table, unit, index)
            for index in kept
            for spec in table.fields.values()
            if (unit := spec.temperature_unit) and unit.column
        ]
        layout = _Layout(
            kept, await self._joined(poll, table), oids, sorted(set(settings)), time.monotonic()
        )
        self._layouts[id(table)] = layout
        return layout

    def _table_rows(
        self, poll: _Poll, table: TableSpec, layout: _Layout
    ) -> dict[str, dict[int, Value]]:
        if id(table) in poll.walked:
            return layout.rows
        rows = {index: dict(row) for index, row in layout.rows.items()}
        for index, row in rows.items():
            for column in table.value_columns():
                value = poll.gets.get(f"{table.entry}.{column}.{index}")
                if value is not None:
                    row[column] = value
        return rows

    async def _joined(self, poll: _Poll, table: TableSpec) -> dict[str, Value]:
        """Columns a table joins in (scales, tags, unit settings), by OID."""
        joined: dict[str, Value] = {}
        for entry, column in sorted(table.joined_columns()):
            for index, value in (await self._walk(poll, f"{entry}.{column}")).items():
                joined[f"{entry}.{column}.{index}"] = value
        return joined

    async def _walk(self, poll: _Poll, base: str) -> dict[str, Value]:
        """Walk one column once per poll; refuse an agent whose OIDs stop increasing."""
        if base not in poll.walks:
            poll.walks[base] = await self._retrying(f"walk {base}", partial(self._walk_once, base))
        return poll.walks[base]

    async def _walk_once(self, base: str) -> dict[str, Value]:
        found: dict[str, Value] = {}
        previous: tuple[int, ...] = ()
        start = len(base) + 1
        async for oid, value in (await self._open()).fetch(base):
            index = oid[start:]
            key = tuple(map(int, index.split(".")))  # numeric order, as SNMP defines it
            if key <= previous:
                raise DeviceError(
                    f"{self._where()}: walk of {base}: OIDs stopped increasing at {oid}"
                )
            previous = key
            found[index] = value
        return found
