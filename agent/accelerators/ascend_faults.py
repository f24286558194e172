"""What an Ascend fault code means: Huawei's table (ascend_faults.yaml, sources named there).

`npu-smi info -t health -i N -c C` prints a chip's fault codes under "Error Code" (NA when it has
none). Each code is looked up for MindCluster's handling level (how serious: isolate, reset,
restart the job, nothing) and, where documented, its meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from agent.accelerators.tool_source import OutputError

TABLE = Path(__file__).with_name("ascend_faults.yaml")
NONE_PRINTED = frozenset({"NA", "N/A", "", "0"})
_CODE = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{8})")


@dataclass(frozen=True, slots=True)
class Faults:
    codes: tuple[str, ...]  # as 8 upper-case hex digits, in the order printed
    handling: str  # the most severe level of the codes; "unknown" where none is in the table
    meaning: str  # the documented meanings, "; "-joined; the codes without one are named


@dataclass(frozen=True, slots=True)
class FaultTable:
    levels: dict[str, str]  # level -> what it means, most severe first
    level_of: dict[str, str]  # code -> its most severe level
    meanings: dict[str, str]

    def describe(self, codes: tuple[str, ...]) -> Faults:
        order = list(self.levels)
        known = [self.level_of[code] for code in codes if code in self.level_of]
        handling = min(known, key=order.index) if known else "unknown"
        meaning = "; ".join(f"{code}: {self._meaning(code)}" for code in codes)
        return Faults(codes, handling, meaning)

    def _meaning(self, code: str) -> str:
        if code in self.meanings:
            return self.meanings[code]
        if code in self.level_of:
            return f"undocumented; {self.level_of[code]}: {self.levels[self.level_of[code]]}"
        return "not in Huawei's table"


@cache
def table(path: Path = TABLE) -> FaultTable:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    levels = {str(name): str(text) for name, text in data["levels"].items()}
    level_of: dict[str, str] = {}
    for level in reversed(levels):  # a code listed at two levels keeps the more severe one
        for code in data["codes"].get(level) or ():
            level_of[_code(str(code), f"{path.name}: codes.{level}")] = level
    meanings = {
        _code(str(c), f"{path.name}: meanings"): str(t) for c, t in data["meanings"].items()
    }
    return FaultTable(levels, level_of, meanings)


def parse_codes(raw: str) -> tuple[str, ...]:
    """The codes of an "Error Code" value: NA for none, else hex codes (0x optional) separated
    by spaces or commas. Anything else is an OutputError naming the value."""
    text = raw.strip()
    if text in NONE_PRINTED:
        return ()
    return tuple(_code(word, "Error Code") for word in re.split(r"[\s,]+", text) if word)


def _code(word: str, where: str) -> str:
    match = _CODE.fullmatch(word.strip())
    if match is None:
        raise OutputError(f"{where}: {word!r} is not an 8-digit hex fault code")
    return match[1].upper()
