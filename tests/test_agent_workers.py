"""Several agent processes for one config (agent/workers.py): which worker polls which device.

Real workers (`rackwatch agent --worker I`, two processes) poll snmpsim serving a shared
recording and publish to a real Mosquitto; their health samples, tagged with the worker, say
which devices each polls. Every device is polled by exactly one worker, and a restart of
both keeps every device where it was.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from agent.config import AgentConfig
from agent.service import Agent
from agent.traps import Notification
from agent.workers import (
    Worker,
    WorkerSpecError,
    device_counts,
    for_worker,
    owner,
    parse_worker,
)
from rackwatch.localservices import Running, free_port
from telemetry.lineproto import parse_lines
from telemetry.sample import Sample
from tests.test_end_to_end import eventually

DEFAULT_RULES = Path(__file__).parent.parent / "configs" / "alert-rules.yaml"
RECORDING = "cyberpower_pdu81005"  # small: snmpsim on a busy machine keeps up
DEVICES = [f"pdu-{room}-{i:02d}" for room in ("a", "b") for i in range(4)]
NAMES = [f"rack-pdu-{i:05d}" for i in range(2000)]


def test_a_device_stays_with_its_worker_when_others_come_and_go() -> None:
    before = {name: owner(name, 4) for name in NAMES}
    fewer = NAMES[:700] + NAMES[701:]  # one removed
    more = [*NAMES, "rack-pdu-new"]  # one added
    assert {name: owner(name, 4) for name in fewer} == {n: before[n] for n in fewer}
    assert {name: owner(name, 4) for name in more if name in before} == before


def test_one_more_worker_moves_only_its_share_and_only_to_itself() -> None:
    moved = {name: owner(name, 4) for name in NAMES if owner(name, 4) != owner(name, 3)}
    assert set(moved.values()) == {3}
    assert 0.20 < len(moved) / len(NAMES) < 0.30  # about 1/4


def test_workers_get_even_shares() -> None:
    counts = device_counts(NAMES, 4)
    assert sum(counts) == len(NAMES)
    assert all(400 < n < 600 for n in counts), counts


def test_assignment_does_not_depend_on_the_process() -> None:
    """Python's own str hash changes per process; the assignment must not."""
    script = (
        "from agent.workers import owner; import sys; print(*(owner(n, 3) for n in sys.argv[1:]))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, *NAMES[:200]],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.split()
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1] == [str(owner(n, 3)) for n in NAMES[:200]]


@pytest.mark.parametrize(
    ("spec", "configured", "problem"),
    [
        ("x", 2, "expected INDEX or INDEX/COUNT"),
        ("1/", 2, "expected INDEX or INDEX/COUNT"),
        ("-1", 2, "expected INDEX or INDEX/COUNT"),
        ("2", 2, "index 2 is not one of 0..1"),
        ("0/3", 2, "the config says agent.workers: 2"),
    ],
)
def test_a_bad_worker_spec_is_refused_with_what_is_wrong(
    spec: str, configured: int, problem: str
) -> None:
    with pytest.raises(WorkerSpecError, match=problem) as caught:
        parse_worker(spec, configured)
    assert spec in str(caught.value)


def test_good_worker_specs() -> None:
    assert parse_worker("1", 2) == Worker(1, 2)
    assert parse_worker("1/2", 2) == Worker(1, 2)


def config_data(broker: str, snmp: str, prefix: str, home: Path) -> dict[str, Any]:
    """Two workers' config: `broker` and `snmp` are host:port."""
    host, port = broker.split(":")
    return {
        "agent": {"name": "hall", "site": "s1", "workers": 2},
        "mqtt": {
            "host": host,
            "port": int(port),
            "topic_prefix": prefix,
            "flush_interval_s": 0.2,
            "spool_dir": str(home / "spool"),
        },
        "traps": {"listen": f"127.0.0.1:{free_port('udp')}", "communities": ["public"]},
        "defaults": {"interval_s": 2, "jitter_s": 0, "timeout_s": 2},
        "health_interval_s": 1,
        "credentials": {"default": {"community": RECORDING}},
        "devices": [{"name": name, "address": snmp, "rack": name} for name in DEVICES],
    }


def test_each_worker_has_its_own_spool_and_port_and_only_worker_0_takes_traps(
    tmp_path: Path,
) -> None:
    data = config_data_offline(tmp_path)
    data["metrics"] = {"listen": "127.0.0.1:9464"}
    config = AgentConfig.model_validate(data)
    first, second = for_worker(config, Worker(0, 2)), for_worker(config, Worker(1, 2))
    assert first.mqtt.spool_dir == tmp_path / "spool" / "worker-0"
    assert second.mqtt.spool_dir == tmp_path / "spool" / "worker-1"
    assert first.metrics is not None
    assert first.metrics.listen == "127.0.0.1:9464"
    assert second.metrics is not None
    assert second.metrics.listen == "127.0.0.1:9465"
    assert first.traps == config.traps
    assert second.traps is None
    assert first.devices == second.devices == config.devices  # traps from any are placed
    assert for_worker(config, Worker(0, 1)) is config


def config_data_offline(home: Path) -> dict[str, Any]:
    return config_data("127.0.0.1:1", "127.0.0.1:161", "p", home)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rackwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_refuses_a_bad_worker_and_a_split_config_without_one(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config_data_offline(tmp_path)))
    bad = run_cli("agent", "-c", str(path), "--worker", "2")
    assert bad.returncode == 2
    assert "--worker 2: index 2 is not one of 0..1 (agent.workers: 2)" in bad.stderr
    missing = run_cli("agent", "-c", str(path))
    assert missing.returncode == 2
    assert f"{path}: agent.workers is 2: start each worker with --worker 0" in missing.stderr


def test_check_reports_devices_per_worker(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config_data_offline(tmp_path)))
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    counts = device_counts(DEVICES, 2)
    assert (
        f"{path}: {len(DEVICES)} devices over 2 workers: "
        f"worker 0: {counts[0]}, worker 1: {counts[1]}"
    ) in result.stdout


async def start_worker(config: Path, index: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "rackwatch", "agent", "-c", str(config)),
            *("--worker", str(index)),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


async def watch(broker: Running, topic: str, seen: dict[str, Counter[str]], data: set[str]) -> None:
    """How often each worker reported each device up, and which devices' readings arrived."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            for sample in parse_lines(message.payload):
                device = sample.tags.get("device")
                if device is None:
                    continue
                if sample.measurement == "rackwatch_agent":
                    if sample.fields.get("up") is True:
                        seen.setdefault(device, Counter())[sample.tags["worker"]] += 1
                else:
                    data.add(device)


async def run_workers(
    broker: Running, config: Path, prefix: str, home: Path
) -> dict[str, set[str]]:
    seen: dict[str, Counter[str]] = {}
    data: set[str] = set()
    watcher = asyncio.create_task(watch(broker, f"{prefix}/#", seen, data))
    workers = [await start_worker(config, i, home / f"worker-{i}.log") for i in range(2)]
    try:

        def all_polled() -> bool:
            """every device reported up 3 times, and its readings arrived"""
            done = set(seen) == set(DEVICES) and data >= set(DEVICES)
            return done and all(c.total() >= 3 for c in seen.values())

        # Three health rounds each: a device polled twice would show up under both workers.
        await eventually(all_polled, 60)
    finally:
        for process in workers:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 30) for p in workers]
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert codes == [0, 0], [(home / f"worker-{i}.log").read_text() for i in range(2)]
    return {device: set(workers) for device, workers in seen.items()}


@pytest.mark.integration
async def test_two_workers_poll_every_device_once_and_keep_them_after_a_restart(
    mosquitto: Running, snmpsim: Running, unique: str, tmp_path: Path
) -> None:
    prefix = f"rackwatch/workers-{unique}"
    config = tmp_path / "agent.yaml"
    broker, snmp = f"{mosquitto.host}:{mosquitto.port}", f"{snmpsim.host}:{snmpsim.port}"
    config.write_text(yaml.safe_dump(config_data(broker, snmp, prefix, tmp_path)))

    first = await run_workers(mosquitto, config, prefix, tmp_path)
    assert all(len(workers) == 1 for workers in first.values()), first
    expected = {name: {f"{owner(name, 2)}/2"} for name in DEVICES}
    assert first == expected
    assert {"0/2", "1/2"} == set().union(*first.values())  # both workers had devices
    assert (tmp_path / "spool" / "worker-0").is_dir()
    assert (tmp_path / "spool" / "worker-1").is_dir()
    for index, count in enumerate(device_counts(DEVICES, 2)):
        started = f"agent hall at site s1, worker {index}/2: {count} devices"
        assert started in (tmp_path / f"worker-{index}.log").read_text()

    again = await run_workers(mosquitto, config, prefix, tmp_path)
    assert again == first


def test_a_silent_worker_pages_while_the_others_report() -> None:
    """The default rules: AgentWorkerDown for the silent worker, not AgentDown (its agent
    still reports through the other), and nothing for an agent that is not split."""
    from tests.test_alerting_evaluator import T0, Harness, line

    h = Harness(DEFAULT_RULES.read_text(encoding="utf-8"))

    def health(at: float, agent: str, worker: str | None = None) -> bytes:
        tags = {"site": "s1", "agent": agent, **({"worker": worker} if worker else {})}
        return line("rackwatch_agent", tags, {"devices": 4}, at)

    h.feed(health(T0, "hall", "0/2"), health(T0, "hall", "1/2"), health(T0, "room"))
    for t in range(30, 121, 30):
        h.tick(t)
        h.feed(health(T0 + t, "hall", "0/2"), health(T0 + t, "room"))
    assert h.states() == [("AgentWorkerDown", "firing")]
    assert h.seen[0].alert.labels["worker"] == "1/2"
    assert h.seen[0].summary.startswith("agent hall at s1: worker 1/2 silent for ")


def split_agent(home: Path, index: int, devices: list[str]) -> Agent:
    data = config_data_offline(home)
    data["devices"] = [
        {"name": name, "address": f"127.0.0.{i + 2}:161", "rack": f"R{i}"}
        for i, name in enumerate(devices)
    ]
    worker = Worker(index, 2)
    return Agent(for_worker(AgentConfig.model_validate(data), worker), worker)


async def test_a_reload_gives_a_worker_only_its_own_new_devices(tmp_path: Path) -> None:
    agents = [split_agent(tmp_path, i, DEVICES) for i in range(2)]
    assert sorted([*agents[0].pollers, *agents[1].pollers]) == sorted(DEVICES)
    changed = [*DEVICES[1:], *(f"pdu-c-{i:02d}" for i in range(4))]  # one gone, four new
    for index, agent in enumerate(agents):
        data = config_data_offline(tmp_path)
        data["devices"] = [{"name": n, "address": "127.0.0.2:161"} for n in changed]
        await agent.reload(for_worker(AgentConfig.model_validate(data), Worker(index, 2)))
    assert sorted([*agents[0].pollers, *agents[1].pollers]) == sorted(changed)
    for index, agent in enumerate(agents):
        assert all(owner(name, 2) == index for name in agent.pollers)


async def test_worker_0_places_a_trap_from_another_workers_device(tmp_path: Path) -> None:
    agent = split_agent(tmp_path, 0, DEVICES)
    other = next(i for i, name in enumerate(DEVICES) if owner(name, 2) == 1)
    emitted: list[Sample] = []
    agent._emit = lambda origin, samples: emitted.extend(samples)  # type: ignore[method-assign]
    receiver = agent._start_traps()
    assert receiver is not None
    try:
        agent._on_trap(
            Notification(f"127.0.0.{other + 2}", 162, "1.3.6.1.4.1.318.0.5", (), "public", False)
        )
    finally:
        receiver.close()
    assert [s.tags["device"] for s in emitted] == [DEVICES[other]]
    assert emitted[0].tags["rack"] == f"R{other}"
    assert DEVICES[other] not in agent.pollers  # polled by worker 1, on its schedule
