"""Tests for telemetry.lineproto: golden lines for every encoding and parsing rule, error messages
that name the element at fault, and hypothesis properties (round trip; check_lines agreeing with
parse_line on valid, nearly valid and garbage lines)."""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry import lineproto
from telemetry.lineproto import (
    LineProtocolError,
    check_lines,
    encode,
    encode_many,
    parse_line,
    parse_lines,
)
from telemetry.sample import Sample

T = 1732600000000000000
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
TIME_MIN, TIME_MAX = INT64_MIN + 2, INT64_MAX - 1  # InfluxDB's valid timestamps
PDU_LINE = (
    "pdu_outlet,device=pdu-a01-a,outlet=12,rack=A01,row=A,site=qiyang-a1 "
    'current_a=1.8,power_w=211i,state="on" 1732600000000000000'
)
PDU_SAMPLE = Sample(
    "pdu_outlet",
    {"site": "qiyang-a1", "rack": "A01", "row": "A", "device": "pdu-a01-a", "outlet": "12"},
    {"current_a": 1.8, "power_w": 211, "state": "on"},
    T,
)


def typed(sample: Sample) -> tuple[Any, ...]:
    """What equality must preserve: == alone calls 5 == 5.0 == True and 0.0 == -0.0."""
    fields = {key: (type(value), repr(value)) for key, value in sample.fields.items()}
    return sample.measurement, dict(sample.tags), fields, sample.time_ns


# --- encode: golden lines ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "line"),
    [
        pytest.param(PDU_SAMPLE, PDU_LINE, id="pdu-tags-sorted"),
        pytest.param(
            Sample("cpu load,x=1", {}, {"v": 1}, 0), r"cpu\ load\,x=1 v=1i 0", id="meas-escapes"
        ),
        pytest.param(
            Sample("温度", {"site": "机房 A"}, {"v": 1}, 0),
            r"温度,site=机房\ A v=1i 0",
            id="unicode",
        ),
        pytest.param(
            Sample("m", {"a b,c=d": "e f,g=h"}, {"v": 1}, 0),
            r"m,a\ b\,c\=d=e\ f\,g\=h v=1i 0",
            id="tag-escapes",
        ),
        pytest.param(
            Sample("m", {}, {"a b,c=d": 1}, 0), r"m a\ b\,c\=d=1i 0", id="field-key-escapes"
        ),
        pytest.param(
            Sample("m", {}, {"s": 'say "hi" \\ a,b c=d'}, 0),
            r'm s="say \"hi\" \\ a,b c=d" 0',
            id="string-escapes",
        ),
        pytest.param(Sample("m", {}, {"s": ""}, 0), 'm s="" 0', id="empty-string"),
        pytest.param(
            Sample('m"', {'k"': 'v"'}, {'f"': 1}, 0), 'm",k"=v" f"=1i 0', id="quotes-in-names"
        ),
        pytest.param(
            Sample(r"a\b", {r"k\x": r"v\,w"}, {r"f\ g": 1}, 0),
            r"a\b,k\x=v\\,w f\\ g=1i 0",
            id="inner-backslashes-stay",
        ),
        pytest.param(
            Sample("m", {"b": "2", "B": "3", "a": "1"}, {"v": 1}, 0),
            "m,B=3,a=1,b=2 v=1i 0",
            id="tags-byte-order",
        ),
        pytest.param(
            # Sorted by escaped key as InfluxDB compares them: '!' (0x21) < '\' (0x5c).
            Sample("m", {"a b": "1", "a!": "2", "a": "3"}, {"v": 1}, 0),
            r"m,a=3,a!=2,a\ b=1 v=1i 0",
            id="tags-sorted-escaped",
        ),
        pytest.param(
            Sample("m", {"empty": "", "k": "v"}, {"v": 1}, 0),
            "m,k=v v=1i 0",
            id="empty-tag-dropped",
        ),
        pytest.param(
            Sample("m", {"b": "x"}, {"z": 1, "a": 2}, 0), "m,b=x z=1i,a=2i 0", id="field-order-kept"
        ),
        pytest.param(Sample("m", {}, {"t": True, "f": False}, 0), "m t=true,f=false 0", id="bools"),
        pytest.param(Sample("m", {}, {"a": 0, "b": -5}, 0), "m a=0i,b=-5i 0", id="ints"),
        pytest.param(
            Sample("m", {}, {"lo": INT64_MIN, "hi": INT64_MAX}, 0),
            f"m lo={INT64_MIN}i,hi={INT64_MAX}i 0",
            id="int64-bounds",
        ),
        pytest.param(
            Sample("m", {}, {"a": 2**63, "b": UINT64_MAX}, 0),
            "m a=9223372036854775808u,b=18446744073709551615u 0",
            id="uint64",
        ),
        pytest.param(
            Sample("m", {}, {"a": 5.0, "b": -0.0, "c": 0.1}, 0),
            "m a=5.0,b=-0.0,c=0.1 0",
            id="floats",
        ),
        pytest.param(
            Sample("m", {}, {"a": 1e-05, "b": 1.5e300, "c": 1e16}, 0),
            "m a=1e-05,b=1.5e+300,c=1e+16 0",
            id="float-exponents",
        ),
        pytest.param(Sample("m", {}, {"v": 1}, -1), "m v=1i -1", id="negative-time"),
        pytest.param(Sample("m", {}, {"v": 1}, TIME_MIN), f"m v=1i {TIME_MIN}", id="time-min"),
        pytest.param(Sample("m", {}, {"v": 1}, TIME_MAX), f"m v=1i {TIME_MAX}", id="time-max"),
        pytest.param(Sample("m=x", {}, {"v": 1}, 0), "m=x v=1i 0", id="equals-in-measurement"),
    ],
)
def test_encode_golden(sample: Sample, line: str) -> None:
    assert encode(sample) == line


def test_encode_many_joins_with_trailing_newline() -> None:
    samples = [Sample("a", {}, {"v": 1}, 1), Sample("b", {}, {"v": 2}, 2)]
    assert encode_many(iter(samples)) == "a v=1i 1\nb v=2i 2\n"
    assert encode_many([]) == ""


# --- encode: errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (Sample("m", {}, {"power_w": math.nan}, 0), "field 'power_w': NaN is not allowed"),
        (Sample("m", {}, {"power_w": math.inf}, 0), "field 'power_w': +Inf is not allowed"),
        (Sample("m", {}, {"power_w": -math.inf}, 0), "field 'power_w': -Inf is not allowed"),
        (
            Sample("m", {}, {"big": 2**64}, 0),
            "field 'big': integer 18446744073709551616 is outside",
        ),
        (
            Sample("m", {}, {"low": INT64_MIN - 1}, 0),
            "field 'low': integer -9223372036854775809 is outside",
        ),
        (Sample("m", {}, {"raw": b"x"}, 0), "field 'raw': unsupported type bytes"),  # type: ignore[dict-item]
        (Sample("", {}, {"v": 1}, 0), "measurement is empty"),
        (Sample("#cpu", {}, {"v": 1}, 0), "measurement '#cpu' starts with '#'"),
        (Sample("cpu", {"": "x"}, {"v": 1}, 0), "empty tag key (value 'x') in measurement 'cpu'"),
        (Sample("cpu", {"": ""}, {"v": 1}, 0), "empty tag key"),
        (Sample("cpu", {}, {"": 1}, 0), "empty field key in measurement 'cpu'"),
        (Sample("cpu", {"host": "a"}, {}, 0), "measurement 'cpu' has no fields"),
        (Sample("a\nb", {}, {"v": 1}, 0), r"measurement 'a\nb' contains control character '\n'"),
        (
            Sample("m", {"a\tb": "x"}, {"v": 1}, 0),
            r"tag key 'a\tb' contains control character '\t'",
        ),
        (
            Sample("m", {"host": "x\r"}, {"v": 1}, 0),
            r"value of tag 'host' contains control character '\r'",
        ),
        (
            Sample("m", {}, {"a\x00": 1}, 0),
            r"field key 'a\x00' contains control character '\x00'",
        ),
        (
            Sample("m", {}, {"msg": "a\x7f"}, 0),
            r"string field 'msg' contains control character '\x7f'",
        ),
        (
            Sample("m", {}, {"msg": "a\tb"}, 0),
            r"string field 'msg' contains control character '\t'",
        ),
        (
            Sample("m", {}, {"msg": "line\nbreak"}, 0),
            r"string field 'msg' contains control character '\n'",
        ),
        (Sample("m\\", {}, {"v": 1}, 0), r"measurement 'm\\' ends with a backslash"),
        (Sample("m", {"k\\": "v"}, {"v": 1}, 0), r"tag key 'k\\' ends with a backslash"),
        (Sample("m", {"k": "v\\"}, {"v": 1}, 0), r"value of tag 'k' ends with a backslash"),
        (Sample("m", {}, {"f\\": 1}, 0), r"field key 'f\\' ends with a backslash"),
        (Sample("m", {}, {"v": 1}, TIME_MAX + 1), "timestamp 9223372036854775807 is outside"),
        (Sample("m", {}, {"v": 1}, TIME_MIN - 1), "timestamp -9223372036854775807 is outside"),
    ],
)
def test_encode_errors_name_the_element(sample: Sample, message: str) -> None:
    with pytest.raises(LineProtocolError) as caught:
        encode(sample)
    assert message in str(caught.value)


def test_number_subclasses_keep_the_plain_spelling() -> None:
    class Level(IntEnum):
        HIGH = 3

    class Reading(float):
        def __repr__(self) -> str:
            return f"Reading({float(self)})"

    assert (
        encode(Sample("m", {}, {"level": Level.HIGH, "r": Reading(1.5)}, 0)) == "m level=3i,r=1.5 0"
    )


def test_string_values_may_end_with_a_backslash() -> None:
    # Only names are refused a trailing backslash; in strings it is escaped as \\.
    line = encode(Sample("m", {}, {"path": "C:\\"}, 0))
    assert line == r'm path="C:\\" 0'
    assert parse_line(line).fields["path"] == "C:\\"


# --- parse: golden lines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(PDU_LINE, PDU_SAMPLE, id="pdu"),
        pytest.param(
            r"cpu\ load\,x=1 v=1i 0", Sample("cpu load,x=1", {}, {"v": 1}, 0), id="meas-escapes"
        ),
        pytest.param(
            r"a\=b\x v=1i 0", Sample(r"a\=b\x", {}, {"v": 1}, 0), id="meas-other-backslash-literal"
        ),
        pytest.param(
            r"m,a\ b\,c\=d=e\ f\,g\=h v=1i 0",
            Sample("m", {"a b,c=d": "e f,g=h"}, {"v": 1}, 0),
            id="tag-escapes",
        ),
        pytest.param(
            r"m,k=a\b\\,c v=1i 0",
            Sample("m", {"k": r"a\b\,c"}, {"v": 1}, 0),
            id="tag-other-backslash-literal",
        ),
        pytest.param(
            r"m a\ b\,c\=d=1i 0", Sample("m", {}, {"a b,c=d": 1}, 0), id="field-key-escapes"
        ),
        pytest.param(
            r'm s="a\"b\\c\d, e=f" 0',
            Sample("m", {}, {"s": 'a"b\\c\\d, e=f'}, 0),
            id="string-escapes",
        ),
        pytest.param('m s="" 0', Sample("m", {}, {"s": ""}, 0), id="empty-string"),
        pytest.param(
            "温度,site=机房\\ A v=1i 0",
            Sample("温度", {"site": "机房 A"}, {"v": 1}, 0),
            id="unicode",
        ),
        pytest.param(
            "m,b=2,a=1 v=1 0", Sample("m", {"a": "1", "b": "2"}, {"v": 1.0}, 0), id="unsorted-tags"
        ),
        pytest.param("m v=1,v=2 0", Sample("m", {}, {"v": 2.0}, 0), id="repeated-field-last-wins"),
        pytest.param(
            "m a=1,b=1.,c=.5,d=-1.5e3,e=1E5,f=1.e+78,g=-0,h=1e-400 0",
            Sample(
                "m",
                {},
                {
                    "a": 1.0,
                    "b": 1.0,
                    "c": 0.5,
                    "d": -1500.0,
                    "e": 1e5,
                    "f": 1e78,
                    "g": -0.0,
                    "h": 0.0,
                },
                0,
            ),
            id="float-spellings",
        ),
        pytest.param(
            f"m a={INT64_MIN}i,b={INT64_MAX}i,c=0u,d={UINT64_MAX}u,e=007i 0",
            Sample("m", {}, {"a": INT64_MIN, "b": INT64_MAX, "c": 0, "d": UINT64_MAX, "e": 7}, 0),
            id="integers",
        ),
        pytest.param(
            "m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE 0",
            Sample("m", {}, dict(zip("abcdefghij", [True] * 5 + [False] * 5, strict=True)), 0),
            id="booleans",
        ),
        pytest.param(f"m v=1i {TIME_MIN}", Sample("m", {}, {"v": 1}, TIME_MIN), id="time-min"),
        pytest.param(f"m v=1i {TIME_MAX}", Sample("m", {}, {"v": 1}, TIME_MAX), id="time-max"),
        pytest.param("m v=1i 0001", Sample("m", {}, {"v": 1}, 1), id="time-leading-zeros"),
    ],
)
def test_parse_golden(line: str, expected: Sample) -> None:
    assert typed(parse_line(line)) == typed(expected)
    assert typed(parse_line(line.encode())) == typed(expected)


def test_parse_uses_default_time_only_without_timestamp() -> None:
    assert parse_line("m v=1i", default_time_ns=42).time_ns == 42
    assert parse_line("m v=1i 7", default_time_ns=42).time_ns == 7


# --- parse: errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "missing measurement"),
        (" cpu v=1", "missing measurement"),
        (",a=b v=1", "missing measurement"),
        ("#cpu v=1", "comment"),
        ("cpu", "measurement 'cpu' has no field set"),
        ("cpu ", "measurement 'cpu' has no field set"),
        ("cpu,host=a", "measurement 'cpu' has no field set"),
        ("cpu v=1 ", "trailing space after the field set"),
        ("cpu  v=1", "expected a field key at column 5, found ' '"),
        ("cpu v=1,,w=2", "expected a field key at column 9, found ','"),
        ("cpu v=1,", "expected a field key at column 9, found end of line"),
        ("cpu v=1  1", "timestamp: invalid integer ' 1'"),
        ("cpu v=1 1 2", "timestamp: invalid integer '1 2'"),
        ("cpu v=1 12x", "timestamp: invalid integer '12x'"),
        ("cpu v=1 9223372036854775807", "timestamp: 9223372036854775807 is outside"),
        ("cpu v=1 " + "1" * 5000, "timestamp: " + "1" * 5000 + " is outside"),
        ("cpu,,a=b v=1", "empty tag key"),
        ("cpu,a=b,,c=d v=1", "empty tag key"),
        ("cpu,a v=1", "tag 'a' has no value"),
        ("cpu,a= v=1", "tag 'a' has an empty value"),
        ("cpu,a=b=c v=1", "value of tag 'a' contains an unescaped '='"),
        ("cpu,host=a,host=b v=1", "duplicate tag 'host'"),
        ("cpu v", "field 'v' has no value"),
        ("cpu v=", "field 'v' has no value"),
        ("cpu v=,w=1", "field 'v' has no value"),
        ("cpu power_w=NaN", "field 'power_w': NaN is not allowed"),
        ("cpu power_w=nan", "field 'power_w': nan is not allowed"),
        ("cpu power_w=inf", "field 'power_w': inf is not allowed"),
        ("cpu power_w=-Inf", "field 'power_w': -Inf is not allowed"),
        ("cpu power_w=+Infinity", "field 'power_w': +Infinity is not allowed"),
        ("cpu v=1e309", "field 'v': float 1e309 is out of range"),
        ("cpu v=9223372036854775808i", "field 'v': 9223372036854775808 is outside"),
        ("cpu v=-9223372036854775809i", "field 'v': -9223372036854775809 is outside"),
        ("cpu v=18446744073709551616u", "field 'v': 18446744073709551616 is outside"),
        ("cpu v=-1u", "field 'v': -1 is outside"),
        ("cpu v=1i2", "field 'v': invalid value '1i2'"),
        ("cpu v=1.5i", "field 'v': invalid value '1.5i'"),
        ("cpu v=+1", "field 'v': invalid value '+1'"),
        ("cpu v=1_000", "field 'v': invalid value '1_000'"),  # float() would take it
        ("cpu v=\u0661", "field 'v': invalid value '\u0661'"),  # so would int()
        ("cpu v=0x10", "field 'v': invalid value '0x10'"),
        ("cpu v=tru", "field 'v': invalid value 'tru'"),
        ("cpu v=abc", "field 'v': invalid value 'abc'"),
        ('cpu msg="abc', "unterminated string field 'msg'"),
        ('cpu msg="abc\\"', "unterminated string field 'msg'"),
        ('cpu msg="a"b', "unexpected 'b' after string field 'msg'"),
        ('cpu msg="a""b"', "unexpected '\"' after string field 'msg'"),
        ("cpu v=1", "missing timestamp"),
        ("\tcpu v=1 0", r"control character '\t' in measurement"),
        ("cpu,ho\x00st=a v=1 0", r"control character '\x00' in tag key"),
        ("cpu,host=a\tb v=1 0", r"control character '\t' in value of tag 'host'"),
        ("cpu f\x7f=1 0", r"control character '\x7f' in field key"),
        ('cpu msg="a\nb" 0', r"control character '\n' in string field 'msg'"),
        ("cpu v=1\r", r"field 'v': invalid value '1\r'"),
        ("cpu v=1 0\r", r"timestamp: invalid integer '0\r'"),
    ],
)
def test_parse_errors_name_the_element(line: str, message: str) -> None:
    with pytest.raises(LineProtocolError) as caught:
        parse_line(line)
    assert message in str(caught.value)


def test_parse_rejects_invalid_utf8() -> None:
    with pytest.raises(LineProtocolError, match="invalid UTF-8 at byte 6"):
        parse_line(b"cpu v=\xff 0")


# --- parse_lines -------------------------------------------------------------------------------


def test_parse_lines_skips_blank_lines_and_comments() -> None:
    text = f"# header\n\n{PDU_LINE}\n   \n  # indented comment\nm v=true 5\n"
    expected = [typed(PDU_SAMPLE), typed(Sample("m", {}, {"v": True}, 5))]
    assert [typed(s) for s in parse_lines(text)] == expected
    assert [typed(s) for s in parse_lines(text.encode())] == expected
    assert parse_lines("") == []


def test_parse_lines_error_names_the_line_number() -> None:
    text = '# header\nm v=1i 1\nm msg="oops 2\nm v=1i 3\n'
    with pytest.raises(LineProtocolError, match=r"^line 3: unterminated string field 'msg'$"):
        parse_lines(text)
    with pytest.raises(LineProtocolError, match=r"^line 2: invalid UTF-8"):
        parse_lines(b'm v=1i 1\nm s="\xe9" 2\n')


def test_parse_lines_needs_timestamps_and_refuses_crlf() -> None:
    with pytest.raises(LineProtocolError, match=r"^line 1: missing timestamp"):
        parse_lines("m v=1i\n")
    # InfluxDB refuses CRLF too: the \r ends up in the timestamp.
    with pytest.raises(LineProtocolError, match=r"^line 1: timestamp: invalid integer"):
        parse_lines("m v=1i 1\r\nm v=1i 2\r\n")


# --- check_lines -------------------------------------------------------------------------------


def test_check_lines_splits_good_and_bad() -> None:
    payload = (
        f"# agent pdu-a01\n{PDU_LINE}\n\nm v=1i\nm v=NaN 1\n  \nm,a=1,a=2 v=1i 1\nm v=1i 2\n"
    ).encode()
    good, bad = check_lines(payload)
    assert good == [PDU_LINE.encode(), b"m v=1i", b"m v=1i 2"]
    assert bad == [
        (5, b"m v=NaN 1", "field 'v': NaN is not allowed"),
        (7, b"m,a=1,a=2 v=1i 1", "duplicate tag 'a'"),
    ]
    assert check_lines(b"") == ([], [])
    assert check_lines(b"\n# only a comment\n") == ([], [])


@pytest.mark.parametrize(
    "line",
    [
        PDU_LINE,
        r'm,k\ 1=v\,1 s="a \"q\" \\ b",f=-1.5e-07,i=-3i,b=T',
        "温度,site=机房 v=1",
        "m v=1",
    ],
)
def test_realistic_lines_take_the_fast_path(line: str) -> None:
    # check_lines is only fast if the regex accepts what encode produces; a miss would silently
    # fall back to parse_line, so look at the regex itself.
    assert lineproto._FAST_LINE.fullmatch(line.encode())


@pytest.mark.parametrize(
    "line",
    [
        "m v=1.5e+300 1",  # exponent beyond the regex's two digits
        "m v=9223372036854775807i 1",  # 19-digit integer
        "m v=18446744073709551615u 1",
        "m v=" + "9" * 250 + " 1",
        f"m v=1i {TIME_MAX}",
        f"m v=1i {TIME_MIN}",
    ],
)
def test_check_lines_accepts_valid_lines_outside_the_fast_path(line: str) -> None:
    assert check_lines(line.encode()) == ([line.encode()], [])


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        (b"\xc3\xa9", True),  # é
        (b"\xed\x9f\xbf", True),  # U+D7FF, just below the surrogates
        (b"\xf0\x9f\x92\xa1", True),  # an emoji, four bytes
        (b"\xf4\x8f\xbf\xbf", True),  # U+10FFFF, the last code point
        (b"\xed\xa0\x80", False),  # a surrogate
        (b"\xc0\xaf", False),  # overlong '/'
        (b"\xe0\x80\x80", False),  # overlong NUL
        (b"\xf4\x90\x80\x80", False),  # past U+10FFFF
        (b"\xc3", False),  # truncated
        (b"\x80", False),  # lone continuation byte
    ],
)
def test_check_lines_agrees_on_utf8_edge_cases(name: bytes, valid: bool) -> None:
    # The fast regex validates UTF-8 itself; it must agree with Python's strict decoder.
    for line in (b"m" + name + b" v=1 0", b"m,k=" + name + b" v=1 0", b'm s="' + name + b'" 0'):
        good, bad = check_lines(line)
        if valid:
            assert (good, bad) == ([line], [])
        else:
            assert good == []
            assert bad[0][2].startswith("invalid UTF-8 at byte")


# --- properties --------------------------------------------------------------------------------

CONTROL_CHARS = [chr(c) for c in range(0x20)] + ["\x7f"]
# Favour the characters line protocol treats specially, but cover all of Unicode too.
chars = st.one_of(
    st.sampled_from(list(' ,="\\#')),
    st.characters(codec="utf-8", exclude_characters=CONTROL_CHARS),
)
names = st.text(chars, min_size=1, max_size=10).filter(lambda s: not s.endswith("\\"))
measurements = names.filter(lambda s: not s.startswith("#"))
field_values = st.one_of(
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(INT64_MAX + 1, UINT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5.0, 1e16, 1e-05, 1.5e300]),  # integral and exponent spellings
    st.text(chars, max_size=10),
)
samples = st.builds(
    Sample,
    measurements,
    st.dictionaries(names, names, max_size=4),
    st.dictionaries(names, field_values, min_size=1, max_size=4),
    st.integers(TIME_MIN, TIME_MAX),
)


@settings(max_examples=300, deadline=None)
@given(samples)
def test_round_trip(sample: Sample) -> None:
    line = encode(sample)
    assert typed(parse_line(line)) == typed(sample)
    assert typed(parse_line(line.encode())) == typed(sample)
    assert check_lines(line.encode()) == ([line.encode()], [])


@settings(deadline=None)
@given(measurements, st.dictionaries(names, st.just("") | names, max_size=4))
def test_round_trip_drops_empty_tags(measurement: str, tags: dict[str, str]) -> None:
    kept = {key: value for key, value in tags.items() if value}
    line = encode(Sample(measurement, tags, {"v": 1}, 0))
    assert typed(parse_line(line)) == typed(Sample(measurement, kept, {"v": 1}, 0))


def assert_check_lines_agrees(line: bytes) -> None:
    good, bad = check_lines(line)
    if line.lstrip(b" ")[:1] in (b"", b"#"):
        assert (good, bad) == ([], [])
        return
    expected: tuple[list[bytes], list[tuple[int, bytes, str]]]
    try:
        parse_line(line, default_time_ns=0)
    except LineProtocolError as exc:
        expected = ([], [(1, line, str(exc))])
    else:
        expected = ([line], [])
    assert (good, bad) == expected


# Pieces of lines: mostly valid, sometimes just over a boundary of the grammar.
NAME_PIECES = ["a", "b", "é", '"', "#", "\\,", "\\ ", "\\=", "\\x", "\\\\"]
ODD_NAME_PIECES = ["", ",", "=", " ", "\t", "\\"]
VALUES = [
    *["1", "-1.5", "1.", ".5", "-.5", "1e5", "1E+5", "1e-5", "1e99", "1e100", "1.5e300"],
    *["1" * 210, "0" * 300 + "1", "1i", "-0i", "9223372036854775807i", "1u"],
    *["18446744073709551615u", "t", "TRUE", "False", '"a"', '""', '"a\\\\"', '"a\\b"'],
    *['"a,b c=d"', '"é"', '"a\\"b"'],
]
ODD_VALUES = [
    *["", "-", ".", "1e", "1e309", "NaN", "inf", "-Inf", "1_0", "0x1", "i", "1.0i"],
    *["9223372036854775808i", "-1u", "18446744073709551616u", "tRUE", '"a\\"', '"a\tb"', '"'],
]
TIMES = ["", " 0", " -1", " 01", " 1732600000000000000", f" {TIME_MAX}", f" {TIME_MIN}"]
ODD_TIMES = [f" {TIME_MAX + 1}", "  1", " 1 ", " ", " x", " -", " 99999999999999999999"]


@st.composite
def nearly_valid_lines(draw: st.DrawFn) -> bytes:
    def piece(usual: list[str], odd: list[str]) -> str:
        return draw(st.sampled_from(odd if draw(st.integers(0, 7)) == 0 else usual))

    def name() -> str:
        return "".join(piece(NAME_PIECES, ODD_NAME_PIECES) for _ in range(draw(st.integers(1, 3))))

    line = name()
    for _ in range(draw(st.integers(0, 3))):
        line += "," + name() + piece(["="], ["", "=="]) + name()
    line += piece([" "], ["", "  ", ","])
    fields = [
        name() + piece(["="], ["", "=="]) + piece(VALUES, ODD_VALUES)
        for _ in range(draw(st.integers(1, 3)))
    ]
    return (line + ",".join(fields) + piece(TIMES, ODD_TIMES)).encode()


@st.composite
def mutated_lines(draw: st.DrawFn) -> bytes:
    line = bytearray(encode(draw(samples)).encode())
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(line)))
        byte = draw(st.sampled_from(b' ,="\\#=.-ie\t\xc3\xff0'))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        if action == "insert":
            line.insert(pos, byte)
        elif pos < len(line):
            line[pos : pos + 1] = b"" if action == "delete" else bytes([byte])
    return bytes(line)


@settings(max_examples=1000, deadline=None)
@given(nearly_valid_lines())
def test_check_lines_agrees_with_parse_line_on_nearly_valid_lines(line: bytes) -> None:
    assert_check_lines_agrees(line)


@settings(max_examples=500, deadline=None)
@given(mutated_lines())
def test_check_lines_agrees_with_parse_line_on_mutated_lines(line: bytes) -> None:
    assert_check_lines_agrees(line)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")))
def test_check_lines_agrees_with_parse_line_on_garbage(line: bytes) -> None:
    assert_check_lines_agrees(line)
