"""The agent's YAML config: who it is, where its devices are, how to reach the broker."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.accelerators.config import AcceleratorSettings
from agent.mqtt_devices.config import MqttDevicesConfig
from agent.resolve import is_ip
from telemetry.config import KeyPath, Secret, StrictModel
from telemetry.metrics import MetricsSettings
from telemetry.mqtt import BrokerSettings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
# A DNS name (RFC 1123 labels; underscores, which many sites' names have, tolerated). The agent
# resolves it (agent/resolve.py); whether it resolves is known only where the agent runs.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
_DOTTED_NUMBERS = re.compile(r"^[0-9.]+$")


def _plain_name(value: str) -> str:
    # Site and agent names go into MQTT topics: no wildcards, slashes or spaces.
    if not _NAME.match(value):
        raise ValueError(f"{value!r} may hold only letters, digits and _ . : -")
    return value


class AgentIdentity(StrictModel):
    name: str
    site: str
    # Processes that split the devices (`rackwatch agent --worker I`; docs/operations.md,
    # "Several agents per host"): for more devices than one core polls.
    workers: int = Field(default=1, ge=1, le=64)

    _check = field_validator("name", "site")(_plain_name)


class MqttSettings(BrokerSettings):
    topic_prefix: str = "rackwatch/v1"
    max_batch_lines: int = Field(default=2000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)
    # QoS 1 publishes awaiting their PUBACK at once (a broker grants at most its Receive
    # Maximum: Mosquitto 20); more than one keeps a busy agent's round trips overlapped.
    max_inflight: int = Field(default=8, ge=1, le=65535)
    # "gzip": each message's payload is gzip (RFC 1952, first bytes 1f 8b) line protocol.
    # Collectors take both; upgrade them before turning it on (docs/schema.md, wire format).
    compression: Literal["none", "gzip"] = "none"
    # Lines held in memory. Past half of it polls wait before starting (they stretch rather
    # than pile up); past all of it the oldest lines go to the spool, or without one are dropped.
    max_queue_lines: int = Field(default=200_000, ge=1)
    # While the broker is unreachable, batches go to this on-disk spool (survives restarts;
    # systemd: StateDirectory=). Bounded: when full, the oldest batches are dropped, counted.
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=64 * 1024)


AuthProtocol = Literal["md5", "sha", "sha224", "sha256", "sha384", "sha512"]
PrivProtocol = Literal["des", "aes", "aes192", "aes256"]


class SnmpCredentials(StrictModel):
    """v1/v2c: a community. v3: a USM user; with a password, auth defaults to SHA-256 and
    privacy to AES-128 — MD5, SHA-1 and DES only when named, since they are broken."""

    version: Literal["1", "2c", "3"] = "2c"
    community: Secret | None = None
    user: str | None = None
    auth_protocol: AuthProtocol | None = None
    auth_password: Secret | None = None
    priv_protocol: PrivProtocol | None = None
    priv_password: Secret | None = None

    @model_validator(mode="after")
    def _complete(self) -> SnmpCredentials:
        if self.version != "3":
            if self.community is None:
                raise ValueError(f"SNMP v{self.version} needs community")
            if self.user or self.auth_password or self.priv_password:
                raise ValueError("user and passwords are for version 3")
            return self
        if not self.user:
            raise ValueError("SNMP v3 needs user")
        if self.community is not None:
            raise ValueError("community is for versions 1 and 2c; v3 uses user")
        if self.auth_protocol and not self.auth_password:
            raise ValueError("auth_protocol needs auth_password")
        if self.priv_password and not self.auth_password:
            raise ValueError("privacy (priv_password) needs authentication (auth_password)")
        if self.priv_protocol and not self.priv_password:
            raise ValueError("priv_protocol needs priv_password")
        for password in (self.auth_password, self.priv_password):
            if password is not None and len(password) < 8:
                raise ValueError("SNMP v3 passwords need at least 8 characters (RFC 3414)")
        return self


class TrapUser(StrictModel):
    """A v3 user allowed to send traps or informs. Traps (unlike informs) are authenticated
    against the sender's engine ID, so give `engine_id` (hex) for devices that send traps."""

    user: str
    auth_protocol: AuthProtocol | None = None
    auth_password: Secret | None = None
    priv_protocol: PrivProtocol | None = None
    priv_password: Secret | None = None
    engine_id: str | None = Field(default=None, pattern=r"^(0x)?([0-9A-Fa-f]{2}){5,32}$")


class TrapSeverity(StrictModel):
    """Traps whose name `match`es (a regex, searched) get this severity; the first rule wins."""

    match: str
    severity: Literal["critical", "warning", "info"]

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value


# A clearing trap first: "upsAlarmCleared" is good news. A name no rule matches is a warning.
DEFAULT_TRAP_SEVERITY = [
    TrapSeverity(match="Cleared|Normal|Restored|Return", severity="info"),
    TrapSeverity(match="OnBattery|Fail|Alarm", severity="critical"),
]


class TrapName(StrictModel):
    name: str
    module: str = ""
    description: str = ""
    objects: list[str] = []  # the names of the objects it carries


class TrapObject(StrictModel):
    name: str
    values: dict[int, str] = {}  # an enum's names


class TrapNamesFile(StrictModel):
    """`rackwatch mibs compile` output, keyed by numeric OID: a site's `traps.names_file`."""

    generated_by: str | None = None
    traps: dict[str, TrapName] = {}
    objects: dict[str, TrapObject] = {}


class TrapSettings(StrictModel):
    listen: str = "0.0.0.0:162"  # port 162 needs CAP_NET_BIND_SERVICE
    communities: list[Secret] = []
    users: list[TrapUser] = []
    poll_on_trap: bool = True  # poll the sender at once, so the NOC sees the new readings
    # A site's own `rackwatch mibs compile` output, merged over the shipped trap names.
    names_file: Path | None = None
    severity: list[TrapSeverity] = DEFAULT_TRAP_SEVERITY

    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port")
        return value


class Defaults(StrictModel):
    interval_s: float = Field(default=30.0, gt=0)
    jitter_s: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=2.0, gt=0)
    retries: int = Field(default=1, ge=0)
    max_repetitions: int = Field(default=20, ge=1)


class Device(StrictModel):
    name: str
    address: str
    credentials: str = "default"
    profile: str | None = None
    room: str = ""
    row: str = ""
    rack: str = ""
    interval_s: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0)
    max_repetitions: int | None = Field(default=None, ge=1)  # 1 for agents that choke on GETBULK
    deadline_s: float | None = Field(default=None, gt=0)  # whole poll; default: the interval
    tags: dict[str, str] = {}

    def host_port(self) -> tuple[str, int]:
        """`host`, `host:port` or `[v6]:port`; the SNMP port defaults to 161."""
        address = self.address
        if address.startswith("["):
            host, _, rest = address[1:].partition("]")
            return host, int(rest[1:]) if rest.startswith(":") else 161
        if address.count(":") == 1:
            host, port = address.split(":")
            return host, int(port)
        return address, 161

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        probe = cls.model_construct(address=value)
        try:
            host, port = probe.host_port()
        except ValueError:
            raise ValueError(f"{value!r}: port is not a number") from None
        if not host or not 0 < port < 65536:
            raise ValueError(f"{value!r} is not host, host:port or [v6]:port")
        if not is_ip(host):
            if _DOTTED_NUMBERS.match(host):  # a mistyped IPv4 address, not a name to look up
                raise ValueError(f"{value!r}: {host} is not an IPv4 address")
            if not _HOST_NAME.match(host):
                raise ValueError(f"{value!r}: {host!r} is neither an IP address nor a host name")
        return value


class AgentConfig(StrictModel):
    agent: AgentIdentity
    mqtt: MqttSettings = MqttSettings()
    defaults: Defaults = Defaults()
    credentials: dict[str, SnmpCredentials] = {}
    health_interval_s: float = Field(default=30.0, gt=0)
    traps: TrapSettings | None = None
    mqtt_devices: MqttDevicesConfig | None = None  # devices that publish (docs/mqtt-devices.md)
    metrics: MetricsSettings | None = None  # Prometheus endpoint; off unless set
    accelerators: AcceleratorSettings | None = None  # GPUs/NPUs in this host
    # The site's own profiles (docs/devices.md; relative: to the config's folder); a site
    # profile with a built-in's name replaces it.
    profiles_dir: Path | None = None
    devices: list[Device] = []

    def problems(self) -> list[tuple[KeyPath, str]]:
        from agent.registry import load_registry

        found: list[tuple[KeyPath, str]] = []
        names = Counter(device.name for device in self.devices)
        if self.profiles_dir is not None and not self.profiles_dir.is_dir():
            return [(("profiles_dir",), f"{self.profiles_dir} is not a directory")]
        profiles = load_registry(self.profiles_dir).profiles  # a bad profile: its file and line
        for i, device in enumerate(self.devices):
            if names[device.name] > 1:
                found.append((("devices", i, "name"), f"duplicate device name {device.name!r}"))
            if device.credentials not in self.credentials:
                found.append(
                    (
                        ("devices", i, "credentials"),
                        f"no credentials named {device.credentials!r} under credentials:",
                    )
                )
            if device.profile is not None and device.profile not in profiles:
                found.append(
                    (
                        ("devices", i, "profile"),
                        f"unknown profile {device.profile!r}; known: {', '.join(sorted(profiles))}",
                    )
                )
        if self.mqtt_devices is not None:
            found += [(("mqtt_devices", *key), m) for key, m in self.mqtt_devices.problems()]
        return found
