"""Device profiles: what to read from one device family over SNMP, kept as YAML data.

A profile names scalars to GET and tables to walk and, per value, the field or tag it becomes:
scale (fixed, or factors read from the device's own scale columns), sentinel values that mean
"absent", enum names, counter width, a number (and its unit) inside text. Rows are selected
by index parts or column values (listed, or matching a pattern: a kind only in a user's
name), their own or joined from another table; a pivot names the field from an index part or
a type column (tables whose rows say what they measure: Raritan's sensor types, Rittal's
named variables, ENTITY-SENSOR-MIB). Fragments hold tables several profiles include. Adding
a model is a YAML file and a recording, never Python. Profiles are validated at load like any
config, with file and line in every error; agent/plan.py compiles them into what a poll reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.profile_schema import schema_problems
from telemetry import config
from telemetry.config import KeyPath, StrictModel

_OID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


def _check_oid(value: str) -> str:
    value = value.strip(".")
    if not _OID.match(value):
        raise ValueError(f"{value!r} is not a numeric OID")
    return value


Oid = Annotated[str, AfterValidator(_check_oid)]


def _compiled(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"bad regular expression: {exc}") from None


def _check_pattern(pattern: str) -> None:
    if _compiled(pattern).groups != 1:
        raise ValueError("pattern needs exactly one capture group")


def _check_unit_pattern(pattern: str) -> None:
    if set(_compiled(pattern).groupindex) != {"value", "unit"}:
        raise ValueError(
            "with units, pattern needs the named groups (?P<value>...) and (?P<unit>...)"
        )


def _text_keys(value: object) -> object:
    # YAML reads `1:` as a number; keys are compared as text.
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return value


UnitConversion = float | Literal["fahrenheit"]
"""What a unit named in a value's own text means: a factor to the field's unit (mA: 0.001 for
an `_a` field), or `fahrenheit` (degrees F to the field's degrees C)."""


class ScaleFrom(StrictModel):
    """A scale read from the device, from a column of the row (or of `entry`, joined on index
    parts): decimal_digits divides by 10**d (Raritan, ENTITY-SENSOR-MIB precision);
    signed_factor divides by a negative value and multiplies by a positive one (Rittal CMC III);
    divisor divides (PowerNet analog tables); map looks the raw value up in `factors`
    (ENTITY-SENSOR-MIB entPhySensorScale: 8 milli 0.001, 9 units 1, 10 kilo 1000)."""

    column: int = Field(gt=0)
    entry: Oid | None = None  # default: the table's own entry, same row index
    join: tuple[str, ...] = ()  # index parts that make up `entry`'s index (default: all)
    kind: Literal["decimal_digits", "signed_factor", "divisor", "map"]
    factors: dict[int, float] = {}

    @model_validator(mode="after")
    def _factors_with_map(self) -> ScaleFrom:
        if (self.kind == "map") != bool(self.factors):
            raise ValueError("kind map needs factors, and factors need kind map")
        return self


class TemperatureUnit(StrictModel):
    """Where a device says its temperatures are in Fahrenheit (a display setting most PDUs and
    environment monitors have): a scalar `oid`, or a `column` of `entry` joined on index parts
    (per-unit settings, Eaton). When the setting cannot be read, no value is reported."""

    oid: Oid | None = None
    entry: Oid | None = None
    column: int | None = Field(default=None, gt=0)
    join: tuple[str, ...] = ()
    fahrenheit: tuple[int | str, ...]

    @model_validator(mode="after")
    def _one_source(self) -> TemperatureUnit:
        if (self.oid is None) == (self.column is None):
            raise ValueError("temperature_unit needs exactly one of oid or column")
        return self


def _listed(values: object) -> list[str]:
    """`for_each` values: a list, or text of comma-separated values and ranges ("2-9,11-44")."""
    found: list[str] = []
    for item in values if isinstance(values, list | tuple) else [values]:
        for piece in str(item).split(","):
            first, dash, last = piece.strip().partition("-")
            if dash and first.isdigit() and last.strip().isdigit():
                if int(last) < int(first):
                    raise ValueError(f"for_each: range {piece.strip()!r} runs backwards")
                found += [str(n) for n in range(int(first), int(last) + 1)]
            elif piece.strip():
                found.append(piece.strip())
    return found


def _for_each_rows(spec: object) -> list[dict[str, str]]:
    if not isinstance(spec, dict) or not spec:
        raise ValueError('for_each needs names with their values, e.g. {unit: "1-16"}')
    columns = {str(name): _listed(values) for name, values in spec.items()}
    counts = {name: len(values) for name, values in columns.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ValueError(f"for_each: every name needs as many values (taken in step): {counts}")
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _substitute(data: object, values: dict[str, str]) -> object:
    if isinstance(data, str):
        for name, value in values.items():
            data = data.replace("{" + name + "}", value)
        return data
    if isinstance(data, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_substitute(item, values) for item in data]
    return data


class Repeated(StrictModel):
    """A table or scalar group written once for several units: `for_each: {unit: "1-16"}`
    makes one copy per value, with `{unit}` replaced in every text of the spec (OIDs, tag
    values). Several names are taken in step: `{outlet: "1-42", arc: "2-9,11-44"}`."""

    _copies: tuple[Any, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _for_each(cls, data: object, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if not isinstance(data, dict) or "for_each" not in data:
            return handler(data)
        template = {k: v for k, v in data.items() if k != "for_each"}
        copies = [handler(_substitute(template, row)) for row in _for_each_rows(data["for_each"])]
        copies[0]._copies = tuple(copies)
        return copies[0]

    def copies(self) -> tuple[Self, ...]:
        """What a poll reads: every copy of a `for_each` spec, else the spec itself."""
        return self._copies or (self,)


def _one_or_many(value: object) -> object:
    return (value,) if isinstance(value, str | dict) else value


class FieldSpec(StrictModel):
    """How one value becomes one field. Every field has one fixed type, forever.

    gauge: a float reading; integer: a whole-number reading (a PCIe generation, bytes), rounded
    after scaling; counter: an integer that only grows (wraps and device reboots are smoothed
    so the series never steps down); enum: a name from `enum`; string: text; bool: true when
    the raw value is one of `true_values`.
    """

    column: int | None = Field(default=None, gt=0)  # in tables
    entry: Oid | None = None  # in tables: a column of another table with the same index
    oid: Oid | None = None  # in scalars
    type: Literal["gauge", "integer", "counter", "enum", "string", "bool"] = "gauge"
    scale: float = 1.0
    absolute: bool = False  # e.g. a signed power factor (the sign tells leading/lagging)
    true_values: tuple[int | str, ...] = ()  # with type bool: raw values that mean true
    scale_from: tuple[ScaleFrom, ...] = ()  # factors read from the device, multiplied
    temperature_unit: TemperatureUnit | None = None  # for `_c` fields of switchable devices
    absent: tuple[int, ...] = ()
    enum: dict[int, str] = {}
    counter_bits: Literal[32, 64] | None = None  # wrap width for type counter
    # A number inside text ("32A", "35 C"): the value is its one capture group, before any
    # conversion; a value the pattern does not match is absent.
    pattern: str | None = None
    # A number with its unit inside text ("35 C", "95 F", "250 mA"): with `units`, the pattern
    # has the named groups `value` and `unit`, and the unit found says how the value (after
    # `scale`) is converted; a unit not listed gives no value (never a wrong unit), counted
    # per device (agent.mapping.UnlistedUnit, health values_unlisted_unit_total).
    units: dict[str, UnitConversion] = {}
    # The unit a value is always in, where the MIB says so and no setting or text does
    # (CyberPower's envirTemperature, 1/10 degF): converted after `scale`.
    unit: Literal["fahrenheit"] | None = None
    # Where this value gives none (a sentinel such as -1 "not supported", missing, an unlisted
    # unit): the first of these field specs that does, each read in its own way; in a table
    # from a `column` of the same row or a scalar `oid` (the same for every row). The APC
    # AP7900B's rPDU2 power is -1; its rPDUIdentDevicePowerWatts stands in.
    fallback: tuple[FieldSpec, ...] = ()

    _many = field_validator("scale_from", "fallback", mode="before")(_one_or_many)
    _unit_keys = field_validator("units", mode="before")(_text_keys)

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("scale must not be zero")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if (self.type == "enum") != bool(self.enum):
            raise ValueError("type enum needs an enum map, and an enum map needs type enum")
        if (self.type == "counter") != (self.counter_bits is not None):
            raise ValueError("type counter needs counter_bits (32 or 64); only counters have it")
        if (self.type == "bool") != bool(self.true_values):
            raise ValueError("type bool needs true_values, and true_values need type bool")
        if self.units or self.unit:
            if self.type not in ("gauge", "integer") or self.temperature_unit is not None:
                raise ValueError(
                    "unit and units are for gauge and integer fields without temperature_unit"
                )
            if self.units and self.unit:
                raise ValueError("a field has unit (always the same) or units (from its text)")
        if self.units:
            if self.pattern is None:
                raise ValueError("units need a pattern with the groups value and unit")
            if any(factor == 0 for factor in self.units.values()):
                raise ValueError("a unit's factor must not be zero")
            _check_unit_pattern(self.pattern)
        elif self.pattern is not None:
            _check_pattern(self.pattern)
        for other in self.fallback:
            if other.type != self.type or other.fallback:
                raise ValueError(
                    "a fallback is a field spec of the same type, without fallbacks of its own "
                    "(list them in order instead)"
                )
        if self.fallback and self.type == "counter":
            raise ValueError("a counter has no fallback: two sources would mix in one series")
        return self

    def choices(self) -> tuple[FieldSpec, ...]:
        """This spec, then its fallbacks, in the order they are tried."""
        return (self, *self.fallback)


class TagSpec(StrictModel):
    """A tag from a column's value (of this table, or of another table joined on index parts:
    an outlet's name from the outlet configuration table), from a named index part, from the
    whole index, from a scalar `oid` (read when the plan is made), or fixed. `pattern` keeps
    its one capture group ("Phase AB" -> "AB"). `format` decodes an index part that is an
    OCTET STRING (its length, if given, then one arc per byte): text, hex or mac."""

    column: int | None = Field(default=None, gt=0)
    entry: Oid | None = None
    join: tuple[str, ...] = ()
    index: str | Literal[True] | None = None
    value: str | None = None
    oid: Oid | None = None
    pattern: str | None = None
    format: Literal["number", "text", "hex", "mac"] = "number"

    @model_validator(mode="after")
    def _one_source(self) -> TagSpec:
        sources = (self.column, self.index, self.value, self.oid)
        if sum(x is not None for x in sources) != 1:
            raise ValueError("a tag needs exactly one of column, index, oid or value")
        if (self.entry is not None or self.join) and self.column is None:
            raise ValueError("entry and join need column")
        if self.format != "number" and self.index is None:
            raise ValueError("format is for index parts (a tag with index)")
        if self.pattern is not None:
            _check_pattern(self.pattern)
        return self


class Condition(StrictModel):
    """Keeps a row when its index part or a column value (as text) is / is not in a list, or
    `matches` a regular expression (found anywhere in it; `(?i)` for any case): a sensor whose
    kind is only in the name its user gave it. The column is the row's own, or one of `entry`
    joined on index parts (a type column kept in a configuration table, Raritan's external
    sensors)."""

    column: int | None = Field(default=None, gt=0)
    entry: Oid | None = None
    join: tuple[str, ...] = ()
    index: str | None = None
    in_: tuple[int | str, ...] | None = Field(default=None, alias="in")
    not_in: tuple[int | str, ...] | None = None
    matches: str | None = None
    missing: Literal["drop", "keep"] = "drop"  # a row without this value: unclassifiable

    @model_validator(mode="after")
    def _well_formed(self) -> Condition:
        if (self.column is None) == (self.index is None):
            raise ValueError("a condition needs exactly one of column or index")
        if (self.entry is not None or self.join) and self.column is None:
            raise ValueError("entry and join need column")
        if sum(x is not None for x in (self.in_, self.not_in, self.matches)) != 1:
            raise ValueError("a condition needs exactly one of in, not_in or matches")
        if self.matches is not None:
            _compiled(self.matches)
        return self

    def texts(self) -> frozenset[str]:
        return frozenset(str(v).strip(".") for v in (self.in_ or self.not_in or ()))


class PivotKey(StrictModel):
    """What the rows of one pivot key become: `field`, read as the pivot's `value` says with
    the key's changes (scale, enum, ...; with `column`, a field spec of its own), fixed
    `tags`, and `also` further fields of the same row, each a field spec of its own. With
    `measurement`, the key's rows are samples of that measurement instead of the table's."""

    field: str
    measurement: str | None = None
    tags: dict[str, str] = {}
    also: dict[str, FieldSpec] = {}
    changes: dict[str, object] = {}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        if isinstance(value, str):
            return {"field": value}
        if isinstance(value, dict) and "changes" not in value:
            own = {k: v for k, v in value.items() if k in ("field", "measurement", "tags", "also")}
            return {**own, "changes": {k: v for k, v in value.items() if k not in own}}
        return value


class Pivot(StrictModel):
    """Rows that say what they measure: the field name comes from an index part (Raritan's
    sensor type), a column of the row (Rittal's variable names, ENTITY-SENSOR-MIB's sensor
    type) or a column of another table joined on index parts. Rows whose key is not listed are
    left out."""

    index: str | None = None
    column: int | None = Field(default=None, gt=0)
    entry: Oid | None = None
    join: tuple[str, ...] = ()
    value: FieldSpec  # how every key's field is read, unless the key changes it
    keys: dict[str, PivotKey]

    @field_validator("keys", mode="before")
    @classmethod
    def _text_keys(cls, value: object) -> object:
        # YAML reads `1:` as a number; keys are compared as text.
        if isinstance(value, dict):
            return {str(k).strip("."): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Pivot:
        if (self.column is None) == (self.index is None):
            raise ValueError("a pivot needs exactly one of column or index")
        if (self.entry is not None or self.join) and self.column is None:
            raise ValueError("entry and join need column")
        if self.value.column is None:
            raise ValueError("a pivot's value needs column")
        for key in self.keys:
            self.fields_of(key)  # every key's field spec is valid at load
        return self

    def fields_of(self, key: str) -> dict[str, FieldSpec]:
        """The fields a row with this key gives."""
        chosen = self.keys[key]
        # A key that names its own column is a field of its own (a state column beside the
        # values); otherwise it is the pivot's value with the key's changes.
        base = {} if "column" in chosen.changes else self.value.model_dump(exclude_defaults=True)
        try:
            main = FieldSpec.model_validate({**base, **chosen.changes})
        except ValidationError as exc:
            problems = "; ".join(e["msg"] for e in exc.errors(include_url=False))
            raise ValueError(f"key {key}: {problems}") from None
        return {chosen.field: main, **chosen.also}


class Split(StrictModel):
    """Values that are lists in one string ("1,0,1,1": outlet states in one DisplayString):
    element i of each field's value is a row of its own, its position (from `start`) the
    index part named `index`."""

    separator: str = Field(default=",", min_length=1)
    index: str
    start: int = 1


class TableSpec(Repeated):
    """One SNMP table: each selected row becomes one sample of `measurement`."""

    measurement: str
    entry: Oid
    index: tuple[str, ...] = ()  # names for the index's parts, e.g. [pdu, inlet, sensor]
    # Read only when none of these tables gave rows (a table skipped as a fallback counts as
    # having the rows of the table it stood in for, so fallbacks chain).
    fallback_for: tuple[Oid, ...] = ()
    where: tuple[Condition, ...] = ()
    # Rows found once by their descriptive columns (where, tags, scales), then read by GET:
    # for large self-describing tables (Rittal's 5,000-row variable table).
    lookup: bool = False
    tags: dict[str, TagSpec] = {}
    pivot: Pivot | None = None
    fields: dict[str, FieldSpec] = {}
    split: Split | None = None

    _many = field_validator("fallback_for", mode="before")(_one_or_many)

    @model_validator(mode="after")
    def _columns_and_names(self) -> TableSpec:
        names = set(self.index)
        if self.split is not None:
            if self.lookup:
                raise ValueError("split needs the values walked (no lookup)")
            if self.split.index in names:
                raise ValueError(f"split: index part {self.split.index!r} is already named")
            names.add(self.split.index)
        for name, tag in self.tags.items():
            if tag.oid is not None:
                raise ValueError(f"tag {name}: a table's tags come from its rows (no oid)")
        specs = list(self.fields.items())
        if self.pivot:
            specs += [i for key in self.pivot.keys for i in self.pivot.fields_of(key).items()]
        for name, spec in specs:
            if spec.column is None or spec.oid is not None:
                raise ValueError(f"field {name}: a table field needs column (and no oid)")
            for other in spec.fallback:
                if (other.column is None) == (other.oid is None):
                    raise ValueError(
                        f"field {name}: a table field's fallback needs column or oid (not both)"
                    )
                if other.oid is not None and (other.scale_from or other.entry):
                    raise ValueError(f"field {name}: a fallback with oid is a scalar (no columns)")
                unit = other.temperature_unit
                if other.oid is not None and unit is not None and unit.oid is None:
                    raise ValueError(f"field {name}: a scalar fallback's temperature_unit: oid")
        used: list[object] = [t.index for t in self.tags.values()]
        used += [c.index for c in self.where]
        used += [part for tag in self.tags.values() for part in tag.join]
        used += [part for condition in self.where for part in condition.join]
        if self.pivot:
            used += [self.pivot.index, *self.pivot.join]
        for choice in (choice for _, spec in specs for choice in spec.choices()):
            used += [part for scale in choice.scale_from for part in scale.join]
            used += list(choice.temperature_unit.join) if choice.temperature_unit else []
        for ref in used:
            if isinstance(ref, str) and ref not in names:
                raise ValueError(f"index part {ref!r} is not named in index: {list(self.index)}")
        return self


class ScalarGroup(Repeated):
    """Scalar OIDs read with GET that together form one sample; its tags are fixed values or
    scalars read when the plan is made (an outlet's name)."""

    measurement: str
    tags: dict[str, TagSpec] = {}
    fields: dict[str, FieldSpec]

    @model_validator(mode="after")
    def _oids_only(self) -> ScalarGroup:
        for name, spec in ((n, c) for n, s in self.fields.items() for c in s.choices()):
            if spec.oid is None or spec.column is not None or spec.scale_from:
                raise ValueError(f"field {name}: a scalar field needs oid (no column, scale_from)")
            if spec.temperature_unit and spec.temperature_unit.oid is None:
                raise ValueError(f"field {name}: a scalar's temperature_unit needs oid")
        for name, tag in self.tags.items():
            if tag.value is None and tag.oid is None:
                raise ValueError(f"tag {name}: a scalar group's tags are a value or an oid")
        return self


class IdentitySource(StrictModel):
    oid: Oid
    pattern: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            _check_pattern(value)
        return value


class Detect(StrictModel):
    sys_object_id: tuple[str, ...] = ()  # prefixes, e.g. "1.3.6.1.4.1.318.1.3.4"
    sys_descr: tuple[str, ...] = ()  # substrings, tried only when no sysObjectID matches
    # Fallback when nothing matches by sysObjectID or sysDescr: a device that has objects under
    # one of `answers` gets this profile; with `enterprise`, only a device whose sysObjectID is
    # under one of those subtrees (a vendor family), tried before the generic (MIB) profiles.
    answers: tuple[Oid, ...] = ()
    enterprise: tuple[str, ...] = ()

    @field_validator("sys_object_id", "enterprise")
    @classmethod
    def _prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Compare whole arcs: "1.3.6.1.2.1.33" must not match "1.3.6.1.2.1.330".
        return tuple(_check_oid(prefix) + "." for prefix in value)

    @model_validator(mode="after")
    def _enterprise_needs_answers(self) -> Detect:
        if self.enterprise and not self.answers:
            raise ValueError("enterprise needs answers (the subtrees the family's tables are in)")
        return self


class Readings(StrictModel):
    """What to read: scalar groups, tables and included fragments (or profiles), by name."""

    # Fragments (fragments/<name>.yaml) or profiles whose tables this device also answers
    # (a UPS card that speaks UPS-MIB too); each is polled once.
    include: tuple[str, ...] = ()
    scalars: list[ScalarGroup] = []
    tables: list[TableSpec] = []

    def problems(self) -> list[tuple[KeyPath, str]]:
        entries = {copy.entry for table in self.tables for copy in table.copies()}
        found: list[tuple[KeyPath, str]] = [
            (("tables", i, "fallback_for"), f"no table with entry {entry}")
            for i, table in enumerate(self.tables)
            for entry in table.fallback_for
            if entry not in entries
        ]
        if not self.scalars and not self.tables and not self.include:
            found.append(((), "needs scalars, tables or include"))
        return found


class Fragment(Readings):
    """Tables and scalars several profiles share (UPS-MIB, an NMC's common tables): a YAML
    file without name or detect, included by its file name."""


class Profile(Readings):
    name: str
    vendor: str
    kind: Literal["pdu", "cooling", "ups", "env_sensor", "dc_power"]
    detect: Detect
    identity: dict[Literal["model"], list[IdentitySource]] = {}


R = TypeVar("R", bound=Readings)


def read(path: Path, model: type[R]) -> tuple[R, list[str]]:
    """A profile or fragment file (ConfigError with file and line where it is malformed), and
    `file:line: key: problem` where it writes what the schema does not have."""
    data, lines = config.parse_file(path)
    part = config.validate(data, model, str(path), lines)
    return part, [
        f"{config.position(str(path), lines, key)}: {message}"
        for key, message in schema_problems(part)
    ]


def _load(path: Path, model: type[R]) -> R:
    part, problems = read(path, model)
    if problems:
        raise config.ConfigError("\n".join(problems))
    return part


def load_profile(path: Path) -> Profile:
    """A profile file, refused (ConfigError) where it is malformed or departs from the schema."""
    return _load(path, Profile)


def load_fragment(path: Path) -> Fragment:
    """A fragment file, refused (ConfigError) where it is malformed or departs from the schema."""
    return _load(path, Fragment)
