"""SNMP trap and inform receiver: PDUs and UPSes tell us about events between polls.

Built on pysnmp's notification receiver: traps are rare and off the polling hot path, where
pysnmp's speed does not matter and its complete USM (v3 traps need the sender's engine ID,
informs ours) does. Each notification becomes one `snmp_trap` sample, and the agent polls the
sender at once, so the NOC sees the new readings instead of waiting for the next interval.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import ntfrcv
from pysnmp.proto.api import v2c

from agent.config import TrapNamesFile, TrapSeverity, TrapUser

log = logging.getLogger(__name__)

SHIPPED_NAMES = Path(__file__).with_name("trapnames.json")  # `rackwatch mibs compile` output
SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"

AUTH = {
    "md5": config.USM_AUTH_HMAC96_MD5,
    "sha": config.USM_AUTH_HMAC96_SHA,
    "sha224": config.USM_AUTH_HMAC128_SHA224,
    "sha256": config.USM_AUTH_HMAC192_SHA256,
    "sha384": config.USM_AUTH_HMAC256_SHA384,
    "sha512": config.USM_AUTH_HMAC384_SHA512,
}
PRIV = {
    "des": config.USM_PRIV_CBC56_DES,
    "aes": config.USM_PRIV_CFB128_AES,
    "aes192": config.USM_PRIV_CFB192_AES_BLUMENTHAL,
    "aes256": config.USM_PRIV_CFB256_AES_BLUMENTHAL,
}


@dataclass(frozen=True, slots=True)
class Notification:
    source_host: str
    source_port: int
    trap_oid: str
    varbinds: tuple[tuple[str, str], ...]  # without sysUpTime.0 and snmpTrapOID.0
    security_name: str  # the community index or v3 user it came with
    inform: bool


class TrapReceiver:
    """Listens on UDP; calls `on_notification` for every trap or inform it accepts."""

    def __init__(
        self,
        host: str,
        port: int,
        communities: list[str],
        users: list[TrapUser],
        on_notification: Callable[[Notification], None],
    ) -> None:
        self.host, self.port = host, port
        self._on_notification = on_notification
        self._engine = engine.SnmpEngine()
        self.received = 0
        self.rejected_callbacks = 0
        for i, community in enumerate(communities):
            config.add_v1_system(self._engine, f"community-{i}", community)
        for user in users:
            auth = AUTH[user.auth_protocol or "sha256"] if user.auth_password else None
            priv = PRIV[user.priv_protocol or "aes"] if user.priv_password else None
            config.add_v3_user(
                self._engine,
                user.user,
                auth or config.USM_AUTH_NONE,
                user.auth_password,
                priv or config.USM_PRIV_NONE,
                user.priv_password,
                securityEngineId=v2c.OctetString(hexValue=user.engine_id.removeprefix("0x"))
                if user.engine_id
                else None,
            )
        self._receiver: ntfrcv.NotificationReceiver | None = None

    def start(self) -> None:
        """Bind the port (needs a running event loop); OSError if it is taken or privileged."""
        transport = udp.UdpTransport().open_server_mode((self.host, self.port))
        config.add_transport(self._engine, udp.DOMAIN_NAME, transport)
        self._receiver = ntfrcv.NotificationReceiver(self._engine, self._callback)
        log.info("listening for SNMP traps and informs on udp %s:%d", self.host, self.port)

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.close(self._engine)
            self._receiver = None
        self._engine.close_dispatcher()

    def _callback(
        self,
        snmp_engine: engine.SnmpEngine,
        state_reference: object,
        context_engine_id: object,
        context_name: object,
        var_binds: list[tuple[object, object]],
        cb_ctx: object,
    ) -> None:
        self.received += 1
        _, address = snmp_engine.message_dispatcher.get_transport_info(state_reference)
        trap_oid = ""
        rest = []
        for oid, value in var_binds:
            key = str(oid)
            text = value.prettyPrint() if hasattr(value, "prettyPrint") else str(value)
            if key == SNMP_TRAP_OID:
                trap_oid = text
            elif key != SYS_UPTIME:
                rest.append((key, text))
        state = snmp_engine.observer.get_execution_context("rfc3412.receiveMessage:request")
        notification = Notification(
            source_host=str(address[0]),
            source_port=int(address[1]),
            trap_oid=trap_oid,
            varbinds=tuple(rest),
            security_name=str(state.get("securityName", "")),
            inform=getattr(state.get("pdu"), "tagSet", None) == v2c.InformRequestPDU.tagSet,
        )
        try:
            self._on_notification(notification)
        except Exception:  # a bug in handling one trap must not stop the receiver
            self.rejected_callbacks += 1
            log.exception("handling a trap from %s failed", notification.source_host)


class TrapNamesError(Exception):
    """A names file that cannot be read."""


@dataclass(frozen=True, slots=True)
class NamedTrap:
    name: str  # the MIB's name, or the numeric OID when no MIB names it
    module: str  # "" when unknown
    severity: str
    varbinds: tuple[tuple[str, str], ...]  # name.instance (numeric OID when unknown), value


class TrapNames:
    """Numbers to names, from compiled MIBs (`rackwatch mibs compile`): a site's file over ours."""

    def __init__(self, names_file: Path | None, severity: list[TrapSeverity]) -> None:
        self.traps: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, Any]] = {}
        shipped = _read(SHIPPED_NAMES)
        self.traps, self.objects = shipped["traps"], shipped["objects"]
        if names_file is not None:
            site = _read(names_file)
            try:  # the shipped file is checked by its test; a site's here and by `check`
                TrapNamesFile.model_validate(site)
            except ValidationError as exc:
                why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise TrapNamesError(f"trap names {names_file}: {why}") from exc
            self.traps |= site.get("traps") or {}
            self.objects |= site.get("objects") or {}
        self._severity = [(re.compile(rule.match), rule.severity) for rule in severity]

    def name(self, note: Notification) -> NamedTrap:
        known = self.traps.get(note.trap_oid) or {}
        name = str(known.get("name") or note.trap_oid)
        severity = "warning"
        if known:  # a numeric OID matches no rule meant for names
            severity = next((s for rx, s in self._severity if rx.search(name)), "warning")
        return NamedTrap(
            name,
            str(known.get("module", "")),
            severity,
            tuple(self._varbind(oid, value) for oid, value in note.varbinds),
        )

    def _varbind(self, oid: str, value: str) -> tuple[str, str]:
        """`upsSecondsOnBattery.0`: the longest known object OID that prefixes the varbind's;
        an enum's value by its name."""
        parts = oid.split(".")
        for cut in range(len(parts), 0, -1):
            obj = self.objects.get(".".join(parts[:cut]))
            if obj is not None:
                name = ".".join([str(obj["name"]), *parts[cut:]])
                values = {str(k): v for k, v in (obj.get("values") or {}).items()}  # YAML: ints
                return name, str(values.get(value, value))
        return oid, value


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise TrapNamesError(f"trap names {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("traps", {}), dict):
        raise TrapNamesError(f"trap names {path}: not the output of `rackwatch mibs compile`")
    return data
