"""Where a profile's fields depart from the schema (telemetry/schema.yaml).

A profile may only write fields the schema's measurement has, with the schema's type: a site
profile that writes `tempc` or a gauge `state` is refused at load with the file, line and what
the schema expects, instead of sending samples the database would keep under a second name or
refuse for their type. Every place a profile names a field is checked: table and scalar
fields, pivot keys (with a measurement of their own) and their `also`, every `for_each` copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from difflib import get_close_matches
from typing import TYPE_CHECKING

from telemetry.config import KeyPath
from telemetry.schema import FieldType, Schema, schema

if TYPE_CHECKING:
    from agent.profile import FieldSpec, Readings, ScalarGroup, TableSpec

# The profile field types that write each line protocol type.
_WRITERS: dict[FieldType, str] = {
    "float": "gauge",
    "int": "integer (or counter, with scale 1)",
    "string": "enum or string",
    "bool": "bool",
}


_WRITES: dict[str, FieldType] = {
    "gauge": "float",
    "integer": "int",
    "enum": "string",
    "string": "string",
    "bool": "bool",
}


def written_type(spec: FieldSpec) -> FieldType:
    """The line protocol type a field spec writes (a counter stays an integer unless scaled)."""
    if spec.type == "counter":
        return "int" if spec.scale == 1 else "float"
    return _WRITES[spec.type]


def schema_problems(part: Readings) -> list[tuple[KeyPath, str]]:
    """(key path, problem) for every field `part` writes that its measurement may not carry."""
    found: list[tuple[KeyPath, str]] = []
    found_in = schema()
    for path, named_at, measurement, name, spec in _fields(part):
        problem: str | None
        if measurement not in found_in.measurements:
            path, problem = named_at, _unknown_measurement(found_in, measurement)
        else:
            problem = _problem(found_in, measurement, name, spec)
        if problem and (path, problem) not in found:  # for_each copies say it once
            found.append((path, problem))
    return found


def _fields(part: Readings) -> Iterator[tuple[KeyPath, KeyPath, str, str, FieldSpec]]:
    """(key path, its measurement's key path, measurement, field, spec) for every field the
    part writes."""
    groups: list[tuple[KeyPath, ScalarGroup | TableSpec]] = [
        (("scalars", i), c) for i, group in enumerate(part.scalars) for c in group.copies()
    ]
    tables = [(("tables", i), c) for i, table in enumerate(part.tables) for c in table.copies()]
    for at, copy in [*groups, *tables]:
        for name, spec in copy.fields.items():
            yield (*at, "fields", name), (*at, "measurement"), copy.measurement, name, spec
    for at, table in tables:
        pivot = table.pivot
        if pivot is None:
            continue
        for key, chosen in pivot.keys.items():
            key_at = (*at, "pivot", "keys", key)
            named_at = (*key_at, "measurement") if chosen.measurement else (*at, "measurement")
            measurement = chosen.measurement or table.measurement
            for name, spec in pivot.fields_of(key).items():
                where = (*key_at, "also", name) if name in chosen.also else (*key_at, "field")
                yield where, named_at, measurement, name, spec


def _unknown_measurement(found: Schema, measurement: str) -> str:
    near = get_close_matches(measurement, found.measurements, n=3, cutoff=0.6)
    hint = f"near: {', '.join(near)}" if near else "docs/schema.md lists them"
    return f"measurement {measurement!r} is not in the schema; {hint}"


def _problem(found: Schema, measurement: str, name: str, spec: FieldSpec) -> str | None:
    definition = found.field(measurement, name)
    if definition is None:
        return f"field {name}: {_not_there(found, measurement, name)}"
    written = written_type(spec)
    if written != definition.type:
        return (
            f"field {name}: a {spec.type} writes {written}, but {measurement}.{name} is"
            f" {definition.type} ({definition.kind}) in the schema: needs type"
            f" {_WRITERS[definition.type]}"
        )
    if spec.type == "counter" and definition.kind != "counter":
        return f"field {name}: a counter, but {measurement}.{name} is a {definition.kind}"
    return None


def _not_there(found: Schema, measurement: str, name: str) -> str:
    """What the schema says instead: which measurements have the name, or names near it."""
    fields = found.measurements[measurement].fields
    near = get_close_matches(name, fields, n=3, cutoff=0.5)
    said = [f"near: {', '.join(near)}"] if near else []
    if name in found.fields:
        owners = [m for m, spec in found.measurements.items() if name in spec.fields]
        said.insert(0, f"{measurement} has no such field (it is one of {', '.join(owners)})")
    else:
        said.insert(0, f"not in the schema's vocabulary for {measurement}")
        said.append(f"docs/schema.md lists its {len(fields)} fields")
    return "; ".join(said)
