"""Poll plans: a device's profile compiled, once per layout, into the readings each poll makes.

Making a plan walks what describes the rows (index parts, descriptive and joined columns,
pivot keys, scale columns) and decides, for every value the device will be asked for, the
sample and field it becomes and how it is converted. A poll then reads those OIDs (from the
layout walk, or by batched GETs) and converts each value in one pass:
OID -> conversion -> field of a sample. Nothing here does I/O except through `walk`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.mapping import (
    Counters,
    UnlistedUnit,
    Value,
    convert,
    counted,
    device_scale,
    in_celsius,
    index_text,
    text,
)
from agent.profile import Condition, FieldSpec, Readings, ScalarGroup, TableSpec, TagSpec
from telemetry.sample import FieldValue, Sample

Walk = Callable[[str], Awaitable[Mapping[str, Value]]]
"""Walks one column (entry.column) and gives its values by row index."""
Get = Callable[[list[str]], Awaitable[Mapping[str, Value]]]
"""GETs scalars (the names scalar groups take as tags); OIDs the device lacks are left out."""
Unlisted = Callable[["Reading", str, Value], None]
"""Told of a value left out because its unit text is not in the field's `units` map."""


@dataclass(frozen=True, slots=True)
class Guard:
    """A row condition on a column that is also read as a value: tested again every poll."""

    oid: str
    condition: Condition


@dataclass(frozen=True, slots=True)
class Reading:
    """One value a poll reads: its OID, the point and field it becomes, its conversion."""

    oid: str
    point: int  # index into PollPlan.points
    field: str
    spec: FieldSpec
    scale: float  # the field's scale times what the device's scale columns said
    setting: str | None = None  # OID of the C/F setting that applies to this value
    guards: tuple[Guard, ...] = ()
    counter: tuple[object, ...] | None = None  # the counter's key, for type counter
    checked: bool = True  # a table value: if it goes missing, the layout changed
    part: int | None = None  # a split table's value: which element of the list
    separator: str = ","
    fallback: bool = False  # read only if the readings before it gave its field no value


@dataclass(slots=True)
class PollPlan:
    """Everything a poll reads and what each value becomes, until the layout changes."""

    points: list[tuple[str, dict[str, str]]]
    readings: list[Reading]
    made_at: float = field(default_factory=time.monotonic)

    def oids(self) -> list[str]:
        """What a poll reads: every value and every temperature setting, each once."""
        found = [r.oid for r in self.readings]
        found += [r.setting for r in self.readings if r.setting]
        return list(dict.fromkeys(found))


def index_parts(names: Sequence[str], index: str) -> dict[str, str] | None:
    """Name the parts of a row index; the last name takes any remaining parts."""
    if not names:
        return {}
    parts = index.split(".")
    if len(parts) < len(names):
        return None
    named = dict(zip(names[:-1], parts, strict=False))
    named[names[-1]] = ".".join(parts[len(names) - 1 :])
    return named


def kept(condition: Condition, present: bool, value: str) -> bool:
    """Whether a row passes one condition, given its value there (as text)."""
    if not present:
        return condition.missing == "keep"  # a row that cannot be classified is left out
    if condition.matches is not None:
        return re.search(condition.matches, value) is not None
    return (value.strip(".") in condition.texts()) == (condition.in_ is not None)


async def build(
    parts: Sequence[Readings], base: Mapping[str, str], walk: Walk, get: Get | None = None
) -> tuple[PollPlan, dict[str, Value]]:
    """The plan for a device answering these profiles, and the values its walks already read
    (the first poll needs no GET for those).

    Tables are taken in order; a table with `fallback_for` is walked only when the tables it
    stands in for gave no rows (and then counts as having theirs, so fallbacks chain).
    Scalar groups' tags read from the device (`oid`) take one GET for them all.
    """
    builder = _Builder(dict(base), walk)
    groups = [copy for part in parts for g in part.scalars for copy in g.copies()]
    named = [t.oid for g in groups for t in g.tags.values() if t.oid]
    names = dict(await get(named)) if named and get is not None else {}
    for group in groups:
        builder.scalars(group, names)
    rows_by_entry: dict[str, int] = {}
    for table in (copy for part in parts for t in part.tables for copy in t.copies()):
        rows = sum(rows_by_entry.get(entry, 0) for entry in table.fallback_for)
        if not rows:
            rows = await builder.table(table)
        rows_by_entry[table.entry] = rows_by_entry.get(table.entry, 0) + rows
    return PollPlan(builder.points, builder.readings), builder.walked_values


def execute(
    plan: PollPlan,
    values: Mapping[str, Value],
    time_ns: int,
    counters: Counters,
    trace: dict[str, tuple[int, str]] | None = None,
    unlisted: Unlisted | None = None,
) -> tuple[list[Sample], bool]:
    """One poll's samples from the values read; False when a table value went missing (a row
    went away: make a new plan). `trace` gets each value's OID -> (sample position, field);
    `unlisted` each value left out for a unit its field does not list (the rest still count)."""
    fields: list[dict[str, FieldValue]] = [{} for _ in plan.points]
    sources: list[list[tuple[str, str]]] = [[] for _ in plan.points]
    complete = True
    for reading in plan.readings:
        raw = values.get(reading.oid)
        if raw is not None and reading.part is not None:
            pieces = text(raw).split(reading.separator)
            raw = _element(pieces[reading.part]) if reading.part < len(pieces) else None
        if raw is None:
            complete = complete and not reading.checked
            continue
        if not all(_still_kept(guard, values) for guard in reading.guards):
            continue
        if reading.fallback and reading.field in fields[reading.point]:
            continue  # the field's own value (or an earlier fallback) was there
        spec = reading.spec
        try:
            value = convert(spec, raw, reading.scale)
        except UnlistedUnit as exc:
            if unlisted is not None:
                unlisted(reading, exc.unit, raw)
            continue
        if spec.temperature_unit:
            value = in_celsius(value, spec.temperature_unit, values.get(reading.setting or ""))
        if value is not None and reading.counter and isinstance(raw, int):
            value = counted(spec, raw, reading.counter, counters)
        if value is not None:
            fields[reading.point][reading.field] = value
            sources[reading.point].append((reading.oid, reading.field))
    samples: list[Sample] = []
    for (measurement, tags), found, traced in zip(plan.points, fields, sources, strict=True):
        if found:
            if trace is not None:
                trace.update({oid: (len(samples), name) for oid, name in traced})
            samples.append(Sample(measurement, tags, found, time_ns))
    return samples, complete


def _still_kept(guard: Guard, values: Mapping[str, Value]) -> bool:
    raw = values.get(guard.oid)
    return kept(guard.condition, raw is not None, text(raw))


def _joined_index(index: str, parts: Mapping[str, str], join: tuple[str, ...]) -> str:
    return ".".join(parts[name] for name in join) if join else index


@dataclass
class _Row:
    """One row of a table being planned: its index, named parts and what was walked."""

    table: TableSpec
    index: str
    parts: dict[str, str]
    walks: dict[str, Mapping[str, Value]]
    part: int | None = None  # a split table's row: its element of each value

    def column(self, entry: str | None, column: int) -> str:
        return f"{entry or self.table.entry}.{column}"

    def read(self, entry: str | None, column: int, join: tuple[str, ...] = ()) -> Value:
        """A column of this row, or of `entry` joined on index parts, as walked."""
        walked = self.walks.get(self.column(entry, column), {})
        return walked.get(_joined_index(self.index, self.parts, join))

    def tag(self, tag: TagSpec) -> str:
        if tag.value is not None:
            found = tag.value
        elif tag.index is True:
            found = self.index
        elif tag.index is not None:
            found = index_text(self.parts[tag.index], tag.format)
        else:
            found = text(self.read(tag.entry, tag.column or 0, tag.join))
        if tag.pattern and found:
            match = re.search(tag.pattern, found)
            found = match.group(1) if match else found
        return found


class _Builder:
    def __init__(self, base: dict[str, str], walk: Walk) -> None:
        self.base = base
        self.walk = walk
        self.points: list[tuple[str, dict[str, str]]] = []
        self.readings: list[Reading] = []
        self.walked_values: dict[str, Value] = {}
        self._point_of: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        self._pivot_fields: dict[tuple[int, str], dict[str, FieldSpec]] = {}

    def point(self, measurement: str, tags: dict[str, str]) -> int:
        """Readings with the same measurement and tags make one sample."""
        key = (measurement, tuple(sorted(tags.items())))
        if key not in self._point_of:
            self._point_of[key] = len(self.points)
            self.points.append((measurement, tags))
        return self._point_of[key]

    def scalars(self, group: ScalarGroup, names: Mapping[str, Value]) -> None:
        tags = {**self.base}
        for name, tag in group.tags.items():
            found = tag.value if tag.value is not None else text(names.get(tag.oid or ""))
            if tag.pattern and found:
                match = re.search(tag.pattern, found)
                found = match.group(1) if match else found
            tags[name] = found
        point = self.point(group.measurement, tags)
        for name, field_spec in group.fields.items():
            for n, spec in enumerate(field_spec.choices()):  # the field's own OID first
                self.readings.append(_scalar(spec, point, name, (group.measurement, tags), n > 0))

    async def table(self, table: TableSpec) -> int:
        """Walk what the table needs, plan its kept rows' readings; the number of rows kept."""
        values = _value_columns(table)
        columns, own = _walked_columns(table, values)
        walks = {column: await self.walk(column) for column in columns}
        # Rows are the indexes of the table's own walked columns (and of same-index siblings).
        indexes = dict.fromkeys(index for c in columns if c in own for index in walks[c])
        count = 0
        for index in indexes:
            parts = index_parts(table.index, index)
            if parts is None:
                continue
            rows = [_Row(table, index, parts, walks)]
            if (split := table.split) is not None:
                length = max(
                    _elements(walks.get(c, {}).get(index), split.separator) for c in values
                )
                rows = [
                    _Row(table, index, {**parts, split.index: str(n + split.start)}, walks, n)
                    for n in range(length)
                ]
            count += sum(self._row(row, values) for row in rows)
        return count

    def _row(self, row: _Row, values: set[str]) -> bool:
        table = row.table
        guards: list[Guard] = []
        for condition in table.where:
            if condition.index is not None:
                present, value = condition.index in row.parts, row.parts.get(condition.index, "")
            else:
                raw = row.read(condition.entry, condition.column or 0, condition.join)
                present, value = raw is not None, text(raw)
                column = row.column(condition.entry, condition.column or 0)
                if column in values and not condition.join:  # a value too: test every poll
                    guards.append(Guard(f"{column}.{row.index}", condition))
            if not kept(condition, present, value):
                return False
        fields, key_tags, measurement = dict(table.fields), {}, table.measurement
        if (pivot := table.pivot) is not None:
            if pivot.index is not None:
                key = row.parts[pivot.index]
            else:
                key = text(row.read(pivot.entry, pivot.column or 0, pivot.join)).strip(".")
            if key not in pivot.keys:
                return False
            if (id(pivot), key) not in self._pivot_fields:  # validated once per key
                self._pivot_fields[id(pivot), key] = pivot.fields_of(key)
            fields |= self._pivot_fields[id(pivot), key]
            key_tags = pivot.keys[key].tags
            measurement = pivot.keys[key].measurement or measurement
        tags = {**self.base, **{name: row.tag(tag) for name, tag in table.tags.items()}}
        tags |= key_tags
        point = self.point(measurement, tags)
        for name, field_spec in fields.items():
            for n, spec in enumerate(field_spec.choices()):  # the field's own column first
                if spec.oid is not None:  # a scalar standing in for this row's value
                    sample = (measurement, tags)
                    self.readings.append(_scalar(spec, point, name, sample, True, tuple(guards)))
                else:
                    self._reading(row, point, name, spec, (measurement, tags), tuple(guards), n > 0)
        return True

    def _reading(
        self,
        row: _Row,
        point: int,
        name: str,
        spec: FieldSpec,
        sample: tuple[str, dict[str, str]],
        guards: tuple[Guard, ...],
        fallback: bool = False,
    ) -> None:
        table = row.table
        raws = [row.read(s.entry, s.column, s.join) for s in spec.scale_from]
        scale = device_scale(spec, raws)
        if scale is None:
            return  # the device did not say how to scale this value
        column = row.column(spec.entry, spec.column or 0)
        oid = f"{column}.{row.index}"
        separator = table.split.separator if table.split else ","
        if not table.lookup:  # the value was walked: exactly the values the device has
            if row.index not in row.walks[column]:
                return
            raw = row.walks[column][row.index]
            if row.part is not None and row.part >= _elements(raw, separator):
                return
            self.walked_values[oid] = raw
        setting = None
        if (unit := spec.temperature_unit) is not None:
            if unit.oid:
                setting = unit.oid
            else:
                unit_index = _joined_index(row.index, row.parts, unit.join)
                setting = f"{row.column(unit.entry, unit.column or 0)}.{unit_index}"
        self.readings.append(
            Reading(
                oid=oid,
                point=point,
                field=name,
                spec=spec,
                scale=scale,
                setting=setting,
                guards=guards,
                counter=_counter_key(spec, *sample, name),
                part=row.part,
                separator=separator,
                fallback=fallback,
            )
        )


def _scalar(
    spec: FieldSpec,
    point: int,
    name: str,
    sample: tuple[str, dict[str, str]],
    fallback: bool,
    guards: tuple[Guard, ...] = (),
) -> Reading:
    """The reading of a scalar field (or of a scalar standing in for a table's value)."""
    unit = spec.temperature_unit
    return Reading(
        oid=spec.oid or "",
        point=point,
        field=name,
        spec=spec,
        scale=spec.scale,
        setting=unit.oid if unit else None,
        counter=_counter_key(spec, *sample, name),
        guards=guards,
        checked=False,  # a scalar that goes missing is no change of the table's rows
        fallback=fallback,
    )


def _element(piece: str) -> Value:
    """One element of a split value: an integer as an integer (so `absent: [-1]` and enum
    codes apply as to an INTEGER column), anything else as text."""
    piece = piece.strip()
    try:
        return int(piece)
    except ValueError:
        return piece


def _elements(raw: Value, separator: str) -> int:
    """How many elements a split value has (none when it is missing)."""
    return 0 if raw is None else len(text(raw).split(separator))


def _counter_key(
    spec: FieldSpec, measurement: str, tags: Mapping[str, str], name: str
) -> tuple[object, ...] | None:
    return (measurement, tuple(sorted(tags.items())), name) if spec.type == "counter" else None


def _all_fields(table: TableSpec) -> list[FieldSpec]:
    """Every field spec of the table's rows read from a column, fallbacks included."""
    found = list(table.fields.values())
    if table.pivot:
        found += [f for key in table.pivot.keys for f in table.pivot.fields_of(key).values()]
    return [choice for spec in found for choice in spec.choices() if choice.column is not None]


def _value_columns(table: TableSpec) -> set[str]:
    """The columns (entry.column) whose values become fields."""
    return {f"{spec.entry or table.entry}.{spec.column}" for spec in _all_fields(table)}


def _walked_columns(table: TableSpec, values: set[str]) -> tuple[list[str], set[str]]:
    """Columns a layout walk reads: what describes rows (conditions, tags, pivot keys, scale
    columns, own or joined), and the values too unless the table is a lookup table; and which
    of them are the rows' own (their indexes are the table's rows)."""
    refs: list[tuple[str | None, int | None, tuple[str, ...]]] = [
        (c.entry, c.column, c.join) for c in table.where
    ]
    refs += [(t.entry, t.column, t.join) for t in table.tags.values()]
    if table.pivot:
        refs.append((table.pivot.entry, table.pivot.column, table.pivot.join))
    own = {f"{table.entry}.{c}" for e, c, j in refs if c and e in (None, table.entry) and not j}
    refs += [(s.entry, s.column, s.join) for f in _all_fields(table) for s in f.scale_from]
    columns = {f"{entry or table.entry}.{column}" for entry, column, _ in refs if column}
    if not table.lookup:
        columns |= values
        own |= values
    return sorted(columns, key=lambda c: tuple(map(int, c.split(".")))), own
