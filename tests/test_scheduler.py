"""Per-device scheduling: overruns are skipped and counted, never stacked; devices are isolated."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.scheduler import PeriodicPoller
from telemetry.sample import Sample


class FakeDevice:
    """A device whose poll takes `delay_s`; records how many polls overlapped."""

    def __init__(self, delay_s: float, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.running = 0
        self.most_at_once = 0
        self.calls = 0

    async def poll(self) -> list[Sample]:
        self.calls += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail:
                raise TimeoutError("no answer")
            return [Sample("pdu", {}, {"power_w": 1.0}, 1)]
        finally:
            self.running -= 1


async def run_for(seconds: float, *pollers: PeriodicPoller) -> None:
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_slow_poll_is_skipped_and_counted_not_stacked() -> None:
    slow = FakeDevice(delay_s=0.35)
    emitted: list[str] = []
    poller = PeriodicPoller(
        "slow", slow.poll, lambda name, s: emitted.append(name), interval_s=0.05
    )
    await run_for(1.2, poller)
    assert slow.most_at_once == 1
    assert poller.stats.overruns >= 5
    assert poller.stats.polls_ok >= 1
    assert poller.stats.polls_ok + poller.stats.overruns >= 10


async def test_dead_device_does_not_delay_another() -> None:
    dead, healthy = FakeDevice(delay_s=5.0), FakeDevice(delay_s=0.0)
    emitted: list[str] = []
    pollers = [
        PeriodicPoller("dead", dead.poll, lambda n, s: emitted.append(n), interval_s=0.05),
        PeriodicPoller("healthy", healthy.poll, lambda n, s: emitted.append(n), interval_s=0.05),
    ]
    await run_for(1.0, *pollers)
    assert emitted.count("healthy") >= 10
    assert "dead" not in emitted
    assert pollers[0].stats.overruns >= 10


async def test_failures_are_counted_and_device_marked_down() -> None:
    failing = FakeDevice(delay_s=0.0, fail=True)
    poller = PeriodicPoller("pdu-x", failing.poll, lambda n, s: None, interval_s=0.05)
    await run_for(0.5, poller)
    assert poller.stats.polls_failed >= 3
    assert poller.stats.polls_ok == 0
    assert poller.stats.up is False
    assert poller.stats.last_error == "no answer"


async def test_devices_start_at_random_phases_not_all_at_once() -> None:
    devices = [FakeDevice(delay_s=0.0) for _ in range(20)]
    pollers = [
        PeriodicPoller(f"pdu-{i}", d.poll, lambda n, s: None, interval_s=1.0)
        for i, d in enumerate(devices)
    ]
    await run_for(0.5, *pollers)
    started = sum(d.calls for d in devices)
    assert 0 < started < 20  # spread over the interval (chance of failing: 2 in a million)


async def test_a_hung_poll_is_cut_at_its_deadline() -> None:
    hung = FakeDevice(delay_s=60.0)
    poller = PeriodicPoller(
        "pdu-hung", hung.poll, lambda n, s: None, interval_s=0.1, deadline_s=0.15
    )
    await run_for(1.0, poller)
    assert poller.stats.polls_failed >= 2
    assert poller.stats.last_error == "poll exceeded its deadline of 0.15 s"
    assert hung.most_at_once == 1


async def test_failure_and_recovery_are_logged_once_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = FakeDevice(delay_s=0.0, fail=True)
    poller = PeriodicPoller("pdu-flaky", device.poll, lambda n, s: None, interval_s=0.05)
    with caplog.at_level(logging.INFO, logger="agent.scheduler"):
        task = asyncio.create_task(poller.run())
        await asyncio.sleep(0.5)  # many failed polls
        device.fail = False
        await asyncio.sleep(0.5)  # many good polls
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    messages = [r.getMessage() for r in caplog.records if "pdu-flaky" in r.getMessage()]
    assert poller.stats.polls_failed >= 3
    assert poller.stats.polls_ok >= 3
    assert messages == [
        "device pdu-flaky: poll failed: no answer",
        "device pdu-flaky: polling again after: no answer",
    ]
