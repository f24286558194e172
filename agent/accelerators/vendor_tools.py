"""Accelerators read through a vendor's command-line tool described in YAML, not in Python.

A definition (agent/accelerators/tools/*.yaml, or a site's own file) names the command, the
layout of its output (agent/accelerators/tool_formats.py) and which column feeds which field of
the `accelerator` measurement (telemetry/schema.yaml), with the unit the tool prints:

    vendor: hygon
    command: [hy-smi]
    format: table            # boxed, csv, keyvalue, json, ruled, aligned
    header: DCU              # the first column's name: finds the header
    end: End of SMI Log      # the last line; output without it is truncated
    index: DCU
    model: {value: Hygon DCU}   # or {column: NAME}
    fields:
      temp_c: {column: Temp, unit: C}
      mem_used_bytes: {column: Memory-Usage, part: 0, unit: MiB}   # "60982/65536 MiB"

Failures are counted in the source's `failures` by kind: the tool's own (missing, exit, timeout,
output: see tool_source.py), `card` (a card's line or value that cannot be read: that card or
that field is left out, the other cards are not), `truncated` (the output stops before its end
line) and `card_missing` (a card seen in an earlier poll is absent).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from agent.accelerators.jobs import JobFinder
from agent.accelerators.tool_formats import FORMATS, Parsed, Record, parse_processes
from agent.accelerators.tool_source import Reading, ToolSource
from agent.mapping import convert
from agent.profile import FieldSpec
from telemetry.config import StrictModel
from telemetry.sample import FieldValue
from telemetry.schema import schema

BUILTIN = Path(__file__).parent / "tools"
# Units a tool prints after a number -> the factor to the schema field's unit.
UNITS: dict[str, float] = {
    "": 1,
    "C": 1,
    "℃": 1,  # efsmi 1.6 and later: 35℃
    "W": 1,
    "%": 1,
    "MHz": 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
NOT_AVAILABLE = frozenset({"N/A", "NA", "-", ""})
CARD_FAILURES = ("card", "truncated", "card_missing")


class DefinitionError(ValueError):
    """A vendor tool definition that cannot be used; the message names the file and the key."""


class ColumnField(StrictModel):
    column: str = Field(min_length=1)
    unit: str = ""
    part: int | None = Field(default=None, ge=0)  # of "used/total" or "used(total)": 0, 1

    @model_validator(mode="after")
    def _known_unit(self) -> ColumnField:
        if self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r} is not one of {', '.join(UNITS)}")
        return self


class Identity(StrictModel):
    column: str | None = None
    value: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Identity:
        if (self.column is None) == (self.value is None):
            raise ValueError("give either column or value")
        return self


class ProcessTable(StrictModel):
    """Where the output lists the processes on each card (for Slurm jobs)."""

    after: str = Field(min_length=1)  # a text on the line above the table
    card: int = Field(ge=0)  # which word of a table line is the card's index
    pid: int = Field(ge=0)  # which word is the process id


class VendorTool(StrictModel):
    vendor: str = Field(min_length=1)
    description: str = ""
    command: list[str] = Field(min_length=1)
    format: Literal["table", "boxed", "csv", "keyvalue", "json", "ruled", "aligned"]
    header: str = Field(min_length=1)
    end: str | None = None
    index: str = Field(min_length=1)
    index_prefix: str = ""  # taken off the index where printed: rocm-smi's "card0" is card 0
    model: Identity
    uuid: str | None = None  # a column holding a stable identity (serial, UUID)
    processes: ProcessTable | None = None
    fields: dict[str, ColumnField] = Field(min_length=1)

    @model_validator(mode="after")
    def _schema_fields(self) -> VendorTool:
        for name in self.fields:
            definition = schema().field("accelerator", name)
            if definition is None:
                raise ValueError(f"fields.{name}: not a field of `accelerator` in the schema")
            if definition.type == "bool":
                raise ValueError(f"fields.{name}: a flag cannot be read from a column")
        return self


def load_definition(path: Path) -> VendorTool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return VendorTool.model_validate(data)
    except OSError as exc:
        raise DefinitionError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise DefinitionError(f"{path}: {problems}") from None


def find_definition(name: str) -> Path:
    """A built-in definition by name (`hygon_hy_smi`), or a path to a site's own YAML."""
    builtin = BUILTIN / f"{name}.yaml"
    return builtin if builtin.is_file() else Path(name)


class VendorToolSource(ToolSource):
    """One host's cards of one vendor, through the tool a definition describes."""

    def __init__(
        self,
        tags: Mapping[str, str],
        tool: VendorTool,
        program: str | None = None,
        timeout_s: float = 10.0,
        jobs: JobFinder | None = None,
    ) -> None:
        super().__init__(tags, program or tool.command[0], timeout_s, jobs)
        self.vendor = tool.vendor
        self.definition = tool
        self.seen: set[str] = set()  # card indexes of earlier polls
        self._last_text = ""

    async def read(self) -> list[Reading]:
        tool = self.definition
        parsed: Parsed = await self.tool.read(self._parse, *tool.command[1:])
        command = self.tool.command(tuple(tool.command[1:]))
        for problem in parsed.problems:
            self._failed(problem.kind, f"{command}: {problem.message}")
        found = (self._reading(record, command) for record in parsed.records)
        # one reading per card: a tool printing a card twice (a dump's rows) gives its last
        readings = list({r.index: r for r in found if r}.values())
        if tool.processes is not None and self.jobs is not None:
            table = tool.processes
            pids = parse_processes(self._last_text, table.after, table.card, table.pid)
            readings = [replace(r, pids=tuple(pids.get(r.index, ()))) for r in readings]
        present = {reading.index for reading in readings}
        for index in sorted(self.seen - present):
            self._failed("card_missing", f"{command}: card {index} is missing from the output")
        self.seen |= present
        return readings

    def _parse(self, text: str) -> Parsed:
        self._last_text = text  # the process table is read from the same output
        tool = self.definition
        return FORMATS[tool.format](text, header=tool.header, end=tool.end)

    def _failed(self, kind: str, message: str) -> None:
        self.tool.failures[kind] += 1
        self.warn(message, message)

    def _reading(self, record: Record, command: str) -> Reading | None:
        tool = self.definition
        index = record.values.get(tool.index, "").removeprefix(tool.index_prefix)
        if index in NOT_AVAILABLE:
            self._failed("card", f"{command}: line {record.line}: no {tool.index!r} value")
            return None
        model = tool.model.value or record.values.get(tool.model.column or "", "") or "unknown"
        fields: dict[str, FieldValue] = {}
        for name, source in tool.fields.items():
            raw = record.values.get(source.column)
            if raw is None:
                self._failed("card", f"{command}: card {index}: no column {source.column!r}")
                continue
            try:
                value = _value(name, raw, source)
            except ValueError as exc:
                self._failed("card", f"{command}: card {index} {source.column}: {exc}")
                continue
            if value is not None:
                fields[name] = value
        uuid = record.values.get(tool.uuid) if tool.uuid else None
        return Reading(index=index, model=model, fields=fields, uuid=uuid)


def _value(name: str, raw: str, source: ColumnField) -> FieldValue | None:
    """The schema value of one printed value; None where the tool printed none (N/A)."""
    text = raw.strip()
    if text in NOT_AVAILABLE:  # before splitting: "N/A" is not used "N" over total "A"
        return None
    if source.part is not None:
        text = text.replace("N/A", "NA")  # ixsmi's "N/A / N/A": two parts, neither given
        parts = re.split(r"[/(]", text.removesuffix(")"))  # 60982/65536 MiB, 0MiB(81920MiB)
        if len(parts) <= source.part:
            raise ValueError(f"{raw!r} has no part {source.part}")
        if len(parts) > 2:  # not used/total: which number is which is a guess
            raise ValueError(f"{raw!r} has {len(parts)} parts, not used/total")
        text = parts[source.part].strip()
    if text in NOT_AVAILABLE:
        return None
    kind = schema().fields[name].type
    if kind == "string":
        return text
    if source.unit and text.endswith(source.unit):
        text = text[: -len(source.unit)].strip()
    value = convert(_spec(kind, source.unit), text)
    if value is None:
        raise ValueError(f"{raw!r} is not a number in {source.unit or 'no unit'}")
    return value


@cache
def _spec(kind: str, unit: str) -> FieldSpec:
    """How a printed number becomes the schema's value, as a profile field (agent/mapping.py)."""
    return FieldSpec(type="integer" if kind == "int" else "gauge", scale=UNITS[unit])
