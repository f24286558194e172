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
from dataclasses import dataclass
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
    NoSuchInstance,
    Sha1Key,
    Sha224Key,
    Sha256Key,
    Sha384Key,
    Sha512Key,
    SnmpDecodeError,
    SnmpError,
    SnmpVersion,
    User,
)
from gufo.snmp.aio import SnmpSession

from agent import plan
from agent.mapping import Counters, Value, text
from agent.profile import Profile
from agent.registry import Registry, load_registry
from agent.resolve import ResolveError, Resolver
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
    """A poll of one device failed; the message names the device and what failed, `reason`
    the name the failure is counted under (health field polls_failed_<reason>_total)."""

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


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
        self._resolver = Resolver(target.host)
        self._counters = Counters()
        self._uptime: int | None = None
        self._plan: plan.PollPlan | None = None  # until the layout changes
        self._recheck = False  # a poll failed: is it still the same box?
        # OID -> (position in the last poll's samples, field name), filled when tracing: lets
        # `rackwatch probe --trace` and the ground-truth tests say where each value came from.
        self.trace: dict[str, tuple[int, str]] | None = None
        # Values left out because their unit text is not in their field's `units` map (health
        # field values_unlisted_unit_total); each OID is logged once, not every poll.
        self.unlisted_units = 0
        self._unlisted_logged: set[str] = set()

    @property
    def identity(self) -> Identity | None:
        """What the last successful identification found, if any."""
        return self._identity

    @property
    def kind(self) -> str | None:
        """pdu, cooling, ups or env_sensor: from the configured profile, else once detected."""
        profile = self._forced_profile or (self._identity.profile if self._identity else None)
        return profile.kind if profile is not None else None

    @property
    def needs_plan(self) -> bool:
        """The next poll walks the tables (no plan yet, or one LAYOUT_REFRESH_S old): the
        costly kind of poll, which the agent lets only a few devices make at once."""
        return self._plan is None or time.monotonic() - self._plan.made_at >= LAYOUT_REFRESH_S

    @property
    def address(self) -> str | None:
        """The IP address the device is polled at (its host name as last resolved), if known."""
        return self._resolver.current

    def _where(self) -> str:
        return f"{self.name} ({self.target.describe()})"

    async def _open(self) -> SnmpSession:
        resolver = self._resolver
        if self._session is None:
            resolver.forget()  # first use, or after a failed poll: look the name up afresh
        elif resolver.due() and resolver.current != await self._address():
            self._session = None  # the name moved (or was forgotten after no answer)
        if self._session is None:
            target = self.target
            v3 = target.version == "3"
            session = SnmpSession(
                addr=await self._address(),
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

    async def _address(self) -> str:
        """The device's IP address: gufo-snmp takes no names (agent/resolve.py)."""
        try:
            return await self._resolver.address()
        except ResolveError as exc:
            raise DeviceError(f"{self._where()}: {exc}", reason="resolve") from None

    async def _retrying(self, what: str, request: Callable[[], Awaitable[T]]) -> T:
        attempts = self.target.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await request()
            except TimeoutError:
                if attempt == attempts:
                    self._resolver.forget()  # the name may have moved: look it up again
                    raise DeviceError(
                        f"{self._where()}: no answer to {what} after "
                        f"{attempts} tries of {self.target.timeout_s:g} s",
                        reason="no_answer",
                    ) from None
            except (SnmpDecodeError, RuntimeError, ValueError) as exc:
                # gufo-snmp raises RuntimeError for some undecodable answers to get_many.
                raise self._malformed(what, exc) from None
            except SnmpError as exc:
                raise DeviceError(f"{self._where()}: {what}: {exc}", reason="snmp_error") from None
            except BaseException as exc:
                # A corrupted answer can make gufo-snmp's Rust core panic: pyo3 raises that as
                # PanicException, a BaseException that `except Exception` lets through.
                if type(exc).__name__ != "PanicException":
                    raise
                raise self._malformed(what, exc) from None
        raise AssertionError("unreachable")

    def _malformed(self, what: str, exc: BaseException) -> DeviceError:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return DeviceError(
            f"{self._where()}: malformed answer to {what}: {problem}", reason="malformed"
        )

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
                    log.info(
                        "%s: sysObjectID %s is no profile's; read with %s, as it answers %s",
                        self._where(),
                        sys_object_id,
                        candidate.name,
                        oid,
                    )
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
            try:
                async for _ in (await self._open()).fetch(base):
                    return True
            except NoSuchInstance:  # SNMPv1 agents say noSuchName past their last object
                pass
            return False

        return await self._retrying(f"probe of {base}", first)

    async def collect(self) -> list[Sample]:
        """Poll every scalar and table of the profile once; one timestamp for the whole poll."""
        time_ns = time.time_ns()
        if self._identity is None:
            self._identity = await self.identify()
            self._plan = None
        elif self._recheck:
            await self._same_box(self._identity)
        try:
            return await self._collect(self._identity, time_ns)
        except DeviceError:
            # A device that stops answering may come back as another box (or, for v3, with
            # new engine boots): a new session, and its sysObjectID read again first. Its
            # plan stays: walking every table again costs a slow device 4-26 polls.
            self._session = None
            self._recheck = True
            raise

    async def _same_box(self, identity: Identity) -> None:
        """After a failed poll: the same sysObjectID keeps identity and plan; another one is
        identified again, with a new plan. (Rows that went away make a new plan anyway.)"""
        system = await self.get([SYS_OBJECT_ID], "sysObjectID GET")
        self._recheck = False
        sys_object_id = text(system.get(SYS_OBJECT_ID)).strip(".")
        if sys_object_id != identity.sys_object_id:
            log.info(
                "%s: sysObjectID is now %s (was %s): identifying it again",
                self._where(),
                sys_object_id or "(none)",
                identity.sys_object_id or "(none)",
            )
            self._identity = self._plan = None  # until it is identified again
            self._identity = await self.identify()

    async def _collect(self, identity: Identity, time_ns: int) -> list[Sample]:
        """Make a plan when there is none (or it is LAYOUT_REFRESH_S old), read what it says,
        and let it turn the values into samples.

        A plan comes from walks (its rows, descriptive and joined columns); in between, the
        values of the known rows are read with GETs, batched across all tables: a PDU poll
        takes a handful of requests instead of one walk per column. A row that goes away
        (a value the plan expects is missing) makes a new plan on the next poll.
        """
        if self.trace is not None:
            self.trace.clear()
        walked: dict[str, Value] = {}
        if self._plan is None or self.needs_plan:
            base = {**self._tags, "vendor": identity.profile.vendor, "model": identity.model}
            parts = self._registry.with_includes(identity.profile)
            walks: dict[str, dict[str, Value]] = {}  # each column walked once per poll
            self._plan, walked = await plan.build(parts, base, partial(self._walk, walks), self.get)
        values = await self.get([SYS_UPTIME, *(o for o in self._plan.oids() if o not in walked)])
        uptime = values.get(SYS_UPTIME)
        uptime = uptime if isinstance(uptime, int) else None
        self._counters.observe_uptime(self._uptime, uptime)
        self._uptime = uptime
        samples, complete = plan.execute(
            self._plan,
            {**walked, **values},
            time_ns,
            self._counters,
            self.trace,
            partial(self._unlisted_unit, self._plan),
        )
        if not complete:
            self._plan = None
        return samples

    def _unlisted_unit(
        self, made: plan.PollPlan, reading: plan.Reading, unit: str, raw: Value
    ) -> None:
        """Count a value whose unit its field does not list; log it once per OID."""
        self.unlisted_units += 1
        if reading.oid in self._unlisted_logged:
            return
        self._unlisted_logged.add(reading.oid)
        measurement, tags = made.points[reading.point]
        listed = ", ".join(repr(u) for u in reading.spec.units)
        log.warning(
            "%s: %s %s: %s from %s is %r, unit %r, which the profile's units map does not "
            "list (%s): no value, counted in values_unlisted_unit_total",
            self._where(),
            measurement,
            ",".join(f"{k}={v}" for k, v in sorted(tags.items()) if k not in self._tags),
            reading.field,
            reading.oid,
            text(raw),
            unit,
            listed,
        )

    async def _walk(self, walks: dict[str, dict[str, Value]], base: str) -> dict[str, Value]:
        """Walk one column once per poll; refuse an agent whose OIDs stop increasing."""
        if base not in walks:
            walks[base] = await self._retrying(f"walk {base}", partial(self._walk_once, base))
        return walks[base]

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
