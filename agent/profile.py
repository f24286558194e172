"""Device profiles: what to read from one device family over SNMP, kept as YAML data.

A profile names the tables to walk and, per column, the field or tag it becomes, with its
scale, sentinel values that mean "absent" and enum names. Adding a model is a YAML file and
a recording, never Python. Profiles are validated at load like any config.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from telemetry import config
from telemetry.config import KeyPath, StrictModel

_OID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


def _check_oid(value: str) -> str:
    value = value.strip(".")
    if not _OID.match(value):
        raise ValueError(f"{value!r} is not a numeric OID")
    return value


Oid = Annotated[str, AfterValidator(_check_oid)]


class FieldSpec(StrictModel):
    """How one column becomes one field. Every field has one fixed type, forever."""

    column: int = Field(gt=0)
    type: Literal["gauge", "counter", "enum", "string"] = "gauge"
    scale: float = 1.0
    absent: tuple[int, ...] = ()
    enum: dict[int, str] = {}

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("scale must not be zero")
        return value

    @model_validator(mode="after")
    def _enum_needs_names(self) -> FieldSpec:
        if (self.type == "enum") != bool(self.enum):
            raise ValueError("type enum needs an enum map, and an enum map needs type enum")
        return self


class TagSpec(StrictModel):
    """A tag taken from a column's value or from the row index."""

    column: int | None = Field(default=None, gt=0)
    index: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> TagSpec:
        if (self.column is None) == (not self.index):
            raise ValueError("a tag needs exactly one of column or index: true")
        return self


class RowFilter(StrictModel):
    column: int = Field(gt=0)
    not_in: tuple[int, ...]


class TableSpec(StrictModel):
    """One SNMP table: each row becomes one sample of `measurement`."""

    measurement: str
    entry: Oid
    fallback_for: Oid | None = None
    where: RowFilter | None = None
    tags: dict[str, TagSpec] = {}
    fields: dict[str, FieldSpec]

    def columns(self) -> list[int]:
        """Columns to walk: fields, column tags and the row filter, each once, in order."""
        wanted = {spec.column for spec in self.fields.values()}
        wanted |= {tag.column for tag in self.tags.values() if tag.column is not None}
        if self.where:
            wanted.add(self.where.column)
        return sorted(wanted)


class IdentitySource(StrictModel):
    oid: Oid
    pattern: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                if re.compile(value).groups != 1:
                    raise ValueError("pattern needs exactly one capture group")
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from None
        return value


class Detect(StrictModel):
    sys_object_id: tuple[str, ...] = ()
    sys_descr: tuple[str, ...] = ()


class Profile(StrictModel):
    name: str
    vendor: str
    kind: Literal["pdu", "cooling", "ups", "env_sensor"]
    detect: Detect
    identity: dict[Literal["model", "serial", "firmware"], list[IdentitySource]] = {}
    tables: list[TableSpec]

    def problems(self) -> list[tuple[KeyPath, str]]:
        entries = {table.entry for table in self.tables}
        return [
            (("tables", i, "fallback_for"), f"no table with entry {table.fallback_for}")
            for i, table in enumerate(self.tables)
            if table.fallback_for and table.fallback_for not in entries
        ]


def load_profile(path: Path) -> Profile:
    return config.load(path, Profile)


@cache
def builtin_profiles() -> dict[str, Profile]:
    """The profiles shipped in agent/profiles, by name."""
    found: dict[str, Profile] = {}
    for entry in resources.files("agent.profiles").iterdir():
        if entry.name.endswith(".yaml"):
            with resources.as_file(entry) as path:
                profile = load_profile(path)
            found[profile.name] = profile
    return found


def detect(sys_object_id: str, sys_descr: str) -> Profile | None:
    """Pick a profile by sysObjectID prefix, falling back to a sysDescr substring."""
    oid = sys_object_id.strip(".") + "."
    profiles = builtin_profiles().values()
    for profile in profiles:
        if any(oid.startswith(prefix) for prefix in profile.detect.sys_object_id):
            return profile
    for profile in profiles:
        if any(text in sys_descr for text in profile.detect.sys_descr):
            return profile
    return None
