"""Cardinality limits against a real InfluxDB 1.x started with small ones: a burst of new
series is refused in bulk, in a bounded number of requests, while a steady stream beside it
is stored; nothing InfluxDB already stored is sent again needlessly."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from collector.config import BatchSettings, InfluxSettings, RetrySettings
from collector.deadletter import DeadLetters
from collector.influx import InfluxWriter
from collector.pipeline import Pipeline
from collector.receipts import Receipt
from collector.refusal import parse_refusal
from rackwatch import localservices
from rackwatch.localservices import Running, influx_create_database, influx_query
from tests.test_end_to_end import collector_config, eventually, running

pytestmark = pytest.mark.integration

MAX_VALUES = 200
MAX_SERIES = 1000
T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def limited_influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    service = localservices.start_influxdb(
        tmp_path_factory.mktemp("influxdb-limited"),
        max_series_per_database=MAX_SERIES,
        max_values_per_tag=MAX_VALUES,
    )
    yield service
    localservices.stop(service)


@pytest.fixture
def limited_db(limited_influxdb: Running, unique: str) -> str:
    name = f"card_{unique}"
    influx_create_database(limited_influxdb, name)
    return name


def write_requests(influx: Running) -> int:
    """InfluxDB's own count of write requests it served."""
    with urllib.request.urlopen(f"{influx.url()}/debug/vars") as reply:
        stats = json.loads(reply.read())
    return sum(v["values"]["writeReq"] for k, v in stats.items() if k.startswith("httpd"))


def make_writer(influx: Running, db: str, tmp_path: Path) -> InfluxWriter:
    return InfluxWriter(
        InfluxSettings(url=influx.url(), database=db),
        RetrySettings(initial_s=0.05, max_s=0.2),
        DeadLetters(tmp_path / "dead.jsonl"),
    )


def steady(round_: int) -> list[bytes]:
    return [
        f"pdu,device=d{i:02d} power_w={round_}.5 {T0 + round_ * 10**9}".encode() for i in range(20)
    ]


def dead_lines(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "dead.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def count(influx: Running, db: str, where: str) -> int:
    rows = influx_query(influx, db, f'SELECT count("power_w") FROM "pdu" WHERE {where}')
    return cast(int, rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]


async def run_burst(writer: InfluxWriter, burst: list[bytes], rounds: int) -> None:
    """The steady stream and the burst, interleaved as they would arrive, through the
    pipeline; returns once everything is written, set aside, and sorted out."""
    import asyncio

    pipeline = Pipeline(BatchSettings(max_lines=5000, max_delay_s=0.2), writer)
    running = asyncio.create_task(pipeline.run())
    chunk = len(burst) // rounds
    for r in range(rounds):
        pipeline.add(steady(r))
        pipeline.add(burst[r * chunk : (r + 1) * chunk])
        await asyncio.sleep(0)
    assert await pipeline.flush(120)
    await asyncio.wait_for(writer.settled(), 120)
    running.cancel()
    await writer.aclose()


async def test_new_tag_values_over_the_limit_are_refused_in_bulk(
    limited_influxdb: Running, limited_db: str, tmp_path: Path
) -> None:
    writer = make_writer(limited_influxdb, limited_db, tmp_path)
    await writer.write(steady(999))  # the steady devices exist before the burst
    before, sent_before = write_requests(limited_influxdb), writer.stats.requests
    # A misconfigured agent sends a new device tag value on every line.
    burst = [f"pdu,device=burst-{i:05d} power_w=1.5 {T0 + i}".encode() for i in range(20_000)]
    await run_burst(writer, burst, rounds=100)

    requests = write_requests(limited_influxdb) - before
    assert count(limited_influxdb, limited_db, "device !~ /^burst/") == 20 * 101  # all stored
    stored_burst = count(limited_influxdb, limited_db, "device =~ /^burst/")
    dead = dead_lines(tmp_path)
    assert all("burst-" in d["line"] for d in dead)
    assert stored_burst + len(dead) == len(burst)  # each burst line stored or set aside, once
    # InfluxDB checks the limit against what it held before each request, so the first
    # batch of the burst gets in whole; every later one is refused.
    assert len(dead) >= len(burst) // 2
    # New values are new series too: InfluxDB names the series limit when a batch's new
    # series would pass it, else the tag's value limit.
    assert all("limit exceeded" in d["reason"] for d in dead)
    assert writer.stats.lines_rejected_cardinality == len(dead)
    assert requests == writer.stats.requests - sent_before
    print(f"{requests} write requests for {len(burst) + 20 * 100} lines")
    assert requests < 300  # bisecting line by line took over 20,000


async def test_new_series_over_the_database_limit_are_refused_in_bulk(
    limited_influxdb: Running, limited_db: str, tmp_path: Path
) -> None:
    writer = make_writer(limited_influxdb, limited_db, tmp_path)
    await writer.write(steady(999))
    before = write_requests(limited_influxdb)
    # A new tag with a request id on every line: a new series each time.
    burst = [
        f"pdu,device=d{i % 20:02d},request=r{i:06d} power_w=1.5 {T0 + i}".encode()
        for i in range(20_000)
    ]
    await run_burst(writer, burst, rounds=100)

    requests = write_requests(limited_influxdb) - before
    assert count(limited_influxdb, limited_db, "request !~ /./") == 20 * 101
    stored_burst = count(limited_influxdb, limited_db, "request =~ /./")
    dead = dead_lines(tmp_path)
    assert all(b"request=" in d["line"].encode() for d in dead)
    assert stored_burst + len(dead) == len(burst)
    assert stored_burst <= MAX_SERIES
    assert all("max-series-per-database limit exceeded" in d["reason"] for d in dead)
    print(f"{requests} write requests for {len(burst) + 20 * 100} lines")
    assert requests < 300

    # The same series again: set aside without a request.
    writer = make_writer(limited_influxdb, limited_db, tmp_path)
    writer._refused.remember([burst[-1]])  # a fresh writer: teach it one, as sorting would
    before = write_requests(limited_influxdb)
    await writer.write([burst[-1]])
    await writer.aclose()
    assert write_requests(limited_influxdb) == before
    assert writer.stats.lines_set_aside_known == 1


async def test_refused_series_are_remembered(
    limited_influxdb: Running, limited_db: str, tmp_path: Path
) -> None:
    writer = make_writer(limited_influxdb, limited_db, tmp_path)
    await writer.write(steady(0))
    burst = [f"pdu,device=d00,request=r{i:06d} power_w=1.5 {T0 + i}".encode() for i in range(3000)]
    await writer.write(burst)  # over the series limit: all refused
    await writer.settled()
    refused = writer.stats.lines_rejected_cardinality
    assert refused >= len(burst) - MAX_SERIES
    before = write_requests(limited_influxdb)
    await writer.write([*burst, *steady(1)])  # the burst again, beside good lines
    await writer.settled()
    await writer.aclose()
    assert write_requests(limited_influxdb) - before == 1  # only the good lines (and unknowns)
    assert writer.stats.lines_set_aside_known == refused
    assert count(limited_influxdb, limited_db, "request !~ /./") == 40


@pytest.mark.parametrize("limit", ["series", "values"])
async def test_points_beside_refused_ones_are_stored(
    limit: str, limited_influxdb: Running, limited_db: str, tmp_path: Path
) -> None:
    """InfluxDB 1.6 answers a partial write for a cardinality limit as if it had stored the
    other points, but loses some of them: they are sent again, once."""
    writer = make_writer(limited_influxdb, limited_db, tmp_path)
    # InfluxDB refuses a series past the limit, a tag value at it.
    if limit == "series":  # two tags, so that no tag reaches the value limit
        filler = [f"pdu,a={i // 100},b={i % 100} power_w=1 {T0}" for i in range(MAX_SERIES - 21)]
    else:
        filler = [f"pdu,device=f{i:04d} power_w=1 {T0}" for i in range(MAX_VALUES - 20)]
    await writer.write([line.encode() for line in filler])
    await writer.write(steady(0))
    if limit == "series":
        new = [f"pdu,device=d00,request=r{i:04d} power_w=1 {T0 + i}".encode() for i in range(30)]
    else:
        new = [f"pdu,device=new{i:04d} power_w=1 {T0 + i}".encode() for i in range(30)]
    await writer.write(new[:10])  # refused: the writer starts learning what is stored
    await writer.write(steady(1))
    mixed = [line for r in range(2, 6) for line in [*new[r * 5 : r * 5 + 5], *steady(r)]]
    requests = writer.stats.requests
    await writer.write(mixed)
    await writer.aclose()
    assert count(limited_influxdb, limited_db, "device =~ /^d/ AND request !~ /./") == 20 * 6
    assert writer.stats.requests - requests == 2  # the partial write, then the others again
    assert writer.stats.sort_requests == 0
    dead = dead_lines(tmp_path)
    assert [d["line"].encode() for d in dead] == new[:10] + new[10:30]
    named = "max-series-per-database" if limit == "series" else "max-values-per-tag"
    assert all(f"{named} limit exceeded" in d["reason"] for d in dead)


class Heard:
    """Stands in for an MQTT message's receipt: records what the writer was doing when the
    message's lines became safe."""

    def __init__(self, writer: InfluxWriter) -> None:
        self.writer = writer
        self.sorting_when_done: int | None = None

    def done(self, lines: int) -> None:
        self.sorting_when_done = self.writer.sorting_lines


async def test_a_poisoned_batch_is_acknowledged_before_it_is_sorted_out(
    limited_influxdb: Running, limited_db: str, tmp_path: Path
) -> None:
    """Sorting out a partial write holds neither a write slot nor the acknowledgements."""
    import asyncio

    writer = make_writer(limited_influxdb, limited_db, tmp_path)
    await writer.write(steady(0))
    pipeline = Pipeline(BatchSettings(max_lines=2000, max_delay_s=0.1), writer)
    running = asyncio.create_task(pipeline.run())
    poisoned = [
        f"pdu,device=d{i % 20:02d},request=r{i:06d} power_w=1.5 {T0 + i}".encode()
        for i in range(1980)
    ]
    first, second = Heard(writer), Heard(writer)  # a batch each
    pipeline.add([*poisoned[:990], *steady(1), *poisoned[990:]], cast(Receipt, first))
    pipeline.add(steady(2), cast(Receipt, second))
    assert await pipeline.flush(60)
    await asyncio.wait_for(writer.settled(), 60)
    running.cancel()
    await writer.aclose()
    assert first.sorting_when_done  # acknowledged while its batch was still being sorted
    assert second.sorting_when_done is not None
    assert count(limited_influxdb, limited_db, "request !~ /./") == 60
    assert writer.stats.sort_requests > 0


async def test_through_a_collector_the_stream_flows_past_a_burst(
    mosquitto: Running, limited_influxdb: Running, limited_db: str, unique: str, tmp_path: Path
) -> None:
    """Agents' messages over MQTT: a burst of new series beside steady devices; every steady
    line is stored and every message acknowledged while the burst is set aside."""
    import aiomqtt

    from collector.service import Collector

    prefix = f"rackwatch/v1-{unique}"
    config = collector_config(mosquitto, limited_influxdb, limited_db, prefix, tmp_path)
    collector = Collector(config)
    messages, burst_lines = 60, 0
    now = time.time_ns()

    def steady_stored() -> bool:
        """every steady line in InfluxDB"""
        return count(limited_influxdb, limited_db, "request !~ /./") == 20 * messages

    async with running(collector):
        await eventually(lambda: collector.ingest.connection.connected, 10)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            for m in range(messages):
                lines = [f"pdu,device=d{i:02d} power_w={m} {now + m}" for i in range(20)]
                if m % 2:  # every other message carries a burst of new series (a request id)
                    lines += [
                        f"pdu,device=d{i % 20:02d},request=r{m}-{i} power_w=1 {now + m}"
                        for i in range(500)
                    ]
                    burst_lines += 500
                await client.publish(f"{prefix}/s/agent/metrics", "\n".join(lines), qos=1)
        await eventually(steady_stored, 60)
        await eventually(lambda: collector.ingest.acknowledger.acknowledged == messages, 30)
        await asyncio.wait_for(collector.writer.settled(), 60)

    stats = collector.writer.stats
    assert stats.lines_rejected_cardinality >= burst_lines - MAX_SERIES
    assert stats.requests < messages  # fewer write requests than messages, let alone lines


async def test_what_is_not_sorted_out_at_a_stop_is_set_aside_with_a_reason(
    limited_influxdb: Running, limited_db: str, tmp_path: Path
) -> None:
    writer = make_writer(limited_influxdb, limited_db, tmp_path)
    await writer.write(steady(0))
    poisoned = [f"pdu,device=d00,request=r{i:04d} power_w=1 {T0 + i}".encode() for i in range(1500)]
    await writer.write([*poisoned, *steady(1)])  # the series limit: left to the sorter
    assert writer.sorting_lines == 1520
    await writer.aclose()
    assert writer.sorting_lines == 0
    dead = dead_lines(tmp_path)
    assert len(dead) == writer.stats.lines_unsorted == 1520
    assert (
        "collector stopping: 1520 lines not sorted out, of which InfluxDB refused 1500"
        in (dead[0]["reason"])
    )


def test_influxdb_refusals_are_read() -> None:
    values = parse_refusal(
        'partial write: max-values-per-tag limit exceeded (10/5): measurement="m,1" '
        'tag="t t" value="w1" dropped=2'
    )
    assert (values.kind, values.dropped, values.measurement, values.name) == (
        "values_limit",
        2,
        b"m\\,1",
        b"t\\ t",
    )
    lines = [b"m\\,1,t\\ t=w1,u=b f=1 1", b"m\\,1,u=b f=1 1", b"m,t\\ t=1 f=1 1"]
    assert values.candidates(lines) == lines[:1]
    conflict = parse_refusal(
        'partial write: field type conflict: input field "f" on measurement "m" is type '
        "integer, already exists as type float dropped=1"
    )
    assert conflict.candidates([b"m f=1i 1", b"m f=1 1", b"m,a=b f=2i"]) == [
        b"m f=1i 1",
        b"m,a=b f=2i",
    ]
    series = parse_refusal("partial write: max-series-per-database limit exceeded: (50) dropped=60")
    assert (series.kind, series.dropped, series.candidates([b"m f=1"])) == (
        "series_limit",
        60,
        None,
    )
    unparsable = parse_refusal(
        "partial write: unable to parse 'garbage line': invalid field format\n"
        "unable to parse 'more': missing fields dropped=0"
    )
    assert unparsable.dropped == 2
    assert unparsable.candidates([b"garbage line", b"m f=1 1", b"more"]) == [
        b"garbage line",
        b"more",
    ]
