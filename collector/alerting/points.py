"""Tags and a few fields out of lines that `check_lines` has already validated, fast.

The collector takes ~300k lines/s; the alert evaluator reads only the lines of measurements its
rules name, and of those only the tags (once per series: the head repeats every poll) and the
fields the rules compare. A valid line splits at its first space that no backslash escapes
(head), and at its last space when the tail is a number (timestamp). A head is read once per
series, and again when an alert opens on it (the evaluator keeps no tags): by splitting when
it has no escapes, by the full parser when it has (every NVIDIA card's
`model=NVIDIA\\ H100\\ 80GB\\ HBM3`). A field section with escapes goes through the full
parser every time (rare).
"""

from __future__ import annotations

import re

from telemetry.lineproto import parse_line
from telemetry.sample import FieldValue

# A field section whose quotes all delimit string values: no key holds a quote, so the quote
# count before a position says whether it is inside a string.
_PLAIN_QUOTES = re.compile(rb'[^,="]+=(?:"[^"]*"|[^,"]*)(?:,[^,="]+=(?:"[^"]*"|[^,"]*))*')
_TRUE = frozenset([b"t", b"T", b"true", b"True", b"TRUE"])
_FALSE = frozenset([b"f", b"F", b"false", b"False", b"FALSE"])


def split_fields(rest: bytes) -> tuple[bytes, bytes]:
    """(field section, timestamp or b"") of what follows the head of an escape-free line."""
    if 34 not in rest:  # no quote (`int in bytes` is a fast memchr)
        section, _, stamp = rest.partition(b" ")
        return section, stamp
    # A string may hold spaces; a tail that is all digits cannot end inside one.
    section, _, stamp = rest.rpartition(b" ")
    if not section or not stamp.lstrip(b"-").isdigit():
        return rest, b""
    return section, stamp


def read_head(head: bytes) -> tuple[str, dict[str, str]]:
    """Measurement and tags of an escape-free head."""
    measurement, *pairs = head.decode().split(",")
    tags = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        tags[key] = value
    return measurement, tags


def find_fields(
    section: bytes, keys: tuple[tuple[str, bytes], ...], *, quoted: bool
) -> dict[str, FieldValue] | None:
    """The fields named by `keys` ((name, b"name=")) in an escape-free field section: one
    `find` each instead of splitting every field. With string fields (`quoted`), a match is
    real only outside a string, i.e. after an even number of quotes; None when a quote is not
    a string's (a key may hold one), for the full parser to read."""
    if quoted and not _PLAIN_QUOTES.fullmatch(section):
        return None
    found: dict[str, FieldValue] = {}
    for name, key in keys:
        start = section.find(key)
        while start > 0 and (
            section[start - 1] != 44 or (quoted and section.count(b'"', 0, start) % 2)
        ):
            start = section.find(key, start + 1)
        if start < 0:
            continue
        start += len(key)
        if quoted and section[start : start + 1] == b'"':
            end = section.find(b'"', start + 1) + 1
        else:
            end = section.find(b",", start)
        found[name] = decode_value(section[start:] if end <= 0 else section[start:end])
    return found


def decode_value(raw: bytes) -> FieldValue:
    if raw[:1] == b'"':
        return raw[1:-1].decode()
    last = raw[-1:]
    if last in (b"i", b"u"):
        return int(raw[:-1])
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    return float(raw)


def head_end(line: bytes) -> int:
    """Where the head (measurement and tags) of a line ends: its first space that no
    backslash escapes (`model=NVIDIA\\ H100` is one tag value); -1 if none."""
    end = line.find(b" ")
    while end > 0 and line[end - 1] == 92:  # a backslash
        end = line.find(b" ", end + 1)
    return end


def read_any_head(head: bytes) -> tuple[str, dict[str, str]]:
    """Measurement and tags of a validated head, escapes and all (the full parser reads
    those: rare, and once per series)."""
    if 92 not in head:
        return read_head(head)
    sample = parse_line(head + b" _=0", default_time_ns=0)
    return sample.measurement, dict(sample.tags)


def read_fields(line: bytes, now_ns: int) -> tuple[dict[str, FieldValue], int]:
    """The slow path for field sections with escapes: (fields, time)."""
    sample = parse_line(line, default_time_ns=now_ns)
    return dict(sample.fields), sample.time_ns
