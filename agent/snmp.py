"""SNMP source: polls one device with a profile and turns its tables into samples.

The wire work is done by gufo-snmp (a Rust core with an asyncio front), one UDP session per
device, kept open across polls. Each request has its own timeout and retry count, so a dead
device costs its own poll `timeout_s * (retries + 1)` per request and nobody else anything.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from gufo.snmp import NoSuchInstance, SnmpError, SnmpVersion
from gufo.snmp.aio import SnmpSession

from agent.profile import FieldSpec, Profile, TableSpec, detect
from telemetry.sample import FieldValue, Sample

log = logging.getLogger(__name__)

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
Value = None | str | bytes | int | float
T = TypeVar("T")


class DeviceError(Exception):
    """A poll of one device failed; the message names the device and what failed."""


@dataclass(frozen=True, slots=True)
class SnmpTarget:
    host: str
    port: int
    community: str
    version: str = "2c"
    timeout_s: float = 2.0
    retries: int = 1
    max_repetitions: int = 20

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Identity:
    profile: Profile
    model: str
    sys_object_id: str


def _text(value: Value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip("\x00 \t\r\n")
    return "" if value is None else str(value)


def _oid_key(oid: str) -> tuple[int, ...]:
    return tuple(int(part) for part in oid.split("."))


class SnmpDevice:
    """One device polled with one profile. `collect()` is the whole poll."""

    def __init__(
        self, name: str, target: SnmpTarget, tags: Mapping[str, str], profile: Profile | None = None
    ) -> None:
        self.name = name
        self.target = target
        self._tags = dict(tags)
        self._forced_profile = profile
        self._identity: Identity | None = None
        self._session: SnmpSession | None = None

    @property
    def identity(self) -> Identity | None:
        """What the last successful identification found, if any."""
        return self._identity

    def _open(self) -> SnmpSession:
        if self._session is None:
            version = SnmpVersion.v1 if self.target.version == "1" else SnmpVersion.v2c
            self._session = SnmpSession(
                addr=self.target.host,
                port=self.target.port,
                community=self.target.community,
                version=version,
                timeout=self.target.timeout_s,
                max_repetitions=self.target.max_repetitions,
            )
        return self._session

    async def _retrying(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        attempts = self.target.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await request()
            except TimeoutError:
                if attempt == attempts:
                    raise DeviceError(
                        f"{self.name} ({self.target.describe()}): no answer to {what} after "
                        f"{attempts} tries of {self.target.timeout_s:g} s"
                    ) from None
            except SnmpError as exc:
                raise DeviceError(
                    f"{self.name} ({self.target.describe()}): {what}: {exc}"
                ) from None
        raise AssertionError("unreachable")

    async def identify(self) -> Identity:
        """Read sysObjectID/sysDescr, choose the profile and read the model name."""
        session = self._open()
        system = await self._retrying(
            "system group GET", lambda: session.get_many([SYS_OBJECT_ID, SYS_DESCR])
        )
        sys_object_id = _text(system.get(SYS_OBJECT_ID))
        sys_descr = _text(system.get(SYS_DESCR))
        profile = self._forced_profile or detect(sys_object_id, sys_descr)
        if profile is None:
            raise DeviceError(
                f"{self.name} ({self.target.describe()}): no profile matches "
                f"sysObjectID {sys_object_id or '(none)'}"
            )
        model = ""
        for source in profile.identity.get("model", []):
            got = await self._retrying(f"GET {source.oid}", partial(session.get_many, [source.oid]))
            text = _text(got.get(source.oid))
            if text and source.pattern:
                match = re.search(source.pattern, text)
                text = match.group(1) if match else ""
            if text:
                model = text
                break
        return Identity(profile=profile, model=model, sys_object_id=sys_object_id)

    async def collect(self) -> list[Sample]:
        """Poll every table of the profile once; one timestamp for the whole poll."""
        time_ns = time.time_ns()
        if self._identity is None:
            self._identity = await self.identify()
        identity = self._identity
        try:
            return await self._collect_tables(identity, time_ns)
        except DeviceError:
            # A device that stops answering may come back as another box: identify again.
            self._identity = None
            raise

    async def _collect_tables(self, identity: Identity, time_ns: int) -> list[Sample]:
        profile = identity.profile
        base = {**self._tags, "vendor": profile.vendor, "model": identity.model}
        samples: list[Sample] = []
        rows_by_entry: dict[str, int] = {}
        for table in profile.tables:
            if table.fallback_for and rows_by_entry.get(table.fallback_for, 0) > 0:
                continue
            rows = await self._walk_table(table)
            rows_by_entry[table.entry] = len(rows)
            for index, columns in rows.items():
                sample = _row_sample(table, index, columns, base, time_ns)
                if sample is not None:
                    samples.append(sample)
        return samples

    async def _walk_table(self, table: TableSpec) -> dict[str, dict[int, Value]]:
        rows: dict[str, dict[int, Value]] = {}
        for column in table.columns():
            base = f"{table.entry}.{column}"
            for index, value in await self._retrying(f"walk {base}", partial(self._walk, base)):
                rows.setdefault(index, {})[column] = value
        return rows

    async def _walk(self, base: str) -> list[tuple[str, Value]]:
        """Walk one column; refuse an agent whose OIDs stop increasing (a walk loop)."""
        found: list[tuple[str, Value]] = []
        previous: tuple[int, ...] = _oid_key(base)
        iterator: AsyncIterator[tuple[str, Any]] = self._open().fetch(base)
        async for oid, value in iterator:
            key = _oid_key(oid)
            if key <= previous:
                raise DeviceError(
                    f"{self.name} ({self.target.describe()}): walk of {base}: "
                    f"OIDs stopped increasing at {oid}"
                )
            previous = key
            found.append((oid[len(base) + 1 :], value))
        return found


def _row_sample(
    table: TableSpec,
    index: str,
    columns: Mapping[int, Value],
    base_tags: Mapping[str, str],
    time_ns: int,
) -> Sample | None:
    if table.where:
        # A row whose filter column is missing cannot be classified, so it is left out.
        key = columns.get(table.where.column)
        if not isinstance(key, int) or key in table.where.not_in:
            return None
    fields: dict[str, FieldValue] = {}
    for name, spec in table.fields.items():
        value = convert(spec, columns.get(spec.column))
        if value is not None:
            fields[name] = value
    if not fields:
        return None
    tags = dict(base_tags)
    for name, tag in table.tags.items():
        tags[name] = index if tag.index else _text(columns.get(tag.column or 0))
    return Sample(table.measurement, tags, fields, time_ns)


def convert(spec: FieldSpec, raw: Value) -> FieldValue | None:
    """Turn one raw SNMP value into a field value, or None when the device says "absent"."""
    if raw is None or isinstance(raw, NoSuchInstance):
        return None
    if spec.type == "string":
        return _text(raw)
    number: int | float
    if isinstance(raw, int | float):
        number = raw
    else:
        try:
            number = float(_text(raw))  # some agents send numbers as DisplayString
        except ValueError:
            return None
    if isinstance(number, int) and number in spec.absent:
        return None
    if spec.type == "enum":
        return spec.enum.get(int(number), f"unknown_{int(number)}")
    if spec.type == "counter" and spec.scale == 1:
        return int(number)
    return _scaled(number, spec.scale)


def _scaled(number: int | float, scale: float) -> float:
    # 49 * 0.1 is 4.9000000000000004; 49 / 10 is 4.9. Divide where the scale is 1/N.
    divisor = 1 / scale
    if scale < 1 and divisor == round(divisor):
        return number / round(divisor)
    return float(number * scale)
