"""What InfluxDB says it refused in a partial write, which lines of a batch that names, and
the series it refused lately (so their next lines are set aside without a request).

InfluxDB 1.x stores the acceptable points of a batch and answers 400 (2.x: 422) with one
reason and the number of points it dropped, e.g.::

    partial write: max-values-per-tag limit exceeded (10/5): measurement="m" tag="t"
        value="w0" dropped=10
    partial write: max-series-per-database limit exceeded: (50) dropped=60
    partial write: field type conflict: input field "f" on measurement "m" is type integer,
        already exists as type float dropped=2
    partial write: unable to parse 'garbage': missing fields dropped=0

Only the first reason is given when several apply. A reason that names a measurement and a
tag or field picks its candidate lines; when their number equals `dropped`, they are the
refused ones and nothing needs sending again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from telemetry.lineproto import LineProtocolError, parse_line

Kind = Literal["values_limit", "series_limit", "type_conflict", "parse", "other"]

_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_DROPPED = re.compile(r"dropped=(\d+)")
_VALUES = re.compile(rf"max-values-per-tag limit exceeded.*?measurement={_QUOTED} tag={_QUOTED}")
_TYPES = re.compile(
    rf"field type conflict: input field {_QUOTED} on measurement {_QUOTED} is type (\w+)"
)
_PARSE = re.compile(r"unable to parse '(.*?)': ", re.DOTALL)
# A line's series key (measurement and tags): up to the first unescaped ' ' (a backslash
# before anything else is literal), and the separators inside it.
_SERIES_KEY = re.compile(rb"(?:[^ \\]++|\\ |\\)*+")
_UNESCAPED_COMMA = re.compile(rb"(?<!\\),")
_UNESCAPED_EQUALS = re.compile(rb"(?<!\\)=")
# Go's names for field types, by the Python type parse_line gives.
_TYPE_NAMES = {
    bool: ("boolean",),
    int: ("integer", "unsigned"),
    float: ("float",),
    str: ("string",),
}


def series_key(line: bytes) -> bytes:
    match = _SERIES_KEY.match(line)
    return match[0] if match else b""


def shape_of(line: bytes) -> bytes:
    """The measurement and tag keys of a line, without the tag values."""
    measurement, *tags = _UNESCAPED_COMMA.split(series_key(line))
    return b",".join([measurement, *(_UNESCAPED_EQUALS.split(tag, 1)[0] for tag in tags)])


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _escape(name: str, specials: str) -> bytes:
    for char in specials:
        name = name.replace(char, "\\" + char)
    return name.encode()


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: Kind
    text: str  # InfluxDB's words
    dropped: int | None  # points InfluxDB says it dropped (parse failures included)
    measurement: bytes = b""  # as written in a line (escaped)
    name: bytes = b""  # the tag key (values limit) or field key (type conflict), escaped
    field_type: str = ""  # type conflict: the refused type, as InfluxDB names it
    lines: frozenset[bytes] = field(default_factory=frozenset)  # parse: the lines it quotes

    @property
    def cardinality(self) -> bool:
        return self.kind in ("values_limit", "series_limit")

    def candidates(self, lines: list[bytes]) -> list[bytes] | None:
        """The lines this reason can apply to; None when it does not say (series limit)."""
        if self.kind == "parse":
            return [line for line in lines if line in self.lines]
        if self.kind not in ("values_limit", "type_conflict"):
            return None
        prefixes = (self.measurement + b",", self.measurement + b" ")
        picked = [line for line in lines if line.startswith(prefixes)]
        if self.kind == "values_limit":
            tag = b"," + self.name + b"="
            return [line for line in picked if tag in series_key(line)]
        return [line for line in picked if self._conflicts(line)]

    def _conflicts(self, line: bytes) -> bool:
        try:
            value = parse_line(line, default_time_ns=0).fields.get(self.name.decode())
        except (LineProtocolError, UnicodeDecodeError):
            return False
        return value is not None and self.field_type in _TYPE_NAMES.get(type(value), ())


def parse_refusal(text: str) -> Refusal:
    """Read InfluxDB's answer to a partial write."""
    dropped_match = _DROPPED.search(text)
    dropped = int(dropped_match[1]) if dropped_match else None
    if match := _VALUES.search(text):
        return Refusal(
            "values_limit",
            text,
            dropped,
            _escape(_unquote(match[1]), ", "),
            _escape(_unquote(match[2]), ",= "),
        )
    if match := _TYPES.search(text):
        return Refusal(
            "type_conflict",
            text,
            dropped,
            _escape(_unquote(match[2]), ", "),
            _escape(_unquote(match[1]), ",= "),
            match[3],
        )
    if "max-series-per-database limit exceeded" in text:
        return Refusal("series_limit", text, dropped)
    if quoted := _PARSE.findall(text):
        unparsed = frozenset(line.encode() for line in quoted)
        return Refusal("parse", text, (dropped or 0) + len(unparsed), lines=unparsed)
    return Refusal("other", text, dropped)


class RefusedSeries:
    """Series InfluxDB refused for a cardinality limit, remembered for `ttl_s` (then tried
    again, so a raised limit or dropped series take effect), at most `max_series` of them."""

    def __init__(self, ttl_s: float, max_series: int) -> None:
        self.ttl_s = ttl_s
        self.max_series = max_series
        self._until: dict[bytes, float] = {}  # insertion order is expiry order

    def __len__(self) -> int:
        return len(self._until)

    def remember(self, lines: list[bytes]) -> None:
        until = time.monotonic() + self.ttl_s
        for line in lines:
            key = series_key(line)
            self._until.pop(key, None)
            self._until[key] = until
        while len(self._until) > self.max_series:
            del self._until[next(iter(self._until))]

    def split(self, lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        """(lines to send, lines of series refused lately)."""
        now = time.monotonic()
        while self._until and next(iter(self._until.values())) <= now:
            del self._until[next(iter(self._until))]
        if not self._until:
            return lines, []
        send: list[bytes] = []
        refused: list[bytes] = []
        for line in lines:
            (refused if series_key(line) in self._until else send).append(line)
        return send, refused


class StoredKeys:
    """Series, or values of one tag, that InfluxDB stored, learned once it refused new ones
    (a series or tag-value limit): at the limit nothing new gets in, so in a later partial
    write the lines whose series (or value) was not seen stored are the refused ones, told
    apart without sending anything again. Forgotten `ttl_s` after the last such refusal (the
    limit may change); at most `max_keys` per limit."""

    def __init__(self, ttl_s: float, max_keys: int) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._watched: dict[tuple[bytes, bytes], tuple[Callable[[bytes], bytes], set[bytes]]] = {}
        self._until: dict[tuple[bytes, bytes], float] = {}

    def watch(self, refusal: Refusal) -> None:
        """Start (or keep) learning what the limit behind `refusal` is about."""
        key = (refusal.measurement, refusal.name)
        if key not in self._watched:
            self._watched[key] = (_key_of(refusal), set())
        self._until[key] = time.monotonic() + self.ttl_s

    def learn(self, stored: list[bytes]) -> None:
        """`stored` are lines InfluxDB took."""
        if not self._watched:
            return
        now = time.monotonic()
        for key, until in list(self._until.items()):
            if until <= now:
                del self._until[key], self._watched[key]
        for key_of, keys in self._watched.values():
            for line in stored:
                if len(keys) >= self.max_keys:
                    break
                keys.add(key_of(line))

    def unknown(self, refusal: Refusal, lines: list[bytes]) -> list[bytes]:
        """The lines whose series (or value of the refused tag) was never seen stored."""
        key_of, keys = self._watched[(refusal.measurement, refusal.name)]
        return [line for line in lines if key_of(line) not in keys]


def _key_of(refusal: Refusal) -> Callable[[bytes], bytes]:
    if refusal.kind == "series_limit":
        return series_key
    prefixes = (refusal.measurement + b",", refusal.measurement + b" ")
    value = re.compile(rb",%s=((?:[^,\\]|\\.)*+)" % re.escape(refusal.name))

    def value_of(line: bytes) -> bytes:
        if not line.startswith(prefixes):
            return b""  # b"" is never a tag value: lines without it are never refused for it
        match = value.search(series_key(line))
        return match[1] if match else b""

    return value_of
