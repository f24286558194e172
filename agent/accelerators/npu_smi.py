"""Huawei Ascend NPUs through `npu-smi`: parsers for its outputs, and the source that polls them.

Each poll runs `npu-smi info` (one table: health, power, temperature, AICore use and memory of
every chip). Only where that table prints a value as NA does the source ask the per-NPU detail
command for it (`npu-smi info -t usages|power|temp|health|memory -i N`), and a detail type an NPU
says it does not support is never asked again. The chip's die ID, read once per chip with
`npu-smi info -t board -i N -c C`, becomes the `uuid` tag. What npu-smi's columns and keys mean
is kept in the tables below; docs/accelerators-ascend.md maps them to fields.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from agent.accelerators.ascend_faults import parse_codes, table
from agent.accelerators.hccn import COMMANDS, PARSERS
from agent.accelerators.jobs import JobFinder
from agent.accelerators.tool_source import OutputError, Reading, ToolError, ToolRunner, ToolSource
from agent.mapping import convert
from agent.profile import FieldSpec
from telemetry.sample import FieldValue

MIB = 1024 * 1024  # npu-smi's "MB" is 2**20 bytes: a 64 GiB HBM card prints 65536
NOT_AVAILABLE = frozenset({"NA", "N/A"})  # no value now: the detail command may have one
ON_SIBLING = "-"  # printed on another chip of the same NPU (A3: the NPU's power, on chip 0)

# Summary columns holding one number, by their header text.
SUMMARY_NUMBERS = {"Power(W)": "power_w", "Temp(C)": "temp_c", "AICore(%)": "util_pct"}
# "used / total" columns; the first one with a non-zero total is the accelerator's memory (HBM
# where the card has it; the 910A's Memory-Usage is its control CPU's DDR).
SUMMARY_MEMORY = ("HBM-Usage(MB)", "Memory-Usage(MB)")
MEMORY_FIELDS = ("mem_used_bytes", "mem_total_bytes")
SUMMARY_FIELDS = frozenset({*SUMMARY_NUMBERS.values(), *MEMORY_FIELDS, "health"})

# Detail keys as npu-smi prints them (spaces and case are ignored); the first one printed wins.
DETAIL_KEYS: dict[str, tuple[str, ...]] = {
    "util_pct": ("Aicore Usage Rate(%)",),
    # Bandwidth, like NVML's memory utilization (time the memory was busy), not capacity.
    "mem_util_pct": ("HBM Bandwidth Usage Rate(%)", "Memory Bandwidth Usage Rate(%)"),
    "aicpu_util_pct": ("Aicpu Usage Rate(%)",),
    "vector_util_pct": ("Aivector Usage Rate(%)",),  # the Vector units (AI Core is the Cube's)
    "aicore_clock_mhz": ("Aicore curFreq(MHZ)",),  # now; "Aicore Freq(MHZ)" is the rated one
    # `-t memory`: the device memory's clock (HBM cards print HBM and DDR lines, the 310B one)
    "mem_clock_mhz": ("HBM Clock Speed(MHz)", "Clock Speed(MHz)"),
    "mem_temp_c": ("HBM Temperature(C)",),
    "ctrl_cpu_util_pct": ("Ctrlcpu Usage Rate(%)",),
    "power_w": ("NPU Real-time Power(W)",),
    "temp_c": ("Temperature(C)", "NPU Temperature(C)"),
    "health": ("Health", "Health Status"),
    "mem_total_bytes": ("HBM Capacity(MB)", "Memory Capacity(MB)", "Capacity(MB)"),
    # HBM ECC (`-t ecc`): single-bit errors are corrected, double-bit ones are not; "Error
    # Count" since the driver loaded, "Aggregate Total" over the card's life, as NVML's.
    "ecc_corrected_total": ("HBM Single Bit Error Count",),
    "ecc_uncorrected_total": ("HBM Double Bit Error Count",),
    "ecc_corrected_aggregate_total": ("HBM Single Bit Aggregate Total Err Cnt",),
    "ecc_uncorrected_aggregate_total": ("HBM Double Bit Aggregate Total Err Cnt",),
}
# How a detail value becomes its field, as a profile's field spec (agent/mapping.py); a gauge
# where not named. A 0 MB capacity means no memory of that kind.
DETAIL_SPECS: dict[str, FieldSpec] = {
    "health": FieldSpec(type="string"),
    "mem_total_bytes": FieldSpec(type="integer", scale=MIB, absent=(0,)),
    **{name: FieldSpec(type="integer") for name in DETAIL_KEYS if name.endswith("_total")},
}
_GAUGE = FieldSpec()

# The fields each `npu-smi info -t TYPE -i N` can supply.
DETAIL_TYPES: dict[str, tuple[str, ...]] = {
    "usages": (
        "util_pct",
        "mem_util_pct",
        "aicpu_util_pct",
        "ctrl_cpu_util_pct",
        "mem_total_bytes",
        "vector_util_pct",
    ),
    "power": ("power_w",),
    "temp": ("temp_c",),
    "health": ("health",),
    "memory": ("mem_total_bytes", "mem_clock_mhz", "mem_temp_c"),
    "common": ("aicore_clock_mhz",),
    "ecc": (
        "ecc_corrected_total",
        "ecc_uncorrected_total",
        "ecc_corrected_aggregate_total",
        "ecc_uncorrected_aggregate_total",
    ),
}
# Chip identity from `-t board -i N -c C`: the die ID is burned into each chip, so it is unique
# per chip and survives reboots and card moves. The card's serial number (`-t board -i N`) is
# shared by both chips of a Duo or A3 card and not printed inside containers.
DIE_ID_KEYS = ("VDie ID", "Die ID")

_VALUE = re.compile(r"[^\s/]+\s*/\s*[^\s/]+|\S+")  # "3162 / 65536" is one value
_NPU_CELL = re.compile(r"(\d+)\s+(\S.*)")  # "0     910B3"
_CHIP_CELL = re.compile(r"(\d+)(?:\s+(\d+))?")  # "0", or chip and Device/Phy-ID: "1     15"
_PROCESS_CELL = re.compile(r"(\d+)\s+(\d+)")  # "| 0       0  | 1067983 | ..." NPU and chip


@dataclass
class ChipSummary:
    """One chip's row pair in the `npu-smi info` table."""

    npu: int
    chip: int
    model: str
    device: int | None = None  # the chip's Device or Phy-ID, where the table prints one
    fields: dict[str, FieldValue] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # printed as NA


class _Row(NamedTuple):
    number: int  # 1-based line number, for error messages
    cells: list[str]  # "| 0     910B3 | OK | 96.0  36  0 / 0 |" -> three cells


def parse_summary(text: str) -> list[ChipSummary]:
    """Parse `npu-smi info`. Columns are found by their headers, so every layout (910A without
    the Hugepages column, 910B, A3 with Phy-ID, 310P with Device) reads the same way."""
    headers: list[_Row] = []
    rows: list[_Row] = []
    for number, line in enumerate(text.splitlines(), 1):
        cells = [cell.strip() for cell in line.strip().split("|")[1:-1]]
        if "Process id" in cells:
            break  # the process table follows the device table
        if len(cells) != 3:
            continue  # borders, the version line, "No running processes found"
        if cells[1] in ("Health", "Bus-Id") and len(headers) < 2:
            headers.append(_Row(number, cells))
        elif len(headers) == 2:
            rows.append(_Row(number, cells))
        else:
            raise OutputError(
                f"line {number}: a table row before the '| NPU Name | Health |' header"
            )
    if len(headers) != 2 or headers[0].cells[1] != "Health":
        raise OutputError("no '| NPU Name | Health | ...' and '| Chip | Bus-Id | ...' header")
    if len(rows) % 2:
        raise OutputError(f"line {rows[-1].number}: a chip's first row without its second")
    names = (headers[0].cells[2].split(), headers[1].cells[2].split())
    return [_chip(rows[i], rows[i + 1], names) for i in range(0, len(rows), 2)]


def _chip(first: _Row, second: _Row, names: tuple[list[str], list[str]]) -> ChipSummary:
    npu_cell = _NPU_CELL.fullmatch(first.cells[0])
    chip_cell = _CHIP_CELL.fullmatch(second.cells[0])
    if npu_cell is None:
        raise OutputError(f"line {first.number}: {first.cells[0]!r} is not 'NPU-id Name'")
    if chip_cell is None:
        raise OutputError(f"line {second.number}: {second.cells[0]!r} is not a chip id")
    device = int(chip_cell[2]) if chip_cell[2] is not None else None
    summary = ChipSummary(int(npu_cell[1]), int(chip_cell[1]), npu_cell[2], device)
    _put(summary, "health", first.cells[1], str)
    values: dict[str, tuple[str, str]] = {}  # column -> (text, where it is)
    for row, columns in zip((first, second), names, strict=True):
        for column, raw in _columns(row, columns).items():
            values[column] = (raw, f"line {row.number} {column}")
    for column, name in SUMMARY_NUMBERS.items():
        if column in values:
            raw, where = values[column]
            _put(summary, name, raw, partial(_float, where=where))
    for column in SUMMARY_MEMORY:
        if column not in values:
            continue
        pair = _pair(*values[column])
        if pair is None:
            summary.missing.update(MEMORY_FIELDS)
            break
        if pair[1] > 0:
            summary.fields.update(zip(MEMORY_FIELDS, (pair[0] * MIB, pair[1] * MIB), strict=True))
            break
    return summary


def parse_processes(text: str) -> dict[tuple[int, int], list[int]]:
    """The process table under `npu-smi info`: (NPU, chip) -> ids of the processes on it.
    Rows that hold no process ("No running processes found") are skipped."""
    found: dict[tuple[int, int], list[int]] = {}
    table = False
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().split("|")[1:-1]]
        if "Process id" in cells:
            table = True
            continue
        if not table or len(cells) < 2:
            continue
        chip = _PROCESS_CELL.fullmatch(cells[0])
        if chip is not None and cells[1].isdigit():
            found.setdefault((int(chip[1]), int(chip[2])), []).append(int(cells[1]))
    return found


def parse_info(text: str) -> tuple[list[ChipSummary], dict[tuple[int, int], list[int]]]:
    """`npu-smi info`: its device table and its process table."""
    return parse_summary(text), parse_processes(text)


def _columns(row: _Row, names: list[str]) -> dict[str, str]:
    values = _VALUE.findall(row.cells[2])
    if len(values) != len(names):
        columns = " ".join(names)
        raise OutputError(
            f"line {row.number}: {len(values)} values under {len(names)} columns ({columns})"
        )
    return dict(zip(names, values, strict=True))


def _put(summary: ChipSummary, name: str, raw: str, convert: Callable[[str], FieldValue]) -> None:
    if raw in NOT_AVAILABLE:
        summary.missing.add(name)
    elif raw != ON_SIBLING:
        summary.fields[name] = convert(raw)


def _float(raw: str, where: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        raise OutputError(f"{where}: {raw!r} is not a number") from None
    if not math.isfinite(number):  # "nan", "inf": line protocol has no such value
        raise OutputError(f"{where}: {raw!r} is not a reading")
    return number


def _pair(raw: str, where: str) -> tuple[int, int] | None:
    parts = [part.strip() for part in raw.split("/")]
    if any(part in NOT_AVAILABLE for part in parts):
        return None
    try:
        used, total = (int(part) for part in parts)
    except ValueError:
        raise OutputError(f"{where}: {raw!r} is not 'used / total'") from None
    return used, total


# --- key/value outputs of `npu-smi info -t TYPE -i N [-c C]` -----------------------------------


@dataclass
class KeyValues:
    """Blocks (runs of lines between blank lines) of a detail output. Keys are normalized."""

    chips: dict[int, dict[str, str]]  # blocks that say which chip they are ("Chip ID")
    rest: dict[str, str]  # the other lines, e.g. the whole output of a `-c C` query

    def of_chip(self, chip: int, alone: bool) -> dict[str, str]:
        """What the output says about `chip`; `alone`: the command asked about this chip only
        (or its NPU has no other), so lines that name no chip are about it."""
        if self.chips:
            return self.chips.get(chip, {})
        return self.rest if alone else {}


def key(name: str) -> str:
    return "".join(name.split()).lower()  # "Temperature (C)" and "Temperature(C)" are one key


def parse_key_values(text: str) -> KeyValues:
    blocks: list[dict[str, str]] = [{}]
    last: tuple[dict[str, str], str] | None = None  # the block and key a value last went to
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            blocks.append({})
            continue
        name, colon, value = line.partition(":")
        if colon and not name.strip() and last is not None:
            # "   : node type=adda, ..." after a blank line: one more entry of the last key's
            # value (-t health prints one "Error Information" entry per fault code so)
            block, continued = last
            block[continued] = f"{block[continued]}; {value.strip()}"
            continue
        if not colon or not name.strip():
            raise OutputError(f"line {number}: {line.strip()[:80]!r} is not 'key : value'")
        if key(name) == "chipid" and "chipid" in blocks[-1]:
            blocks.append({})  # a new chip without a blank line between
        blocks[-1][key(name)] = value.strip()
        last = (blocks[-1], key(name))
    chips: dict[int, dict[str, str]] = {}
    rest: dict[str, str] = {}
    for block in blocks:
        if "chipid" in block:
            try:
                chips[int(block["chipid"])] = block
            except ValueError:
                raise OutputError(f"Chip ID {block['chipid']!r} is not a number") from None
        elif block.get("chipname", "").upper() != "MCU":  # the card's management MCU
            rest.update(block)
    return KeyValues(chips, rest)


def detail_fields(text: str, chips: Sequence[int]) -> dict[int, dict[str, FieldValue | None]]:
    """The schema fields a detail output gives for each of `chips`; None where it printed NA.
    A field the output does not print at all is absent."""
    blocks = parse_key_values(text)
    return {chip: _fields(blocks.of_chip(chip, alone=len(chips) == 1)) for chip in chips}


def _fields(values: Mapping[str, str]) -> dict[str, FieldValue | None]:
    found: dict[str, FieldValue | None] = {}
    for name, keys in DETAIL_KEYS.items():
        for printed in (k for k in keys if key(k) in values):
            value = _detail_value(name, values[key(printed)], printed)
            found[name] = value
            if value is not None:
                break
    return found


def _detail_value(name: str, raw: str, printed: str) -> FieldValue | None:
    if raw in NOT_AVAILABLE:
        return None
    spec = DETAIL_SPECS.get(name, _GAUGE)
    if spec.type != "string":
        _float(raw, where=printed)  # text that is not a number is a failure, not absent
    return convert(spec, raw)


def die_id(text: str, chip: int) -> str | None:
    """The chip's die ID from `npu-smi info -t board -i N -c C`, groups joined by '-'."""
    values = parse_key_values(text).of_chip(chip, alone=True)
    for name in DIE_ID_KEYS:
        raw = values.get(key(name), "")
        if raw and raw not in NOT_AVAILABLE:
            return "-".join(raw.split())
    return None


def fault_fields(text: str, chip: int) -> dict[str, FieldValue]:
    """`npu-smi info -t health -i N -c C`: the chip's fault codes (NA: none) and what Huawei's
    table says about them."""
    values = parse_key_values(text).of_chip(chip, alone=True)
    if key("Error Code") not in values:
        raise OutputError("prints no 'Error Code'")
    fields: dict[str, FieldValue] = {}
    codes = parse_codes(values[key("Error Code")])
    faults = table().describe(codes)
    fields["health_error_codes"] = ",".join(faults.codes)  # empty: none
    if codes:
        fields["health_fault_handling"] = faults.handling
        fields["health_fault_meaning"] = faults.meaning
    return fields


# --- the source --------------------------------------------------------------------------------


def _unsupported(exc: ToolError) -> bool:
    return exc.kind == "exit" and "not support" in exc.problem.lower()


class NpuSmiSource(ToolSource):
    """A host's Ascend NPUs. `usages=True` also runs `-t usages -i N` for every NPU on every
    poll, for the fields the summary never has (mem_util_pct, aicpu_util_pct, ctrl_cpu_util_pct).
    At most once per `details_interval_s`: `ecc=True` runs `-t ecc -i N` (HBM ECC counters),
    `clocks=True` `-t common -i N` (the AI Core clock), and
    `hccn_tool` (its path) reads each chip's RoCE port (agent/accelerators/hccn.py); their
    failures are counted with npu-smi's and cost only their fields. `clocks=True` also reads
    `-t memory -i N` (the memory clock and HBM temperature). `faults=True`: on every poll, each
    chip whose health is not OK is asked `-t health -i N -c C` for its fault codes
    (ascend_faults.py)."""

    vendor = "huawei"

    def __init__(
        self,
        tags: Mapping[str, str],
        command: str = "npu-smi",
        timeout_s: float = 10.0,
        *,
        usages: bool = False,
        ecc: bool = False,
        clocks: bool = False,
        faults: bool = True,
        hccn_tool: str | None = None,
        details_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        jobs: JobFinder | None = None,
    ) -> None:
        super().__init__(tags, command, timeout_s, jobs)
        self.usages = usages
        self.ecc = ecc
        self.clocks = clocks
        self.faults = faults
        self.hccn = ToolRunner(hccn_tool, timeout_s) if hccn_tool else None
        if self.hccn is not None:
            self.hccn.failures = self.tool.failures  # one count of failed runs per source
        self.details_interval_s = details_interval_s
        self._clock = clock
        self._details_at: float | None = None  # when ECC and the network were last read
        self.unsupported: set[tuple[int, str]] = set()  # (NPU, detail type) never asked again
        self._uuids: dict[tuple[int, int], str | None] = {}  # None: board prints no die ID
        self._processes: dict[tuple[int, int], list[int]] = {}  # of the last `npu-smi info`

    async def read(self) -> list[Reading]:
        chips, self._processes = await self.tool.read(parse_info, "info")
        by_npu: dict[int, list[ChipSummary]] = {}
        for chip in chips:
            by_npu.setdefault(chip.npu, []).append(chip)
        details = self._details_due()
        for npu, members in by_npu.items():
            for kind in self._detail_types(npu, members, details):
                await self._fill(npu, kind, members)
            for chip in members:
                if (npu, chip.chip) not in self._uuids:
                    await self._identify(npu, chip.chip)
                if details and self.hccn is not None:
                    await self._network(self.hccn, chip)
                if self.faults and chip.fields.get("health") != "OK":
                    await self._faults(chip)
        return [self._reading(chip, several=len(by_npu[chip.npu]) > 1) for chip in chips]

    def _details_due(self) -> bool:
        now = self._clock()
        if self._details_at is not None and now - self._details_at < self.details_interval_s:
            return False
        self._details_at = now
        return True

    async def _network(self, hccn: ToolRunner, chip: ChipSummary) -> None:
        """The chip's RoCE port; hccn_tool names a chip by its device id."""
        device = str(chip.device if chip.device is not None else chip.npu)
        for option in COMMANDS:
            args = ("-i", device, option, "-g")
            command = hccn.command(args)
            try:
                chip.fields.update(await hccn.read(PARSERS[option], *args))
            except ToolError as exc:
                self.warn(command, str(exc))
                continue
            self.recovered(command)

    def _detail_types(self, npu: int, members: Iterable[ChipSummary], details: bool) -> list[str]:
        kinds = ["usages"] if self.usages else []
        if details:
            periodic = (("ecc", self.ecc), ("common", self.clocks), ("memory", self.clocks))
            kinds += [kind for kind, on in periodic if on]
        for name in sorted({name for chip in members for name in chip.missing}):
            for kind, offers in DETAIL_TYPES.items():
                if name in offers and (npu, kind) not in self.unsupported:
                    if kind not in kinds:
                        kinds.append(kind)
                    break
        return [kind for kind in kinds if (npu, kind) not in self.unsupported]

    async def _fill(self, npu: int, kind: str, members: list[ChipSummary]) -> None:
        args = ("info", "-t", kind, "-i", str(npu))
        command = self.tool.command(args)
        try:
            found = await self.tool.read(
                partial(detail_fields, chips=[chip.chip for chip in members]), *args
            )
        except ToolError as exc:
            if _unsupported(exc):
                self.unsupported.add((npu, kind))
                self.warn(command, f"{exc}; not asked again")
            else:
                self.warn(command, str(exc))
            return
        self.recovered(command)
        offers = DETAIL_TYPES[kind]
        if not any(name in found[chip.chip] for chip in members for name in offers):
            self.unsupported.add((npu, kind))
            keys = ", ".join(k for name in offers for k in DETAIL_KEYS[name])
            self.warn(command, f"{command}: prints none of {keys}; not asked again")
            return
        for chip in members:
            for name, value in found[chip.chip].items():
                fills_gap = name in chip.missing or name not in SUMMARY_FIELDS
                if name in offers and fills_gap and value is not None:
                    chip.fields.setdefault(name, value)

    async def _faults(self, chip: ChipSummary) -> None:
        args = ("info", "-t", "health", "-i", str(chip.npu), "-c", str(chip.chip))
        command = self.tool.command(args)
        try:
            found = await self.tool.read(partial(fault_fields, chip=chip.chip), *args)
        except ToolError as exc:
            self.warn(command, str(exc))
            return
        self.recovered(command)
        chip.fields.update(found)

    async def _identify(self, npu: int, chip: int) -> None:
        args = ("info", "-t", "board", "-i", str(npu), "-c", str(chip))
        command = self.tool.command(args)
        try:
            self._uuids[(npu, chip)] = await self.tool.read(partial(die_id, chip=chip), *args)
        except ToolError as exc:
            if _unsupported(exc):
                self._uuids[(npu, chip)] = None
                self.warn(command, f"{exc}; samples carry no uuid")
            else:
                self.warn(command, str(exc))  # asked again next poll
            return
        self.recovered(command)
        if self._uuids[(npu, chip)] is None:
            self.warn(command, f"{command}: prints no die ID; samples carry no uuid")

    def _reading(self, chip: ChipSummary, several: bool) -> Reading:
        fields = dict(chip.fields)
        if "health" in fields:
            fields["healthy"] = fields["health"] == "OK"
        return Reading(
            index=str(chip.npu),
            model=chip.model,
            fields=fields,
            chip=str(chip.chip) if several else None,
            uuid=self._uuids.get((chip.npu, chip.chip)),
            # The device plugin names a chip by its physical id (Ascend910-3); npu-smi prints
            # it beside the chip where an NPU has several, and it is the NPU's id otherwise.
            device_ids=(f"huawei:{chip.device if chip.device is not None else chip.npu}",),
            pids=tuple(self._processes.get((chip.npu, chip.chip), ())),
        )
