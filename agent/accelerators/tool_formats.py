"""Vendor tool outputs as records: one `{column: text}` per card, whatever the layout.

`table`: a header line of column names over one whitespace-separated line per card (hy-smi).
`boxed`: an nvidia-smi-like box, each card a group of `| a | b | c |` lines between borders, the
column names in a header group of the same shape (mx-smi). The box ends at its first blank
line (the process box follows); a card below that line is a counted card problem.
`csv`: a comma-separated header line (its first column named `header`) over one row per card.
`keyvalue`: `key : value` lines; each card starts at a line whose key is `header` and ends at a
blank line or the next card (npu-smi's and nvidia-smi -q's style). A key printed twice in one
card keeps its first value.
`json`: an object of card objects (the key becomes the column `header`: rocm-smi --json) or an
array of card objects; nested objects are flattened with "." between the keys.
`ruled`: cards between `+----+` rules, cells split at `|` with no outer border, names and values
in a cell separated by two or more spaces; a plain `----` rule ends the table (mthreads-gmi).
`aligned`: an nvidia-smi-like box whose cells hold values of several words under names of
one (`106 W/ 250 W` under `Pwr:Usage/Cap`): each word goes to the name it sits under, by
column position (cnmon, Kunlunxin xpu-smi, ixsmi, efsmi). It ends as `boxed` does.

A layout the definition does not describe (no header with the named first column: another
version's output, or not the tool's at all) raises OutputError for the whole output. A line of
one card that cannot be read is a `CardProblem` beside the records of the others, so one bad
card never costs the rest; so is output that stops before its end line (truncated).
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.accelerators.tool_source import OutputError

_BORDER = re.compile(r"[+|][-=+|\s]*")  # +----+----+ and |====+====|
Group = list[tuple[int, str]]  # a box's `| ... |` lines between two borders, with their numbers


@dataclass(frozen=True, slots=True)
class Record:
    line: int  # 1-based, where the card's first line is
    values: dict[str, str]


@dataclass(frozen=True, slots=True)
class CardProblem:
    kind: str  # "card" (a card's line unreadable), "truncated" (no end line)
    message: str


@dataclass(frozen=True, slots=True)
class Parsed:
    records: list[Record]
    problems: list[CardProblem]


def parse_table(text: str, header: str, end: str | None) -> Parsed:
    """A header line whose first word is `header`, then one line per card until a line that
    does not start with a value (a border, the end marker, a blank line). A blank line followed
    by a line of the cards' shape (as many values as columns) is skipped, not the end: a card
    printed below it is read, not lost."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.split()[:1] == [header]), None)
    if start is None:
        raise OutputError(f"no header line starting with {header!r}")
    names = lines[start].split()
    records: list[Record] = []
    problems: list[CardProblem] = []
    finished = end is None  # without an end line, running out of lines is the end
    for number, line in enumerate(lines[start + 1 :], start + 2):
        values = line.split()
        if not values and _card_follows(lines[number:], len(names)):
            continue
        if not values or not values[0][0].isalnum():
            finished = end is None or any(end in rest for rest in lines[number - 1 :])
            break
        if len(values) != len(names):
            problems.append(
                CardProblem(
                    "card",
                    f"line {number}: {len(values)} values under {len(names)} columns "
                    f"({' '.join(names)})",
                )
            )
            continue
        records.append(Record(number, dict(zip(names, values, strict=True))))
    if not finished:
        problems.append(CardProblem("truncated", f"output ends before {end or 'its last line'!r}"))
    return Parsed(records, problems)


def _card_follows(rest: Sequence[str], columns: int) -> bool:
    """Whether the first non-blank line of `rest` has a card line's shape."""
    following = next((line.split() for line in rest if line.strip()), [])
    return len(following) == columns and following[0][0].isalnum()


def parse_boxed(text: str, header: str, end: str | None) -> Parsed:
    """A box whose header group's first cell starts with `header`; each card is a group of as
    many `|`-lines as the header, each line with as many cells, between border lines."""
    return _parse_box(text, header, end, _boxed_card)


def _boxed_card(group: Group, heads: Group) -> dict[str, str] | str:
    """One card's `{name: cell or word}`, or why it cannot be read."""
    columns = [[cell.split() for cell in _cells(line)] for _, line in heads]
    rows = [(number, _cells(line)) for number, line in group]
    if len(rows) != len(columns) or any(
        len(cells) != len(names) for (_, cells), names in zip(rows, columns, strict=False)
    ):
        return f"line {group[0][0]}: not shaped like the header"
    values: dict[str, str] = {}
    for (number, cells), row_names in zip(rows, columns, strict=True):
        for cell, names in zip(cells, row_names, strict=True):
            found = _cell_values(cell, names)
            if found is None:
                return f"line {number}: {cell!r} does not fit {' '.join(names)}"
            values.update(found)
    return values


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip()[1:-1].split("|")]


def _cell_values(cell: str, names: Sequence[str]) -> dict[str, str] | None:
    """One column: the whole cell ("60982/65536 MiB"); several: one word each."""
    if not names:
        return {} if not cell else None
    if len(names) == 1:
        return {names[0]: cell}
    words = cell.split()
    if len(words) != len(names):
        return None
    return dict(zip(names, words, strict=True))


def _parse_box(
    text: str, header: str, end: str | None, read: Callable[[Group, Group], dict[str, str] | str]
) -> Parsed:
    """The cards of an nvidia-smi-like box, each group after the header's read by `read`
    (its values, or why not). The box ends at its first blank line (what follows is another
    box: the process table); a card below that line is counted, not silently dropped."""
    lines = text.splitlines()
    groups, below = _box_groups(lines)
    first = next((i for i, group in enumerate(groups) if _is_header(group[0][1], header)), None)
    if first is None:
        raise OutputError(f"no '| {header} ...' header in a box")
    heads = groups[first]
    records: list[Record] = []
    problems: list[CardProblem] = []
    for group in groups[first + 1 :]:
        values = read(group, heads)
        if isinstance(values, str):
            problems.append(CardProblem("card", values))
        else:
            records.append(Record(group[0][0], values))
    for group in below:
        if not isinstance(read(group, heads), str):
            message = f"line {group[0][0]}: a card below the blank line that ends the box"
            problems.append(CardProblem("card", message))
    last_line = groups[-1][-1][0] if groups else 0
    if end is not None and not any(end in line for line in lines[last_line:]):
        problems.append(CardProblem("truncated", f"output ends before {end!r}"))
    return Parsed(records, problems)


def _box_groups(lines: list[str]) -> tuple[list[Group], list[Group]]:
    """Runs of whole `| ... |` lines between borders, unstripped at the left (where a word is
    matters to `aligned`): those up to the first blank line after one, and those below it. A
    line cut short is not whole and stays out."""
    box: list[Group] = []
    below: list[Group] = []
    groups = box
    current: Group = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip()
        if not line or _BORDER.fullmatch(line.strip()):
            if current:
                groups.append(current)
                current = []
            if not line and box:
                groups = below
            continue
        if line.lstrip().startswith("|") and line.endswith("|"):
            current.append((number, line))
    if current:
        groups.append(current)
    return box, below


def _is_header(line: str, word: str) -> bool:
    """Whether a box line has several cells, the first starting with `word`."""
    cells = _cells(line)
    return len(cells) > 1 and cells[0].split()[:1] == [word]


def parse_csv(text: str, header: str, end: str | None) -> Parsed:
    """A header row whose first cell is `header`, then one row per card until a blank line or
    `end`. Cells are stripped (tools pad them after the comma)."""
    lines = text.splitlines()
    rows = [[cell.strip() for cell in row] for row in csv.reader(lines)]
    start = next((i for i, row in enumerate(rows) if row[:1] == [header]), None)
    if start is None:
        raise OutputError(f"no CSV header line starting with {header!r}")
    names = rows[start]
    records: list[Record] = []
    problems: list[CardProblem] = []
    finished = end is None
    for number, row in enumerate(rows[start + 1 :], start + 2):
        if not any(row) or (end is not None and end in lines[number - 1]):
            finished = True
            break
        if len(row) != len(names):
            last = number == len(lines) and not text.endswith("\n")
            kind = "truncated" if last else "card"
            problems.append(
                CardProblem(kind, f"line {number}: {len(row)} values under {len(names)} columns")
            )
            continue
        records.append(Record(number, dict(zip(names, row, strict=True))))
    if not finished:
        problems.append(CardProblem("truncated", f"output ends before {end!r}"))
    return Parsed(records, problems)


def parse_keyvalue(text: str, header: str, end: str | None) -> Parsed:
    """Cards as runs of `key : value` lines, each starting at the key `header`."""
    records: list[Record] = []
    current: Record | None = None
    finished = end is None
    for number, line in enumerate(text.splitlines(), 1):
        if end is not None and end in line:
            finished = True
            break
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            if not line.strip():
                current = None  # a blank line ends the card
            continue  # headings and the like
        if key.strip() == header:
            current = Record(number, {})
            records.append(current)
        if current is not None:
            current.values.setdefault(key.strip(), value.strip())
    if not records:
        raise OutputError(f"no '{header} : ...' line")
    problems = [] if finished else [CardProblem("truncated", f"output ends before {end!r}")]
    return Parsed(records, problems)


def parse_json(text: str, header: str, end: str | None) -> Parsed:
    """An object of card objects, or an array of them. Output cut short keeps the cards that
    were whole before the cut; a card that is not an object is a card problem."""
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    if text[start : start + 1] not in ("{", "["):
        raise OutputError("not a JSON object or array")
    keyed = text[start] == "{"
    closing = "}" if keyed else "]"
    records: list[Record] = []
    problems: list[CardProblem] = []
    position = _skip(text, start + 1)
    while text[position : position + 1] != closing:
        line = text.count("\n", 0, position) + 1
        try:
            name = None
            if keyed:
                name, position = decoder.raw_decode(text, position)
                position = _skip(text, position)
                if text[position : position + 1] != ":":
                    raise ValueError("no ':' after a key")
                position = _skip(text, position + 1)
            card, position = decoder.raw_decode(text, position)
        except ValueError:
            problems.append(CardProblem("truncated", f"line {line}: the JSON stops in a card"))
            return Parsed(records, problems)
        if isinstance(card, dict):
            values = _flatten(card)
            if name is not None:
                values[header] = str(name)
            records.append(Record(line, values))
        else:
            problems.append(CardProblem("card", f"line {line}: {card!r:.40} is not an object"))
        position = _skip(text, position)
        if text[position : position + 1] == ",":
            position = _skip(text, position + 1)
        elif text[position : position + 1] != closing:
            problems.append(CardProblem("truncated", f"line {line}: the JSON stops after a card"))
            break
    return Parsed(records, problems)


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _flatten(card: dict[str, object], prefix: str = "") -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in card.items():
        if isinstance(value, dict):
            values.update(_flatten(value, f"{prefix}{key}."))
        elif value is not None and not isinstance(value, list):
            values[f"{prefix}{key}"] = str(value)
    return values


_CARD_RULE = re.compile(r"\+-+\+")  # +-----+ between cards
_END_RULE = re.compile(r"-{3,}")  # ------- after the last card
_GAP = re.compile(r"\s{2,}")  # between names or values inside one cell


def parse_ruled(text: str, header: str, end: str | None) -> Parsed:
    """Cards between `+----+` rules, ended by a plain `----` rule; cells split at `|` with no
    outer border; the header is the lines above the first rule, its first line starting with
    `header`, and each card has as many lines shaped the same way. Names and values inside a
    cell are separated by two or more spaces, so one may hold single spaces (`Device Type`,
    `MTT S5000`, `On-die, EDC`)."""
    lines = text.splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if "|" in line and _words(line.split("|")[0])[:1] == [header]
        ),
        None,
    )
    if start is None:
        raise OutputError(f"no '{header} ... | ...' header line")
    rule = next(
        (i for i in range(start, len(lines)) if _CARD_RULE.fullmatch(lines[i].strip())), None
    )
    if rule is None or any(not line.strip() for line in lines[start:rule]):
        raise OutputError(f"the '{header}' header is not followed by a +----+ rule")
    columns = [[_words(cell) for cell in line.split("|")] for line in lines[start:rule]]
    records: list[Record] = []
    problems: list[CardProblem] = []
    group: list[tuple[int, str]] = []
    finished = False
    for number, line in enumerate(lines[rule + 1 :], rule + 2):
        stripped = line.strip()
        ending = _END_RULE.fullmatch(stripped) is not None
        # a blank line parts cards as a rule does; only the end rule ends the table, so cards
        # below a blank line are read, and output cut short is truncated even if blank lines
        # follow the cut
        if ending or not stripped or _CARD_RULE.fullmatch(stripped):
            if group:
                _ruled_card(group, columns, records, problems)
                group = []
            if ending:
                finished = end is None or any(end in rest for rest in lines[number - 1 :])
                break
            continue
        group.append((number, line))
    if group:  # the output stopped inside a card
        _ruled_card(group, columns, records, problems)
    if not finished:
        problems.append(CardProblem("truncated", f"output ends before {end or 'its last rule'!r}"))
    return Parsed(records, problems)


def _ruled_card(
    group: list[tuple[int, str]],
    columns: list[list[list[str]]],
    records: list[Record],
    problems: list[CardProblem],
) -> None:
    number = group[0][0]
    if len(group) != len(columns):
        problems.append(
            CardProblem(
                "card", f"line {number}: {len(group)} lines where the header has {len(columns)}"
            )
        )
        return
    values: dict[str, str] = {}
    for (line_number, line), row in zip(group, columns, strict=True):
        cells = [_words(cell) for cell in line.split("|")]
        if [len(cell) for cell in cells] != [len(names) for names in row]:
            shape = " | ".join("  ".join(names) for names in row)
            problems.append(CardProblem("card", f"line {line_number}: does not fit {shape!r}"))
            return
        for cell, names in zip(cells, row, strict=True):
            values.update(zip(names, cell, strict=True))
    records.append(Record(number, values))


def _words(cell: str) -> list[str]:
    stripped = cell.strip()
    return _GAP.split(stripped) if stripped else []


class Parser(Protocol):
    def __call__(self, text: str, header: str, end: str | None) -> Parsed: ...


def parse_processes(text: str, after: str, card: int, pid: int) -> dict[str, list[int]]:
    """The process table below a line holding `after`: card index -> process ids, from the
    words at positions `card` and `pid` of each `| ... |` line whose pid word is a number.
    For job attribution only: a line that does not fit is skipped, not counted."""
    found: dict[str, list[int]] = {}
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if after in line), None)
    if start is None:
        return found
    for line in lines[start + 1 :]:
        words = line.strip().strip("|").split()
        if len(words) > max(card, pid) and words[pid].isdigit():
            found.setdefault(words[card], []).append(int(words[pid]))
    return found


def parse_aligned(text: str, header: str, end: str | None) -> Parsed:
    """An nvidia-smi-like box whose values are not one word per column name (`106 W/ 250 W`
    under `Pwr:Usage/Cap`, `P800 OAM` under `Name`): each word of a card's cell goes to the
    column name of the header's cell it lies under, or else to the nearest one. A card's lines
    must have their `|` where the header's lines have them."""
    return _parse_box(text, header, end, _aligned_card)


def _aligned_card(group: Group, heads: Group) -> dict[str, str] | str:
    """One card's `{name: words}`, or why it cannot be read."""
    if len(group) != len(heads) or any(
        _pipes(line) != _pipes(head) for (_, line), (_, head) in zip(group, heads, strict=False)
    ):
        return f"line {group[0][0]}: not shaped like the header"
    values: dict[str, str] = {}
    for (number, line), (_, head) in zip(group, heads, strict=True):
        for start, stop in itertools.pairwise(_pipes(head)):
            names, found = _spans(head, start, stop), _spans(line, start, stop)
            if found and not names:
                return f"line {number}: {line[start + 1 : stop].strip()!r} is under no column"
            for _, _, name in names:
                values.setdefault(name, "")  # a name printed twice keeps its first column
            for word in found:
                name = _under(word, names)
                values[name] = f"{values[name]} {word[2]}".lstrip()
    return values


def _pipes(line: str) -> list[int]:
    return [i for i, char in enumerate(line) if char == "|"]


def _spans(line: str, start: int, stop: int) -> list[tuple[int, int, str]]:
    """The words between the `|` at start and the one at stop, with their columns (from, to)."""
    at = start + 1
    return [(at + m.start(), at + m.end(), m.group()) for m in re.finditer(r"\S+", line[at:stop])]


def _under(word: tuple[int, int, str], names: list[tuple[int, int, str]]) -> str:
    """The column name a word lies under the most, else the nearest (a tie: the leftmost)."""

    def distance(name: tuple[int, int, str]) -> tuple[int, int]:
        overlap = min(word[1], name[1]) - max(word[0], name[0])
        gap = max(name[0] - word[1], word[0] - name[1], 0)
        return (0, -overlap) if overlap > 0 else (1, gap)

    return min(names, key=distance)[2]


FORMATS: dict[str, Parser] = {
    "table": parse_table,
    "boxed": parse_boxed,
    "csv": parse_csv,
    "keyvalue": parse_keyvalue,
    "json": parse_json,
    "ruled": parse_ruled,
    "aligned": parse_aligned,
}
