"""Line timestamps in s, ms or us are rewritten in ns; ones no precision puts near the clock
are refused, per line, into a capped and rotated dead-letter file."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.config import (
    BatchSettings,
    CollectorConfig,
    InfluxSettings,
    MqttSettings,
    RetrySettings,
)
from collector.deadletter import DeadLetters
from collector.influx import InfluxWriter
from collector.ingest import Ingest
from collector.pipeline import Pipeline
from collector.service import Collector
from rackwatch.localservices import Running, influx_query
from telemetry.lineproto import Timestamps, check_lines, parse_line

DAY_NS = 86400 * 10**9


def bounds() -> Timestamps:
    return Timestamps(max_age_s=30 * 86400, max_future_s=600)


@pytest.mark.parametrize(("unit", "factor"), [("s", 10**9), ("ms", 10**6), ("us", 10**3)])
def test_coarse_timestamps_are_rewritten_in_ns(unit: str, factor: int) -> None:
    stamp = time.time_ns() // factor
    times = bounds()
    good, bad = check_lines(b'pdu,device=p1 power_w=5.5,state="on" %d' % stamp, times)
    assert bad == []
    assert good == [b'pdu,device=p1 power_w=5.5,state="on" %d' % (stamp * factor)]
    assert parse_line(good[0]).time_ns == stamp * factor
    assert (times.rescaled, times.refused) == (1, 0)


def test_lines_in_ns_or_without_a_time_pass_untouched() -> None:
    now = time.time_ns()
    payload = b"a f=1 %d\nb f=2\nc f=3 %d" % (now, now - 29 * DAY_NS)
    times = bounds()
    assert check_lines(payload, times) == (payload.split(b"\n"), [])
    assert times.rescaled == times.refused == 0


def test_lines_the_fast_path_refuses_are_checked_too() -> None:
    stamp = time.time_ns() // 10**9
    # A 19-digit integer field is beyond the fast regex: parse_line decides.
    line = b"pdu energy=1234567890123456789i %d" % stamp
    good, bad = check_lines(line, bounds())
    assert (good, bad) == ([b"pdu energy=1234567890123456789i %d" % (stamp * 10**9)], [])
    future = b"pdu energy=1234567890123456789i %d" % (time.time_ns() + DAY_NS)
    good, bad = check_lines(future, bounds())
    assert good == []
    assert "out of range" in bad[0][2]


@pytest.mark.parametrize(
    ("offset_ns", "why"),
    [
        (DAY_NS, "a day ahead"),
        (-40 * DAY_NS, "older than max_age"),
        (None, "1970 in every precision"),
    ],
)
def test_times_far_from_the_clock_are_refused_with_a_reason(
    offset_ns: int | None, why: str
) -> None:
    stamp = 5 if offset_ns is None else time.time_ns() + offset_ns
    payload = b"good f=1\nbad f=1 %d\nnegative f=1 -1700000000" % stamp
    times = bounds()
    good, bad = check_lines(payload, times)
    assert good == [b"good f=1"], why
    assert [(number, line) for number, line, _ in bad] == [
        (2, b"bad f=1 %d" % stamp),
        (3, b"negative f=1 -1700000000"),
    ]
    assert "out of range in ns, us, ms and s" in bad[0][2]
    assert "from 30 d before to 600 s after the collector's clock" in bad[0][2]
    assert times.refused == 2


def test_without_bounds_check_lines_takes_any_time() -> None:
    assert check_lines(b"m f=1 5") == ([b"m f=1 5"], [])


async def test_ingest_stores_coarse_times_at_their_time_and_sets_aside_wrong_ones(
    influxdb: Running, database: str, tmp_path: Path
) -> None:
    dead = DeadLetters(tmp_path / "dead.jsonl")
    writer = InfluxWriter(
        InfluxSettings(url=influxdb.url(), database=database), RetrySettings(), dead
    )
    pipeline = Pipeline(BatchSettings(max_delay_s=0.05), writer)
    ingest = Ingest(MqttSettings(), "test-timestamps", pipeline, dead, bounds())
    running = asyncio.create_task(pipeline.run())
    now_s = time.time_ns() // 10**9
    ingest.handle(
        "rackwatch/v1/site/gateway/metrics",
        b"env,device=s temp_c=21.5 %d\n"  # seconds
        b"env,device=ms temp_c=21.5 %d\n"  # milliseconds
        b"env,device=future temp_c=21.5 %d\n"  # a clock a day ahead
        % (now_s, now_s * 1000, (now_s + 86400) * 10**9),
    )
    assert await pipeline.flush(30)
    running.cancel()
    await writer.aclose()

    rows = influx_query(influxdb, database, 'SELECT temp_c FROM env GROUP BY "device"')
    times = {row["tags"]["device"]: row["values"][0][0] for row in rows}  # type: ignore[index]
    assert times == {"s": now_s * 10**9, "ms": now_s * 10**9}
    [record] = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert record["line"].startswith("env,device=future ")
    assert record["reason"].startswith("line 3: timestamp ")
    assert record["origin"] == "rackwatch/v1/site/gateway/metrics"
    assert ingest.stats.lines_invalid == 1


def test_dead_letter_file_is_capped_and_rotated(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    dead = DeadLetters(path, max_bytes=4096, keep=2)
    for batch in range(20):
        dead.add([b"m,n=%d f=%di 1" % (batch, i) for i in range(10)], "bad", "topic")
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["dead.jsonl", "dead.jsonl.1", "dead.jsonl.2"]
    assert all(0 < f.stat().st_size <= 4096 for f in files)
    oldest_first = reversed(files)  # .2, .1, then the file being written
    records = [json.loads(x) for f in oldest_first for x in f.read_text().splitlines()]
    lines = [r["line"] for r in records]
    assert lines[-1] == "m,n=19 f=9i 1"  # the newest kept, the oldest rotated out
    order = [tuple(int(n) for n in re.findall(r"\d+", line)[:2]) for line in lines]
    assert order == sorted(order)  # in the order they came, across the files
    assert len(records) < 200
    assert dead.rotations >= 3
    assert (dead.count, dead.dropped) == (200, 0)


def test_one_large_refusal_is_split_across_files(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    dead = DeadLetters(path, max_bytes=4096, keep=1)
    dead.add([b"m f=%di 1" % i for i in range(500)], "refused", "influx")
    assert path.stat().st_size <= 4096
    assert (tmp_path / "dead.jsonl.1").stat().st_size <= 4096
    assert json.loads(path.read_text().splitlines()[-1])["line"] == "m f=499i 1"


def test_lines_the_dead_letter_file_cannot_take_are_counted(tmp_path: Path) -> None:
    (tmp_path / "not-a-directory").write_text("")
    dead = DeadLetters(tmp_path / "not-a-directory" / "dead.jsonl")
    dead.add([b"a f=1", b"b f=2"], "bad", "topic")
    assert (dead.count, dead.dropped) == (2, 2)


def test_collector_health_names_the_new_counters(tmp_path: Path) -> None:
    config = CollectorConfig(dead_letter_path=tmp_path / "dead.jsonl")
    fields = Collector(config).health_sample().fields
    for name in (
        "lines_rejected_cardinality_total",
        "lines_rejected_type_conflict_total",
        "lines_set_aside_known_total",
        "lines_unsorted_total",
        "write_requests_total",
        "sorting_lines",
        "lines_time_rescaled_total",
        "lines_time_refused_total",
        "dead_letters_dropped_total",
        "dead_letter_rotations_total",
    ):
        assert fields[name] == 0, name


NOW_NS = time.time_ns()


@given(
    head=st.sampled_from(
        [
            b"m f=1",
            b"pdu,device=a\\ b power_w=5.5",
            b'e,x=1 s="a 1700000000 b"',
            b"w f=12345678901234567890u",  # beyond the fast regex
        ]
    ),
    offset_s=st.integers(min_value=-29 * 86400, max_value=500),
    unit=st.sampled_from([1, 10**3, 10**6, 10**9]),
)
@settings(max_examples=200, deadline=None)
def test_any_precision_in_the_window_lands_at_its_time(
    head: bytes, offset_s: int, unit: int
) -> None:
    stamp = (NOW_NS + offset_s * 10**9) // unit
    line = b"%s %d" % (head, stamp)
    good, bad = check_lines(line, bounds())
    assert bad == []
    assert good == [b"%s %d" % (head, stamp * unit)]
    assert parse_line(good[0]) == dataclasses.replace(parse_line(line), time_ns=stamp * unit)
