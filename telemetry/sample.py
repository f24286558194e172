"""The one data type that crosses module boundaries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

FieldValue = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Sample:
    """One point: measurement, tags, fields and a time in nanoseconds since the epoch.

    Tags and fields are copied into read-only mappings, so a sample can be handed between
    tasks without defensive copies. Integers above 2**63-1 (SNMP Counter64) encode as unsigned.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
