"""The collector writing to several InfluxDB nodes (collector/shards.py): two real InfluxDB
1.x servers, and VictoriaMetrics as a shard. Every line lands on exactly one shard; a shard
that is down spools its own lines while the other keeps writing, and nothing is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from collector.config import CollectorConfig, ShardingSettings
from collector.retention import Keeper, apply
from collector.shards import Router
from rackwatch import localservices
from rackwatch.loader import load_collector
from rackwatch.localservices import Running, influx_query
from telemetry.config import ConfigError
from tests.test_end_to_end import eventually, rackwatch_process
from tests.test_influx_writer import vm_export
from tests.test_retention import policies

ROOT = Path(__file__).resolve().parents[1]

MESSAGES, LINES = 60, 100  # each message: LINES series, half of site a, half of site b
T0 = 1700000000000000000


def message(m: int) -> bytes:
    return "".join(
        f"load,site={'ab'[i % 2]},m={m},i={i} v={i}i {T0 + m * LINES + i}\n" for i in range(LINES)
    ).encode()


def series_of(m: int) -> list[str]:
    return [f"load,i={i},m={m},site={'ab'[i % 2]}" for i in range(LINES)]


def stored_series(influx: Running, db: str) -> dict[str, int]:
    """Series key (InfluxDB's, tags sorted) -> points stored."""
    rows = influx_query(influx, db, 'SELECT count("v") FROM "load" GROUP BY *')
    out = {}
    for row in rows:
        tags: dict[str, str] = row["tags"]  # type: ignore[assignment]
        key = ",".join(["load", *(f"{k}={v}" for k, v in sorted(tags.items()))])
        out[key] = int(row["values"][0][1])  # type: ignore[index]
    return out


def collector_config(
    tmp_path: Path,
    mosquitto: Running,
    unique: str,
    name: str,
    sharding: dict[str, Any],
    **extra: object,
) -> Path:
    config = tmp_path / f"{name}.yaml"
    settings = {
        "name": f"{name}-{unique}",
        "mqtt": {
            "host": mosquitto.host,
            "port": mosquitto.port,
            "topic": f"{unique}/#",
            "group": unique,
        },
        "influxdb": {"database": "shards", "timeout_s": 2},
        "sharding": sharding,
        "batch": {"max_lines": 2000, "max_delay_s": 0.3},
        "retry": {"initial_s": 0.2, "max_s": 1.0},
        "retention": {"enabled": False},
        "dead_letter_path": str(tmp_path / "dead.jsonl"),
        "health_interval_s": 3600,
        **extra,
    }
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    return config


async def publish(mosquitto: Running, unique: str, messages: range) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        for m in messages:
            await client.publish(f"{unique}/s/a/metrics", message(m), qos=1)


async def stop_process(process: asyncio.subprocess.Process | None) -> None:
    if process is not None and process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


# --- routing and config ---------------------------------------------------------------------


def sharding(route_by: str, *shards: dict[str, Any]) -> ShardingSettings:
    return ShardingSettings.model_validate({"route_by": route_by, "shards": list(shards)})


def test_series_hash_keeps_a_series_on_one_shard_whatever_its_tag_order() -> None:
    router = Router(sharding("series", {"name": "a", "url": "x"}, {"name": "b", "url": "y"}))
    lines = [f"load,m={m},i={i} v=1i {T0 + i}".encode() for m in range(50) for i in range(40)]
    shards = [router.route(line) for line in lines]
    # The same series, tags in another order, later timestamp: the same shard.
    again = [f"load,i={i},m={m} v=2i {T0 + 99}".encode() for m in range(50) for i in range(40)]
    assert [router.route(line) for line in again] == shards
    assert 0.4 < shards.count(0) / len(shards) < 0.6  # spread about evenly


def test_adding_a_shard_moves_only_the_series_the_new_shard_takes() -> None:
    two = Router(sharding("series", {"name": "a", "url": "x"}, {"name": "b", "url": "y"}))
    three = Router(
        sharding(
            "series",
            {"name": "a", "url": "x"},
            {"name": "b", "url": "y"},
            {"name": "c", "url": "z"},
        )
    )
    lines = [f"gpu,host=h{h},index={i} util_pct=1 1".encode() for h in range(300) for i in range(8)]
    moved = [line for line in lines if two.route(line) != three.route(line)]
    assert all(three.route(line) == 2 for line in moved)
    assert 0.25 < len(moved) / len(lines) < 0.42  # about a third


def test_tag_routing_by_listed_values_and_a_default_shard() -> None:
    router = Router(
        sharding(
            "room",
            {"name": "hall1", "url": "x", "match": ["hall 1", "cage,2"]},
            {"name": "rest", "url": "y"},
        )
    )
    assert router.route(b"pdu,site=ams,room=hall\\ 1,rack=r1 power_w=1 1") == 0
    assert router.route(b"pdu,room=cage\\,2 power_w=1 1") == 0  # escaped in the line
    assert router.route(b"pdu,site=ams,room=hall\\ 2 power_w=1 1") == 1
    assert router.route(b"rackwatch_collector,collector=c lines_written_total=1i 1") == 1
    assert router.route(b"pdu,site=ams,myroom=hall\\ 1 power_w=1 1") == 1  # another tag


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.yaml"
    path.write_text(text)
    return path


def test_config_errors_name_file_line_and_key(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """\
influxdb:
  database: rackwatch
sharding:
  route_by: site
  shards:
    - name: north
      url: http://influx-north:8086
      match: [ams1, ams2]
    - name: north
      url: http://influx-south:8086
      match: [fra1, ams2]
    - name: v2
      url: http://victoria:8428
      api: v2
      match: [lon1]
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_collector(path)
    problems = str(caught.value).splitlines()
    assert f"{path}:9: sharding.shards[1].name: duplicate shard 'north'" in problems
    assert f"{path}:11: sharding.shards[1].match[1]: site 'ams2' is already shard 'north''s" in (
        problems
    )
    assert any(
        p.startswith(f"{path}:12: sharding.shards[2]: api v2 needs bucket") for p in problems
    )
    assert any(
        p.startswith(f"{path}:5: sharding.shards: route_by site needs a default shard")
        for p in problems
    )


def test_series_routing_takes_no_match_lists_and_the_plain_config_still_loads(
    tmp_path: Path,
) -> None:
    path = write_config(
        tmp_path,
        """\
sharding:
  shards:
    - {name: a, url: "http://a:8086"}
    - {name: b, url: "http://b:8086", match: [x]}
""",
    )
    with pytest.raises(ConfigError, match=r":4: sharding.shards\[1\].match: route_by series"):
        load_collector(path)
    plain = load_collector(write_config(tmp_path, "influxdb: {url: 'http://one:8086'}\n"))
    assert plain.sharding is None
    assert plain.shard_settings() == [("influxdb", plain.influxdb)]


def test_a_shard_takes_the_shared_settings_and_replaces_its_own(tmp_path: Path) -> None:
    config = load_collector(
        write_config(
            tmp_path,
            """\
influxdb: {database: rackwatch, username: writer, password: s3cret, timeout_s: 3}
sharding:
  route_by: site
  shards:
    - {name: a, url: "http://a:8086", match: [s1]}
    - {name: b, url: "http://b:8086", database: other, password: other}
""",
        )
    )
    (_, a), (_, b) = config.shard_settings()
    assert (a.url, a.database, a.username, a.password, a.timeout_s) == (
        "http://a:8086",
        "rackwatch",
        "writer",
        "s3cret",
        3,
    )
    assert (b.database, b.username, b.password) == ("other", "writer", "other")


# --- against real servers -------------------------------------------------------------------


@pytest.mark.integration
async def test_every_line_lands_on_exactly_one_of_two_influxdbs(
    mosquitto: Running, influxdb: Running, unique: str, tmp_path: Path
) -> None:
    second = localservices.start_influxdb(tmp_path / "influxdb-2")
    servers = {"one": influxdb, "two": second}
    db = f"shards_{unique}"
    for server in servers.values():
        localservices.influx_create_database(server, db)
    config = collector_config(
        tmp_path,
        mosquitto,
        unique,
        "hash",
        {
            "route_by": "series",
            "shards": [
                {"name": name, "url": server.url(), "database": db}
                for name, server in servers.items()
            ],
        },
        health_interval_s=0.5,
    )
    log = tmp_path / "collector.log"
    collector = await rackwatch_process("collector", config, log)
    try:
        await eventually(lambda: b"subscribed to" in log.read_bytes(), 30)
        await publish(mosquitto, unique, range(MESSAGES))
        expected = {key for m in range(MESSAGES) for key in series_of(m)}

        def stored() -> dict[str, dict[str, int]]:
            return {name: stored_series(server, db) for name, server in servers.items()}

        await eventually(lambda: sum(map(len, stored().values())) >= len(expected), 60)
        found = stored()

        def health_written() -> dict[str, int]:
            """Each shard's own count of lines written, from its health (either database)."""
            q = (
                'SELECT last("lines_written_total") FROM "rackwatch_collector_shard" '
                'GROUP BY "shard"'
            )
            last: dict[str, int] = {}
            for server in servers.values():
                for row in influx_query(server, db, q):
                    shard = row["tags"]["shard"]  # type: ignore[index]
                    count = int(row["values"][0][1])  # type: ignore[index]
                    last[shard] = max(last.get(shard, 0), count)
            return last

        await eventually(
            lambda: all(health_written().get(n, 0) >= len(found[n]) for n in servers), 30
        )
    finally:
        await stop_process(collector)
        localservices.stop(second)
    one, two = set(found["one"]), set(found["two"])
    assert not one & two  # no series on both
    assert one | two == expected  # none missing
    assert all(count == 1 for shard in found.values() for count in shard.values())
    assert 0.4 < len(one) / len(expected) < 0.6
    assert "2 shards by series" in log.read_text()


@pytest.mark.integration
async def test_one_shard_down_spools_its_lines_while_the_other_writes_and_nothing_is_lost(
    mosquitto: Running, influxdb: Running, unique: str, tmp_path: Path
) -> None:
    """Shard `south` (site b and all else) is down for the whole load: `north` (site a) gets
    every line of its own meanwhile, `south`'s go to its spool, and every message (each has
    lines for both) is acknowledged. Proof: the collector is then killed, and one with another
    client id, which the broker owes nothing, writes the spool once south is back."""
    south = localservices.start_influxdb(tmp_path / "influxdb-south")
    db = f"shards_{unique}"
    for server in (influxdb, south):
        localservices.influx_create_database(server, db)
    sharding = {
        "route_by": "site",
        "shards": [
            {"name": "north", "url": influxdb.url(), "database": db, "match": ["a"]},
            {"name": "south", "url": south.url(), "database": db},
        ],
    }
    spool = {"directory": str(tmp_path / "spool"), "after_s": 1.0}
    log = tmp_path / "collector.log"
    expected = {key for m in range(MESSAGES) for key in series_of(m)}
    of_a = {key for key in expected if key.endswith("site=a")}
    first = second = None
    try:
        first = await rackwatch_process(
            "collector",
            collector_config(tmp_path, mosquitto, unique, "first", sharding, spool=spool),
            log,
        )
        await eventually(lambda: b"subscribed to" in log.read_bytes(), 30)
        localservices.stop(south)
        await publish(mosquitto, unique, range(MESSAGES))
        # north writes all of site a while south is down
        await eventually(lambda: set(stored_series(influxdb, db)) == of_a, 60)
        # Lines as spooled: without their newlines (a record joins its batch's lines).
        all_lines = b"".join(map(message, range(MESSAGES))).splitlines()
        south_payload = sum(len(line) for line in all_lines if b"site=b" in line)

        def spooled_bytes(shard: str) -> int:
            return sum(p.stat().st_size for p in (tmp_path / "spool" / shard).glob("*.seg"))

        await eventually(lambda: spooled_bytes("south") >= south_payload, 30)
        assert spooled_bytes("north") == 0  # the shard that was up spooled nothing
        first.kill()
        await first.wait()
        south = await asyncio.to_thread(localservices.restart, south, 0.5)
        second = await rackwatch_process(
            "collector",
            collector_config(tmp_path, mosquitto, unique, "second", sharding, spool=spool),
            log,
        )
        await eventually(lambda: len(stored_series(south, db)) >= len(expected - of_a), 60)
        on_south = stored_series(south, db)
    finally:
        await stop_process(first)
        await stop_process(second)
        localservices.stop(south)
    on_north = stored_series(influxdb, db)
    assert set(on_north) == of_a
    assert set(on_south) == expected - of_a
    assert all(count == 1 for shard in (on_north, on_south) for count in shard.values())
    assert "write failed" in log.read_text()


@pytest.mark.integration
async def test_a_victoria_metrics_shard_takes_line_protocol_on_the_influx_path(
    mosquitto: Running,
    influxdb: Running,
    victoria_metrics: Running,
    unique: str,
    tmp_path: Path,
) -> None:
    """A shard whose url is VictoriaMetrics' InfluxDB path (single-node `/influx`, or a
    cluster's vminsert `/insert/0/influx`), beside an InfluxDB shard."""
    db = f"shards_{unique}"
    localservices.influx_create_database(influxdb, db)
    measurement = f"vm_{unique}"
    config = collector_config(
        tmp_path,
        mosquitto,
        unique,
        "vm",
        {
            "route_by": "site",
            "shards": [
                {"name": "vm", "url": f"{victoria_metrics.url()}/influx", "match": ["a"]},
                {"name": "influx", "url": influxdb.url(), "database": db},
            ],
        },
    )
    log = tmp_path / "collector.log"
    collector = await rackwatch_process("collector", config, log)
    try:
        await eventually(lambda: b"subscribed to" in log.read_bytes(), 30)
        now = time.time_ns()  # VictoriaMetrics keeps a month
        payload = "".join(
            f"{measurement},site={'ab'[i % 2]},i={i} v={i} {now + i}\n" for i in range(20)
        ).encode()
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.publish(f"{unique}/s/a/metrics", payload, qos=1)

        def on_influx() -> int:
            rows = influx_query(influxdb, db, f'SELECT count("v") FROM "{measurement}"')
            return int(rows[0]["values"][0][1]) if rows else 0  # type: ignore[index]

        await eventually(lambda: on_influx() == 10, 30)
        exported = await asyncio.to_thread(vm_export, victoria_metrics, f"{measurement}_v")
    finally:
        await stop_process(collector)
    assert sorted(int(e["metric"]["i"]) for e in exported) == list(range(0, 20, 2))
    assert {e["metric"]["site"] for e in exported} == {"a"}
    assert all(len(e["values"]) == 1 for e in exported)


@pytest.mark.integration
async def test_history_is_set_up_on_each_shard_but_one_without_influxql(
    influxdb: Running, victoria_metrics: Running, database: str
) -> None:
    """Two shards (two databases of one server here: the set-up is per shard's database)
    get the retention policies; the VictoriaMetrics shard, `retention: false`, is left alone."""
    other = f"{database}_b"
    localservices.influx_create_database(influxdb, other)
    config = CollectorConfig.model_validate(
        {
            "influxdb": {"url": influxdb.url()},
            "sharding": {
                "route_by": "site",
                "shards": [
                    {"name": "a", "url": influxdb.url(), "database": database, "match": ["a"]},
                    {"name": "vm", "url": victoria_metrics.url(), "retention": False},
                    {"name": "b", "url": influxdb.url(), "database": other, "match": ["b"]},
                ],
            },
        }
    )
    keeper = Keeper(config)
    await keeper.run()
    assert keeper.ready
    assert keeper.health_fields() == {"retention_errors_total": 0}
    for db in (database, other):
        assert "rackwatch_5m" in policies(influxdb, db)
    again = await apply(config)
    assert again == [
        "shard a: retention policies and continuous queries: in place, nothing changed",
        "shard b: retention policies and continuous queries: in place, nothing changed",
    ]


def test_the_sharded_datasource_example_has_one_datasource_per_shard() -> None:
    example = ROOT / "dashboards" / "provisioning" / "datasources" / "rackwatch-shards.yaml.example"
    datasources = yaml.safe_load(example.read_text())["datasources"]
    assert len({d["uid"] for d in datasources}) == len(datasources) >= 2
    assert all(d["type"] == "influxdb" and d["jsonData"]["dbName"] for d in datasources)
    assert sum(bool(d.get("isDefault")) for d in datasources) == 1
    config = load_collector(ROOT / "configs" / "collector-shards.example.yaml", skip_secrets=True)
    assert config.sharding is not None
    urls = {d["url"] for d in datasources}
    assert {s.url for s in config.sharding.shards if s.retention} <= urls


def test_each_shard_has_its_health_and_metrics_labelled_by_shard(tmp_path: Path) -> None:
    from collector.service import Collector
    from telemetry.metrics import to_metrics

    config = CollectorConfig.model_validate(
        {
            "dead_letter_path": str(tmp_path / "dead.jsonl"),
            "spool": {"directory": str(tmp_path / "spool")},
            "sharding": {
                "shards": [
                    {"name": "n1", "url": "http://127.0.0.1:9"},
                    {"name": "n2", "url": "http://127.0.0.1:9"},
                ]
            },
        }
    )
    collector = Collector(config)
    collector.shards.shards[1].writer.stats.retries = 3
    samples = collector.health_samples()
    assert [s.tags.get("shard") for s in samples] == [None, "n1", "n2"]
    assert samples[0].fields["write_retries_total"] == 3  # the sum over the shards
    spools = [shard.pipeline.spool for shard in collector.shards.shards]
    assert [spool.directory if spool else None for spool in spools] == [
        tmp_path / "spool" / "n1",
        tmp_path / "spool" / "n2",
    ]
    retries = {
        sample.labels["shard"]: sample.value
        for family in to_metrics(samples)
        for sample in family.samples
        if sample.name == "rackwatch_collector_shard_write_retries_total"
    }
    assert retries == {"n1": 0, "n2": 3}


async def test_a_reload_applies_node_settings_to_each_shard_and_holds_a_new_layout(
    tmp_path: Path,
) -> None:
    from collector.service import Collector

    def config(**changes: Any) -> CollectorConfig:
        shards = [
            {"name": "n1", "url": "http://127.0.0.1:9", "match": ["a"]},
            {"name": "n2", "url": "http://127.0.0.1:9"},
        ]
        for index, update in changes.items():
            shards[int(index[1:])] |= update
        return CollectorConfig.model_validate(
            {
                "dead_letter_path": str(tmp_path / "dead.jsonl"),
                "influxdb": {"database": "one"},
                "sharding": {"route_by": "site", "shards": shards},
            }
        )

    collector = Collector(config())
    held = await collector.reload(config(s1={"url": "http://127.0.0.2:9", "database": "two"}))
    assert held == []
    settings = [shard.writer.settings for shard in collector.shards.shards]
    assert [(s.url, s.database) for s in settings] == [
        ("http://127.0.0.1:9", "one"),
        ("http://127.0.0.2:9", "two"),
    ]
    held = await collector.reload(config(s0={"match": ["a", "b"]}, s1={"url": "http://x:9"}))
    assert held == ["sharding"]  # a new layout waits for a restart, node settings with it
    assert collector.shards.shards[1].writer.settings.url == "http://127.0.0.2:9"
    await collector.shards.aclose()


def test_the_default_rules_page_when_a_shard_fails_writes_for_two_minutes() -> None:
    from collector.alerting.evaluator import Evaluator, Transition
    from collector.alerting.rules import RuleFile
    from telemetry import config as config_file
    from telemetry.lineproto import encode
    from telemetry.sample import Sample

    seen: list[Transition] = []
    now = 1_800_000_000.0
    rules = config_file.load(ROOT / "configs" / "alert-rules.yaml", RuleFile)
    evaluator = Evaluator(rules, seen.append, clock=lambda: now)
    for at, failing in ((0, False), (10, True), (70, True), (140, True)):
        now = 1_800_000_000.0 + at
        for shard in ("north", "south"):
            tags = {"collector": "c1", "shard": shard}
            fields = {"write_failing": failing and shard == "south"}
            sample = Sample("rackwatch_collector_shard", tags, fields, int(now * 1e9))
            evaluator.observe([encode(sample).encode()])
        evaluator.tick()
    pages = [t for t in seen if t.alert.labels["alertname"] == "InfluxDBShardWritesFailing"]
    assert [(t.state, t.summary) for t in pages if t.state == "firing"] == [
        ("firing", "collector c1 cannot write to InfluxDB shard south")
    ]


@pytest.mark.integration
async def test_spools_an_earlier_layout_left_are_written_to_the_shards_of_the_new_one(
    influxdb: Running, database: str, tmp_path: Path
) -> None:
    """One node's spool, then sharding: its records go to the shards that take their lines.
    Then back to one node: what the removed shards spooled goes to it."""
    from collector.deadletter import DeadLetters
    from collector.shards import Shards
    from telemetry.spool import Spool

    spool_dir = tmp_path / "spool"
    first = Spool(spool_dir, 1 << 20)
    batches = [[f"load,m={m},i={i} v={i}i {T0 + i}".encode() for i in range(50)] for m in (1, 2)]
    for batch in batches:
        first.append(b"\n".join(batch))
    first.close()
    dbs = [database, f"{database}_b", f"{database}_one"]
    for db in dbs[1:]:
        localservices.influx_create_database(influxdb, db)

    def config(sharded: bool) -> CollectorConfig:
        nodes = [
            {"name": f"n{i}", "url": influxdb.url(), "database": db} for i, db in enumerate(dbs[:2])
        ]
        return CollectorConfig.model_validate(
            {
                "influxdb": {"url": influxdb.url(), "database": dbs[2]},
                "spool": {"directory": str(spool_dir)},
                "dead_letter_path": str(tmp_path / "dead.jsonl"),
                **({"sharding": {"shards": nodes}} if sharded else {}),
            }
        )

    def stored(db: str) -> set[str]:
        rows = influx_query(influxdb, db, 'SELECT count("v") FROM "load" GROUP BY *')
        return {f"m={r['tags']['m']},i={r['tags']['i']}" for r in rows}  # type: ignore[index]

    async def run_until(shards: Shards, done: Any) -> None:
        task = asyncio.create_task(shards.run())
        try:
            await eventually(done, 30)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await shards.aclose()

    expected = {f"m={m},i={i}" for m in (1, 2) for i in range(50)}
    sharded = Shards(config(True), DeadLetters(tmp_path / "dead.jsonl"))
    await run_until(sharded, lambda: len(stored(dbs[0]) | stored(dbs[1])) == 100)
    assert not stored(dbs[0]) & stored(dbs[1])
    assert stored(dbs[0]) | stored(dbs[1]) == expected
    assert sharded.drained_lines == 100
    assert not Spool(spool_dir, 1 << 20).stats.records  # all written, none read twice

    # A shard since removed left records: one node takes them.
    removed = Spool(spool_dir / "n7", 1 << 20)
    removed.append(b"\n".join(f"load,m=3,i={i} v={i}i {T0 + i}".encode() for i in range(10)))
    removed.close()
    single = Shards(config(False), DeadLetters(tmp_path / "dead.jsonl"))
    await run_until(single, lambda: len(stored(dbs[2])) == 10)
    assert stored(dbs[2]) == {f"m=3,i={i}" for i in range(10)}
