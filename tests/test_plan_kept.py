"""A failed poll keeps the device's table layout: the poll after it asks for sysObjectID, and
when that is unchanged reads the known rows with one GET list, walking nothing. A device that
comes back as another box (another sysObjectID) is identified again and walked afresh.

The outage is real: the device's own snmpsim is stopped, then started again on its port.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from agent.mapping import Value
from agent.snmp import DeviceError, SnmpDevice, SnmpTarget
from rackwatch import localservices
from rackwatch.localservices import Running
from telemetry.sample import Sample
from tests.conftest import RECORDINGS

pytestmark = pytest.mark.integration

COMMUNITY = "box"


class CountingDevice(SnmpDevice):
    """Notes each GET (the OIDs asked for) and each column walked."""

    def __init__(self, sim: Running) -> None:
        target = SnmpTarget(sim.host, sim.port, COMMUNITY, timeout_s=0.3, retries=0)
        super().__init__("box", target, {})
        self.asked: list[int] = []
        self.walked: list[str] = []

    async def get(self, oids: Iterable[str], what: str = "") -> dict[str, Value]:
        wanted = list(oids)
        self.asked.append(len(wanted))
        return await super().get(wanted, what)

    async def _walk_once(self, base: str) -> dict[str, Value]:
        self.walked.append(base)
        return await super()._walk_once(base)

    def forget_counts(self) -> None:
        self.asked.clear()
        self.walked.clear()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Path, list[Running]]]:
    """A private snmpsim serving one recording as community `box`; the list holds the running
    server (replaced when the test restarts it), stopped at the end."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(RECORDINGS / "raritan-pdu_px2.snmprec", data / f"{COMMUNITY}.snmprec")
    running = [localservices.start_snmpsim(data, tmp_path / "snmpsim")]
    yield data, running
    localservices.stop(running[-1])


def readings(samples: list[Sample]) -> list[tuple[str, dict[str, str], list[str]]]:
    return [(s.measurement, dict(s.tags), sorted(s.fields)) for s in samples]


async def fail_one_poll(device: SnmpDevice, sim: Running) -> None:
    localservices.stop(sim)
    with pytest.raises(DeviceError) as failed:
        await device.collect()
    assert failed.value.reason == "no_answer"


async def test_a_failed_poll_keeps_the_plan(box: tuple[Path, list[Running]]) -> None:
    _, running = box
    device = CountingDevice(running[0])
    first = await device.collect()
    planned = list(device.walked)
    assert planned  # the first poll walks the tables
    await device.collect()
    steady = list(device.asked[-1:])  # a steady poll: one GET list, nothing walked

    await fail_one_poll(device, running[0])
    running.append(localservices.restart(running[0]))
    device.forget_counts()
    again = await device.collect()

    assert device.walked == []
    assert device.asked == [1, *steady]  # sysObjectID, then the known rows
    assert readings(again) == readings(first)
    device.forget_counts()
    await device.collect()
    assert (device.walked, device.asked) == ([], steady)  # checked once, not every poll


async def test_a_device_that_comes_back_as_another_box_is_identified_again(
    box: tuple[Path, list[Running]],
) -> None:
    data, running = box
    device = CountingDevice(running[0])
    await device.collect()
    assert device.identity is not None
    assert device.identity.profile.name == "raritan_pdu2"

    await fail_one_poll(device, running[0])
    shutil.copyfile(RECORDINGS / "apc_ap8959eu3.snmprec", data / f"{COMMUNITY}.snmprec")
    shutil.rmtree(running[0].workdir / "snmpsim-cache", ignore_errors=True)  # its old index
    running.append(localservices.restart(running[0]))
    device.forget_counts()
    samples = await device.collect()

    assert device.identity.profile.name == "apc_rpdu2"
    assert device.walked  # a new plan, from the new box's tables
    assert {s.tags.get("vendor") for s in samples} == {"apc"}
