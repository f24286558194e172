"""InfluxDB line protocol: encode samples, parse lines, and validate payloads quickly.

Follows https://docs.influxdata.com/influxdb/v1/write_protocols/line_protocol_reference/ ::

    <measurement>[,<tag_key>=<tag_value>...] <field_key>=<field_value>[,...] [<timestamp>]

A backslash escapes ',' and ' ' in the measurement, ',', '=' and ' ' in tag keys, tag values and
field keys, and '"' and '\\' in string field values; before any other character it is literal.
Anything this module encodes, it parses back to an equal sample, and check_lines accepts exactly
the lines parse_line accepts (the tests check both with hypothesis).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache

from telemetry.sample import FieldValue, Sample


class LineProtocolError(ValueError):
    """A sample that cannot be encoded or a line that is not valid line protocol.

    The message names the element at fault; parse_lines prefixes the 1-based line number.
    """


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
# InfluxDB keeps int64 min/min+1 and max as sentinels and refuses points stamped with them.
_TIME_MIN_NS = _INT64_MIN + 2
_TIME_MAX_NS = _INT64_MAX - 1

_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")
_MEASUREMENT_SPECIALS = ", "
_KEY_SPECIALS = ",= "  # tag keys, tag values and field keys

# Number tokens spelled out with [0-9]: Python's int() and float() also take '_', spaces and
# non-ASCII digits, which InfluxDB does not.
_INTEGER_TOKEN = re.compile(r"-?[0-9]+")
_FLOAT_TOKEN = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLEANS = {
    **dict.fromkeys(["t", "T", "true", "True", "TRUE"], True),
    **dict.fromkeys(["f", "F", "false", "False", "FALSE"], False),
}
_NON_FINITE_TOKENS = {"nan", "inf", "infinity"}


# --- encoding ----------------------------------------------------------------------------------


def encode(sample: Sample) -> str:
    """Encode one sample as a line, without a trailing newline.

    Tags are sorted by escaped key (what InfluxDB compares) and tags with an empty value are left
    out, since line protocol cannot carry them. Raises LineProtocolError for anything InfluxDB
    would reject or misread.
    """
    measurement = sample.measurement
    if not measurement:
        raise LineProtocolError("measurement is empty")
    if measurement.startswith("#"):
        raise LineProtocolError(
            f"measurement {measurement!r} starts with '#', which marks a comment"
        )
    _check_name(measurement, "measurement", measurement)
    head = [measurement.replace(",", r"\,").replace(" ", r"\ ")]

    tags = []
    for key, value in sample.tags.items():
        if not key:
            raise LineProtocolError(
                f"empty tag key (value {value!r}) in measurement {measurement!r}"
            )
        if value:
            tags.append((_escape_key(key, "tag key", key), _escape_key(value, "value of tag", key)))
    tags.sort()  # keys are unique, so this sorts by escaped key, as InfluxDB's bytes.Compare does
    head.extend(f"{key}={value}" for key, value in tags)

    fields = []
    for key, field_value in sample.fields.items():
        if not key:
            raise LineProtocolError(f"empty field key in measurement {measurement!r}")
        fields.append(f"{_escape_key(key, 'field key', key)}={_encode_value(key, field_value)}")
    if not fields:
        raise LineProtocolError(f"measurement {measurement!r} has no fields")

    time_ns = sample.time_ns
    if not _TIME_MIN_NS <= time_ns <= _TIME_MAX_NS:
        raise LineProtocolError(f"timestamp {time_ns} is outside InfluxDB's range")
    return f"{','.join(head)} {','.join(fields)} {int.__repr__(time_ns)}"


def encode_many(samples: Iterable[Sample]) -> str:
    """Encode samples one per line; every line ends with a newline, so "" means no samples."""
    return "".join(f"{encode(sample)}\n" for sample in samples)


def _check_name(text: str, element: str, name: str) -> None:
    """Refuse a measurement, key or tag value that line protocol cannot carry.

    A trailing backslash would escape the separator after it, so it has no encoding at all.
    """
    if text.isprintable() and not text.endswith("\\"):
        return  # the common case; isprintable() is several times faster than a regex search
    control = _CONTROL_CHAR.search(text)
    if control:
        raise LineProtocolError(f"{element} {name!r} contains control character {control[0]!r}")
    if text.endswith("\\"):
        raise LineProtocolError(f"{element} {name!r} ends with a backslash")


def _escape_key(text: str, element: str, name: str) -> str:
    """Escape a tag key, tag value or field key (replace() is much faster than translate())."""
    _check_name(text, element, name)
    return text.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _encode_value(key: str, value: FieldValue) -> str:
    # bool first: it is a subclass of int. int/float.__repr__ keep subclasses (IntEnum, numpy
    # scalars) from changing the spelling.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return f"{int.__repr__(value)}i"
        if 0 <= value <= _UINT64_MAX:  # SNMP Counter64 and friends
            return f"{int.__repr__(value)}u"
        raise LineProtocolError(f"field {key!r}: integer {value} is outside int64 and uint64")
    if isinstance(value, float):
        if math.isnan(value):
            raise LineProtocolError(f"field {key!r}: NaN is not allowed")
        if math.isinf(value):
            raise LineProtocolError(f"field {key!r}: {'+' if value > 0 else '-'}Inf is not allowed")
        return float.__repr__(value)  # shortest round-trip form, e.g. 5.0, 1e-05, 1.5e+300
    if isinstance(value, str):
        control = None if value.isprintable() else _CONTROL_CHAR.search(value)
        if control:
            raise LineProtocolError(
                f"string field {key!r} contains control character {control[0]!r}"
            )
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise LineProtocolError(f"field {key!r}: unsupported type {type(value).__name__}")


# --- parsing -----------------------------------------------------------------------------------


def parse_line(line: str | bytes, default_time_ns: int | None = None) -> Sample:
    """Parse one line (no newline) into a sample; the inverse of encode.

    Bytes must be UTF-8. A line without a timestamp gets default_time_ns, and is an error when
    that is None. A repeated tag key is an error (InfluxDB rejects it); a repeated field key keeps
    the last value, as InfluxDB does.
    """
    if isinstance(line, bytes):
        try:
            text = line.decode()
        except UnicodeDecodeError as exc:
            raise LineProtocolError(f"invalid UTF-8 at byte {exc.start}") from None
    else:
        text = line
    if text.startswith("#"):
        raise LineProtocolError("line is a '#' comment, not a point")

    measurement, pos = _scan_name(text, 0, _MEASUREMENT_SPECIALS, "measurement")
    if not measurement:
        raise LineProtocolError("missing measurement")

    tags: dict[str, str] = {}
    while text.startswith(",", pos):
        key, pos = _scan_name(text, pos + 1, _KEY_SPECIALS, "tag key")
        if not key:
            raise LineProtocolError(f"empty tag key at column {pos + 1}")
        if not text.startswith("=", pos):
            raise LineProtocolError(f"tag {key!r} has no value")
        value, pos = _scan_name(text, pos + 1, _KEY_SPECIALS, f"value of tag {key!r}")
        if not value:
            raise LineProtocolError(f"tag {key!r} has an empty value")
        if text.startswith("=", pos):
            raise LineProtocolError(f"value of tag {key!r} contains an unescaped '='")
        if key in tags:
            raise LineProtocolError(f"duplicate tag {key!r}")
        tags[key] = value
    if pos + 1 >= len(text):  # nothing after the measurement and tags but maybe a space
        raise LineProtocolError(f"measurement {measurement!r} has no field set")

    # pos is at the space before the field set, then at each comma between fields.
    fields: dict[str, FieldValue] = {}
    while True:
        key, pos = _scan_name(text, pos + 1, _KEY_SPECIALS, "field key")
        if not key:
            found = repr(text[pos]) if pos < len(text) else "end of line"
            raise LineProtocolError(f"expected a field key at column {pos + 1}, found {found}")
        if not text.startswith("=", pos):
            raise LineProtocolError(f"field {key!r} has no value")
        fields[key], pos = _parse_field_value(text, pos + 1, key)
        if not text.startswith(",", pos):
            break

    if pos == len(text):
        if default_time_ns is None:
            raise LineProtocolError("missing timestamp and no default time given")
        time_ns = default_time_ns
    else:  # _parse_field_value stops only at ',', ' ' or the end
        token = text[pos + 1 :]
        if not token:
            raise LineProtocolError("trailing space after the field set")
        time_ns = _parse_integer(token, "timestamp", _TIME_MIN_NS, _TIME_MAX_NS)
    return Sample(measurement, tags, fields, time_ns)


def parse_lines(text: str | bytes) -> list[Sample]:
    """Parse a payload of newline-separated lines, skipping blank lines and '#' comments.

    Every line needs its own timestamp. Errors name the 1-based line number.
    """
    lines: Sequence[str | bytes] = (
        text.split(b"\n") if isinstance(text, bytes) else text.split("\n")
    )
    samples = []
    for number, line in enumerate(lines, start=1):
        if _is_blank_or_comment(line):
            continue
        try:
            samples.append(parse_line(line))
        except LineProtocolError as exc:
            raise LineProtocolError(f"line {number}: {exc}") from None
    return samples


def _is_blank_or_comment(line: str | bytes) -> bool:
    # InfluxDB skips these too; like it, allow spaces before the '#'.
    if isinstance(line, bytes):
        return line.lstrip(b" ")[:1] in (b"", b"#")
    return line.lstrip(" ")[:1] in ("", "#")


def _scan_name(text: str, pos: int, specials: str, element: str) -> tuple[str, int]:
    """Unescape a measurement, key or tag value from pos up to the first unescaped special.

    Returns the text and the position of the special (or the end of the line).
    """
    chars = []
    end = len(text)
    while pos < end:
        char = text[pos]
        if char == "\\" and pos + 1 < end and text[pos + 1] in specials:
            chars.append(text[pos + 1])
            pos += 2
            continue
        if char in specials:
            break
        if char < " " or char == "\x7f":
            raise LineProtocolError(f"control character {char!r} in {element}")
        chars.append(char)
        pos += 1
    return "".join(chars), pos


def _parse_field_value(text: str, pos: int, key: str) -> tuple[FieldValue, int]:
    """Parse the value starting at pos; returns it and the position just after it."""
    if text.startswith('"', pos):
        return _parse_string(text, pos + 1, key)
    end = pos
    while end < len(text) and text[end] not in ", ":
        end += 1
    token = text[pos:end]

    if token in _BOOLEANS:
        return _BOOLEANS[token], end
    if _FLOAT_TOKEN.fullmatch(token):
        value = float(token)
        if math.isinf(value):
            raise LineProtocolError(f"field {key!r}: float {token} is out of range")
        return value, end
    if token[-1:] in ("i", "u") and _INTEGER_TOKEN.fullmatch(token[:-1]):
        low, high = (_INT64_MIN, _INT64_MAX) if token.endswith("i") else (0, _UINT64_MAX)
        return _parse_integer(token[:-1], f"field {key!r}", low, high), end
    if token.lstrip("+-").lower() in _NON_FINITE_TOKENS:
        raise LineProtocolError(f"field {key!r}: {token} is not allowed")
    if not token:
        raise LineProtocolError(f"field {key!r} has no value")
    raise LineProtocolError(f"field {key!r}: invalid value {token!r}")


def _parse_integer(token: str, element: str, low: int, high: int) -> int:
    if not _INTEGER_TOKEN.fullmatch(token):
        raise LineProtocolError(f"{element}: invalid integer {token!r}")
    # Strip leading zeros first: int() refuses strings over 4300 digits, zeros included.
    digits = token.lstrip("-").lstrip("0")
    value = 0 if len(digits) > 20 else int(digits or "0")
    if token.startswith("-"):
        value = -value
    if len(digits) > 20 or not low <= value <= high:
        raise LineProtocolError(f"{element}: {token} is outside [{low}, {high}]")
    return value


def _parse_string(text: str, pos: int, key: str) -> tuple[str, int]:
    """Unescape a string value whose opening quote is just before pos."""
    chars: list[str] = []
    end = len(text)
    while pos < end:
        char = text[pos]
        if char == '"':
            pos += 1
            if pos < end and text[pos] not in ", ":
                raise LineProtocolError(f"unexpected {text[pos]!r} after string field {key!r}")
            return "".join(chars), pos
        if char == "\\" and pos + 1 < end and text[pos + 1] in '"\\':
            chars.append(text[pos + 1])
            pos += 2
            continue
        if char < " " or char == "\x7f":
            raise LineProtocolError(f"control character {char!r} in string field {key!r}")
        chars.append(char)
        pos += 1
    raise LineProtocolError(f"unterminated string field {key!r}")


# --- fast validation ---------------------------------------------------------------------------

# One regex for a whole valid line, on bytes. It may refuse some valid lines (very long numbers,
# exponents over 99, 19-digit ints); check_lines sends those to parse_line, so it must never
# accept a line that parse_line refuses. Possessive quantifiers keep failures linear.
_UTF8_CHAR = (  # one well-formed multi-byte UTF-8 sequence, as Python's strict decoder wants
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
_MEASUREMENT_RE = rb"(?!#)(?:[^\x00-\x20\x7f-\xff,\\]++|\\[, ]|\\(?![, ])|%s)++" % _UTF8_CHAR
_KEY_RE = rb"(?:[^\x00-\x20\x7f-\xff,=\\]++|\\[,= ]|\\(?![,= ])|%s)++" % _UTF8_CHAR
_STRING_RE = rb'"(?:[^\x00-\x1f\x7f-\xff"\\]++|\\["\\]|\\(?!["\\])|%s)*+"' % _UTF8_CHAR
_VALUE_RE = (
    _STRING_RE
    + rb"|-?[0-9]{1,18}i|[0-9]{1,19}u"  # these digit counts can never overflow
    + rb"|-?(?:[0-9]{1,200}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE](?:-[0-9]+|\+?[0-9]{1,2}))?"  # < 1e299
    + rb"|true|True|TRUE|t|T|false|False|FALSE|f|F"
)
_TAG_RE = rb",%s=%s" % (_KEY_RE, _KEY_RE)
_FIELD_RE = rb"%s=(?:%s)" % (_KEY_RE, _VALUE_RE)
_TIMESTAMP_RE = rb"-?(?:[0-9]{1,18}|[1-8][0-9]{18})"  # inside InfluxDB's range until 2255
_FAST_LINE = re.compile(
    rb"%s(?P<tags>(?:%s)*+) %s(?:,%s)*+(?: (?P<time>%s))?"
    % (_MEASUREMENT_RE, _TAG_RE, _FIELD_RE, _FIELD_RE, _TIMESTAMP_RE)
)
# The same without the multi-byte alternatives, for all-ASCII payloads (nearly all of them):
# about 20 % faster, and it accepts a subset of what _FAST_LINE accepts.
_FAST_ASCII_LINE = re.compile(_FAST_LINE.pattern.replace(b"|" + _UTF8_CHAR, b""))
# Tag keys inside an already matched tag section, for the duplicate check the regex cannot do.
_TAG_KEY = re.compile(rb",(%s)=" % _KEY_RE)


@lru_cache(maxsize=65536)
def _tag_keys_unique(tags: bytes) -> bool:
    # Cached: a device sends the same tag sets every poll, so this is nearly always a hit.
    keys = _TAG_KEY.findall(tags)
    return len(set(keys)) == len(keys)


class Timestamps:
    """Which line timestamps check_lines takes, and counts of what it did with the others.

    Devices and gateways often stamp lines in seconds or milliseconds, which InfluxDB would
    read as nanoseconds in 1970. A timestamp is read in ns, us, ms or s, whichever puts it
    between `max_age_s` before and `max_future_s` after the clock (the ranges lie a factor
    of 1000 apart, so at most one does while `max_age_s` is under 50 years), and rewritten
    in ns; a timestamp that no precision puts there is refused.
    """

    def __init__(self, max_age_s: float, max_future_s: float) -> None:
        self.max_age_ns = int(max_age_s * 1e9)
        self.max_future_ns = int(max_future_s * 1e9)
        self.rescaled = 0  # lines whose timestamp was rewritten in ns
        self.refused = 0  # lines refused for their timestamp

    def window(self, now_ns: int) -> tuple[int, int]:
        return now_ns - self.max_age_ns, now_ns + self.max_future_ns

    def check(self, line: bytes, token: bytes, low: int, high: int) -> bytes:
        """`line` with its timestamp `token` in ns; raises LineProtocolError when no
        precision puts it between `low` and `high`."""
        stamp = int(token)
        for _, factor in _PRECISIONS:
            if low <= stamp * factor <= high:
                if factor == 1:
                    return line
                self.rescaled += 1
                return b"%s%d" % (line[: len(line) - len(token)], stamp * factor)
        self.refused += 1
        unit, factor = min(_PRECISIONS, key=lambda p: abs(stamp * p[1] - (low + high) // 2))
        when = _describe_time(stamp * factor)
        raise LineProtocolError(
            f"timestamp {stamp} is out of range in ns, us, ms and s (read in {unit}: {when}); "
            f"accepted: from {_describe_span(self.max_age_ns)} before to "
            f"{_describe_span(self.max_future_ns)} after the collector's clock"
        )


_PRECISIONS = (("ns", 1), ("us", 10**3), ("ms", 10**6), ("s", 10**9))
_NO_TIME = _INT64_MIN  # parse_line's default time when a line has none: never a valid one


def _describe_time(ns: int) -> str:
    try:
        return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "beyond any date"


def _describe_span(ns: int) -> str:
    seconds = ns / 1e9
    if seconds >= 86400:
        return f"{seconds / 86400:g} d"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


def check_lines(
    payload: bytes, timestamps: Timestamps | None = None
) -> tuple[list[bytes], list[tuple[int, bytes, str]]]:
    """Split a payload into valid lines and rejects, for the collector's hot path.

    Blank lines and '#' comments are dropped. Returns the valid lines as they are, and for each
    invalid one its 1-based line number, the line, and parse_line's reason. Accepts exactly what
    parse_line accepts, lines without a timestamp included (InfluxDB stamps those on arrival);
    only lines the fast regex refuses pay for a full parse. With `timestamps`, a line's
    timestamp is also checked against the clock, and rewritten in ns or refused (Timestamps).
    """
    good = []
    bad = []
    fast = _FAST_ASCII_LINE if payload.isascii() else _FAST_LINE
    if timestamps is not None:
        low, high = timestamps.window(time.time_ns())
        # Nanoseconds in the window, as 19-digit strings: compared as bytes, no int() needed.
        low_token, high_token = b"%d" % low, b"%d" % high
        fast_time = len(low_token) == len(high_token) == 19
    for number, line in enumerate(payload.split(b"\n"), start=1):
        if _is_blank_or_comment(line):
            continue
        match = fast.fullmatch(line)
        if match:
            tags = match["tags"]
            # fewer than two tags, so none can repeat
            if tags.count(b",") < 2 or _tag_keys_unique(tags):
                if timestamps is not None:
                    token = match["time"]
                    if token is not None and not (
                        fast_time and len(token) == 19 and low_token <= token <= high_token
                    ):
                        try:
                            line = timestamps.check(line, token, low, high)
                        except LineProtocolError as exc:
                            bad.append((number, line, str(exc)))
                            continue
                good.append(line)
                continue
        try:
            sample = parse_line(line, default_time_ns=_NO_TIME)
            if timestamps is not None and sample.time_ns != _NO_TIME:
                line = timestamps.check(line, line.rpartition(b" ")[2], low, high)
        except LineProtocolError as exc:
            bad.append((number, line, str(exc)))
        else:
            good.append(line)
    return good, bad
